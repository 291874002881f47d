"""MIGRATIONS_TABLE: every command keeps its history in the table it names.

The case that asked for it: a golang-migrate history whose own files alter golang-migrate's
``schema_migrations``. The runner's history lives elsewhere (``migrator_history``), adopt leaves
golang-migrate's table under its name, and each later file finds it there. golang-migrate's
table is created with its own DDL (see test_adopt.py) and filled as golang-migrate fills it.
"""

from __future__ import annotations

import pytest

from tests.integration.test_adopt import GOLANG_MIGRATE_TABLE, execute

HISTORY = "migrator_history"
# golang-migrate format; 2 alters golang-migrate's own table, as some real histories do.
GOLANG_FOLDER = {
    "1_accounts.up.sql": "CREATE TABLE accounts (id bigint PRIMARY KEY);\n",
    "1_accounts.down.sql": "DROP TABLE accounts;\n",
    "2_version_note.up.sql": "ALTER TABLE schema_migrations ADD COLUMN note text;\n",
    "2_version_note.down.sql": "ALTER TABLE schema_migrations DROP COLUMN note;\n",
    "3_tokens.up.sql": "CREATE TABLE tokens (id bigint);\n",
    "3_tokens.down.sql": "DROP TABLE tokens;\n",
}
FOLDER = {
    "001_accounts.sql": "CREATE TABLE accounts (id bigint PRIMARY KEY);\n",
    "002_tokens.sql": (
        "-- migrate:up\nCREATE TABLE tokens (id bigint);\n-- migrate:down\nDROP TABLE tokens;\n"
    ),
}
SCHEMA_HISTORY = "migrator.history"


def rows(database, table):
    return database.query(f"SELECT version, applied_by FROM {table} ORDER BY version")


def relation(database, name):
    return database.scalar("SELECT to_regclass(%s)::text", name)


def golang_columns(database):
    return database.query(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = 'public' "
        "AND table_name = 'schema_migrations' ORDER BY ordinal_position"
    )


def test_every_command_keeps_its_history_beside_golang_migrates_table(
    database, run_runner, run_status_json, run_healthcheck, migrations
):
    migrations.add(GOLANG_FOLDER)
    execute(database, GOLANG_MIGRATE_TABLE)
    execute(database, "CREATE TABLE accounts (id bigint PRIMARY KEY)")
    execute(database, "INSERT INTO schema_migrations VALUES (1, false)")
    env = database.env(MIGRATIONS_DIR=str(migrations.path), MIGRATIONS_TABLE=HISTORY)

    # golang-migrate's table is found under its own name: nothing applied before adopt.
    refused = run_runner(env=env)
    assert refused.returncode == 78, refused
    assert "public.schema_migrations was written by golang-migrate" in refused.termination_message
    assert relation(database, HISTORY) is None

    adopted = run_runner("adopt", env=env)
    assert adopted.returncode == 0, adopted
    event = adopted.events_named("adopted")[0]
    assert (event["renamed_to"], event["history"]) == (None, f"public.{HISTORY}")
    assert event["summary"] == (
        f"adopted 1 version(s) from golang-migrate; schema_migrations left as it is, "
        f"beside public.{HISTORY}"
    )
    assert rows(database, HISTORY) == [("1_accounts", "golang-migrate (adopted)")]
    assert golang_columns(database) == [("version",), ("dirty",)]
    again = run_runner("adopt", env=env)
    assert again.returncode == 0, again
    assert again.events_named("adopt_nothing_to_do"), again

    # Read-only commands read the configured table.
    result, document = run_status_json(env=env)
    assert result.returncode == 0 and document["up_to_date"] is False, result
    states = {row["version"]: row["state"] for row in document["migrations"]}
    assert states == {"1_accounts": "applied", "2_version_note": "pending", "3_tokens": "pending"}
    planned = run_runner("--dry-run", env=env)
    assert planned.returncode == 0, planned
    assert planned.events_named("plan_complete")[0]["pending"] == ["2_version_note", "3_tokens"]
    assert run_runner("wait", "--timeout", "1", env=env).returncode == 75
    unhealthy = run_healthcheck(env=env)
    assert unhealthy.returncode == 1 and "2_version_note pending" in unhealthy.stdout, unhealthy

    # The file that alters golang-migrate's table finds it; the history is recorded elsewhere.
    applied = run_runner(env=env)
    assert applied.returncode == 0, applied
    assert applied.events_named("migrations_complete")[0]["applied"] == [
        "2_version_note",
        "3_tokens",
    ]
    assert golang_columns(database) == [("version",), ("dirty",), ("note",)]
    assert database.query("SELECT version, dirty FROM schema_migrations") == [(1, False)]
    assert [row[0] for row in rows(database, HISTORY)] == [
        "1_accounts",
        "2_version_note",
        "3_tokens",
    ]
    assert run_runner("wait", "--timeout", "5", env=env).returncode == 0
    healthy = run_healthcheck(env=env)
    assert healthy.returncode == 0 and healthy.stdout.startswith("ok: 3 migrations"), healthy

    # The lock's view follows the history table; nothing of the default name was created.
    assert relation(database, f"{HISTORY}_lock") == f"{HISTORY}_lock"
    assert relation(database, "schema_migrations_lock") is None

    rolled_back = run_runner("rollback", "--steps", "2", env=env)
    assert rolled_back.returncode == 0, rolled_back
    assert [row[0] for row in rows(database, HISTORY)] == ["1_accounts"]
    assert golang_columns(database) == [("version",), ("dirty",)]
    assert relation(database, "tokens") is None
    assert run_runner(env=env).returncode == 0
    assert golang_columns(database) == [("version",), ("dirty",), ("note",)]


