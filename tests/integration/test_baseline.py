"""baseline: a database built without any tool gets its files recorded, then migrate goes on."""

from __future__ import annotations

import hashlib

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


def test_baseline_needs_a_known_version(database, run_runner, migrations):
    env = built_by_hand(database, migrations)
    assert run_runner("baseline", env=env).returncode == 64
    unknown = run_runner("baseline", "--version", "002_typo", env=env)
    assert unknown.returncode == 64
    assert "002_typo" in unknown.termination_message
