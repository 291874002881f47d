-- Migration: 002_security_invariants
-- Description: the schema's security invariants hold against any SQL the runtime role
--              sends: final revocation and redemption, server-set times, capped
--              lifetimes, audited permission-checked writes to groups and clients,
--              disabled users and clients stop working at once.
-- migrate:allow scan public.security_settings: a one-row table (its singleton key), so the new columns' CHECKs read one row
--
-- Runs as the owner role in one transaction, after 001 (which it does not change).
--
-- Who the checks bind. Every guard trigger below binds every role that does not
-- hold the owner's privileges (pg_has_role(current_user, <table owner>, 'USAGE')):
-- the runtime role, and any other login role. The owner itself is trusted: it owns
-- the tables and triggers and could drop them anyway; its data migrations may
-- repair or backdate rows, and the SECURITY DEFINER service functions (which run as
-- the owner) are the reviewed write path for security state. The trigger
-- functions are deliberately NOT security definer, so that current_user is the
-- role that sent the statement.
--
-- What the runtime role keeps, table by table (001 narrowed some already):
--   auth_codes       SELECT, INSERT                         (redeemed by redeem_auth_code())
--   tokens           SELECT, INSERT, UPDATE (revoked_at, revoked_reason)
--   refresh_tokens   SELECT, INSERT, UPDATE (revoked_at, revoked_reason)   (rotate_refresh_token())
--   user_sessions    SELECT, INSERT, UPDATE (revoked_at, revoked_reason)   (validate_session())
--   api_keys         SELECT, INSERT, UPDATE (name, revoked_at)
--   groups           SELECT                                 (create_group() / update_group() / delete_group())
--   oauth_clients    SELECT                                 (create_oauth_client() / update_oauth_client() /
--                                                            disable_oauth_client() / delete_oauth_client(),
--                                                            register_oauth_client() for dynamic registration)
-- No DELETE on credentials: deleting a revoked row and inserting it again would
-- un-revoke it; cleanup_expired_data() removes expired rows.

-- ---------------------------------------------------------------------------
-- Settings: lifetime caps
-- ---------------------------------------------------------------------------

ALTER TABLE security_settings
    ADD COLUMN max_access_token_lifetime  interval NOT NULL DEFAULT '1 day'
        CHECK (max_access_token_lifetime > '0'),
    ADD COLUMN max_refresh_token_lifetime interval NOT NULL DEFAULT '90 days'
        CHECK (max_refresh_token_lifetime > '0'),
    ADD COLUMN max_session_lifetime       interval NOT NULL DEFAULT '30 days'
        CHECK (max_session_lifetime > '0'),
    ADD COLUMN dynamic_client_scopes      text[]   NOT NULL DEFAULT '{openid,profile,email,offline_access}';
COMMENT ON COLUMN security_settings.max_access_token_lifetime IS
    'Longest lifetime (expires_at - now()) of an access token inserted by a non-owner role.';
COMMENT ON COLUMN security_settings.max_refresh_token_lifetime IS
    'Longest lifetime of a refresh token, at insert and through rotate_refresh_token().';
COMMENT ON COLUMN security_settings.dynamic_client_scopes IS
    'The scopes a client registered through register_oauth_client() (RFC 7591, no permission) may ask for.';
COMMENT ON COLUMN security_settings.max_session_lifetime IS
    'Longest absolute lifetime (and idle timeout) of a session inserted by a non-owner role.';

-- ---------------------------------------------------------------------------
-- Helpers
-- ---------------------------------------------------------------------------

-- Does the role running the statement hold the owner's privileges on this table
-- (the owner, a member of it, a superuser)? Those roles are not bound by the guards.
-- Names qualified instead of a pinned search_path, so that the planner inlines it.
CREATE FUNCTION acting_as_owner(p_table oid) RETURNS boolean
    LANGUAGE sql STABLE
AS $$
    SELECT pg_catalog.pg_has_role(
        CURRENT_USER, (SELECT c.relowner FROM pg_catalog.pg_class c WHERE c.oid = p_table), 'USAGE')
$$;

