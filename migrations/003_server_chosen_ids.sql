-- Migration: 003_server_chosen_ids
-- Description: ids of the rows the runtime role inserts come from the server; the
--              runtime role holds no privilege on any sequence, no EXECUTE on trigger
--              functions and internal helpers; cleanup refuses a batch of 0.
--
-- Runs as the owner role in one transaction, after 002 (which it does not change).
--
-- INSERT ... OVERRIDING SYSTEM VALUE needs nothing but INSERT on the table. With
-- table-level INSERT on security_events and SELECT on its identity's sequence (000
-- granted USAGE, SELECT on new sequences), the runtime role could insert the next
-- thousand ids ahead of the server, and every audited write then failed on a
-- duplicate key: registration (create_user), every login (record_successful_login),
-- the owner's own incident response, refresh-token reuse detection. So, on every
-- table of the schema with an identity column, a role other than the owner that may
-- insert keeps INSERT on each column but the identity; an identity's default takes
-- its value without any privilege on the sequence, so the runtime role needs none
-- and keeps none. 000 no longer grants it sequences by default.

DO $$
DECLARE
    spec record;
    insertable text;
BEGIN
    FOR spec IN
        SELECT c.oid::regclass AS tbl,
               CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END AS grantee
        FROM pg_class c, aclexplode(c.relacl) a
        WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p')
          AND c.relowner = (SELECT oid FROM pg_roles WHERE rolname = current_user)
          AND a.grantee <> c.relowner AND a.privilege_type = 'INSERT'
          AND EXISTS (SELECT 1 FROM pg_attribute i
                      WHERE i.attrelid = c.oid AND i.attidentity <> '' AND NOT i.attisdropped)
    LOOP
        SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) INTO insertable
        FROM pg_attribute
        WHERE attrelid = spec.tbl AND attnum > 0 AND NOT attisdropped AND attidentity = '';
        EXECUTE format('REVOKE INSERT ON %s FROM %s', spec.tbl, spec.grantee);
        EXECUTE format('GRANT INSERT (%s) ON %s TO %s', insertable, spec.tbl, spec.grantee);
    END LOOP;

    FOR spec IN
        SELECT c.oid::regclass AS seq,
               CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END AS grantee
        FROM pg_class c, aclexplode(c.relacl) a
        WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'S'
          AND c.relowner = (SELECT oid FROM pg_roles WHERE rolname = current_user)
          AND a.grantee <> c.relowner
    LOOP
        EXECUTE format('REVOKE ALL ON SEQUENCE %s FROM %s', spec.seq, spec.grantee);
    END LOOP;

    -- Sequences the owner creates later: no privilege for anyone else by default.
    FOR spec IN
        SELECT DISTINCT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END AS grantee
        FROM pg_default_acl d, aclexplode(d.defaclacl) a
        WHERE d.defaclrole = (SELECT oid FROM pg_roles WHERE rolname = current_user)
          AND d.defaclobjtype = 'S' AND d.defaclnamespace = 'public'::regnamespace
          AND a.grantee <> d.defaclrole
    LOOP
        EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE ALL ON SEQUENCES FROM %s',
                       spec.grantee);
    END LOOP;
END
$$;

-- Trigger functions fire whatever EXECUTE says (it is checked when a trigger is created),
-- and two helpers serve only the owner's code: app_require_permission() inside the
-- SECURITY DEFINER functions, redirect_uris_valid() in oauth_clients' CHECK, which only
-- the owner's functions write since 002. 000's default privileges gave the runtime role
-- EXECUTE on all of them; it needs none (tests/security/test_privilege_audit.py).
DO $$
DECLARE
    spec record;
BEGIN
    FOR spec IN
        SELECT p.oid::regprocedure AS fn,
               CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END AS grantee
        FROM pg_proc p, aclexplode(p.proacl) a
        WHERE p.pronamespace = 'public'::regnamespace
          AND p.proowner = (SELECT oid FROM pg_roles WHERE rolname = current_user)
          AND a.grantee <> p.proowner AND a.privilege_type = 'EXECUTE'
          AND (p.prorettype = 'trigger'::regtype
               OR p.oid IN ('app_require_permission(text, text[])'::regprocedure,
                            'redirect_uris_valid(text[])'::regprocedure))
    LOOP
        EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM %s', spec.fn, spec.grantee);
    END LOOP;
END
$$;

-- cleanup_expired_data() as 001 wrote it, and a batch size or count below 1 refused.
CREATE OR REPLACE FUNCTION cleanup_expired_data(p_batch_size integer DEFAULT NULL, p_max_batches integer DEFAULT NULL)
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
    -- A batch of 0 deletes nothing and never ends (2^31 empty rounds, or for ever through
    -- cleanup_expired_data_all): any role that may call it could keep the server busy.
    IF batch < 1 OR max_batches < 1 THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('cleanup_expired_data: batch size %s and batch count %s must be at least 1',
                             batch, max_batches);
    END IF;
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
