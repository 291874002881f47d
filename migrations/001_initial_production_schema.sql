-- Migration: 001_initial_production_schema
-- Description: auth-service production schema: users, groups, OAuth 2.0 codes,
--              tokens and clients, API keys, sessions, audit log, rate limits;
--              row level security, security functions, indexes.
-- migrate:replaces-checksum bcfa8f0f6e7aefc46117119e40cf0c9c077a672aae971f7f97190542a5758a18 the same schema: its history-table check no longer casts a missing table, so psql -f applies it without the runner
--
-- Runs as the owner role (DB_USER, default auth_service) in one transaction, after
-- 000_init_database.sql. See migrations/README.md for the roles, the row level
-- security context contract and the hot queries the indexes serve.
--
-- Conventions
--   * Secrets are never stored: tokens, codes, API keys, session ids and client
--     secrets are stored as SHA-256 digests (bytea, 32 bytes) of the secret,
--     plus at most a short non-secret prefix for display.
--   * Per-user tables have row level security: the runtime role sees and changes
--     only the rows of the user in app.current_user_id, nothing without it.
--   * Cross-user operations are SECURITY DEFINER functions with a pinned
--     search_path; they run as the owner, which owns the tables.
--   * Thresholds and retention periods live in one row: security_settings.

-- ---------------------------------------------------------------------------
-- Request context and shared helpers
-- ---------------------------------------------------------------------------

-- The user of the current request, or NULL when the application set none (then
-- row level security shows nothing). Set per transaction:
--   SET LOCAL app.current_user_id = '<uuid>';   or set_config(..., true)
CREATE FUNCTION app_current_user_id() RETURNS uuid
    LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT nullif(current_setting('app.current_user_id', true), '')::uuid $$;

-- The OAuth client of the current request (tokens issued to a client without a
-- user, client_credentials grant).
CREATE FUNCTION app_current_client_id() RETURNS text
    LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT nullif(current_setting('app.current_client_id', true), '') $$;

CREATE FUNCTION set_updated_at() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END
$$;

-- Every URI in a redirect_uris array is an exact, fragment-free redirect target:
-- https, http on a loopback IP literal (RFC 8252 7.3), or a private-use scheme
-- containing a dot (RFC 8252 7.1, e.g. com.example.app:/callback).
CREATE FUNCTION redirect_uris_valid(uris text[]) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT coalesce(bool_and(
               u ~ '^(https://[^/?#\s*]+(/[^#\s]*)?|http://(127\.0\.0\.1|\[::1\])(:[0-9]{1,5})?(/[^#\s]*)?|[a-z][a-z0-9+-]*\.[a-z0-9+.-]+:/[^#\s]*)$'
               AND length(u) <= 2000), true)
    FROM unnest(uris) AS u
$$;

-- A password hash in a modern encoding: argon2id (PHC string), bcrypt ($2a$,
-- $2b$, $2y$) or scrypt (PHC string, or $7$ crypt). Anything else, a plaintext
-- password in particular, is rejected.
CREATE FUNCTION is_modern_password_hash(h text) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT h ~ '^\$argon2id\$v=19\$m=[0-9]+,t=[0-9]+,p=[0-9]+\$[A-Za-z0-9+/]{11,}\$[A-Za-z0-9+/]{16,}$'
        OR h ~ '^\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}$'
        OR h ~ '^\$scrypt\$ln=[0-9]+,r=[0-9]+,p=[0-9]+\$[A-Za-z0-9+/]{11,}\$[A-Za-z0-9+/]{16,}$'
        OR h ~ '^\$7\$[./A-Za-z0-9]{11,}\$[./A-Za-z0-9]{43}$'
$$;

-- ---------------------------------------------------------------------------
-- Settings: every threshold and retention period, in one row
-- ---------------------------------------------------------------------------

CREATE TABLE security_settings (
    singleton                boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    max_failed_logins        integer  NOT NULL DEFAULT 5 CHECK (max_failed_logins > 0),
    failed_login_window      interval NOT NULL DEFAULT '15 minutes' CHECK (failed_login_window > '0'),
    lockout_duration         interval NOT NULL DEFAULT '15 minutes' CHECK (lockout_duration > '0'),
    password_history_depth   integer  NOT NULL DEFAULT 5 CHECK (password_history_depth >= 0),
    security_event_retention interval NOT NULL DEFAULT '400 days' CHECK (security_event_retention >= '30 days'),
    cleanup_batch_size       integer  NOT NULL DEFAULT 5000 CHECK (cleanup_batch_size BETWEEN 1 AND 100000),
    cleanup_max_batches      integer  NOT NULL DEFAULT 20 CHECK (cleanup_max_batches > 0),
    updated_at               timestamptz NOT NULL DEFAULT now()
);
INSERT INTO security_settings DEFAULT VALUES;
CREATE TRIGGER security_settings_updated_at BEFORE UPDATE ON security_settings
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();
COMMENT ON TABLE security_settings IS
    'Lockout thresholds, password history depth, retention periods and cleanup batch sizes (one row; the owner changes them).';

-- ---------------------------------------------------------------------------
-- Tables
-- ---------------------------------------------------------------------------

CREATE TABLE users (
    id                    uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    email                 citext NOT NULL
                          CONSTRAINT users_email_format CHECK (length(email) <= 254 AND email ~ '^[^@\s]+@[^@\s]+$'),
    email_verified_at     timestamptz,
    display_name          text NOT NULL DEFAULT ''
                          CONSTRAINT users_display_name_length CHECK (length(display_name) <= 200),
    password_hash         text
                          CONSTRAINT users_password_hash_modern CHECK (is_modern_password_hash(password_hash)),
    password_changed_at   timestamptz,
    status                text NOT NULL DEFAULT 'active'
                          CONSTRAINT users_status_valid CHECK (status IN ('pending', 'active', 'suspended', 'disabled')),
    failed_login_attempts integer NOT NULL DEFAULT 0 CHECK (failed_login_attempts >= 0),
    last_failed_login_at  timestamptz,
    locked_until          timestamptz,
    last_login_at         timestamptz,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    deleted_at            timestamptz
);
COMMENT ON COLUMN users.password_hash IS 'argon2id, bcrypt or scrypt encoding only; NULL for accounts without a password (federated, invited).';
COMMENT ON COLUMN users.deleted_at IS 'Soft delete: the address becomes free again, the row stays for audit.';
-- Case-insensitive (citext) and unique among accounts that are not deleted.
CREATE UNIQUE INDEX users_email_active_key ON users (email) WHERE deleted_at IS NULL;
-- Trigram search by email or display name (admin user lookup, search_users()).
CREATE INDEX users_search_trgm_idx ON users
    USING gin ((email::text || ' ' || display_name) gin_trgm_ops);
