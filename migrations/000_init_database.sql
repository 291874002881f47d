-- Migration: 000_init_database
-- Description: bootstrap: roles, extensions and schema privileges for the auth service.
--
-- Runs as a superuser, in the target database, on every start of the migration
-- runner; it is idempotent: running it again, or on a database where everything
-- already exists, changes nothing and fails nothing.
--
-- Role names come from two settings the runner sets in this session; run by hand
-- with psql they default to auth_service / auth_service_app:
--   SET migrator.owner_role = 'auth_service';     -- DB_USER: owns the schema, runs migrations
--   SET migrator.app_role   = 'auth_service_app'; -- APP_DB_USER: the application at run time
-- The cleanup role is named after the owner (auth_service_cleanup): it may only execute the
-- expiry cleanup's functions, which 004 grants it (docs/security.md, "Cleanup role").
-- Passwords are never written here: the runner sets them from secrets afterwards
-- (ALTER ROLE ... PASSWORD '<SCRAM verifier>').
--
-- The runtime role owns nothing, has no DDL rights and no BYPASSRLS, and is not a
-- member of the owner role, so that row level security binds it. Table owners
-- bypass row level security: the application must never connect as the owner
-- (see migrations/README.md, "The owner-bypass pitfall").
--
-- It runs as the superuser, so it never reaches an object another role can create or
-- change: the search path holds only the catalog (pg_temp last, where PostgreSQL looks
-- for neither functions nor operators) and every name is qualified. The runner runs it
-- in one transaction, as `psql --single-transaction -f` does (SET LOCAL needs one), and
-- checks the roles and the database before (README, "Security model"). The path the
-- transaction had is put back at the end, for whatever the caller's transaction does next
-- (dbmate, for one, records the file with an unqualified INSERT in the same transaction).

SELECT pg_catalog.set_config('migrator.search_path_before_000', pg_catalog.current_setting('search_path'), true);
SET LOCAL search_path = pg_catalog, pg_temp;

DO $bootstrap$
DECLARE
    owner_role text := coalesce(nullif(pg_catalog.current_setting('migrator.owner_role', true), ''), 'auth_service');
    app_role   text := coalesce(nullif(pg_catalog.current_setting('migrator.app_role', true), ''), 'auth_service_app');
    app        pg_catalog.pg_roles%ROWTYPE;
    cleanup_role text;
