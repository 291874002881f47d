"""baseline: a database built without any tool gets its files recorded, then migrate goes on."""

from __future__ import annotations

import hashlib

from migrator.files.folder import find_migrations
from tests.conftest import REPO
from tests.integration import schema_fixtures

FOLDER = {
    "001_accounts.sql": "CREATE TABLE accounts (id bigint PRIMARY KEY);\n",
    "002_sessions.sql": "CREATE TABLE sessions (id bigint REFERENCES accounts);\n",
    "003_tokens.sql": "CREATE TABLE tokens (id bigint);\n",
}


def built_by_hand(database, migrations):
    migrations.add(FOLDER)
    with database.connect() as conn:
        conn.execute(FOLDER["001_accounts.sql"] + FOLDER["002_sessions.sql"])
    return database.env(MIGRATIONS_DIR=str(migrations.path))


def test_baseline_records_files_up_to_the_version_then_migrate_applies_the_rest(
    database, run_runner, migrations
):
    env = built_by_hand(database, migrations)
    dry = run_runner("baseline", "--version", "002_sessions", "--dry-run", env=env)
    assert dry.returncode == 0, dry.stdout
    assert [e["version"] for e in dry.events_named("plan_baseline_version")] == [
        "001_accounts",
        "002_sessions",
    ]
    assert database.scalar("SELECT to_regclass('schema_migrations')") is None

    result = run_runner("baseline", "--version", "002_sessions", env=env)
    assert result.returncode == 0, result.stdout
    rows = database.query(
        "SELECT version, description, checksum FROM schema_migrations ORDER BY version"
    )
    assert rows == [
        (stem, "baseline", hashlib.sha256(FOLDER[f"{stem}.sql"].encode()).hexdigest())
        for stem in ("001_accounts", "002_sessions")
    ]
    migrate = run_runner(env=env)
    assert migrate.returncode == 0, migrate.stdout
    assert migrate.events_named("migrations_complete")[0]["applied"] == ["003_tokens"]


def test_baseline_is_refused_when_history_has_rows(database, run_runner, migrations):
    env = built_by_hand(database, migrations)
    assert run_runner("baseline", "--version", "1", env=env).returncode == 0
    again = run_runner("baseline", "--version", "2", env=env)
    assert again.returncode == 65
    assert "already has 1 row(s)" in again.termination_message
    assert database.query("SELECT version FROM schema_migrations") == [("001_accounts",)]


def test_baseline_run_again_finds_its_work_done(database, run_runner, migrations):
    """A retried Job: the same baseline again exits 0 and records nothing more."""
    env = built_by_hand(database, migrations)
    assert run_runner("baseline", "--version", "2", env=env).returncode == 0
    before = database.query("SELECT * FROM schema_migrations ORDER BY version")
    again = run_runner("baseline", "--version", "002_sessions", env=env)
    assert again.returncode == 0, again.stdout
    assert again.events_named("baseline_nothing_to_do"), again.stdout
    assert not again.events_named("baseline_recorded")
    assert database.query("SELECT * FROM schema_migrations ORDER BY version") == before


def test_baseline_needs_a_known_version(database, run_runner, migrations):
    env = built_by_hand(database, migrations)
    assert run_runner("baseline", env=env).returncode == 64
    unknown = run_runner("baseline", "--version", "002_typo", env=env)
    assert unknown.returncode == 64
    assert "002_typo" in unknown.termination_message


def test_verify_accepts_the_schema_the_files_build(database, run_runner, migrations):
    env = built_by_hand(database, migrations)
    result = run_runner("baseline", "--version", "2", "--verify", env=env)
    assert result.returncode == 0, result.stdout
    assert result.events_named("baseline_verified")[0]["differences"] == 0
    assert len(database.query("SELECT version FROM schema_migrations")) == 2
    leftovers = "SELECT count(*) FROM pg_database WHERE datname LIKE 'baseline_verify_%'"
    assert database.scalar(leftovers) == 0


def test_verify_refuses_a_schema_that_differs_naming_the_objects(database, run_runner, migrations):
    env = built_by_hand(database, migrations)
    with database.connect() as conn:
        conn.execute("CREATE INDEX by_hand ON accounts (id DESC); ALTER TABLE sessions ADD x int")
    result = run_runner("baseline", "--version", "2", "--verify", env=env)
    assert result.returncode == 65, result.stdout
    message = result.termination_message
    assert "not built by the files: column public.sessions.x integer" in message
    assert "by_hand" in message
    assert database.scalar("SELECT to_regclass('schema_migrations')") is not None
    assert database.query("SELECT count(*) FROM schema_migrations") == [(0,)]


fresh_schema_db = schema_fixtures.fresh_schema_db


def test_verify_on_the_shipped_schema(fresh_schema_db, run_runner):
    """The production schema (RLS, functions, triggers, grants) compares equal to itself."""
    db = fresh_schema_db.db
    with db.connect() as conn:
        conn.execute("DELETE FROM schema_migrations WHERE version <> '000_init_database'")
    env = schema_fixtures.runner_env(db)
    shipped = find_migrations(REPO / "migrations")
    newest = shipped.versioned[-1].version
    result = run_runner("baseline", "--version", newest.split("_")[0], "--verify", env=env)
    assert result.returncode == 0, result.stdout
    recorded = db.query(
        "SELECT version, description FROM schema_migrations "
        "WHERE version <> '000_init_database' ORDER BY version"
    )
    assert [row[0] for row in recorded] == [m.version for m in shipped.versioned]
    assert {row[1] for row in recorded} == {"baseline"}
    assert run_runner(env=env).events_named("migrations_complete")[0]["applied"] == []
