"""Bootstrap with admin credentials: database, 000_init_database.sql, role passwords as SCRAM verifiers."""

from __future__ import annotations

import hashlib

import psycopg
import pytest

from tests.conftest import REPO

BOOTSTRAP_SQL = """
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = current_setting('migrator.owner_role')) THEN
        EXECUTE format('CREATE ROLE %I LOGIN', current_setting('migrator.owner_role'));
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = current_setting('migrator.app_role')) THEN
        EXECUTE format('CREATE ROLE %I LOGIN', current_setting('migrator.app_role'));
    END IF;
    EXECUTE format('ALTER SCHEMA public OWNER TO %I', current_setting('migrator.owner_role'));
END $$;
CREATE EXTENSION IF NOT EXISTS citext;
"""
OWNER = "bootstrap_owner"
APP = "bootstrap_app"
OWNER_PASSWORD = "owner-Pa55-word-for-bootstrap"
APP_PASSWORD = "app-Pa55-word-for-bootstrap"


@pytest.fixture
def bootstrap_env(unborn_database, pg_server, migrations):
    migrations.add({
        "000_init_database.sql": BOOTSTRAP_SQL,
        "001_things.sql": "CREATE TABLE things (id int PRIMARY KEY, name citext);",
    })  # fmt: skip
    return unborn_database.env(
        DB_USER=OWNER,
        DB_PASSWORD=OWNER_PASSWORD,
        DB_ADMIN_USER="postgres",
        DB_ADMIN_PASSWORD=pg_server.password,
        APP_DB_USER=APP,
        APP_DB_PASSWORD=APP_PASSWORD,
        MIGRATIONS_DIR=str(migrations.path),
    )


def test_bootstrap_creates_the_database_and_applies_everything(
    bootstrap_env, unborn_database, run_runner
):
    result = run_runner(env=bootstrap_env)
    assert result.returncode == 0, result
    assert result.events_named("database_created")[0]["dbname"] == unborn_database.name
    rows = unborn_database.query(
        "SELECT version, applied_by FROM schema_migrations ORDER BY version"
    )
    assert rows == [("000_init_database", "postgres"), ("001_things", OWNER)]
    owner = unborn_database.scalar("SELECT tableowner FROM pg_tables WHERE tablename = 'things'")
    assert owner == OWNER
    assert unborn_database.scalar("SELECT count(*) FROM pg_extension WHERE extname = 'citext'") == 1


def test_bootstrap_is_idempotent_and_runs_every_start(bootstrap_env, unborn_database, run_runner):
    assert run_runner(env=bootstrap_env).returncode == 0
    before = unborn_database.query("SELECT * FROM schema_migrations ORDER BY version")
    second = run_runner(env=bootstrap_env)
    assert second.returncode == 0, second
    after = unborn_database.query("SELECT * FROM schema_migrations ORDER BY version")
    assert after == before, "an unchanged bootstrap script leaves its row alone"
    assert second.events_named("database_exists")
    assert second.events_named("bootstrap_done")
    assert second.events_named("migrations_complete")[0]["applied"] == []
    assert unborn_database.scalar("SELECT count(*) FROM schema_migrations") == 2


def test_init_only_stops_after_bootstrap(bootstrap_env, unborn_database, run_runner):
    result = run_runner("--init-only", env=bootstrap_env)
    assert result.returncode == 0, result
    assert unborn_database.query("SELECT version FROM schema_migrations") == [
        ("000_init_database",)
    ]
    assert unborn_database.scalar("SELECT to_regclass('things')") is None
    assert "--init-only" in result.termination_message