BEGIN
    cleanup_role := owner_role || '_cleanup';
    IF owner_role = app_role THEN
        RAISE EXCEPTION 'the runtime role must differ from the owner role (both are %)', owner_role
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Row level security does not bind the table owner: give the application its own role (APP_DB_USER).';
    END IF;

    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = owner_role) THEN
        EXECUTE pg_catalog.format('CREATE ROLE %I LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS',
                       owner_role);
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = app_role) THEN
        EXECUTE pg_catalog.format('CREATE ROLE %I LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS',
                       app_role);
    END IF;
    -- The cleanup role: it logs in (with the password bootstrap sets from CLEANUP_DB_PASSWORD)
    -- and inherits nothing; its only privileges are CONNECT, USAGE on public (below) and
    -- EXECUTE on the cleanup functions (004).
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = cleanup_role) THEN
        EXECUTE pg_catalog.format('CREATE ROLE %I LOGIN NOINHERIT NOSUPERUSER NOCREATEDB NOCREATEROLE '
                                  'NOREPLICATION NOBYPASSRLS', cleanup_role);
    END IF;
    IF (SELECT rolsuper OR rolbypassrls FROM pg_catalog.pg_roles WHERE rolname = cleanup_role)
       OR pg_catalog.pg_has_role(cleanup_role, owner_role, 'MEMBER') THEN
        RAISE EXCEPTION 'cleanup role % is a superuser, has BYPASSRLS or is a member of the owner %',
                        cleanup_role, owner_role
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = pg_catalog.format('ALTER ROLE %I NOSUPERUSER NOBYPASSRLS; REVOKE %I FROM %I',
                                           cleanup_role, owner_role, cleanup_role);
    END IF;

    -- An existing runtime role is checked, not silently changed: any of these
    -- would switch row level security off for the application.
    SELECT * INTO app FROM pg_catalog.pg_roles WHERE rolname = app_role;
    IF app.rolsuper OR app.rolbypassrls THEN
        RAISE EXCEPTION 'runtime role % is a superuser or has BYPASSRLS', app_role
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = pg_catalog.format('ALTER ROLE %I NOSUPERUSER NOBYPASSRLS', app_role);
    END IF;
    IF pg_catalog.pg_has_role(app_role, owner_role, 'MEMBER') THEN
        RAISE EXCEPTION 'runtime role % is a member of the owner role %', app_role, owner_role
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = pg_catalog.format('REVOKE %I FROM %I', owner_role, app_role);
    END IF;
    IF (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = owner_role)
       AND owner_role <> session_user THEN
        RAISE EXCEPTION 'owner role % is a superuser', owner_role
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = pg_catalog.format('ALTER ROLE %I NOSUPERUSER', owner_role);
    END IF;

    -- An admin that is not a superuser (a managed service's: CREATEROLE and CREATEDB, as
    -- Amazon RDS, Cloud SQL and Azure give) may hand the database to the owner and set the
    -- owner's default privileges only as a member of the owner. The owner gains nothing by it.
    -- PostgreSQL 16 gives a role's creator ADMIN OPTION only: SET and INHERIT are asked for.
    IF (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user) THEN
        NULL;
    ELSIF pg_catalog.current_setting('server_version_num')::pg_catalog.int4 >= 160000 THEN
        IF NOT (pg_catalog.pg_has_role(current_user, owner_role, 'SET')
                AND pg_catalog.pg_has_role(current_user, owner_role, 'USAGE')) THEN
            EXECUTE pg_catalog.format('GRANT %I TO %I WITH INHERIT TRUE, SET TRUE',
                                      owner_role, current_user);
        END IF;
    ELSIF NOT pg_catalog.pg_has_role(current_user, owner_role, 'MEMBER') THEN
        EXECUTE pg_catalog.format('GRANT %I TO %I', owner_role, current_user);
    END IF;

    -- The owner owns the database and schema public, so it can create the schema
    -- objects; nobody else can create anything in it.
    EXECUTE pg_catalog.format('ALTER DATABASE %I OWNER TO %I', pg_catalog.current_database(), owner_role);
    -- PostgreSQL 15+ gives schema public to pg_database_owner (the owner, now); 14 and older
    -- to the bootstrap superuser, which a managed service's admin cannot act as.
    IF NOT pg_catalog.pg_has_role(current_user,
            (SELECT nspowner FROM pg_catalog.pg_namespace WHERE nspname = 'public'), 'USAGE') THEN
        RAISE EXCEPTION 'schema public belongs to %, which % cannot hand over to %',
            (SELECT nspowner::pg_catalog.regrole FROM pg_catalog.pg_namespace
             WHERE nspname = 'public'), current_user, owner_role
            USING ERRCODE = 'insufficient_privilege',
                  HINT = pg_catalog.format('Have a superuser run once: ALTER SCHEMA public '
                      'OWNER TO %I (in database %I, or in template1 for every database created '
                      'later)', current_user, pg_catalog.current_database());
    END IF;
    EXECUTE pg_catalog.format('ALTER SCHEMA public OWNER TO %I', owner_role);
    REVOKE ALL ON SCHEMA public FROM PUBLIC;
    EXECUTE pg_catalog.format('GRANT USAGE ON SCHEMA public TO %I', app_role);
    EXECUTE pg_catalog.format('GRANT USAGE ON SCHEMA public TO %I', cleanup_role);

    -- Only the three roles (and superusers) connect; nobody creates temporary objects
    -- except the owner.
    EXECUTE pg_catalog.format('REVOKE CONNECT, TEMPORARY ON DATABASE %I FROM PUBLIC', pg_catalog.current_database());
    EXECUTE pg_catalog.format('GRANT CONNECT ON DATABASE %I TO %I', pg_catalog.current_database(), app_role);
    EXECUTE pg_catalog.format('GRANT CONNECT ON DATABASE %I TO %I', pg_catalog.current_database(), cleanup_role);
    -- Nor large objects: PUBLIC may create them by default (lo_creat, lo_create,
    -- lo_from_bytea), so any role that connects could fill the disk with data it owns.
    -- A managed service's admin that does not own these functions only gets a warning.
    REVOKE EXECUTE ON FUNCTION pg_catalog.lo_creat(integer), pg_catalog.lo_create(oid),
        pg_catalog.lo_from_bytea(oid, bytea) FROM PUBLIC;

    -- Objects the owner creates later are usable by the runtime role without
    -- further grants. Migrations narrow these where a table must be read-only or
    -- append-only for the application (001 does so for the audit log).
    EXECUTE pg_catalog.format('ALTER DEFAULT PRIVILEGES FOR ROLE %I IN SCHEMA public '
                   'GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO %I', owner_role, app_role);
    -- No sequence privileges: identity columns take their values without any, and a
    -- role that can read or advance a sequence can take ids ahead of the server (003).
    EXECUTE pg_catalog.format('ALTER DEFAULT PRIVILEGES FOR ROLE %I IN SCHEMA public '
                   'REVOKE USAGE, SELECT, UPDATE ON SEQUENCES FROM %I', owner_role, app_role);
    -- Functions are not executable by PUBLIC by default, only by the runtime role.
    EXECUTE pg_catalog.format('ALTER DEFAULT PRIVILEGES FOR ROLE %I REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC',
                   owner_role);
    EXECUTE pg_catalog.format('ALTER DEFAULT PRIVILEGES FOR ROLE %I IN SCHEMA public '
                   'GRANT EXECUTE ON FUNCTIONS TO %I', owner_role, app_role);
    EXECUTE pg_catalog.format('ALTER DEFAULT PRIVILEGES FOR ROLE %I IN SCHEMA public '
                   'GRANT USAGE ON TYPES TO %I', owner_role, app_role);
