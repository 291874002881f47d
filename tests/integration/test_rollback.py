"""rollback: down parts newest first, each with its history row, under the migration lock."""

from __future__ import annotations

import pytest

FOLDER = {
    "001_accounts.sql": (
        "CREATE TABLE accounts (id bigint PRIMARY KEY, email text);\n"
        "-- migrate:down\n"
        "DROP TABLE accounts;\n"
    ),
    "002_email_index.sql": (
        "-- migrate:up transaction:false\n"
        "CREATE INDEX CONCURRENTLY accounts_email ON accounts (email);\n"
        "-- migrate:down transaction:false\n"
        "DROP INDEX CONCURRENTLY accounts_email;\n"
    ),
    "003_sessions.sql": "CREATE TABLE sessions (id bigint REFERENCES accounts);\n",
    "003_sessions.down.sql": "DROP TABLE sessions;\n",
}


@pytest.fixture
def migrated(database, run_runner, migrations):
    migrations.add(FOLDER)
    env = database.env(MIGRATIONS_DIR=str(migrations.path))
    assert run_runner(env=env).returncode == 0
    return env


def migrated_with(database, run_runner, migrations, name, sql):
    """FOLDER plus (or with a replaced) ``name``, applied; the runner's environment."""
    migrations.add(FOLDER).write(name, sql)
    env = database.env(MIGRATIONS_DIR=str(migrations.path))
    assert run_runner(env=env).returncode == 0
    return env


def versions(database):
    return [row[0] for row in database.query("SELECT version FROM schema_migrations ORDER BY 1")]


def test_rollback_then_migrate_returns_to_the_same_schema(database, run_runner, migrated):
    before = database.pg_dump("--schema-only")
    result = run_runner("rollback", "--to", "001", env=migrated)
    assert result.returncode == 0, result.stdout
    assert [e["version"] for e in result.events_named("migration_rolled_back")] == [
        "003_sessions",
        "002_email_index",
    ]
    assert versions(database) == ["001_accounts"]
    assert database.scalar("SELECT to_regclass('sessions')") is None
    assert database.scalar("SELECT to_regclass('accounts_email')") is None
    again = run_runner(env=migrated)
    assert again.returncode == 0, again.stdout
    assert database.pg_dump("--schema-only") == before


def test_rollback_steps_and_dry_run(database, run_runner, migrated):
    dry = run_runner("rollback", "--steps", "2", "--dry-run", env=migrated)
    assert dry.returncode == 0
    assert [e["version"] for e in dry.events_named("plan_rollback")] == [
        "003_sessions",
        "002_email_index",
    ]
    assert versions(database) == ["001_accounts", "002_email_index", "003_sessions"]
    one = run_runner("rollback", "--steps", "1", env=migrated)
    assert one.returncode == 0
    assert versions(database) == ["001_accounts", "002_email_index"]


def test_file_without_down_part_stops_the_rollback_before_anything_runs(
    database, run_runner, migrations
):
    env = migrated_with(
        database, run_runner, migrations, "004_tokens.sql", "CREATE TABLE tokens (id int);"
    )
    result = run_runner("rollback", "--to", "0", env=env)
    assert result.returncode == 65
    assert "004_tokens.sql has no down part" in result.termination_message
    assert len(versions(database)) == 4
    assert database.scalar("SELECT to_regclass('tokens')") is not None


def test_failing_down_part_keeps_its_row_and_what_was_rolled_back_before(
    database, run_runner, migrations
):
    env = migrated_with(
        database, run_runner, migrations, "003_sessions.down.sql", "DROP TABLE no_such_table;\n"
    )
    result = run_runner("rollback", "--to", "0", env=env)
    assert result.returncode == 65
    assert "003_sessions.down.sql:1" in result.termination_message
    assert versions(database) == ["001_accounts", "002_email_index", "003_sessions"]


@pytest.mark.parametrize(
    "args",
    [("rollback",), ("rollback", "--to", "1", "--steps", "1"), ("rollback", "--steps", "0"),
     ("migrate", "--to", "1")],
)  # fmt: skip
def test_rollback_usage_errors(database, run_runner, migrations, args):
    result = run_runner(*args, env=database.env(MIGRATIONS_DIR=str(migrations.path)))
    assert result.returncode == 64, result.stdout


def test_run_migrations_script_rolls_back(database, migrated, tmp_path):
    import subprocess

    from tests.conftest import REPO, entrypoint_env

    env = entrypoint_env({**migrated, "MIGRATE_RUNNER": "local"}, tmp_path / "termination.log")
    result = subprocess.run(
        [str(REPO / "scripts" / "run-migrations.sh"), "--rollback-to", "002"],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert versions(database) == ["001_accounts", "002_email_index"]