def test_passwords_are_set_as_scram_verifiers_never_in_clear(
    bootstrap_env, unborn_database, pg_server, run_runner
):
    assert run_runner(env=bootstrap_env).returncode == 0
    server_log = pg_server.server_log()
    # The server logs every statement, but not those of the transaction that sets passwords.
    assert "SET LOCAL log_statement = 'none'" in server_log
    assert "SCRAM-SHA-256$" not in server_log
    assert OWNER_PASSWORD not in server_log and APP_PASSWORD not in server_log
    verifiers = unborn_database.query(
        "SELECT rolname, left(rolpassword, 14) FROM pg_authid WHERE rolname IN (%s, %s) ORDER BY 1",
        APP,
        OWNER,
    )
    assert verifiers == [(APP, "SCRAM-SHA-256$"), (OWNER, "SCRAM-SHA-256$")]
    for role, password in ((OWNER, OWNER_PASSWORD), (APP, APP_PASSWORD)):
        with unborn_database.connect(user=role, password=password) as conn:
            assert conn.execute("SELECT current_user").fetchone() == (role,)


def test_a_changed_bootstrap_script_updates_its_row_instead_of_drifting(
    bootstrap_env, unborn_database, migrations, run_runner, run_status_json
):
    assert run_runner(env=bootstrap_env).returncode == 0
    changed = migrations.write(
        "000_init_database.sql", BOOTSTRAP_SQL + "\nCREATE EXTENSION IF NOT EXISTS pg_trgm;\n"
    )
    result = run_runner(env=bootstrap_env)
    assert result.returncode == 0, result
    assert (
        unborn_database.scalar("SELECT count(*) FROM pg_extension WHERE extname = 'pg_trgm'") == 1
    )
    recorded = unborn_database.scalar(
        "SELECT checksum FROM schema_migrations WHERE version = '000_init_database'"
    )
    assert recorded == hashlib.sha256(changed.read_bytes()).hexdigest()
    _, status = run_status_json(env=bootstrap_env)
    assert status["up_to_date"] is True


def test_without_admin_a_user_that_cannot_create_objects_is_told_what_to_do(
    database, pg_server, run_runner, migrations
):
    with database.connect() as conn:
        conn.execute("DROP ROLE IF EXISTS powerless")
        conn.execute("CREATE ROLE powerless LOGIN PASSWORD 'powerless-Pa55'")
        conn.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    migrations.add({"001_t.sql": "CREATE TABLE t (id int);"})
    env = database.env(DB_USER="powerless", DB_PASSWORD="powerless-Pa55",
                       MIGRATIONS_DIR=str(migrations.path))  # fmt: skip
    try:
        result = run_runner(env=env)
    finally:
        with database.connect() as conn:
            conn.execute("DROP OWNED BY powerless")
            conn.execute("DROP ROLE powerless")
    assert result.returncode == 77, result
    error = result.events_named("permission_denied")[0]["error"]
    assert "cannot create objects in schema public" in error and "DB_ADMIN_USER" in error
    with pytest.raises(psycopg.errors.UndefinedTable):
        database.query("SELECT * FROM t")