-- The permissions the user in the request context holds through its groups.
CREATE FUNCTION app_permissions() RETURNS text[]
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, public, pg_temp
AS $$
    SELECT coalesce(array_agg(DISTINCT p), '{}')
    FROM group_members gm JOIN groups g ON g.id = gm.group_id, unnest(g.permissions) AS p
    WHERE gm.user_id = app_current_user_id()
$$;

-- Refuse (42501) unless the user in the request context holds p_permission and,
-- when p_grants is given, every permission in it: nobody hands out a permission it
-- does not hold itself (no escalation through a group it manages).
CREATE FUNCTION app_require_permission(p_permission text, p_grants text[] DEFAULT '{}')
RETURNS void
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    held text[] := app_permissions();
BEGIN
    IF NOT (p_permission = ANY (held)) THEN
        RAISE EXCEPTION 'permission % required', p_permission USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF NOT (coalesce(p_grants, '{}') <@ held) THEN
        RAISE EXCEPTION 'cannot hand out permissions the acting user does not hold: %',
            ARRAY(SELECT unnest(p_grants) EXCEPT SELECT unnest(held))
            USING ERRCODE = 'insufficient_privilege';
    END IF;
END
$$;

-- ---------------------------------------------------------------------------
-- Authorization codes: server-set times, single use for good
-- ---------------------------------------------------------------------------

CREATE FUNCTION auth_codes_guard() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND OLD.used_at IS NOT NULL AND NEW.used_at IS DISTINCT FROM OLD.used_at THEN
        -- Binds the owner too: no legitimate path un-redeems a code.
        RAISE EXCEPTION 'auth_codes.used_at is final: a redeemed code stays redeemed'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF acting_as_owner(TG_RELID) THEN
        RETURN NEW;
    END IF;
    IF TG_OP = 'INSERT' THEN
        -- The lifetime check (auth_codes_short_lived) measures from the server's clock.
        NEW.created_at := now();
        NEW.used_at := NULL;
        NEW.family_id := NULL;
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'auth_codes rows are changed only by redeem_auth_code()'
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER auth_codes_guard BEFORE INSERT OR UPDATE ON auth_codes
    FOR EACH ROW EXECUTE FUNCTION auth_codes_guard();

-- ---------------------------------------------------------------------------
-- Tokens, refresh tokens, sessions, API keys: revocation is final, lifetimes capped
-- ---------------------------------------------------------------------------

CREATE FUNCTION credentials_guard() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    cap interval;
BEGIN
    IF TG_OP = 'UPDATE' THEN
        -- Binds the owner too: nothing legitimate un-revokes a credential.
        IF OLD.revoked_at IS NOT NULL AND NEW.revoked_at IS DISTINCT FROM OLD.revoked_at THEN
            RAISE EXCEPTION '%.revoked_at is final: a revoked credential stays revoked', TG_TABLE_NAME
                USING ERRCODE = 'insufficient_privilege';
        END IF;
        IF acting_as_owner(TG_RELID) THEN
            RETURN NEW;
        END IF;
        IF TG_TABLE_NAME <> 'api_keys' AND OLD.revoked_at IS NOT NULL THEN
            -- Nested: api_keys has no revoked_reason (plpgsql evaluates the whole condition).
            IF NEW.revoked_reason IS DISTINCT FROM OLD.revoked_reason THEN
                RAISE EXCEPTION '%.revoked_reason is final once revoked', TG_TABLE_NAME
                    USING ERRCODE = 'insufficient_privilege';
            END IF;
        END IF;
        IF OLD.expires_at IS NOT NULL AND (NEW.expires_at IS NULL OR NEW.expires_at > OLD.expires_at) THEN
            RAISE EXCEPTION '%.expires_at cannot be extended', TG_TABLE_NAME
                USING ERRCODE = 'insufficient_privilege';
        END IF;
        RETURN NEW;
    END IF;
    IF acting_as_owner(TG_RELID) THEN
        RETURN NEW;
    END IF;
    -- INSERT by a non-owner role: the server's clock, and a capped lifetime.
    NEW.created_at := now();
    CASE TG_TABLE_NAME
        WHEN 'tokens' THEN
            cap := (SELECT s.max_access_token_lifetime FROM security_settings s);
        WHEN 'refresh_tokens' THEN
            cap := (SELECT s.max_refresh_token_lifetime FROM security_settings s);
            NEW.used_at := NULL;
            NEW.replaced_by := NULL;
        WHEN 'user_sessions' THEN
            cap := (SELECT s.max_session_lifetime FROM security_settings s);
            NEW.last_seen_at := now();
            IF NEW.idle_timeout > cap THEN
                RAISE EXCEPTION 'user_sessions.idle_timeout exceeds max_session_lifetime (%)', cap
                    USING ERRCODE = 'check_violation', CONSTRAINT = 'user_sessions_lifetime_capped';
            END IF;
        ELSE
            NEW.last_used_at := NULL;  -- api_keys: may live without expiry, as before
    END CASE;
    IF cap IS NOT NULL AND NEW.expires_at > now() + cap THEN
        RAISE EXCEPTION '%.expires_at is more than % from now', TG_TABLE_NAME, cap
            USING ERRCODE = 'check_violation', CONSTRAINT = TG_TABLE_NAME || '_lifetime_capped';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER tokens_guard BEFORE INSERT OR UPDATE ON tokens
    FOR EACH ROW EXECUTE FUNCTION credentials_guard();
