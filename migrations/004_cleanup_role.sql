-- Migration: 004_cleanup_role
-- Description: the expiry cleanup by page ranges, for `entrypoint.py cleanup`, executable only
--              by the cleanup role (<owner>_cleanup, created by 000), which can do nothing else.
--
-- Runs as the owner role in one transaction, after 003 (which it does not change).
--
-- cleanup_expired_data() deletes by key: an ordered index scan, a row lock and a primary-key
-- lookup per row, 5x a plain DELETE at a million expired tokens. These functions delete the
-- expired rows of a range of heap pages instead (a TID range scan, PostgreSQL 14+; older
-- servers scan the table per call), so that a run reads each table once, in short batches the
-- command sizes to a target duration. Every row a batch locks is one it deletes: expired, so
-- never a row the application still uses.
--
-- Least privilege: they are SECURITY DEFINER (they run as the owner, which owns the tables) and
-- only the cleanup role may execute them; it holds no privilege on any table, so it can remove
-- expired rows and nothing else, and the runtime role gains no DELETE. The role's name is the
-- owner's with `_cleanup` appended (000 creates it, bootstrap sets its password from
-- CLEANUP_DB_PASSWORD): this file needs no setting to find it. Without it (000 run by an older
-- release, or by hand as another owner) only the owner may call them until it exists and this
-- grant is made again by hand: GRANT EXECUTE ON FUNCTION ... TO <owner>_cleanup.

-- The tables the cleanup covers, in the order it runs, with their expiry column; the audit log
-- is purged past security_settings.security_event_retention, the rest once expired.
CREATE FUNCTION cleanup_expired_tables()
RETURNS TABLE (table_name text, pages bigint)
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, public, pg_temp
AS $$
    SELECT t.name,
           pg_relation_size(format('public.%I', t.name)::regclass)
               / current_setting('block_size')::bigint
    FROM unnest(ARRAY['auth_codes', 'tokens', 'refresh_tokens', 'user_sessions', 'rate_limits',
                      'security_events']) WITH ORDINALITY AS t(name, ord)
    ORDER BY t.ord
$$;
COMMENT ON FUNCTION cleanup_expired_tables() IS
    'The tables cleanup_expired_pages() covers, in cleanup order, with their size in pages.';

-- Deletes the expired rows of pages [p_first_page, p_end_page) of one table; returns how many.
-- The cutoff is the transaction's now(): a row that expires later is left for the next run.
CREATE FUNCTION cleanup_expired_pages(p_table text, p_first_page bigint, p_end_page bigint)
RETURNS bigint
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    expiry text := CASE p_table
        WHEN 'auth_codes' THEN 'expires_at'
        WHEN 'tokens' THEN 'expires_at'
        WHEN 'refresh_tokens' THEN 'expires_at'
        WHEN 'user_sessions' THEN 'idle_expires_at'
        WHEN 'rate_limits' THEN 'reset_at'
        WHEN 'security_events' THEN 'occurred_at'
    END;
    cutoff timestamptz := now();
    removed bigint;
BEGIN
    IF expiry IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('cleanup_expired_pages: %L is not a table the cleanup covers', p_table);
    END IF;
    -- A block number is below 2^32 - 1; an empty or reversed range is a caller's mistake.
    IF p_first_page IS NULL OR p_end_page IS NULL OR p_first_page < 0
       OR p_end_page <= p_first_page OR p_end_page > 4294967295 THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('cleanup_expired_pages: page range [%s, %s) is not valid',
                             p_first_page, p_end_page);
    END IF;
    IF p_table = 'security_events' THEN
        cutoff := now() - (SELECT security_event_retention FROM security_settings);
        -- Lets the append-only trigger accept deletes past retention, for this call only.
        PERFORM set_config('app.audit_purge', 'on', true);
    END IF;
    EXECUTE format('DELETE FROM public.%I WHERE ctid >= $1 AND ctid < $2 AND %I < $3',
                   p_table, expiry)
        USING format('(%s,0)', p_first_page)::tid, format('(%s,0)', p_end_page)::tid, cutoff;
    GET DIAGNOSTICS removed = ROW_COUNT;
    IF p_table = 'security_events' THEN
        PERFORM set_config('app.audit_purge', '', true);
    END IF;
    RETURN removed;
END
$$;
COMMENT ON FUNCTION cleanup_expired_pages(text, bigint, bigint) IS
    'Delete the expired rows (audit events past retention) of a range of heap pages of one table the cleanup covers; returns the rows removed.';

-- Fresh planner statistics after a run emptied much of a table: ANALYZE it, unless ANALYZE or
-- autovacuum's analyze ran since p_since (the run's start). Returns whether it analyzed.
CREATE FUNCTION cleanup_analyze(p_table text, p_since timestamptz)
RETURNS boolean
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    relation regclass;
    analyzed timestamptz;
BEGIN
    IF p_table IS NULL OR p_table NOT IN (SELECT table_name FROM cleanup_expired_tables()) THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('cleanup_analyze: %L is not a table the cleanup covers', p_table);
    END IF;
    relation := format('public.%I', p_table)::regclass;
    SELECT greatest(last_analyze, last_autoanalyze) INTO analyzed
    FROM pg_stat_user_tables WHERE relid = relation;
    IF analyzed >= p_since THEN
        RETURN false;
    END IF;
    EXECUTE format('ANALYZE public.%I', p_table);
    RETURN true;
END
$$;
COMMENT ON FUNCTION cleanup_analyze(text, timestamp with time zone) IS
    'ANALYZE a table the cleanup covers unless it was analyzed since the given time.';

-- 000's default privileges made the three executable by the runtime role: take that back from
-- every role but the owner, then give them to the cleanup role alone.
DO $$
DECLARE
    spec record;
    cleanup_role text := current_user || '_cleanup';
BEGIN
    FOR spec IN
        SELECT p.oid::regprocedure AS fn,
               CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END AS grantee
        FROM pg_proc p, aclexplode(p.proacl) a
        WHERE p.oid IN ('cleanup_expired_tables()'::regprocedure,
                        'cleanup_expired_pages(text, bigint, bigint)'::regprocedure,
                        'cleanup_analyze(text, timestamptz)'::regprocedure)
          AND a.grantee <> p.proowner AND a.privilege_type = 'EXECUTE'
    LOOP
        EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM %s', spec.fn, spec.grantee);
    END LOOP;
    REVOKE EXECUTE ON FUNCTION cleanup_expired_tables(), cleanup_expired_pages(text, bigint, bigint),
        cleanup_analyze(text, timestamptz) FROM PUBLIC;
    IF to_regrole(quote_ident(cleanup_role)) IS NOT NULL THEN
        EXECUTE format('GRANT EXECUTE ON FUNCTION cleanup_expired_tables(), '
                       'cleanup_expired_pages(text, bigint, bigint), '
                       'cleanup_analyze(text, timestamptz) TO %I', cleanup_role);
    END IF;
END
$$;