@pytest.fixture
def managed_admin(pg_server, unborn_database):
    """An admin as managed services give one (Amazon RDS, Cloud SQL, Azure): CREATEROLE and
    CREATEDB, no SUPERUSER. The roles the shipped 000 creates for it are dropped at the end."""
    suffix = unborn_database.name
    names = {"admin": f"admin_{suffix}", "owner": f"owner_{suffix}", "app": f"app_{suffix}",
             "cleanup": f"owner_{suffix}_cleanup"}  # fmt: skip
    password = f"Managed-{suffix}-admin"
    with psycopg.connect(**pg_server.conninfo(), autocommit=True) as conn:
        conn.execute(
            f"CREATE ROLE {names['admin']} LOGIN CREATEROLE CREATEDB PASSWORD '{password}'"
        )
    yield {**names, "password": password}
    with psycopg.connect(**pg_server.conninfo(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{unborn_database.name}" WITH (FORCE)')
        for role in ("cleanup", "app", "owner", "admin"):
            conn.execute(f"DROP ROLE IF EXISTS {names[role]}")


def test_the_shipped_schema_bootstraps_with_a_managed_services_admin(
    managed_admin, unborn_database, run_runner
):
    # ALTER DATABASE ... OWNER TO and ALTER DEFAULT PRIVILEGES FOR ROLE need the admin to be
    # able to SET ROLE to the owner; 000 grants it that (PostgreSQL 16+ gives a role's creator
    # ADMIN OPTION only). It used to stop at 000 with 42501, exit 65. The grant's branches:
    # 14 and 15 plain, 16+ WITH INHERIT TRUE, SET TRUE.
    env = unborn_database.env(
        MIGRATIONS_DIR=str(REPO / "migrations"),
        DB_ADMIN_USER=managed_admin["admin"],
        DB_ADMIN_PASSWORD=managed_admin["password"],
        DB_USER=managed_admin["owner"],
        DB_PASSWORD=OWNER_PASSWORD,
        APP_DB_USER=managed_admin["app"],
        APP_DB_PASSWORD=APP_PASSWORD,
    )
    result = run_runner(env=env)
    if unborn_database.scalar("SELECT current_setting('server_version_num')::int") < 150000:
        # PostgreSQL 14 and older give schema public to the bootstrap superuser: 000 says so,
        # and what a superuser runs once; then it works as on 15+ (pg_database_owner's there).
        assert result.returncode == 65, result
        failed = result.events_named("migration_failed")[0]
        assert failed["sqlstate"] == "42501", failed
        assert "schema public belongs to postgres" in failed["error"], failed
        hint = f"ALTER SCHEMA public OWNER TO {managed_admin['admin']}"
        assert hint in failed["hint"], failed
        assert unborn_database.query("SELECT to_regrole(%s)", managed_admin["owner"]) == [(None,)]
        with unborn_database.connect() as conn:
            conn.execute(hint)
        result = run_runner(env=env)
    assert result.returncode == 0, result
    # It cannot set the log settings only a superuser may; the verifiers go anyway.
    assert result.events_named("server_log_not_silenced")
    versions = unborn_database.query("SELECT version FROM schema_migrations ORDER BY 1")
    assert versions == [
        ("000_init_database",),
        ("001_initial_production_schema",),
        ("002_security_invariants",),
        ("003_server_chosen_ids",),
        ("004_cleanup_role",),
        ("005_cleanup_by_key_owner_only",),
    ]
    owners = unborn_database.query(
        "SELECT pg_get_userbyid(datdba), (SELECT pg_get_userbyid(nspowner) FROM pg_namespace"
        " WHERE nspname = 'public') FROM pg_database WHERE datname = current_database()"
    )
    assert owners == [(managed_admin["owner"], managed_admin["owner"])]
    # The admin became a member of the owner, never the other way round.
    assert unborn_database.query(
        "SELECT pg_has_role(%s, %s, 'MEMBER'), pg_has_role(%s, %s, 'MEMBER')",
        managed_admin["admin"],
        managed_admin["owner"],
        managed_admin["owner"],
        managed_admin["admin"],
    ) == [(True, False)]
    second = run_runner(env=env)
    assert second.returncode == 0, second
    assert second.events_named("migrations_complete")[0]["applied"] == []


@pytest.mark.parametrize(
    "statement",
    [
        "CREATE TABLE psql_style (id int);",
        "CREATE FUNCTION now() RETURNS int LANGUAGE sql AS 'SELECT 1';",
    ],
)
def test_a_000_written_for_psql_is_told_about_the_pinned_search_path(
    bootstrap_env, migrations, run_runner, statement
):
    """Unqualified names under search_path = pg_catalog, pg_temp: "permission denied to create
    pg_catalog.x" or "already exists", with nothing saying why."""
    migrations.write("000_init_database.sql", BOOTSTRAP_SQL + "\n" + statement + "\n")
    result = run_runner(env=bootstrap_env)
    assert result.returncode == 65, result
    error = result.events_named("migration_failed")[0]["error"]
    assert "search_path = pg_catalog, pg_temp" in error and "public.name" in error, error
