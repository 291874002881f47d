-- Bootstrap: roles, extensions and schema privileges. Runs as a superuser on every start;
-- idempotent. Role passwords are set by the runner from secrets, never here.
-- The runner passes the role names as settings; psql users get the defaults.
DO $bootstrap$
DECLARE
    owner_role text := coalesce(nullif(current_setting('migrator.owner_role', true), ''), 'auth_service');
    app_role   text := coalesce(nullif(current_setting('migrator.app_role', true), ''), 'auth_service_app');
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = owner_role) THEN
        EXECUTE format('CREATE ROLE %I LOGIN', owner_role);
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = app_role) THEN
        EXECUTE format('CREATE ROLE %I LOGIN', app_role);
    END IF;
    EXECUTE format('ALTER DATABASE %I OWNER TO %I', current_database(), owner_role);
    EXECUTE format('ALTER SCHEMA public OWNER TO %I', owner_role);
    EXECUTE format('GRANT USAGE ON SCHEMA public TO %I', app_role);
END
$bootstrap$;

REVOKE CREATE ON SCHEMA public FROM PUBLIC;
