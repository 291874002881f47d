-- The schema every corpus file runs against: tables of a few thousand rows, so that PostgreSQL
-- really reads, rewrites and indexes them (the lint runs with LINT_MIN_ROWS=0).
CREATE TABLE clients (id int PRIMARY KEY, name text NOT NULL);
INSERT INTO clients SELECT g, 'client ' || g FROM generate_series(1, 100) g;

CREATE TABLE tokens (
    id bigint PRIMARY KEY,
    client_id int NOT NULL,
    scope text NOT NULL,
    code varchar(10) NOT NULL,
    n int,
    expires_at timestamptz NOT NULL
);
INSERT INTO tokens
SELECT g, g % 100 + 1, 'read', 'c' || g % 1000, g, now() + interval '1 hour'
FROM generate_series(1, 2000) g;
CREATE INDEX tokens_expires_at ON tokens (expires_at);
ALTER TABLE tokens CLUSTER ON tokens_pkey;
ALTER TABLE tokens ADD CONSTRAINT tokens_n_nonnegative CHECK (n >= 0) NOT VALID;
ALTER TABLE tokens ADD CONSTRAINT tokens_client_fk FOREIGN KEY (client_id) REFERENCES clients (id) NOT VALID;

-- A validated CHECK (col IS NOT NULL) proves SET NOT NULL; a NOT VALID one does not.
CREATE TABLE sessions (id int NOT NULL, user_id int, device_id int);
INSERT INTO sessions SELECT g, g, g FROM generate_series(1, 2000) g;
ALTER TABLE sessions ADD CONSTRAINT sessions_user_id_not_null CHECK (user_id IS NOT NULL);
ALTER TABLE sessions ADD CONSTRAINT sessions_device_id_not_null CHECK (device_id IS NOT NULL) NOT VALID;
CREATE UNIQUE INDEX sessions_id_key ON sessions (id);

CREATE MATERIALIZED VIEW token_counts AS SELECT client_id, count(*) AS tokens FROM tokens GROUP BY client_id;
CREATE UNIQUE INDEX token_counts_client ON token_counts (client_id);

CREATE UNLOGGED TABLE rate_limits (key text, hits int);
INSERT INTO rate_limits SELECT 'k' || g, g FROM generate_series(1, 2000) g;

CREATE TABLE audit (id int, at date NOT NULL) PARTITION BY RANGE (at);
CREATE TABLE audit_2024 (id int, at date NOT NULL);
INSERT INTO audit_2024 SELECT g, date '2024-01-01' + g % 300 FROM generate_series(1, 2000) g;
CREATE TABLE audit_2025 (id int, at date NOT NULL,
    CONSTRAINT audit_2025_bound CHECK (at >= date '2025-01-01' AND at < date '2026-01-01'));
INSERT INTO audit_2025 SELECT g, date '2025-01-01' + g % 300 FROM generate_series(1, 2000) g;

CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;

-- For the breaking-change and data-loss corpus (contract_corpus/).
CREATE TYPE token_kind AS ENUM ('access', 'refresh');
CREATE TABLE legacy_grants (id int, note text);
INSERT INTO legacy_grants SELECT g, 'note ' || g FROM generate_series(1, 500) g;
CREATE VIEW client_names AS SELECT id, name FROM clients;

-- For the release-level contract corpus: a partitioned table with its partitions, a column of
-- a domain and one of an enum, a function with an argument.
CREATE TABLE events (id int, kind text, at date NOT NULL) PARTITION BY RANGE (at);
CREATE TABLE events_2024 PARTITION OF events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE events_other PARTITION OF events DEFAULT;
INSERT INTO events SELECT g, 'login', date '2024-01-01' + g % 800 FROM generate_series(1, 1500) g;
CREATE DOMAIN email AS text;
CREATE TYPE contact_kind AS ENUM ('person', 'company');
CREATE TABLE contacts (id int, email email, kind contact_kind NOT NULL DEFAULT 'person');
INSERT INTO contacts SELECT g, 'c' || g || '@example.org' FROM generate_series(1, 200) g;
CREATE FUNCTION token_count(client int) RETURNS bigint LANGUAGE sql
    AS $$ SELECT count(*) FROM tokens WHERE client_id = client $$;