@pytest.fixture
def history_schema(database):
    """Schema ``migrator`` made (as 000 would) for MIGRATIONS_TABLE=migrator.history."""
    execute(database, "CREATE SCHEMA migrator")
    return database


def test_a_history_in_its_own_schema_for_every_command(
    history_schema, other_database, run_runner, run_status_json, run_healthcheck, migrations
):
    database = history_schema
    migrations.add(FOLDER)
    env = database.env(MIGRATIONS_DIR=str(migrations.path), MIGRATIONS_TABLE=SCHEMA_HISTORY)
    admin = {"DB_ADMIN_USER": "postgres", "DB_ADMIN_PASSWORD": database.server.password}

    linted = run_runner("lint", env={**env, **admin})
    assert linted.returncode == 0, linted
    applied = run_runner(env=env)
    assert applied.returncode == 0, applied
    assert [row[0] for row in rows(database, SCHEMA_HISTORY)] == ["001_accounts", "002_tokens"]
    assert relation(database, "migrator.history_lock") == "migrator.history_lock"
    assert (
        database.scalar(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND c.relname LIKE 'schema_migrations%'"
        )
        == 0
    )

    result, document = run_status_json(env=env)
    assert result.returncode == 0 and document["up_to_date"] is True, result
    assert run_runner("wait", "--timeout", "5", env=env).returncode == 0
    assert run_healthcheck(env=env).returncode == 0
    assert run_runner("--dry-run", env=env).events_named("plan_complete")[0]["pending"] == []
    assert run_runner("lint", env={**env, **admin}).returncode == 0  # nothing pending
    assert run_runner("rollback", "--steps", "1", env=env).returncode == 0
    assert [row[0] for row in rows(database, SCHEMA_HISTORY)] == ["001_accounts"]

    # baseline (verified on a scratch database) on a database built by hand, schema and all.
    execute(other_database, "CREATE SCHEMA migrator; CREATE TABLE accounts (id bigint PRIMARY KEY)")
    other = other_database.env(MIGRATIONS_DIR=str(migrations.path), MIGRATIONS_TABLE=SCHEMA_HISTORY)
    baselined = run_runner(
        "baseline", "--version", "001_accounts", "--verify", env={**other, **admin}
    )
    assert baselined.returncode == 0, baselined
    assert [row[0] for row in rows(other_database, SCHEMA_HISTORY)] == ["001_accounts"]
    assert relation(other_database, "public.schema_migrations") is None


def test_two_histories_in_one_database_do_not_block_each_other(database, run_runner, tmp_path):
    """Each history's lock is its own view: holding one does not stop the other."""
    folders = {}
    for name in ("first", "second"):
        folders[name] = tmp_path / name
        folders[name].mkdir()
        (folders[name] / f"001_{name}.sql").write_text(f"CREATE TABLE {name} (id int);\n")
    env = {
        name: database.env(
            MIGRATIONS_DIR=str(folder), MIGRATIONS_TABLE=f"{name}_history",
            MIGRATION_LOCK_TIMEOUT="1",
        )
        for name, folder in folders.items()
    }  # fmt: skip
    with database.connect() as holder:  # another runner of the first history, mid-run
        holder.execute("CREATE VIEW first_history_lock AS SELECT 1 AS migration_lock")
        holder.execute("BEGIN")
        holder.execute("LOCK TABLE first_history_lock IN SHARE UPDATE EXCLUSIVE MODE")
        blocked = run_runner(env=env["first"])
        assert blocked.returncode == 75, blocked
        beside = run_runner(env=env["second"])
        assert beside.returncode == 0, beside
        holder.execute("ROLLBACK")
    assert rows(database, "second_history")[0][0] == "001_second"
    assert relation(database, "first") is None
    assert run_runner(env=env["first"]).returncode == 0
    assert rows(database, "first_history")[0][0] == "001_first"


