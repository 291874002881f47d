"""Database and role defaults that a file sets (``ALTER DATABASE ... SET``, ``ALTER ROLE ... SET``,
also from dynamic SQL) reach the later files of the same run, as under ``psql -f`` file by file:
each file starts from the session a new connection would get at that moment. One run and two
runs give the same schema; the lint runs each file in the session migrate gives it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from tests.conftest import HOLD_MIGRATION_LOCK, Database

ZONE = "Asia/Tokyo"  # anything but the server's Etc/UTC


def database_default(setting: str, value: str, dynamic: bool, database: Database) -> str:
    """A file's statement that sets ``setting`` for the database, as written or in a DO."""
    if dynamic:
        return (
            "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET "
            f"{setting} = {value}', current_database()); END $$;\n"
        )
    return f'ALTER DATABASE "{database.name}" SET {setting} = {value};\n'


def role_default(setting: str, value: str, dynamic: bool, database: Database) -> str:
    """The same for the runner's own role in this database."""
    if dynamic:
        return (
            "DO $$ BEGIN EXECUTE format('ALTER ROLE CURRENT_USER IN DATABASE %I SET "
            f"{setting} = {value}', current_database()); END $$;\n"
        )
    return f'ALTER ROLE CURRENT_USER IN DATABASE "{database.name}" SET {setting} = {value};\n'


SETTERS = {"database": database_default, "role": role_default}


def files_setting(setter: str, dynamic: bool, database: Database) -> dict[str, str]:
    make = SETTERS[setter]
    return {
        "001_defaults.sql": "CREATE SCHEMA app;\n"
        + make("search_path", "app, public", dynamic, database)
        + make("TimeZone", f"''{ZONE}''" if dynamic else f"'{ZONE}'", dynamic, database),
        "002_t.sql": "CREATE TABLE t (id int);\n",
        "003_tz.sql": "CREATE TABLE tz AS SELECT current_setting('TimeZone') AS z;\n",
    }


def schema_of(database: Database, relation: str) -> Any:
    """The schema ``relation`` was created in (regclass::text omits it where it is visible)."""
    return database.scalar(
        "SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.relname = %s",
        relation,
    )


def where_things_landed(database: Database) -> tuple[Any, Any]:
    return schema_of(database, "t"), database.scalar("SELECT z FROM app.tz")


def schema_dump(database: Database) -> str:
    return database.pg_dump("--exclude-table-data=public.schema_migrations")


@pytest.mark.parametrize("dynamic", [False, True], ids=["static", "do"])
@pytest.mark.parametrize("setter", list(SETTERS))
def test_a_default_a_file_sets_reaches_the_next_files_of_the_run(
    database, run_runner, migrations, setter, dynamic
):
    migrations.add(files_setting(setter, dynamic, database))
    result = run_runner(env=database.env(MIGRATIONS_DIR=str(migrations.path)))
    assert result.returncode == 0, result
    assert where_things_landed(database) == ("app", ZONE)
    renewed = result.events_named("session_renewed")
    assert [e["version"] for e in renewed] == ["001_defaults"]


@pytest.mark.parametrize("setter", list(SETTERS))
def test_one_run_and_two_runs_give_the_same_schema(
    database, other_database, run_runner, migrations, tmp_path, setter
):
    migrations.add(files_setting(setter, True, database))
    one = run_runner(env=database.env(MIGRATIONS_DIR=str(migrations.path)))
    assert one.returncode == 0, one
    first = tmp_path / "first"  # 001 alone, then all three
    first.mkdir()
    (first / "001_defaults.sql").write_text((migrations.path / "001_defaults.sql").read_text())
    for folder in (first, migrations.path):
        run = run_runner(env=other_database.env(MIGRATIONS_DIR=str(folder)))
        assert run.returncode == 0, run
    assert where_things_landed(other_database) == ("app", ZONE)
    assert schema_dump(database) == schema_dump(other_database)


def test_reset_in_a_later_file_returns_to_the_new_default(database, run_runner, migrations):
    """A new connection's RESET returns to the defaults it logged in with: the new ones."""
    migrations.add(
        {
            "001_path.sql": "CREATE SCHEMA app;\n"
            + database_default("search_path", "app, public", True, database),
            "002_reset.sql": "SET search_path = public;\nRESET search_path;\n"
            "CREATE TABLE t (id int);\n",
            "003_reset_all.sql": "SET search_path = public;\nRESET ALL;\nCREATE TABLE u (id int);\n",
        }
    )
    result = run_runner(env=database.env(MIGRATIONS_DIR=str(migrations.path)))
    assert result.returncode == 0, result
    assert (schema_of(database, "t"), schema_of(database, "u")) == ("app", "app")


def test_non_transactional_files_see_the_default_too(database, run_runner, migrations):
    migrations.add(
        {
            "001_path.sql": "-- migrate:no-transaction\nCREATE SCHEMA app;\n"
            + database_default("search_path", "app, public", True, database),
            "002_t.sql": "-- migrate:no-transaction\nCREATE TABLE t (id int);\n",
            "003_index.sql": "CREATE INDEX CONCURRENTLY t_id ON t (id);\n",
        }
    )
    result = run_runner(env=database.env(MIGRATIONS_DIR=str(migrations.path)))
    assert result.returncode == 0, result
    assert schema_of(database, "t_id") == "app"