CREATE TRIGGER users_updated_at BEFORE UPDATE ON users
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- Earlier password hashes, for the application's reuse check (it verifies the new
-- password against these); kept to security_settings.password_history_depth.
CREATE TABLE password_history (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id       uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    password_hash text NOT NULL CHECK (is_modern_password_hash(password_hash)),
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX password_history_user_idx ON password_history (user_id, created_at DESC);

CREATE TABLE groups (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    description text NOT NULL DEFAULT '' CHECK (length(description) <= 1000),
    permissions text[] NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX groups_name_key ON groups (lower(name));
CREATE INDEX groups_name_trgm_idx ON groups USING gin (name gin_trgm_ops);
CREATE TRIGGER groups_updated_at BEFORE UPDATE ON groups
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

CREATE TABLE group_members (
    group_id   uuid NOT NULL REFERENCES groups (id) ON DELETE CASCADE,
    user_id    uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role       text NOT NULL DEFAULT 'member' CHECK (role IN ('member', 'manager')),
    added_by   uuid,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (group_id, user_id)
);
CREATE INDEX group_members_user_idx ON group_members (user_id);

-- RFC 7591 client metadata. The implicit and password grants and the "token"
-- response type are not accepted (RFC 9700); client_secret_jwt is not offered
-- because it needs the secret in clear.
CREATE TABLE oauth_clients (
    client_id                  text PRIMARY KEY CHECK (client_id ~ '^[A-Za-z0-9._~-]{8,128}$'),
    client_secret_hash         bytea CHECK (octet_length(client_secret_hash) = 32),
    client_secret_prefix       text CHECK (length(client_secret_prefix) BETWEEN 4 AND 12),
    client_secret_expires_at   timestamptz,
    client_id_issued_at        timestamptz NOT NULL DEFAULT now(),
    client_name                text NOT NULL CHECK (length(client_name) BETWEEN 1 AND 200),
    client_uri                 text CHECK (client_uri ~ '^https://'),
    logo_uri                   text CHECK (logo_uri ~ '^https://'),
    tos_uri                    text CHECK (tos_uri ~ '^https://'),
    policy_uri                 text CHECK (policy_uri ~ '^https://'),
    contacts                   text[] NOT NULL DEFAULT '{}',
    redirect_uris              text[] NOT NULL DEFAULT '{}'
                               CONSTRAINT oauth_clients_redirect_uris_valid CHECK (redirect_uris_valid(redirect_uris)),
    grant_types                text[] NOT NULL DEFAULT '{authorization_code,refresh_token}'
                               CONSTRAINT oauth_clients_grant_types_valid CHECK (
                                   cardinality(grant_types) > 0 AND grant_types <@ ARRAY[
                                       'authorization_code', 'refresh_token', 'client_credentials',
                                       'urn:ietf:params:oauth:grant-type:device_code',
                                       'urn:ietf:params:oauth:grant-type:jwt-bearer']),
    response_types             text[] NOT NULL DEFAULT '{code}'
                               CONSTRAINT oauth_clients_response_types_valid CHECK (response_types <@ ARRAY['code']),
    token_endpoint_auth_method text NOT NULL DEFAULT 'client_secret_basic'
                               CONSTRAINT oauth_clients_auth_method_valid CHECK (token_endpoint_auth_method IN (
                                   'none', 'client_secret_basic', 'client_secret_post', 'private_key_jwt',
                                   'tls_client_auth', 'self_signed_tls_client_auth')),
    scopes                     text[] NOT NULL DEFAULT '{}',
    jwks_uri                   text CHECK (jwks_uri ~ '^https://'),
    jwks                       jsonb,
    software_id                text,
    software_version           text,
    registration_access_token_hash bytea CHECK (octet_length(registration_access_token_hash) = 32),
    require_pkce               boolean NOT NULL DEFAULT true,
    allow_plain_pkce           boolean NOT NULL DEFAULT false,
    disabled_at                timestamptz,
    created_at                 timestamptz NOT NULL DEFAULT now(),
    updated_at                 timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT oauth_clients_secret_matches_method CHECK (
        CASE token_endpoint_auth_method
            WHEN 'none' THEN client_secret_hash IS NULL AND require_pkce
            WHEN 'client_secret_basic' THEN client_secret_hash IS NOT NULL
            WHEN 'client_secret_post' THEN client_secret_hash IS NOT NULL
            WHEN 'private_key_jwt' THEN jwks IS NOT NULL OR jwks_uri IS NOT NULL
            ELSE true
        END),
    CONSTRAINT oauth_clients_code_flow_has_redirect CHECK (
        NOT ('authorization_code' = ANY (grant_types)) OR cardinality(redirect_uris) > 0),
    CONSTRAINT oauth_clients_jwks_one_of CHECK (jwks IS NULL OR jwks_uri IS NULL)
);
COMMENT ON COLUMN oauth_clients.client_secret_hash IS 'SHA-256 of the client secret (secrets are generated with >= 256 bits of entropy).';
COMMENT ON COLUMN oauth_clients.allow_plain_pkce IS 'PKCE "plain" accepted for this client only when true; S256 otherwise.';
CREATE TRIGGER oauth_clients_updated_at BEFORE UPDATE ON oauth_clients
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- Authorization codes: single use (used_at), short lived, PKCE (RFC 7636).
-- On redemption a grant family id is assigned; every token issued from the code
-- carries it, so a replayed code revokes them all (RFC 6749 4.1.2).
CREATE TABLE auth_codes (
    id                    uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    code_hash             bytea NOT NULL UNIQUE CHECK (octet_length(code_hash) = 32),
    client_id             text NOT NULL REFERENCES oauth_clients (client_id) ON DELETE CASCADE,
    user_id               uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    redirect_uri          text NOT NULL CHECK (length(redirect_uri) <= 2000),
    scopes                text[] NOT NULL DEFAULT '{}',
    code_challenge        text,
    code_challenge_method text
                          CONSTRAINT auth_codes_code_challenge_method_valid CHECK (code_challenge_method IN ('S256', 'plain')),
    nonce                 text CHECK (length(nonce) <= 512),
    family_id             uuid,
    created_at            timestamptz NOT NULL DEFAULT now(),
    expires_at            timestamptz NOT NULL DEFAULT now() + interval '1 minute',
    used_at               timestamptz,
    CONSTRAINT auth_codes_pkce_pair CHECK ((code_challenge IS NULL) = (code_challenge_method IS NULL)),
    CONSTRAINT auth_codes_code_challenge_format CHECK (
        CASE code_challenge_method
            WHEN 'S256' THEN code_challenge ~ '^[A-Za-z0-9_-]{43}$'
            WHEN 'plain' THEN code_challenge ~ '^[A-Za-z0-9._~-]{43,128}$'
            ELSE true  -- an unknown method is auth_codes_code_challenge_method_valid's to reject
        END),
    CONSTRAINT auth_codes_short_lived CHECK (expires_at > created_at AND expires_at <= created_at + interval '10 minutes')
);
CREATE INDEX auth_codes_expires_at_idx ON auth_codes (expires_at);
CREATE INDEX auth_codes_user_idx ON auth_codes (user_id);

-- Access tokens (opaque; the application hands out the secret once and keeps
-- only its SHA-256). user_id is NULL for client_credentials tokens.
CREATE TABLE tokens (
    id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    token_hash     bytea NOT NULL CHECK (octet_length(token_hash) = 32),
    token_prefix   text CHECK (length(token_prefix) BETWEEN 4 AND 12),
    client_id      text NOT NULL REFERENCES oauth_clients (client_id) ON DELETE CASCADE,
    user_id        uuid REFERENCES users (id) ON DELETE CASCADE,
    family_id      uuid,
    scopes         text[] NOT NULL DEFAULT '{}',
    created_at     timestamptz NOT NULL DEFAULT now(),
    expires_at     timestamptz NOT NULL,
    revoked_at     timestamptz,
    revoked_reason text,
    CONSTRAINT tokens_expiry_after_issue CHECK (expires_at > created_at)
);
CREATE UNIQUE INDEX tokens_token_hash_key ON tokens (token_hash);
CREATE INDEX tokens_user_active_idx ON tokens (user_id, client_id, expires_at) WHERE revoked_at IS NULL;
CREATE INDEX tokens_family_active_idx ON tokens (family_id) WHERE revoked_at IS NULL AND family_id IS NOT NULL;
CREATE INDEX tokens_expires_at_idx ON tokens (expires_at);
ALTER TABLE tokens SET (
    autovacuum_vacuum_scale_factor = 0.02, autovacuum_analyze_scale_factor = 0.01,
    autovacuum_vacuum_insert_scale_factor = 0.05);

-- Refresh tokens: rotated on every use. All tokens of one grant share family_id;
-- parent_id/replaced_by link the chain (not foreign keys: cleanup removes expired
-- links). Presenting a token that was already rotated revokes the whole family
-- (RFC 9700 4.14.2).
CREATE TABLE refresh_tokens (
    id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    token_hash     bytea NOT NULL CHECK (octet_length(token_hash) = 32),
    token_prefix   text CHECK (length(token_prefix) BETWEEN 4 AND 12),
    family_id      uuid NOT NULL DEFAULT gen_random_uuid(),
    parent_id      uuid,
    replaced_by    uuid,
    client_id      text NOT NULL REFERENCES oauth_clients (client_id) ON DELETE CASCADE,
    user_id        uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    scopes         text[] NOT NULL DEFAULT '{}',
    created_at     timestamptz NOT NULL DEFAULT now(),
    expires_at     timestamptz NOT NULL,
    used_at        timestamptz,
    revoked_at     timestamptz,
    revoked_reason text,
    CONSTRAINT refresh_tokens_expiry_after_issue CHECK (expires_at > created_at),
    CONSTRAINT refresh_tokens_replaced_means_revoked CHECK (replaced_by IS NULL OR revoked_at IS NOT NULL)
);
CREATE UNIQUE INDEX refresh_tokens_token_hash_key ON refresh_tokens (token_hash);
CREATE INDEX refresh_tokens_user_active_idx ON refresh_tokens (user_id, client_id) WHERE revoked_at IS NULL;
CREATE INDEX refresh_tokens_family_active_idx ON refresh_tokens (family_id) WHERE revoked_at IS NULL;
CREATE INDEX refresh_tokens_expires_at_idx ON refresh_tokens (expires_at);

CREATE TABLE api_keys (
    id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id        uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name           text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    key_prefix     text NOT NULL CHECK (key_prefix ~ '^[A-Za-z0-9_-]{4,12}$'),
    key_hash       bytea NOT NULL CHECK (octet_length(key_hash) = 32),
    scopes         text[] NOT NULL DEFAULT '{}',
    created_at     timestamptz NOT NULL DEFAULT now(),
    expires_at     timestamptz,
    last_used_at   timestamptz,
    revoked_at     timestamptz,
    CONSTRAINT api_keys_expiry_after_issue CHECK (expires_at IS NULL OR expires_at > created_at)
);
CREATE UNIQUE INDEX api_keys_key_hash_key ON api_keys (key_hash);
CREATE INDEX api_keys_user_active_idx ON api_keys (user_id) WHERE revoked_at IS NULL;

-- Web sessions. idle_expires_at = least(expires_at, last_seen_at + idle_timeout),
-- kept by a trigger, so that validity and cleanup are one indexed comparison.
CREATE TABLE user_sessions (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    session_hash    bytea NOT NULL CHECK (octet_length(session_hash) = 32),
    user_id         uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    ip_address      inet,
    user_agent      text CHECK (length(user_agent) <= 1024),
    device_id       text CHECK (length(device_id) <= 200),
    device_name     text CHECK (length(device_name) <= 200),
    created_at      timestamptz NOT NULL DEFAULT now(),
    last_seen_at    timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL DEFAULT now() + interval '30 days',
    idle_timeout    interval NOT NULL DEFAULT '2 hours' CHECK (idle_timeout > '0'),
    idle_expires_at timestamptz NOT NULL,
    revoked_at      timestamptz,
    revoked_reason  text,
    CONSTRAINT user_sessions_expiry_after_issue CHECK (expires_at > created_at)
);
CREATE UNIQUE INDEX user_sessions_session_hash_key ON user_sessions (session_hash);
CREATE INDEX user_sessions_user_active_idx ON user_sessions (user_id, idle_expires_at) WHERE revoked_at IS NULL;
CREATE INDEX user_sessions_idle_expires_at_idx ON user_sessions (idle_expires_at);
ALTER TABLE user_sessions SET (
    fillfactor = 85, autovacuum_vacuum_scale_factor = 0.02, autovacuum_analyze_scale_factor = 0.01);

CREATE FUNCTION user_sessions_idle_expiry() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    NEW.idle_expires_at := least(NEW.expires_at, NEW.last_seen_at + NEW.idle_timeout);
    RETURN NEW;
END
$$;
CREATE TRIGGER user_sessions_idle_expiry
    BEFORE INSERT OR UPDATE OF last_seen_at, expires_at, idle_timeout, idle_expires_at ON user_sessions
    FOR EACH ROW EXECUTE FUNCTION user_sessions_idle_expiry();

-- Append-only audit log. No foreign key to users: events outlive the accounts
-- they are about. The runtime role may insert and read (its own user's events),
-- never update or delete; only cleanup_expired_data() deletes, past retention.
CREATE TABLE security_events (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    occurred_at   timestamptz NOT NULL DEFAULT now(),
    event_type    text NOT NULL CHECK (event_type ~ '^[a-z][a-z0-9_.]{0,63}$'),
    severity      text NOT NULL DEFAULT 'info' CHECK (severity IN ('info', 'warning', 'critical')),
    user_id       uuid,
    actor_user_id uuid DEFAULT app_current_user_id(),
    client_id     text,
    ip_address    inet,
    user_agent    text CHECK (length(user_agent) <= 1024),
    db_role       text NOT NULL DEFAULT session_user,
    details       jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(details) = 'object')
);
CREATE INDEX security_events_user_idx ON security_events (user_id, occurred_at DESC);
CREATE INDEX security_events_type_idx ON security_events (event_type, occurred_at DESC);
CREATE INDEX security_events_occurred_at_idx ON security_events (occurred_at);

CREATE FUNCTION security_events_append_only() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    IF TG_OP = 'DELETE'
       AND current_setting('app.audit_purge', true) = 'on'
       AND OLD.occurred_at < now() - (SELECT security_event_retention FROM security_settings) THEN
        RETURN OLD;  -- retention purge by cleanup_expired_data()
    END IF;
    RAISE EXCEPTION 'security_events is append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER security_events_append_only BEFORE UPDATE OR DELETE ON security_events
    FOR EACH ROW EXECUTE FUNCTION security_events_append_only();
CREATE TRIGGER security_events_no_truncate BEFORE TRUNCATE ON security_events
    FOR EACH STATEMENT EXECUTE FUNCTION security_events_append_only();

-- Rate-limit buckets: one row per (subject, action), a fixed window that restarts
-- when it has passed. Written only by check_rate_limit().
CREATE TABLE rate_limits (
    subject       text NOT NULL CHECK (length(subject) BETWEEN 1 AND 200),
    action        text NOT NULL CHECK (length(action) BETWEEN 1 AND 100),
    window_start  timestamptz NOT NULL,
    reset_at      timestamptz NOT NULL,
    request_count integer NOT NULL CHECK (request_count >= 0),
    PRIMARY KEY (subject, action)
);
CREATE INDEX rate_limits_reset_at_idx ON rate_limits (reset_at);
ALTER TABLE rate_limits SET (
    fillfactor = 70, autovacuum_vacuum_scale_factor = 0.02, autovacuum_analyze_scale_factor = 0.01);

-- ---------------------------------------------------------------------------
-- Audit: triggers recording sensitive changes
-- ---------------------------------------------------------------------------

-- Internal: write one audit event whatever the caller's context.
CREATE FUNCTION log_security_event(
    p_event_type text, p_user_id uuid, p_details jsonb DEFAULT '{}',
    p_severity text DEFAULT 'info', p_client_id text DEFAULT NULL,
    p_ip_address inet DEFAULT NULL, p_user_agent text DEFAULT NULL
) RETURNS void
    LANGUAGE sql SECURITY DEFINER
    SET search_path = pg_catalog, public, pg_temp
AS $$
    INSERT INTO security_events (event_type, severity, user_id, client_id, ip_address, user_agent, details)
    VALUES (p_event_type, p_severity, p_user_id, p_client_id, p_ip_address, p_user_agent, coalesce(p_details, '{}'))
$$;

-- Password policy the database can enforce: password_changed_at is set on every
-- change, and a hash equal to one of the last N (password_history) is refused.
CREATE FUNCTION users_password_policy() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NEW.password_hash IS NOT NULL THEN
            NEW.password_changed_at := now();
        END IF;
        RETURN NEW;
    END IF;
    IF NEW.password_hash IS DISTINCT FROM OLD.password_hash THEN
        IF NEW.password_hash IS NOT NULL AND EXISTS (
               SELECT 1 FROM (
                   SELECT ph.password_hash FROM password_history ph
                   WHERE ph.user_id = NEW.id
                   ORDER BY ph.created_at DESC, ph.id DESC
                   LIMIT (SELECT password_history_depth FROM security_settings)) recent
               WHERE recent.password_hash = NEW.password_hash) THEN
            RAISE EXCEPTION 'password hash was used recently'
                USING ERRCODE = 'check_violation', CONSTRAINT = 'users_password_not_reused';
        END IF;
        NEW.password_changed_at := now();
    ELSIF NEW.password_changed_at IS DISTINCT FROM OLD.password_changed_at THEN
        NEW.password_changed_at := OLD.password_changed_at;  -- only a password change moves it
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER users_password_policy BEFORE INSERT OR UPDATE ON users
    FOR EACH ROW EXECUTE FUNCTION users_password_policy();

CREATE FUNCTION users_audit() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    depth integer;
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM log_security_event('user_created', NEW.id);
        RETURN NULL;
    END IF;
    IF NEW.password_hash IS DISTINCT FROM OLD.password_hash THEN
        depth := (SELECT password_history_depth FROM security_settings);
        IF OLD.password_hash IS NOT NULL AND depth > 0 THEN
            INSERT INTO password_history (user_id, password_hash) VALUES (OLD.id, OLD.password_hash);
            DELETE FROM password_history
            WHERE user_id = OLD.id
              AND id NOT IN (SELECT id FROM password_history WHERE user_id = OLD.id
                             ORDER BY created_at DESC, id DESC LIMIT depth);
        END IF;
        PERFORM log_security_event('password_changed', NEW.id, '{}', 'warning');
    END IF;
    IF NEW.locked_until > now() AND (OLD.locked_until IS NULL OR OLD.locked_until <= now()) THEN
        PERFORM log_security_event('account_locked', NEW.id,
            jsonb_build_object('locked_until', NEW.locked_until, 'failed_login_attempts', NEW.failed_login_attempts),
            'warning');
    END IF;
    IF NEW.email IS DISTINCT FROM OLD.email THEN
        PERFORM log_security_event('email_changed', NEW.id,
            jsonb_build_object('old_email', OLD.email::text, 'new_email', NEW.email::text), 'warning');
    END IF;
    IF NEW.status IS DISTINCT FROM OLD.status THEN
        PERFORM log_security_event('user_status_changed', NEW.id,
            jsonb_build_object('old', OLD.status, 'new', NEW.status), 'warning');
    END IF;
    IF NEW.deleted_at IS NOT NULL AND OLD.deleted_at IS NULL THEN
        PERFORM log_security_event('user_deleted', NEW.id, '{}', 'warning');
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER users_audit AFTER INSERT OR UPDATE ON users
    FOR EACH ROW EXECUTE FUNCTION users_audit();

CREATE FUNCTION group_members_audit() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM log_security_event('group_member_added', NEW.user_id,
            jsonb_build_object('group_id', NEW.group_id, 'role', NEW.role), 'warning');
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM log_security_event('group_member_removed', OLD.user_id,
            jsonb_build_object('group_id', OLD.group_id, 'role', OLD.role), 'warning');
    ELSIF NEW.role IS DISTINCT FROM OLD.role OR NEW.user_id <> OLD.user_id OR NEW.group_id <> OLD.group_id THEN
        PERFORM log_security_event('group_member_changed', NEW.user_id,
            jsonb_build_object('group_id', NEW.group_id, 'old_role', OLD.role, 'new_role', NEW.role), 'warning');
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER group_members_audit AFTER INSERT OR UPDATE OR DELETE ON group_members
    FOR EACH ROW EXECUTE FUNCTION group_members_audit();

CREATE FUNCTION groups_audit() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    IF NEW.permissions IS DISTINCT FROM OLD.permissions THEN
        PERFORM log_security_event('group_permissions_changed', NULL,
            jsonb_build_object('group_id', NEW.id, 'old', OLD.permissions, 'new', NEW.permissions), 'warning');
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER groups_audit AFTER UPDATE ON groups
    FOR EACH ROW EXECUTE FUNCTION groups_audit();

CREATE FUNCTION oauth_clients_audit() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM log_security_event('client_registered', NULL, '{}', 'info', NEW.client_id);
        RETURN NULL;
    END IF;
    IF NEW.client_secret_hash IS DISTINCT FROM OLD.client_secret_hash THEN
        PERFORM log_security_event('client_secret_rotated', NULL,
            jsonb_build_object('old_prefix', OLD.client_secret_prefix, 'new_prefix', NEW.client_secret_prefix),
            'warning', NEW.client_id);
    END IF;
    IF NEW.redirect_uris IS DISTINCT FROM OLD.redirect_uris
       OR NEW.grant_types IS DISTINCT FROM OLD.grant_types
       OR NEW.token_endpoint_auth_method IS DISTINCT FROM OLD.token_endpoint_auth_method
       OR NEW.allow_plain_pkce IS DISTINCT FROM OLD.allow_plain_pkce
       OR NEW.require_pkce IS DISTINCT FROM OLD.require_pkce THEN
        PERFORM log_security_event('client_security_settings_changed', NULL,
            jsonb_build_object('redirect_uris', NEW.redirect_uris, 'grant_types', NEW.grant_types,
                               'token_endpoint_auth_method', NEW.token_endpoint_auth_method,
                               'require_pkce', NEW.require_pkce, 'allow_plain_pkce', NEW.allow_plain_pkce),
            'warning', NEW.client_id);
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER oauth_clients_audit AFTER INSERT OR UPDATE ON oauth_clients
    FOR EACH ROW EXECUTE FUNCTION oauth_clients_audit();

CREATE FUNCTION api_keys_audit() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM log_security_event('api_key_created', NEW.user_id,
            jsonb_build_object('api_key_id', NEW.id, 'prefix', NEW.key_prefix, 'scopes', NEW.scopes));
    ELSIF NEW.revoked_at IS NOT NULL AND OLD.revoked_at IS NULL THEN
        PERFORM log_security_event('api_key_revoked', NEW.user_id,
            jsonb_build_object('api_key_id', NEW.id, 'prefix', NEW.key_prefix));
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER api_keys_audit AFTER INSERT OR UPDATE OF revoked_at ON api_keys
    FOR EACH ROW EXECUTE FUNCTION api_keys_audit();

-- An authorization code must name a registered redirect URI exactly, ask only for
-- the client's scopes, and carry PKCE as the client's settings require: S256,
-- or "plain" only for a client with allow_plain_pkce.
CREATE FUNCTION auth_codes_check_client() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    c oauth_clients%ROWTYPE;
BEGIN
    SELECT * INTO c FROM oauth_clients WHERE client_id = NEW.client_id;
    IF NOT FOUND OR c.disabled_at IS NOT NULL OR NOT ('authorization_code' = ANY (c.grant_types)) THEN
        RAISE EXCEPTION 'client % may not use the authorization code grant', NEW.client_id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'auth_codes_client_allowed';
    END IF;
    IF NOT (NEW.redirect_uri = ANY (c.redirect_uris)) THEN
        RAISE EXCEPTION 'redirect_uri is not registered for client %', NEW.client_id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'auth_codes_redirect_uri_registered';
    END IF;
    IF NOT (NEW.scopes <@ c.scopes) THEN
        RAISE EXCEPTION 'scopes not allowed for client %', NEW.client_id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'auth_codes_scopes_allowed';
    END IF;
    IF c.require_pkce AND NEW.code_challenge IS NULL THEN
        RAISE EXCEPTION 'client % requires PKCE', NEW.client_id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'auth_codes_pkce_required';
    END IF;
    IF NEW.code_challenge_method = 'plain' AND NOT c.allow_plain_pkce THEN
        RAISE EXCEPTION 'PKCE method plain is not allowed for client %', NEW.client_id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'auth_codes_pkce_method_allowed';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER auth_codes_check_client BEFORE INSERT ON auth_codes
    FOR EACH ROW EXECUTE FUNCTION auth_codes_check_client();

-- ---------------------------------------------------------------------------
-- Row level security: the user in app.current_user_id, nothing without one
-- ---------------------------------------------------------------------------

ALTER TABLE users ENABLE ROW LEVEL SECURITY;
CREATE POLICY users_self ON users
    USING (id = app_current_user_id()) WITH CHECK (id = app_current_user_id());

ALTER TABLE password_history ENABLE ROW LEVEL SECURITY;
CREATE POLICY password_history_self ON password_history
    USING (user_id = app_current_user_id()) WITH CHECK (user_id = app_current_user_id());

ALTER TABLE group_members ENABLE ROW LEVEL SECURITY;
CREATE POLICY group_members_self ON group_members
    USING (user_id = app_current_user_id()) WITH CHECK (user_id = app_current_user_id());

ALTER TABLE auth_codes ENABLE ROW LEVEL SECURITY;
CREATE POLICY auth_codes_self ON auth_codes
    USING (user_id = app_current_user_id()) WITH CHECK (user_id = app_current_user_id());

ALTER TABLE tokens ENABLE ROW LEVEL SECURITY;
CREATE POLICY tokens_self ON tokens
    USING (user_id = app_current_user_id()
           OR (user_id IS NULL AND client_id = app_current_client_id()))
    WITH CHECK (user_id = app_current_user_id()
                OR (user_id IS NULL AND client_id = app_current_client_id()));

ALTER TABLE refresh_tokens ENABLE ROW LEVEL SECURITY;
CREATE POLICY refresh_tokens_self ON refresh_tokens
    USING (user_id = app_current_user_id()) WITH CHECK (user_id = app_current_user_id());

ALTER TABLE api_keys ENABLE ROW LEVEL SECURITY;
CREATE POLICY api_keys_self ON api_keys
    USING (user_id = app_current_user_id()) WITH CHECK (user_id = app_current_user_id());

ALTER TABLE user_sessions ENABLE ROW LEVEL SECURITY;
CREATE POLICY user_sessions_self ON user_sessions
    USING (user_id = app_current_user_id()) WITH CHECK (user_id = app_current_user_id());

ALTER TABLE security_events ENABLE ROW LEVEL SECURITY;
CREATE POLICY security_events_read_self ON security_events FOR SELECT
    USING (user_id = app_current_user_id());
CREATE POLICY security_events_insert ON security_events FOR INSERT
    WITH CHECK (user_id IS NULL OR user_id = app_current_user_id());

-- ---------------------------------------------------------------------------
-- Service functions: the narrow cross-user operations
-- ---------------------------------------------------------------------------

-- Does the user in the request context hold a permission through a group?
CREATE FUNCTION app_has_permission(p_permission text) RETURNS boolean
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, public, pg_temp
AS $$
    SELECT EXISTS (
        SELECT 1 FROM group_members gm JOIN groups g ON g.id = gm.group_id
        WHERE gm.user_id = app_current_user_id() AND p_permission = ANY (g.permissions))
$$;

-- Registration: no user context exists yet.
CREATE FUNCTION create_user(p_email text, p_password_hash text, p_display_name text DEFAULT '')
RETURNS uuid
    LANGUAGE sql SECURITY DEFINER
    SET search_path = pg_catalog, public, pg_temp
AS $$
    INSERT INTO users (email, password_hash, display_name)
    VALUES (p_email, p_password_hash, coalesce(p_display_name, ''))
    RETURNING id
$$;

-- Login: the account for an email address (case-insensitive), with what the
-- application needs to verify the password and honour a lockout.
CREATE FUNCTION find_user_for_login(p_email text)
RETURNS TABLE (user_id uuid, password_hash text, status text, locked_until timestamptz,
               password_changed_at timestamptz)
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, public, pg_temp
AS $$
    SELECT u.id, u.password_hash, u.status, u.locked_until, u.password_changed_at
    FROM users u
    WHERE u.email = p_email::citext AND u.deleted_at IS NULL
$$;

-- Account lockout. A failure within failed_login_window of the previous one
-- counts up; older failures start over at one. At max_failed_logins the account
-- is locked for lockout_duration (thresholds: security_settings).
CREATE FUNCTION record_failed_login(p_user_id uuid, p_ip_address inet DEFAULT NULL,
                                    p_user_agent text DEFAULT NULL)
RETURNS TABLE (failed_login_attempts integer, locked_until timestamptz)
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    s security_settings%ROWTYPE;
BEGIN
    SELECT * INTO s FROM security_settings;
    RETURN QUERY
    UPDATE users u
    SET failed_login_attempts = CASE
            WHEN u.last_failed_login_at > now() - s.failed_login_window THEN u.failed_login_attempts + 1
            ELSE 1 END,
        last_failed_login_at = now(),
        locked_until = CASE
            WHEN u.locked_until > now() THEN u.locked_until
            WHEN (CASE WHEN u.last_failed_login_at > now() - s.failed_login_window
                       THEN u.failed_login_attempts + 1 ELSE 1 END) >= s.max_failed_logins
                THEN now() + s.lockout_duration
            ELSE u.locked_until END
    WHERE u.id = p_user_id
    RETURNING u.failed_login_attempts, u.locked_until;
    PERFORM log_security_event('login_failed', p_user_id, '{}', 'info', NULL, p_ip_address, p_user_agent);
END
$$;

-- A successful password check: refused (false) while the account is locked or not
-- active; otherwise resets the failure counter and records the login.
CREATE FUNCTION record_successful_login(p_user_id uuid, p_ip_address inet DEFAULT NULL,
                                        p_user_agent text DEFAULT NULL)
RETURNS boolean
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    allowed boolean;
BEGIN
    UPDATE users u
    SET failed_login_attempts = 0, last_failed_login_at = NULL, locked_until = NULL, last_login_at = now()
    WHERE u.id = p_user_id AND u.deleted_at IS NULL AND u.status = 'active'
      AND (u.locked_until IS NULL OR u.locked_until <= now());
    allowed := FOUND;
    PERFORM log_security_event(CASE WHEN allowed THEN 'login_succeeded' ELSE 'login_refused_locked' END,
                               p_user_id, '{}', CASE WHEN allowed THEN 'info' ELSE 'warning' END,
                               NULL, p_ip_address, p_user_agent);
    RETURN allowed;
END
$$;

CREATE FUNCTION is_account_locked(p_user_id uuid) RETURNS boolean
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, public, pg_temp
AS $$ SELECT coalesce((SELECT locked_until > now() FROM users WHERE id = p_user_id), false) $$;

-- Revoke every access and refresh token of a grant family.
CREATE FUNCTION revoke_token_family(p_family_id uuid, p_reason text DEFAULT 'revoked')
RETURNS integer
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    n_refresh integer;
    n_access integer;
BEGIN
    UPDATE refresh_tokens SET revoked_at = now(), revoked_reason = p_reason
    WHERE family_id = p_family_id AND revoked_at IS NULL;
    GET DIAGNOSTICS n_refresh = ROW_COUNT;
    UPDATE tokens SET revoked_at = now(), revoked_reason = p_reason
    WHERE family_id = p_family_id AND revoked_at IS NULL;
    GET DIAGNOSTICS n_access = ROW_COUNT;
    RETURN n_refresh + n_access;
END
$$;

-- Token endpoint, authorization_code grant: redeem a code exactly once. Checks the
-- client, the redirect URI and PKCE (S256: BASE64URL(SHA256(verifier)) =
-- challenge); refuses a code_verifier when no challenge was sent (PKCE downgrade,
-- RFC 9700 2.1.1). A second redemption revokes everything issued from the code.
-- status: ok | invalid_grant | reused.
CREATE FUNCTION redeem_auth_code(p_code_hash bytea, p_client_id text, p_redirect_uri text,
                                 p_code_verifier text DEFAULT NULL)
RETURNS TABLE (status text, user_id uuid, family_id uuid, scopes text[], nonce text)
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    c auth_codes%ROWTYPE;
    computed text;
BEGIN
    SELECT * INTO c FROM auth_codes WHERE code_hash = p_code_hash FOR UPDATE;
    IF NOT FOUND OR c.client_id <> p_client_id THEN
        RETURN QUERY SELECT 'invalid_grant'::text, NULL::uuid, NULL::uuid, NULL::text[], NULL::text;
        RETURN;
    END IF;
    IF c.used_at IS NOT NULL THEN
        IF c.family_id IS NOT NULL THEN
            PERFORM revoke_token_family(c.family_id, 'auth_code_reuse');
        END IF;
        PERFORM log_security_event('auth_code_reuse', c.user_id,
            jsonb_build_object('auth_code_id', c.id, 'family_id', c.family_id), 'critical', c.client_id);
        RETURN QUERY SELECT 'reused'::text, NULL::uuid, NULL::uuid, NULL::text[], NULL::text;
        RETURN;
    END IF;
    IF c.expires_at <= now() OR c.redirect_uri <> p_redirect_uri THEN
        RETURN QUERY SELECT 'invalid_grant'::text, NULL::uuid, NULL::uuid, NULL::text[], NULL::text;
        RETURN;
    END IF;
    IF c.code_challenge IS NULL THEN
        IF p_code_verifier IS NOT NULL THEN
            RETURN QUERY SELECT 'invalid_grant'::text, NULL::uuid, NULL::uuid, NULL::text[], NULL::text;
            RETURN;
        END IF;
    ELSE
        IF p_code_verifier IS NULL OR p_code_verifier !~ '^[A-Za-z0-9._~-]{43,128}$' THEN
            RETURN QUERY SELECT 'invalid_grant'::text, NULL::uuid, NULL::uuid, NULL::text[], NULL::text;
            RETURN;
        END IF;
        computed := CASE c.code_challenge_method
            WHEN 'S256' THEN rtrim(translate(encode(sha256(convert_to(p_code_verifier, 'UTF8')), 'base64'),
                                             '+/', '-_'), '=')
            ELSE p_code_verifier END;
        IF computed <> c.code_challenge THEN
            RETURN QUERY SELECT 'invalid_grant'::text, NULL::uuid, NULL::uuid, NULL::text[], NULL::text;
            RETURN;
        END IF;
    END IF;
    UPDATE auth_codes SET used_at = now(), family_id = gen_random_uuid()
    WHERE id = c.id
    RETURNING auth_codes.family_id INTO c.family_id;
    RETURN QUERY SELECT 'ok'::text, c.user_id, c.family_id, c.scopes, c.nonce;
END
$$;

-- Token endpoint, refresh_token grant: rotate. The presented token is replaced by
-- the new one (same family). Presenting a token that was already rotated is reuse:
-- the whole family is revoked (RFC 9700 4.14.2) and 'reuse_detected' returned.
-- status: rotated | reuse_detected | revoked | expired | invalid_grant.
CREATE FUNCTION rotate_refresh_token(p_presented_hash bytea, p_client_id text,
                                     p_new_hash bytea, p_new_prefix text, p_new_expires_at timestamptz)
RETURNS TABLE (status text, user_id uuid, family_id uuid, refresh_token_id uuid, scopes text[])
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    t refresh_tokens%ROWTYPE;
    new_id uuid;
BEGIN
    SELECT * INTO t FROM refresh_tokens WHERE token_hash = p_presented_hash FOR UPDATE;
    IF NOT FOUND OR t.client_id <> p_client_id THEN
        RETURN QUERY SELECT 'invalid_grant'::text, NULL::uuid, NULL::uuid, NULL::uuid, NULL::text[];
        RETURN;
    END IF;
    IF t.replaced_by IS NOT NULL THEN
        PERFORM revoke_token_family(t.family_id, 'refresh_token_reuse');
        PERFORM log_security_event('refresh_token_reuse', t.user_id,
            jsonb_build_object('refresh_token_id', t.id, 'family_id', t.family_id), 'critical', t.client_id);
        RETURN QUERY SELECT 'reuse_detected'::text, t.user_id, t.family_id, NULL::uuid, NULL::text[];
        RETURN;
    END IF;
    IF t.revoked_at IS NOT NULL THEN
        RETURN QUERY SELECT 'revoked'::text, t.user_id, t.family_id, NULL::uuid, NULL::text[];
        RETURN;
    END IF;
    IF t.expires_at <= now() THEN
        RETURN QUERY SELECT 'expired'::text, t.user_id, t.family_id, NULL::uuid, NULL::text[];
        RETURN;
    END IF;
    INSERT INTO refresh_tokens (token_hash, token_prefix, family_id, parent_id, client_id, user_id,
                                scopes, expires_at)
    VALUES (p_new_hash, p_new_prefix, t.family_id, t.id, t.client_id, t.user_id, t.scopes, p_new_expires_at)
    RETURNING id INTO new_id;
    UPDATE refresh_tokens
    SET replaced_by = new_id, used_at = now(), revoked_at = now(), revoked_reason = 'rotated'
    WHERE id = t.id;
    RETURN QUERY SELECT 'rotated'::text, t.user_id, t.family_id, new_id, t.scopes;
END
$$;

-- Token introspection (RFC 7662) by the SHA-256 of the presented token.
CREATE FUNCTION introspect_token(p_token_hash bytea)
RETURNS TABLE (active boolean, token_id uuid, user_id uuid, client_id text, scopes text[],
               issued_at timestamptz, expires_at timestamptz)
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    RETURN QUERY
    SELECT true, t.id, t.user_id, t.client_id, t.scopes, t.created_at, t.expires_at
    FROM tokens t
    WHERE t.token_hash = p_token_hash AND t.revoked_at IS NULL AND t.expires_at > now();
    IF NOT FOUND THEN
        RETURN QUERY SELECT false, NULL::uuid, NULL::uuid, NULL::text, NULL::text[], NULL::timestamptz,
                            NULL::timestamptz;
    END IF;
END
$$;

-- API key authentication by the SHA-256 of the presented key; touches
-- last_used_at at most once a minute.
CREATE FUNCTION authenticate_api_key(p_key_hash bytea)
RETURNS TABLE (api_key_id uuid, user_id uuid, scopes text[])
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    RETURN QUERY
    SELECT k.id, k.user_id, k.scopes
    FROM api_keys k JOIN users u ON u.id = k.user_id
    WHERE k.key_hash = p_key_hash AND k.revoked_at IS NULL
      AND (k.expires_at IS NULL OR k.expires_at > now())
      AND u.deleted_at IS NULL AND u.status = 'active';
    UPDATE api_keys SET last_used_at = now()
    WHERE key_hash = p_key_hash AND revoked_at IS NULL
      AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute');
END
$$;

-- Session validation by the SHA-256 of the session cookie: the user when the
-- session is neither revoked nor past its absolute or idle expiry; touches
-- last_seen_at at most once a minute (sliding idle timeout).
CREATE FUNCTION validate_session(p_session_hash bytea)
RETURNS TABLE (session_id uuid, user_id uuid, expires_at timestamptz, idle_expires_at timestamptz)
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    UPDATE user_sessions s SET last_seen_at = now()
    WHERE s.session_hash = p_session_hash AND s.revoked_at IS NULL AND s.idle_expires_at > now()
      AND s.last_seen_at < now() - interval '1 minute';
    RETURN QUERY
    SELECT s.id, s.user_id, s.expires_at, s.idle_expires_at
    FROM user_sessions s
    WHERE s.session_hash = p_session_hash AND s.revoked_at IS NULL AND s.idle_expires_at > now();
END
$$;

-- Admin search by email or display name (trigram index); needs the users:read
-- permission for the user in the request context.
CREATE FUNCTION search_users(p_query text, p_limit integer DEFAULT 20)
RETURNS TABLE (id uuid, email citext, display_name text, status text)
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    IF NOT app_has_permission('users:read') THEN
        RAISE EXCEPTION 'permission users:read required' USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN QUERY
    SELECT u.id, u.email, u.display_name, u.status
    FROM users u
    WHERE (u.email::text || ' ' || u.display_name)
          ILIKE '%' || replace(replace(replace(p_query, '\', '\\'), '%', '\%'), '_', '\_') || '%'
      AND u.deleted_at IS NULL
    ORDER BY u.email
    LIMIT least(greatest(p_limit, 1), 100);
END
$$;

-- Group membership changes need the groups:manage permission of the user in the
-- request context (the runtime role cannot write group_members directly, so no
-- request can add its own user to a group).
CREATE FUNCTION add_group_member(p_group_id uuid, p_user_id uuid, p_role text DEFAULT 'member')
RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    IF NOT app_has_permission('groups:manage') THEN
        RAISE EXCEPTION 'permission groups:manage required' USING ERRCODE = 'insufficient_privilege';
    END IF;
    INSERT INTO group_members (group_id, user_id, role, added_by)
    VALUES (p_group_id, p_user_id, p_role, app_current_user_id())
    ON CONFLICT (group_id, user_id) DO UPDATE SET role = EXCLUDED.role;
END
$$;

CREATE FUNCTION remove_group_member(p_group_id uuid, p_user_id uuid) RETURNS boolean
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    IF NOT app_has_permission('groups:manage') THEN
        RAISE EXCEPTION 'permission groups:manage required' USING ERRCODE = 'insufficient_privilege';
    END IF;
    DELETE FROM group_members WHERE group_id = p_group_id AND user_id = p_user_id;
    RETURN FOUND;
END
$$;

-- Rate limiting: count one request against the (subject, action) bucket in a
-- single atomic statement and say whether it is within p_max_requests per
-- p_window. A bucket whose window has passed starts over.
CREATE FUNCTION check_rate_limit(p_subject text, p_action text, p_max_requests integer,
                                 p_window interval)
RETURNS TABLE (allowed boolean, request_count integer, reset_at timestamptz)
    LANGUAGE sql SECURITY DEFINER
    SET search_path = pg_catalog, public, pg_temp
AS $$
    INSERT INTO rate_limits AS r (subject, action, window_start, reset_at, request_count)
    VALUES (p_subject, p_action, statement_timestamp(), statement_timestamp() + p_window, 1)
    ON CONFLICT (subject, action) DO UPDATE
    SET window_start  = CASE WHEN r.reset_at <= statement_timestamp() THEN statement_timestamp() ELSE r.window_start END,
        reset_at      = CASE WHEN r.reset_at <= statement_timestamp() THEN statement_timestamp() + p_window ELSE r.reset_at END,
        request_count = CASE WHEN r.reset_at <= statement_timestamp() THEN 1
                             ELSE least(r.request_count + 1, p_max_requests + 1) END
    RETURNING r.request_count <= p_max_requests, r.request_count, r.reset_at
$$;

-- ---------------------------------------------------------------------------
-- Cleanup
-- ---------------------------------------------------------------------------

-- Deletes expired authorization codes, access and refresh tokens, sessions past
-- their absolute or idle expiry, rate-limit buckets whose window has passed, and
-- audit events older than security_event_retention. Works in batches of
-- cleanup_batch_size rows (SKIP LOCKED, oldest first, each an index range scan)
-- and stops after cleanup_max_batches per table, so one call never holds many
-- row locks or runs long; call it again (or CALL cleanup_expired_data_all())
-- while "more" is true. Returns the rows removed per table:
--   {"auth_codes": 0, "tokens": 12, ..., "more": false}
CREATE FUNCTION cleanup_expired_data(p_batch_size integer DEFAULT NULL, p_max_batches integer DEFAULT NULL)
RETURNS jsonb
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    s security_settings%ROWTYPE;
    batch integer;
    max_batches integer;
    cutoff timestamptz := now();
    audit_cutoff timestamptz;
    n integer;
    total integer;
    i integer;
    more boolean := false;
    result jsonb := '{}';
    spec record;
BEGIN
    SELECT * INTO s FROM security_settings;
    -- Lets the append-only trigger accept deletes past retention, for this call only.
    PERFORM set_config('app.audit_purge', 'on', true);
    batch := coalesce(p_batch_size, s.cleanup_batch_size);
    max_batches := coalesce(p_max_batches, s.cleanup_max_batches);
    audit_cutoff := now() - s.security_event_retention;
    FOR spec IN
        SELECT * FROM (VALUES
            (1, 'auth_codes', 'id', 'expires_at', cutoff),
            (2, 'tokens', 'id', 'expires_at', cutoff),
            (3, 'refresh_tokens', 'id', 'expires_at', cutoff),
            (4, 'user_sessions', 'id', 'idle_expires_at', cutoff),
            (5, 'rate_limits', 'ctid', 'reset_at', cutoff),
            (6, 'security_events', 'id', 'occurred_at', audit_cutoff)
        ) AS v(ord, tbl, key, col, before) ORDER BY ord
    LOOP
        total := 0;
        FOR i IN 1..max_batches LOOP
            EXECUTE format(
                'DELETE FROM %1$I WHERE %2$I = ANY (ARRAY(SELECT %2$I FROM %1$I WHERE %3$I < $1 '
                'ORDER BY %3$I LIMIT $2 FOR UPDATE SKIP LOCKED))',
                spec.tbl, spec.key, spec.col)
            USING spec.before, batch;
            GET DIAGNOSTICS n = ROW_COUNT;
            total := total + n;
            EXIT WHEN n < batch;
            IF i = max_batches THEN
                more := true;
            END IF;
        END LOOP;
        result := result || jsonb_build_object(spec.tbl, total);
    END LOOP;
    PERFORM set_config('app.audit_purge', '', true);
    RETURN result || jsonb_build_object('more', more);
END
$$;
COMMENT ON FUNCTION cleanup_expired_data(integer, integer) IS
    'Delete expired codes, tokens, sessions, stale rate-limit buckets and audit events past retention, in bounded batches; returns rows removed per table.';

-- Runs cleanup_expired_data() until nothing is left, committing after every
-- round so that locks and WAL stay small. CALL it outside a transaction block.
CREATE PROCEDURE cleanup_expired_data_all(p_batch_size integer DEFAULT NULL)
    LANGUAGE plpgsql
AS $$
DECLARE
    r jsonb;
BEGIN
    LOOP
        r := cleanup_expired_data(p_batch_size, 1);
        COMMIT;
        EXIT WHEN NOT (r ->> 'more')::boolean;
    END LOOP;
END
$$;

-- ---------------------------------------------------------------------------
-- Privileges for the runtime role
-- ---------------------------------------------------------------------------
-- 000_init_database.sql granted the runtime role SELECT, INSERT, UPDATE, DELETE on
-- every table the owner creates. Narrow that here for every grantee but the owner
-- (the runtime role's name is not needed): the audit log is append-only, lockout
-- counters and password history are written by functions only, group membership
-- through the permission-checked functions, rate limits through
-- check_rate_limit(), settings by the owner.
DO $privileges$
DECLARE
    spec record;
    g record;
BEGIN
    FOR spec IN SELECT * FROM (VALUES
        ('security_settings', 'INSERT, UPDATE, DELETE, TRUNCATE'),
        ('security_events',   'UPDATE, DELETE, TRUNCATE'),
        ('password_history',  'INSERT, UPDATE, DELETE, TRUNCATE'),
        ('group_members',     'INSERT, UPDATE, DELETE, TRUNCATE'),
        ('rate_limits',       'SELECT, INSERT, UPDATE, DELETE, TRUNCATE'),
        ('users',             'UPDATE, DELETE, TRUNCATE'),
        ('groups',            'TRUNCATE'),
        ('oauth_clients',     'TRUNCATE'),
        ('auth_codes',        'TRUNCATE'),
        ('tokens',            'TRUNCATE'),
        ('refresh_tokens',    'TRUNCATE'),
        ('api_keys',          'TRUNCATE'),
        ('user_sessions',     'TRUNCATE')
    ) AS v(tbl, privs)
    LOOP
        FOR g IN
            SELECT DISTINCT a.grantee, bool_or(a.privilege_type = 'UPDATE') OVER (PARTITION BY a.grantee) AS had_update
            FROM pg_class c, aclexplode(c.relacl) a
            WHERE c.oid = format('public.%I', spec.tbl)::regclass AND a.grantee <> c.relowner
        LOOP
            EXECUTE format('REVOKE %s ON public.%I FROM %s', spec.privs, spec.tbl,
                           CASE WHEN g.grantee = 0 THEN 'PUBLIC' ELSE g.grantee::regrole::text END);
            -- The application may edit a user's profile and password (the password
            -- policy trigger applies), not the lockout counters or timestamps.
            IF spec.tbl = 'users' AND g.had_update AND g.grantee <> 0 THEN
                EXECUTE format('GRANT UPDATE (email, display_name, password_hash, status, email_verified_at, '
                               'deleted_at) ON public.users TO %s', g.grantee::regrole::text);
            END IF;
        END LOOP;
    END LOOP;

    -- Migration history: readable, not writable, by anyone but its owner.
    IF to_regclass('public.schema_migrations') IS NOT NULL
       AND (SELECT relowner FROM pg_class WHERE oid = to_regclass('public.schema_migrations'))
           = (SELECT oid FROM pg_roles WHERE rolname = current_user) THEN
        FOR g IN
            SELECT DISTINCT a.grantee FROM pg_class c, aclexplode(c.relacl) a
            WHERE c.oid = to_regclass('public.schema_migrations') AND a.grantee <> c.relowner
        LOOP
            EXECUTE format('REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON public.schema_migrations FROM %s',
                           CASE WHEN g.grantee = 0 THEN 'PUBLIC' ELSE g.grantee::regrole::text END);
        END LOOP;
    END IF;

    -- No function of this schema is executable by PUBLIC, whatever the default
    -- privileges (000 grants EXECUTE to the runtime role).
    FOR g IN
        SELECT p.oid::regprocedure AS sig, p.prokind FROM pg_proc p
        WHERE p.pronamespace = 'public'::regnamespace AND p.proowner = (SELECT oid FROM pg_roles WHERE rolname = current_user)
    LOOP
        EXECUTE format('REVOKE EXECUTE ON %s %s FROM PUBLIC',
                       CASE WHEN g.prokind = 'p' THEN 'PROCEDURE' ELSE 'FUNCTION' END, g.sig);
    END LOOP;

    -- Internal helpers of the definer functions and triggers: writing an audit
    -- event for any user, revoking any grant family. Not for the application.
    FOR g IN
        SELECT DISTINCT p.oid::regprocedure AS sig, a.grantee
        FROM pg_proc p, aclexplode(p.proacl) a
        WHERE p.oid IN ('log_security_event(text, uuid, jsonb, text, text, inet, text)'::regprocedure,
                        'revoke_token_family(uuid, text)'::regprocedure)
          AND a.grantee <> p.proowner
    LOOP
        EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM %s', g.sig,
                       CASE WHEN g.grantee = 0 THEN 'PUBLIC' ELSE g.grantee::regrole::text END);
    END LOOP;
END
$privileges$;