CREATE TRIGGER refresh_tokens_guard BEFORE INSERT OR UPDATE ON refresh_tokens
    FOR EACH ROW EXECUTE FUNCTION credentials_guard();
-- Not on every UPDATE: validate_session() touches last_seen_at on the hot path.
CREATE TRIGGER user_sessions_guard BEFORE INSERT OR UPDATE OF revoked_at, revoked_reason, expires_at
    ON user_sessions FOR EACH ROW EXECUTE FUNCTION credentials_guard();
CREATE TRIGGER api_keys_guard BEFORE INSERT OR UPDATE OF revoked_at, expires_at
    ON api_keys FOR EACH ROW EXECUTE FUNCTION credentials_guard();

-- ---------------------------------------------------------------------------
-- Audit log: the server sets who and when
-- ---------------------------------------------------------------------------

CREATE FUNCTION security_events_server_fields() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    IF NOT acting_as_owner(TG_RELID) THEN
        NEW.occurred_at := now();
        NEW.db_role := session_user;
        NEW.actor_user_id := app_current_user_id();
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER security_events_server_fields BEFORE INSERT ON security_events
    FOR EACH ROW EXECUTE FUNCTION security_events_server_fields();

-- ---------------------------------------------------------------------------
-- Users: soft delete is final; reactivation needs users:manage; disabling ends
-- the user's tokens and sessions at once
-- ---------------------------------------------------------------------------

CREATE FUNCTION users_guard() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    IF acting_as_owner(TG_RELID) THEN
        RETURN NEW;
    END IF;
    IF OLD.deleted_at IS NOT NULL AND NEW.deleted_at IS DISTINCT FROM OLD.deleted_at THEN
        RAISE EXCEPTION 'users.deleted_at is final: a deleted account stays deleted'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF OLD.status IN ('suspended', 'disabled') AND NEW.status IN ('active', 'pending')
       AND NOT app_has_permission('users:manage') THEN
        RAISE EXCEPTION 'permission users:manage required to reactivate an account'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER users_guard BEFORE UPDATE OF status, deleted_at ON users
    FOR EACH ROW EXECUTE FUNCTION users_guard();

CREATE FUNCTION users_revoke_when_disabled() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    reason text := CASE WHEN NEW.deleted_at IS NOT NULL THEN 'user_deleted' ELSE 'user_' || NEW.status END;
    n_access integer;
    n_refresh integer;
    n_sessions integer;