def test_the_new_login_runs_under_the_lock_the_run_took(database, start_runner, migrations):
    """The lock stays on its own connection: while the file after the renewal runs, another
    runner cannot take it."""
    migrations.add(
        {
            "001_path.sql": "CREATE SCHEMA app;\n"
            + database_default("search_path", "app, public", True, database),
            "002_slow.sql": "SELECT pg_sleep(3);\nCREATE TABLE t (id int);\n",
        }
    )
    runner = start_runner(env=database.env(MIGRATIONS_DIR=str(migrations.path)))
    with database.connect() as other:
        deadline = time.monotonic() + 30
        while not other.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE query LIKE '%pg_sleep(3)%' AND pid <> pg_backend_pid()"
        ).fetchone()[0]:
            assert time.monotonic() < deadline, "002 never started"
            time.sleep(0.05)
        other.execute("BEGIN")
        with pytest.raises(psycopg.errors.LockNotAvailable):
            other.execute(HOLD_MIGRATION_LOCK + " NOWAIT")
        other.execute("ROLLBACK")
    result = runner.wait()
    assert result.returncode == 0, result
    assert [e["version"] for e in result.events_named("session_renewed")] == ["001_path"]
    assert schema_of(database, "t") == "app"


@pytest.fixture
def owner_role(database: Database) -> Iterator[str]:
    """A login role that owns ``database`` (cluster-wide: dropped with what it owns)."""
    role = f"owner_{uuid.uuid4().hex[:8]}"
    with database.connect() as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'owner-Pa55-{role}'")
        conn.execute(f'ALTER DATABASE "{database.name}" OWNER TO {role}')
        conn.execute(f"ALTER SCHEMA public OWNER TO {role}")
    yield role
    with psycopg.connect(**database.server.conninfo(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{database.name}" WITH (FORCE)')
        conn.execute(f"DROP ROLE {role}")


def test_a_role_default_for_every_database_reaches_the_next_files(
    database, run_runner, migrations, owner_role
):
    migrations.add(
        {
            "001_role.sql": "CREATE SCHEMA app;\n"
            "ALTER ROLE CURRENT_USER SET search_path = app, public;\n"
            "DO $$ BEGIN EXECUTE 'ALTER ROLE ' || quote_ident(current_user) "
            f"|| ' SET TimeZone = ''{ZONE}'''; END $$;\n",
            "002_t.sql": "CREATE TABLE t (id int);\n",
            "003_tz.sql": "CREATE TABLE tz AS SELECT current_setting('TimeZone') AS z;\n",
        }
    )
    env = database.env(
        MIGRATIONS_DIR=str(migrations.path),
        DB_USER=owner_role,
        DB_PASSWORD=f"owner-Pa55-{owner_role}",
    )
    result = run_runner(env=env)
    assert result.returncode == 0, result
    assert where_things_landed(database) == ("app", ZONE)


# --- the lint: each file in the session migrate gives it ------------------------------------------

SETUP_000 = (
    "CREATE SCHEMA IF NOT EXISTS app;\n"
    "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET search_path = app, public', "
    "current_database()); END $$;\n"
)
LINT_FILES = {
    "000_setup.sql": SETUP_000,
    "001_t.sql": "CREATE TABLE t (id int);\n",
    "002_u.sql": "ALTER TABLE app.t ADD COLUMN x int;\n",
}


def admin_env(database: Database, migrations: Any) -> dict[str, str]:
    """DB_USER is DB_ADMIN_USER: the superuser runs 000 and owns the files."""
    return database.env(
        MIGRATIONS_DIR=str(migrations.path),
        DB_ADMIN_USER="postgres",
        DB_ADMIN_PASSWORD=database.server.password,
        LINT_MIN_ROWS="0",
    )


@pytest.mark.parametrize("target", [True, False], ids=["target", "no-target"])
def test_the_lint_runs_each_file_in_the_session_migrate_gives_it(
    database, unborn_database, run_runner, migrations, target
):
    migrations.add(LINT_FILES)
    linted = database if target else unborn_database
    lint = run_runner("lint", env=admin_env(linted, migrations))
    assert lint.returncode == 0, lint
    migrate = run_runner(env=admin_env(database, migrations))
    assert migrate.returncode == 0, migrate
    assert database.scalar("SELECT count(*) FROM information_schema.columns "
                           "WHERE table_schema = 'app' AND table_name = 't'") == 2  # fmt: skip


def test_the_lint_follows_a_default_a_pending_file_sets(database, run_runner, migrations):
    migrations.add(
        {
            "001_path.sql": "CREATE SCHEMA app;\n"
            + database_default("search_path", "app, public", True, database),
            "002_t.sql": "CREATE TABLE t (id int);\n",
            "003_u.sql": "ALTER TABLE app.t ADD COLUMN x int;\n",
        }
    )
    lint = run_runner("lint", env=admin_env(database, migrations))
    assert lint.returncode == 0, lint
