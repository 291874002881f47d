CREATE TABLE customers (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email       email_address NOT NULL UNIQUE,
    first_name  text NOT NULL,
    last_name   text NOT NULL,
    -- a generated column: kept in sync by the server, never written by the app
    full_name   text GENERATED ALWAYS AS (first_name || ' ' || last_name) STORED,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX customers_created_at_idx ON customers (created_at);