BEGIN
    IF NOT ((NEW.status IN ('suspended', 'disabled') AND OLD.status NOT IN ('suspended', 'disabled'))
            OR (NEW.deleted_at IS NOT NULL AND OLD.deleted_at IS NULL)) THEN
        RETURN NULL;
    END IF;
    UPDATE tokens SET revoked_at = now(), revoked_reason = reason
    WHERE user_id = NEW.id AND revoked_at IS NULL;
    GET DIAGNOSTICS n_access = ROW_COUNT;
    UPDATE refresh_tokens SET revoked_at = now(), revoked_reason = reason
    WHERE user_id = NEW.id AND revoked_at IS NULL;
    GET DIAGNOSTICS n_refresh = ROW_COUNT;
    UPDATE user_sessions SET revoked_at = now(), revoked_reason = reason
    WHERE user_id = NEW.id AND revoked_at IS NULL;
    GET DIAGNOSTICS n_sessions = ROW_COUNT;
    IF n_access + n_refresh + n_sessions > 0 THEN
        PERFORM log_security_event('user_credentials_revoked', NEW.id,
            jsonb_build_object('reason', reason, 'tokens', n_access, 'refresh_tokens', n_refresh,
                               'sessions', n_sessions), 'warning');
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER users_revoke_when_disabled AFTER UPDATE OF status, deleted_at ON users
    FOR EACH ROW EXECUTE FUNCTION users_revoke_when_disabled();

