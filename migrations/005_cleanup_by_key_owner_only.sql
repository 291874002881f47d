-- Migration: 005_cleanup_by_key_owner_only
-- Description: the key-based cleanup of 001 (cleanup_expired_data, cleanup_expired_data_all)
--              executable by the owner alone; the runtime role no longer runs it.
--
-- Runs as the owner role in one transaction, after 004 (which it does not change).
--
-- 000's default privileges made 001's functions executable by the runtime role, and the
-- cleanup stayed among them: SECURITY DEFINER, so the application could delete every expired
-- row of six tables whenever it liked, in batches as large as it asked (a batch of 2^31 rows
-- is one statement holding a row lock on each), and purge the audit log past its retention.
-- The application does not need it: the scheduled cleanup is `entrypoint.py cleanup`, as the
-- cleanup role (004); SEED's `SELECT cleanup_expired_data();` is run by the owner, as
-- migrations are. Every role but the owner loses EXECUTE on both; a role that must run them
-- again (a scheduler of an older setup) is granted by hand:
--     GRANT EXECUTE ON FUNCTION cleanup_expired_data(integer, integer) TO <role>;
--     GRANT EXECUTE ON PROCEDURE cleanup_expired_data_all(integer) TO <role>;

DO $$
DECLARE
    spec record;
BEGIN
    FOR spec IN
        SELECT p.oid::regprocedure AS fn,
               CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END AS grantee
        FROM pg_proc p, aclexplode(p.proacl) a
        WHERE p.oid IN ('cleanup_expired_data(integer, integer)'::regprocedure,
                        'cleanup_expired_data_all(integer)'::regprocedure)
          AND a.grantee <> p.proowner AND a.privilege_type = 'EXECUTE'
    LOOP
        -- ROUTINE: one of them is a procedure.
        EXECUTE format('REVOKE EXECUTE ON ROUTINE %s FROM %s', spec.fn, spec.grantee);
    END LOOP;
    REVOKE EXECUTE ON ROUTINE cleanup_expired_data(integer, integer),
        cleanup_expired_data_all(integer) FROM PUBLIC;
END
$$;