END
$bootstrap$;

-- The throttle of batched data migrations (docs/configuration.md, "Batched data migrations:
-- pauses") pauses on a standby's replay lag and on autovacuum working on the table. Both are
-- visible only to members of pg_read_all_stats, which the owner must not be: that role also
-- sees every session's statements (and the secrets in them). Instead the owner may execute
-- two functions that read the views as <owner>_stats, a NOLOGIN role that is a member of
-- pg_read_all_stats and nothing else, and return numbers only:
--   migrator_stats.replica_lag_bytes()       the worst standby's WAL not yet replayed, or NULL
--   migrator_stats.autovacuum_on(regclass)   the autovacuum workers on that table, its
--                                            partitions or their TOAST tables: relation (oid),
--                                            phase, anti-wraparound or not
-- They live in schema migrator_stats, owned by the superuser running this: a SECURITY DEFINER
-- function the owner could redefine (its schema's owner may drop and recreate what is in it)
-- would hand it pg_read_all_stats. Only the owner has USAGE there; nobody but the superuser
-- may create in it, and the runtime and cleanup roles may execute neither function.
-- An admin that is not a superuser (a managed service's) cannot make a member of
-- pg_read_all_stats: nothing is created, and the throttle says the two signals are unknown.
DO $stats$
DECLARE
    owner_role text := coalesce(nullif(pg_catalog.current_setting('migrator.owner_role', true), ''), 'auth_service');
    app_role   text := coalesce(nullif(pg_catalog.current_setting('migrator.app_role', true), ''), 'auth_service_app');
    stats_role text;
    stats      pg_catalog.pg_roles%ROWTYPE;
BEGIN
    stats_role := owner_role || '_stats';
    IF NOT (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user) THEN
        RAISE NOTICE '% is not a superuser: no role %, the throttle will not see replica lag or autovacuum',
            current_user, stats_role;
        RETURN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = stats_role) THEN
        EXECUTE pg_catalog.format('CREATE ROLE %I NOLOGIN INHERIT NOSUPERUSER NOCREATEDB NOCREATEROLE '
                                  'NOREPLICATION NOBYPASSRLS', stats_role);
    END IF;
    -- An existing one is checked, not changed: whoever logs in as it, or is a member of it,
    -- reads every session's statements; any other membership would be what its functions run with.
    SELECT * INTO stats FROM pg_catalog.pg_roles WHERE rolname = stats_role;
    IF stats.rolcanlogin OR stats.rolsuper OR stats.rolbypassrls OR stats.rolcreaterole
       OR stats.rolcreatedb OR stats.rolreplication THEN
        RAISE EXCEPTION 'stats role % may log in or has SUPERUSER, BYPASSRLS, CREATEROLE, CREATEDB '
                        'or REPLICATION', stats_role
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = pg_catalog.format('ALTER ROLE %I NOLOGIN NOSUPERUSER NOBYPASSRLS NOCREATEROLE '
                                           'NOCREATEDB NOREPLICATION', stats_role);
    END IF;
    IF EXISTS (SELECT FROM pg_catalog.pg_auth_members m
               WHERE m.roleid = stats.oid
                  OR (m.member = stats.oid AND m.roleid <> 'pg_read_all_stats'::pg_catalog.regrole)) THEN
        RAISE EXCEPTION 'stats role % has members, or is a member of a role other than pg_read_all_stats',
                        stats_role
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = pg_catalog.format('SELECT roleid::regrole, member::regrole FROM pg_auth_members '
                                           'WHERE %L IN (roleid::regrole::text, member::regrole::text)',
                                           stats_role);
    END IF;
    IF NOT pg_catalog.pg_has_role(stats_role, 'pg_read_all_stats', 'MEMBER') THEN
        EXECUTE pg_catalog.format('GRANT pg_read_all_stats TO %I', stats_role);
    END IF;

    IF EXISTS (SELECT FROM pg_catalog.pg_namespace n JOIN pg_catalog.pg_roles o ON o.oid = n.nspowner
               WHERE n.nspname = 'migrator_stats' AND NOT o.rolsuper) THEN
        RAISE EXCEPTION 'schema migrator_stats belongs to %, not to a superuser',
            (SELECT nspowner::pg_catalog.regrole FROM pg_catalog.pg_namespace
             WHERE nspname = 'migrator_stats')
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Its owner could replace the functions bootstrap creates there, which read '
                         'the statistics as a member of pg_read_all_stats: drop or rename it.';
    END IF;
    CREATE SCHEMA IF NOT EXISTS migrator_stats;
    REVOKE ALL ON SCHEMA migrator_stats FROM PUBLIC;
    EXECUTE pg_catalog.format('REVOKE ALL ON SCHEMA migrator_stats FROM %I, %I, %I',
                              app_role, owner_role || '_cleanup', stats_role);
    EXECUTE pg_catalog.format('GRANT USAGE ON SCHEMA migrator_stats TO %I', owner_role);

    CREATE OR REPLACE FUNCTION migrator_stats.replica_lag_bytes() RETURNS pg_catalog.int8
        LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $fn$
        SELECT pg_catalog.max(pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(),
                                                         r.replay_lsn))::pg_catalog.int8
        FROM pg_catalog.pg_stat_replication r
    $fn$;
    CREATE OR REPLACE FUNCTION migrator_stats.autovacuum_on(target pg_catalog.regclass)
        RETURNS TABLE (relation pg_catalog.oid, phase pg_catalog.text, wraparound pg_catalog.bool)
        LANGUAGE sql VOLATILE STRICT SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $fn$
        WITH tables AS (
            SELECT target::pg_catalog.oid AS id
            UNION SELECT t.relid::pg_catalog.oid FROM pg_catalog.pg_partition_tree(target) t
        ), ids AS (
            SELECT c.oid AS id FROM pg_catalog.pg_class c JOIN tables t ON c.oid = t.id
            UNION ALL
            SELECT c.reltoastrelid FROM pg_catalog.pg_class c JOIN tables t ON c.oid = t.id
        )
        SELECT v.relid, v.phase, COALESCE(a.query LIKE '%(to prevent wraparound)', false)
        FROM pg_catalog.pg_stat_progress_vacuum v
        JOIN pg_catalog.pg_stat_activity a ON a.pid = v.pid
        WHERE v.datid = (SELECT d.oid FROM pg_catalog.pg_database d
                         WHERE d.datname = pg_catalog.current_database())
          AND a.backend_type = 'autovacuum worker'
          AND v.relid IN (SELECT i.id FROM ids i)
    $fn$;
    EXECUTE pg_catalog.format('ALTER FUNCTION migrator_stats.replica_lag_bytes() OWNER TO %I', stats_role);
    EXECUTE pg_catalog.format('ALTER FUNCTION migrator_stats.autovacuum_on(pg_catalog.regclass) OWNER TO %I',
                              stats_role);
    REVOKE ALL ON FUNCTION migrator_stats.replica_lag_bytes(),
        migrator_stats.autovacuum_on(pg_catalog.regclass) FROM PUBLIC;
    EXECUTE pg_catalog.format('REVOKE ALL ON FUNCTION migrator_stats.replica_lag_bytes(), '
                              'migrator_stats.autovacuum_on(pg_catalog.regclass) FROM %I, %I',
                              app_role, owner_role || '_cleanup');
    EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION migrator_stats.replica_lag_bytes(), '
                              'migrator_stats.autovacuum_on(pg_catalog.regclass) TO %I', owner_role);
END
$stats$;

-- Extensions (contrib, shipped with PostgreSQL; gen_random_uuid() and sha256()
-- are built in). Created by the superuser in schema public, where 001 resolves them.
CREATE EXTENSION IF NOT EXISTS citext WITH SCHEMA public;   -- case-insensitive email
CREATE EXTENSION IF NOT EXISTS pg_trgm WITH SCHEMA public;  -- trigram search on users and groups

SELECT pg_catalog.set_config('search_path', pg_catalog.current_setting('migrator.search_path_before_000'), true);