-- An administrator suspends, disables or reactivates another user (row level
-- security limits a plain UPDATE to the request's own row); needs users:manage.
-- Audited by users_audit (user_status_changed, with the acting user); a deleted
-- account is left alone.
--   SELECT set_user_status('6f1c...', 'disabled');
CREATE FUNCTION set_user_status(p_user_id uuid, p_status text) RETURNS boolean
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    PERFORM app_require_permission('users:manage');
    UPDATE users SET status = p_status WHERE id = p_user_id AND deleted_at IS NULL;
    RETURN FOUND;
END
$$;

-- ---------------------------------------------------------------------------
-- OAuth clients: disabling revokes the client's tokens; deletion is audited
-- ---------------------------------------------------------------------------

-- Runs on a rare admin action; tokens has no index leading with client_id, so
-- this is one scan of tokens (refused at every check anyway, see introspect_token).
CREATE FUNCTION oauth_clients_revoke_when_disabled() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    n_access integer;
    n_refresh integer;
BEGIN
    IF NEW.disabled_at IS NULL OR OLD.disabled_at IS NOT NULL THEN
        RETURN NULL;
    END IF;
    UPDATE tokens SET revoked_at = now(), revoked_reason = 'client_disabled'
    WHERE client_id = NEW.client_id AND revoked_at IS NULL;
    GET DIAGNOSTICS n_access = ROW_COUNT;
    UPDATE refresh_tokens SET revoked_at = now(), revoked_reason = 'client_disabled'
    WHERE client_id = NEW.client_id AND revoked_at IS NULL;
    GET DIAGNOSTICS n_refresh = ROW_COUNT;
    PERFORM log_security_event('client_disabled', NULL,
        jsonb_build_object('tokens', n_access, 'refresh_tokens', n_refresh), 'warning', NEW.client_id);
    RETURN NULL;
END
$$;
CREATE TRIGGER oauth_clients_revoke_when_disabled AFTER UPDATE OF disabled_at ON oauth_clients
    FOR EACH ROW EXECUTE FUNCTION oauth_clients_revoke_when_disabled();

CREATE FUNCTION oauth_clients_audit_delete() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    PERFORM log_security_event('client_deleted', NULL,
        jsonb_build_object('client_name', OLD.client_name, 'redirect_uris', OLD.redirect_uris),
        'warning', OLD.client_id);
    RETURN NULL;
END
$$;
CREATE TRIGGER oauth_clients_audit_delete AFTER DELETE ON oauth_clients
    FOR EACH ROW EXECUTE FUNCTION oauth_clients_audit_delete();

-- Columns a client may be registered or updated with (not its timestamps).
CREATE FUNCTION oauth_client_columns(p_values jsonb, p_allow_id boolean) RETURNS text[]
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    allowed text[] := ARRAY(
        SELECT a.attname::text FROM pg_attribute a
        WHERE a.attrelid = 'public.oauth_clients'::regclass AND a.attnum > 0 AND NOT a.attisdropped
          AND a.attname NOT IN ('created_at', 'updated_at', 'client_id_issued_at')
          AND (p_allow_id OR a.attname <> 'client_id'));
    unknown text[];
BEGIN
    IF jsonb_typeof(p_values) IS DISTINCT FROM 'object' THEN
        RAISE EXCEPTION 'client metadata must be a JSON object' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    unknown := ARRAY(SELECT k FROM jsonb_object_keys(p_values) k WHERE NOT (k = ANY (allowed)));
    IF cardinality(unknown) > 0 THEN
        RAISE EXCEPTION 'unknown or read-only client fields: %', unknown USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN ARRAY(SELECT k FROM jsonb_object_keys(p_values) k ORDER BY k);
END
$$;

-- Register a client; needs clients:manage. p_client holds oauth_clients columns
-- (client_id, client_name, redirect_uris, ...); the others keep their defaults.
--   SELECT create_oauth_client('{"client_id": "web-app-01", "client_name": "Web", ...}');
CREATE FUNCTION create_oauth_client(p_client jsonb) RETURNS text
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    cols text;
    new_id text;
BEGIN
    PERFORM app_require_permission('clients:manage');
    SELECT string_agg(quote_ident(c), ', ') INTO cols FROM unnest(oauth_client_columns(p_client, true)) c;
    EXECUTE format('INSERT INTO oauth_clients (%1$s) SELECT %1$s FROM jsonb_populate_record(NULL::oauth_clients, $1) '
                   'RETURNING client_id', cols)
        INTO new_id USING p_client;
    RETURN new_id;  -- audited by oauth_clients_audit (client_registered)
END
$$;

-- Dynamic client registration (RFC 7591): open to the application without a
-- permission, so it grants only what a self-registered client may hold: the server
-- picks the client_id, PKCE (S256) is required, the grants are authorization_code
-- and refresh_token, the scopes come from security_settings.dynamic_client_scopes,
-- and nothing that an administrator decides (disabled_at, require_pkce, ...) can
-- be set. Audited by oauth_clients_audit (client_registered).
--   SELECT register_oauth_client('{"client_name": "CLI", "redirect_uris": ["http://127.0.0.1:8765/cb"],
--                                  "token_endpoint_auth_method": "none"}');
CREATE FUNCTION register_oauth_client(p_metadata jsonb) RETURNS text
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    self_service constant text[] := ARRAY[
        'client_name', 'client_uri', 'logo_uri', 'tos_uri', 'policy_uri', 'contacts', 'redirect_uris',
        'grant_types', 'response_types', 'token_endpoint_auth_method', 'scopes', 'jwks_uri', 'jwks',
        'software_id', 'software_version', 'client_secret_hash', 'client_secret_prefix',
        'client_secret_expires_at', 'registration_access_token_hash'];
    requested oauth_clients;
    refused_fields text[];
    cols text;
    new_id text := 'dyn-' || replace(gen_random_uuid()::text, '-', '');
BEGIN
    IF jsonb_typeof(p_metadata) IS DISTINCT FROM 'object' THEN
        RAISE EXCEPTION 'client metadata must be a JSON object' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    refused_fields := ARRAY(SELECT k FROM jsonb_object_keys(p_metadata) k WHERE NOT (k = ANY (self_service)));
    IF cardinality(refused_fields) > 0 THEN
        RAISE EXCEPTION 'a self-registered client cannot set %', refused_fields
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    requested := jsonb_populate_record(NULL::oauth_clients, p_metadata);
    IF NOT coalesce(requested.grant_types, '{authorization_code,refresh_token}')
           <@ ARRAY['authorization_code', 'refresh_token'] THEN
        RAISE EXCEPTION 'a self-registered client may use the authorization_code and refresh_token grants only'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF NOT coalesce(requested.scopes, '{}') <@ (SELECT s.dynamic_client_scopes FROM security_settings s) THEN
        RAISE EXCEPTION 'a self-registered client may ask for the scopes in security_settings.dynamic_client_scopes only'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    SELECT string_agg(quote_ident(k), ', ') INTO cols FROM jsonb_object_keys(p_metadata) k;
    EXECUTE format('INSERT INTO oauth_clients (client_id, require_pkce, allow_plain_pkce%1$s) '
                   'SELECT $2, true, false%1$s FROM jsonb_populate_record(NULL::oauth_clients, $1)',
                   coalesce(', ' || cols, ''))
        USING p_metadata, new_id;
    RETURN new_id;
END
$$;

-- Change a client's metadata (redirect URIs, PKCE, scopes, secret, disabled_at);
-- needs clients:manage; audited (client_updated, plus 001's specific events).
CREATE FUNCTION update_oauth_client(p_client_id text, p_changes jsonb) RETURNS boolean
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    keys text[];
    cols text;
    n integer;
BEGIN
    PERFORM app_require_permission('clients:manage');
    keys := oauth_client_columns(p_changes, false);
    IF cardinality(keys) = 0 THEN
        RETURN EXISTS (SELECT 1 FROM oauth_clients WHERE client_id = p_client_id);
    END IF;
    SELECT string_agg(quote_ident(c), ', ') INTO cols FROM unnest(keys) c;
    EXECUTE format('UPDATE oauth_clients SET (%1$s) = (SELECT %1$s FROM jsonb_populate_record(NULL::oauth_clients, $2)) '
                   'WHERE client_id = $1', cols)
        USING p_client_id, p_changes;
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n > 0 THEN
        PERFORM log_security_event('client_updated', NULL, jsonb_build_object('fields', keys), 'warning', p_client_id);
    END IF;
    RETURN n > 0;
END
$$;

CREATE FUNCTION disable_oauth_client(p_client_id text) RETURNS boolean
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    PERFORM app_require_permission('clients:manage');
    UPDATE oauth_clients SET disabled_at = now() WHERE client_id = p_client_id AND disabled_at IS NULL;
    RETURN FOUND;  -- audited and its tokens revoked by oauth_clients_revoke_when_disabled
END
$$;

-- Delete a client and, by cascade, its codes and tokens; needs clients:manage.
CREATE FUNCTION delete_oauth_client(p_client_id text) RETURNS boolean
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    PERFORM app_require_permission('clients:manage');
    DELETE FROM oauth_clients WHERE client_id = p_client_id;
    RETURN FOUND;  -- audited by oauth_clients_audit_delete (client_deleted)
END
$$;

-- ---------------------------------------------------------------------------
-- Groups: written through permission-checked, audited functions only
-- ---------------------------------------------------------------------------

CREATE FUNCTION groups_audit_lifecycle() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM log_security_event('group_created', NULL,
            jsonb_build_object('group_id', NEW.id, 'name', NEW.name, 'permissions', NEW.permissions), 'warning');
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM log_security_event('group_deleted', NULL,
            jsonb_build_object('group_id', OLD.id, 'name', OLD.name, 'permissions', OLD.permissions), 'warning');
    ELSIF NEW.name IS DISTINCT FROM OLD.name OR NEW.description IS DISTINCT FROM OLD.description THEN
        PERFORM log_security_event('group_renamed', NULL,
            jsonb_build_object('group_id', NEW.id, 'old', OLD.name, 'new', NEW.name));
    END IF;
    RETURN NULL;  -- permission changes: groups_audit (group_permissions_changed)
END
$$;
CREATE TRIGGER groups_audit_lifecycle AFTER INSERT OR UPDATE OR DELETE ON groups
    FOR EACH ROW EXECUTE FUNCTION groups_audit_lifecycle();

-- Needs groups:manage and every permission the group grants.
CREATE FUNCTION create_group(p_name text, p_description text DEFAULT '', p_permissions text[] DEFAULT '{}')
RETURNS uuid
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    new_id uuid;
BEGIN
    PERFORM app_require_permission('groups:manage', p_permissions);
    INSERT INTO groups (name, description, permissions)
    VALUES (p_name, coalesce(p_description, ''), coalesce(p_permissions, '{}'))
    RETURNING id INTO new_id;
    RETURN new_id;
END
$$;

-- NULL arguments leave a field as it is. Needs groups:manage and every permission
-- the group grants, before and after.
CREATE FUNCTION update_group(p_group_id uuid, p_name text DEFAULT NULL, p_description text DEFAULT NULL,
                             p_permissions text[] DEFAULT NULL)
RETURNS boolean
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    current_permissions text[];
BEGIN
    SELECT permissions INTO current_permissions FROM groups WHERE id = p_group_id FOR UPDATE;
    PERFORM app_require_permission('groups:manage',
                                   coalesce(current_permissions, '{}') || coalesce(p_permissions, '{}'));
    UPDATE groups
    SET name = coalesce(p_name, name), description = coalesce(p_description, description),
        permissions = coalesce(p_permissions, permissions)
    WHERE id = p_group_id;
    RETURN FOUND;
END
$$;

CREATE FUNCTION delete_group(p_group_id uuid) RETURNS boolean
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    PERFORM app_require_permission('groups:manage',
                                   (SELECT permissions FROM groups WHERE id = p_group_id));
    DELETE FROM groups WHERE id = p_group_id;  -- members cascade, each audited
    RETURN FOUND;
END
$$;

-- Membership: as in 001, plus the actor must hold every permission of the group.
CREATE OR REPLACE FUNCTION add_group_member(p_group_id uuid, p_user_id uuid, p_role text DEFAULT 'member')
RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    PERFORM app_require_permission('groups:manage',
                                   (SELECT permissions FROM groups WHERE id = p_group_id));
    INSERT INTO group_members (group_id, user_id, role, added_by)
    VALUES (p_group_id, p_user_id, p_role, app_current_user_id())
    ON CONFLICT (group_id, user_id) DO UPDATE SET role = EXCLUDED.role;
END
$$;

CREATE OR REPLACE FUNCTION remove_group_member(p_group_id uuid, p_user_id uuid) RETURNS boolean
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    PERFORM app_require_permission('groups:manage',
                                   (SELECT permissions FROM groups WHERE id = p_group_id));
    DELETE FROM group_members WHERE group_id = p_group_id AND user_id = p_user_id;
    RETURN FOUND;
END
$$;

-- ---------------------------------------------------------------------------
-- Service functions: disabled or deleted users and disabled clients are refused
-- ---------------------------------------------------------------------------

-- As in 001, and 'invalid_grant' when the code's user is not active (disabled,
-- suspended, pending, deleted) or its client is disabled.
CREATE OR REPLACE FUNCTION redeem_auth_code(p_code_hash bytea, p_client_id text, p_redirect_uri text,
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
    IF c.expires_at <= now() OR c.redirect_uri <> p_redirect_uri
       OR NOT EXISTS (SELECT 1 FROM users u WHERE u.id = c.user_id AND u.status = 'active' AND u.deleted_at IS NULL)
       OR NOT EXISTS (SELECT 1 FROM oauth_clients oc WHERE oc.client_id = c.client_id AND oc.disabled_at IS NULL) THEN
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

-- As in 001, and: 'invalid_grant' when the token's user is not active or its
-- client is disabled; the new token's expiry is capped at
-- security_settings.max_refresh_token_lifetime from now.
CREATE OR REPLACE FUNCTION rotate_refresh_token(p_presented_hash bytea, p_client_id text,
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
    IF NOT EXISTS (SELECT 1 FROM users u WHERE u.id = t.user_id AND u.status = 'active' AND u.deleted_at IS NULL)
       OR NOT EXISTS (SELECT 1 FROM oauth_clients oc WHERE oc.client_id = t.client_id AND oc.disabled_at IS NULL) THEN
        RETURN QUERY SELECT 'invalid_grant'::text, NULL::uuid, NULL::uuid, NULL::uuid, NULL::text[];
        RETURN;
    END IF;
    INSERT INTO refresh_tokens (token_hash, token_prefix, family_id, parent_id, client_id, user_id,
                                scopes, expires_at)
    VALUES (p_new_hash, p_new_prefix, t.family_id, t.id, t.client_id, t.user_id, t.scopes,
            least(p_new_expires_at, now() + (SELECT s.max_refresh_token_lifetime FROM security_settings s)))
    RETURNING id INTO new_id;
    UPDATE refresh_tokens
    SET replaced_by = new_id, used_at = now(), revoked_at = now(), revoked_reason = 'rotated'
    WHERE id = t.id;
    RETURN QUERY SELECT 'rotated'::text, t.user_id, t.family_id, new_id, t.scopes;
END
$$;

-- As in 001, and inactive when the token's user is not active or its client is
-- disabled (two primary-key lookups).
CREATE OR REPLACE FUNCTION introspect_token(p_token_hash bytea)
RETURNS TABLE (active boolean, token_id uuid, user_id uuid, client_id text, scopes text[],
               issued_at timestamptz, expires_at timestamptz)
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    RETURN QUERY
    SELECT true, t.id, t.user_id, t.client_id, t.scopes, t.created_at, t.expires_at
    FROM tokens t
    JOIN oauth_clients c ON c.client_id = t.client_id AND c.disabled_at IS NULL
    LEFT JOIN users u ON u.id = t.user_id
    WHERE t.token_hash = p_token_hash AND t.revoked_at IS NULL AND t.expires_at > now()
      AND (t.user_id IS NULL OR (u.status = 'active' AND u.deleted_at IS NULL));
    IF NOT FOUND THEN
        RETURN QUERY SELECT false, NULL::uuid, NULL::uuid, NULL::text, NULL::text[], NULL::timestamptz,
                            NULL::timestamptz;
    END IF;
END
$$;

-- As in 001, and nothing (not even the idle-timeout touch) for a user who is not
-- active.
CREATE OR REPLACE FUNCTION validate_session(p_session_hash bytea)
RETURNS TABLE (session_id uuid, user_id uuid, expires_at timestamptz, idle_expires_at timestamptz)
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    UPDATE user_sessions s SET last_seen_at = now()
    FROM users u
    WHERE s.session_hash = p_session_hash AND s.revoked_at IS NULL AND s.idle_expires_at > now()
      AND s.last_seen_at < now() - interval '1 minute'
      AND u.id = s.user_id AND u.status = 'active' AND u.deleted_at IS NULL;
    RETURN QUERY
    SELECT s.id, s.user_id, s.expires_at, s.idle_expires_at
    FROM user_sessions s JOIN users u ON u.id = s.user_id
    WHERE s.session_hash = p_session_hash AND s.revoked_at IS NULL AND s.idle_expires_at > now()
      AND u.status = 'active' AND u.deleted_at IS NULL;
END
$$;

-- ---------------------------------------------------------------------------
-- Privileges for every grantee other than the owner (the runtime role)
-- ---------------------------------------------------------------------------
DO $privileges$
DECLARE
    spec record;
    g record;
    grantee text;
BEGIN
    FOR spec IN SELECT * FROM (VALUES
        ('auth_codes',     'UPDATE, DELETE', NULL),
        ('tokens',         'UPDATE, DELETE', 'revoked_at, revoked_reason'),
        ('refresh_tokens', 'UPDATE, DELETE', 'revoked_at, revoked_reason'),
        ('user_sessions',  'UPDATE, DELETE', 'revoked_at, revoked_reason'),
        ('api_keys',       'UPDATE, DELETE', 'name, revoked_at'),
        ('groups',         'INSERT, UPDATE, DELETE', NULL),
        ('oauth_clients',  'INSERT, UPDATE, DELETE', NULL)
    ) AS v(tbl, privs, update_columns)
    LOOP
        FOR g IN
            SELECT DISTINCT a.grantee, bool_or(a.privilege_type = 'UPDATE') OVER (PARTITION BY a.grantee) AS had_update
            FROM pg_class c, aclexplode(c.relacl) a
            WHERE c.oid = format('public.%I', spec.tbl)::regclass AND a.grantee <> c.relowner
        LOOP
            grantee := CASE WHEN g.grantee = 0 THEN 'PUBLIC' ELSE g.grantee::regrole::text END;
            -- Revoking a table privilege revokes the column privileges too.
            EXECUTE format('REVOKE %s ON public.%I FROM %s', spec.privs, spec.tbl, grantee);
            IF spec.update_columns IS NOT NULL AND g.had_update AND g.grantee <> 0 THEN
                EXECUTE format('GRANT UPDATE (%s) ON public.%I TO %s', spec.update_columns, spec.tbl, grantee);
            END IF;
        END LOOP;
    END LOOP;

    -- Helpers that only the functions above call.
    FOR g IN
        SELECT DISTINCT p.oid::regprocedure AS sig, a.grantee
        FROM pg_proc p, aclexplode(p.proacl) a
        WHERE p.oid = 'oauth_client_columns(jsonb, boolean)'::regprocedure AND a.grantee <> p.proowner
    LOOP
        EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM %s', g.sig,
                       CASE WHEN g.grantee = 0 THEN 'PUBLIC' ELSE g.grantee::regrole::text END);
    END LOOP;
END
$privileges$;