@pytest.mark.parametrize(
    ("prepare", "what"),
    [
        ("", "names schema nope, which does not exist in database"),
        (
            "CREATE SCHEMA nope; CREATE VIEW nope.history AS SELECT 1 AS version",
            "names nope.history, which is a view",
        ),
        (
            "CREATE SCHEMA nope; CREATE TABLE nope.history (id int)",
            "names nope.history, which is a table without a version column",
        ),
    ],
    ids=["missing-schema", "a-view", "not-a-history"],
)
def test_a_table_that_cannot_be_the_history_is_a_configuration_error(
    database, run_runner, run_healthcheck, migrations, prepare, what
):
    if prepare:
        execute(database, prepare)
    migrations.add(FOLDER)
    env = database.env(MIGRATIONS_DIR=str(migrations.path), MIGRATIONS_TABLE="nope.history")
    for command in ((), ("status",), ("wait", "--timeout", "1"), ("--dry-run",), ("adopt",)):
        result = run_runner(*command, env=env)
        assert result.returncode == 78, (command, result)
        message = result.termination_message
        assert message.count("\n") <= 1 and message.startswith("MIGRATIONS_TABLE names ")
        assert what in message, message
    baseline = run_runner("baseline", "--version", "001_accounts", env=env)
    assert baseline.returncode == 78, baseline
    assert relation(database, "accounts") is None
    assert relation(database, "public.schema_migrations") is None
    health = run_healthcheck(env=env)
    assert health.returncode == 1, health
    assert health.stdout.startswith("unhealthy: MIGRATIONS_TABLE names "), health
    assert "nope" in health.stdout, health


@pytest.mark.parametrize("value", ["Migrator_History", "a.b.c", "pg_catalog.history", "x-y"])
def test_an_invalid_migrations_table_is_refused_by_every_command(
    database, run_runner, run_healthcheck, migrations, value
):
    migrations.add(FOLDER)
    env = database.env(MIGRATIONS_DIR=str(migrations.path), MIGRATIONS_TABLE=value)
    for command in (
        (),
        ("status",),
        ("wait",),
        ("lint",),
        ("adopt",),
        ("rollback", "--steps", "1"),
    ):
        result = run_runner(*command, env=env)
        assert result.returncode == 78, (command, result)
        assert result.termination_message.startswith("MIGRATIONS_TABLE"), result
    health = run_healthcheck(env=env)
    assert health.returncode == 1 and health.stdout.startswith("unhealthy: MIGRATIONS_TABLE")
    assert relation(database, "accounts") is None


def test_a_changed_setting_on_a_migrated_database_is_refused_not_a_second_history(
    database, run_runner, migrations
):
    """MIGRATIONS_TABLE changed (or unset) after the database was migrated: a new empty table
    would plan every file again (data files twice, or a failure half-way); it is refused and
    names where the history is. A second service's history beside it is not mistaken for it."""
    migrations.add(FOLDER)
    first = run_runner(env=database.env(MIGRATIONS_DIR=str(migrations.path)))
    assert first.returncode == 0, first
    # Another service's history in the same database records other versions: left alone.
    execute(database, "CREATE SCHEMA billing")
    execute(
        database,
        "CREATE TABLE billing.history (applied_by text, version text PRIMARY KEY, "
        "description text, checksum text, applied_at timestamptz, execution_ms integer)",
    )
    execute(database, "INSERT INTO billing.history (version) VALUES ('001_invoices')")

    moved = database.env(MIGRATIONS_DIR=str(migrations.path), MIGRATIONS_TABLE=HISTORY)
    refused = run_runner(env=moved)
    assert refused.returncode == 78, refused
    assert refused.termination_message.strip() == (
        f"MIGRATIONS_TABLE names public.{HISTORY}, which records nothing, but "
        "public.schema_migrations records 2 of this folder's files: set "
        f"MIGRATIONS_TABLE=public.schema_migrations (or rename that table to public.{HISTORY}); "
        "a new history would apply every file again"
    )
    assert rows(database, HISTORY) == []  # nothing recorded, nothing applied twice
    assert database.scalar("SELECT count(*) FROM schema_migrations") == 2

    # Renamed as the message says, the history is found again: nothing to do.
    execute(database, f"ALTER TABLE schema_migrations RENAME TO {HISTORY}_old")
    execute(database, f"DROP TABLE {HISTORY}")
    execute(database, f"ALTER TABLE {HISTORY}_old RENAME TO {HISTORY}")
    again = run_runner(env=moved)
    assert again.returncode == 0, again
    assert again.events_named("migration_applied") == []
