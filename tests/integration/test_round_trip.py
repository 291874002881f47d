"""One round trip per file: what travels with the file (BEGIN, timeouts, history row, COMMIT),
the no-lock start when nothing is pending, and the opt-in single transaction."""

from __future__ import annotations

from migrator.history.name import DEFAULT_TABLE
from tests.conftest import hold_migration_lock

THREE_FILES = {
    "001_a.sql": "CREATE TABLE a (id int PRIMARY KEY);",
    "002_b.sql": "CREATE TABLE b (id int PRIMARY KEY, a_id int REFERENCES a);",
    "003_c.sql": "CREATE TABLE c (id int PRIMARY KEY);\nINSERT INTO c VALUES (1);",
}


def versions(database) -> list[str]:
    return [row[0] for row in database.query("SELECT version FROM schema_migrations ORDER BY 1")]


def test_the_server_measures_each_file_in_its_history_row(database, run_runner, migrations):
    migrations.add({"001_slow.sql": "SELECT pg_sleep(0.3);", "002_fast.sql": "SELECT 1;"})
    result = run_runner(env=database.env(MIGRATIONS_DIR=str(migrations.path)))
    assert result.returncode == 0, result
    rows = dict(database.query("SELECT version, execution_ms FROM schema_migrations"))
    assert 300 <= rows["001_slow"] < 5000
    assert 0 <= rows["002_fast"] < 300


def test_a_file_ending_in_a_comment_without_semicolon_is_recorded(database, run_runner, migrations):
    migrations.add(
        {"001_open_end.sql": "CREATE TABLE open_end (id int)\n-- no semicolon, no newline"}
    )
    result = run_runner(env=database.env(MIGRATIONS_DIR=str(migrations.path)))
    assert result.returncode == 0, result
    assert database.scalar("SELECT to_regclass('open_end') IS NOT NULL")
    assert versions(database) == ["001_open_end"]


def test_a_syntax_error_late_in_a_file_names_its_line(database, run_runner, migrations):
    # A syntax error stops the whole round trip before anything runs: the line comes from the
    # server's position, which counts from the BEGIN sent ahead of the file.
    body = "".join(f"CREATE TABLE t{i} (id int);\n" for i in range(1, 120))
    bad = migrations.write("001_long.sql", body + "CREATE TABEL oops (id int);\n")
    result = run_runner(env=database.env(MIGRATIONS_DIR=str(migrations.path)))
    assert result.returncode == 65, result
    failure = result.events_named("migration_failed")[0]
    assert (failure["file"], failure["line"], failure["column"]) == (str(bad), 120, 8)
    assert failure["sqlstate"] == "42601"
    assert failure["statement"] == "CREATE TABEL oops (id int)"
    assert database.scalar("SELECT to_regclass('t1')") is None


def test_a_deferred_check_failing_at_commit_fails_the_file(database, run_runner, migrations):
    bad = migrations.write(
        "001_deferred.sql",
        "CREATE TABLE parent (id int PRIMARY KEY);\n"
        "CREATE TABLE child (parent_id int REFERENCES parent DEFERRABLE INITIALLY DEFERRED);\n"
        "INSERT INTO child VALUES (42);\n",
    )
    result = run_runner(env=database.env(MIGRATIONS_DIR=str(migrations.path)))
    assert result.returncode == 65, result
    failure = result.events_named("migration_failed")[0]
    assert failure["error"].startswith(f"{bad}: COMMIT failed after the file ran: 23503 ")
    assert database.scalar("SELECT to_regclass('child')") is None
    assert database.query("SELECT count(*) FROM schema_migrations") == [(0,)]


def test_a_history_table_altered_by_hand_fails_the_file_and_keeps_nothing(
    database, run_runner, migrations
):
    migrations.add({"001_first.sql": "CREATE TABLE first (id int);"})
    assert run_runner(env=database.env(MIGRATIONS_DIR=str(migrations.path))).returncode == 0
    with database.connect() as conn:
        conn.execute("ALTER TABLE schema_migrations ADD COLUMN ticket text NOT NULL DEFAULT 'x'")
        conn.execute("ALTER TABLE schema_migrations ALTER COLUMN ticket DROP DEFAULT")
    bad = migrations.write("002_second.sql", "CREATE TABLE second (id int);")
    result = run_runner(env=database.env(MIGRATIONS_DIR=str(migrations.path)))
    assert result.returncode == 65, result
    failure = result.events_named("migration_failed")[0]
    assert failure["error"].startswith(
        f"{bad}: INSERT INTO {DEFAULT_TABLE.regclass} (version, failed after the file ran: 23502 "
    )
    assert database.scalar("SELECT to_regclass('second')") is None
    assert versions(database) == ["001_first"]


def test_nothing_pending_exits_without_waiting_for_the_migration_lock(
    database, run_runner, migrations
):
    migrations.add(THREE_FILES)
    assert run_runner(env=database.env(MIGRATIONS_DIR=str(migrations.path))).returncode == 0
    with database.connect() as holder:  # another runner, busy with a migration of its own
        hold_migration_lock(holder)
        env = database.env(MIGRATIONS_DIR=str(migrations.path), MIGRATION_LOCK_TIMEOUT="1s")
        result = run_runner(env=env)
    assert result.returncode == 0, result
    assert result.events_named("migrations_complete")[0]["skipped"] == 3
    assert not result.events_named("lock_waiting")


def test_single_transaction_applies_every_file_and_commits_once(database, run_runner, migrations):
    migrations.add(THREE_FILES)
    env = database.env(MIGRATIONS_DIR=str(migrations.path))
    result = run_runner("--single-transaction", env=env)
    assert result.returncode == 0, result
    assert versions(database) == ["001_a", "002_b", "003_c"]
    assert result.events_named("transaction_committed")[0]["versions"] == [
        "001_a",
        "002_b",
        "003_c",
    ]
    # One transaction: every row carries the same transaction start time.
    assert database.scalar("SELECT count(DISTINCT applied_at) FROM schema_migrations") == 1


def test_single_transaction_rolls_back_every_file_when_one_fails(database, run_runner, migrations):
    migrations.add(THREE_FILES)
    bad = migrations.write("004_bad.sql", "INSERT INTO b VALUES (1, 99);")
    env = database.env(MIGRATIONS_DIR=str(migrations.path), SINGLE_TRANSACTION="true")
    result = run_runner(env=env)
    assert result.returncode == 65, result
    failure = result.events_named("migration_failed")[0]
    assert (failure["file"], failure["line"], failure["sqlstate"]) == (str(bad), 1, "23503")
    assert result.events_named("transaction_rolled_back")
    assert database.scalar("SELECT to_regclass('a')") is None
    assert database.query("SELECT count(*) FROM schema_migrations") == [(0,)]


def test_single_transaction_refuses_a_file_that_cannot_run_in_one(database, run_runner, migrations):
    migrations.add(THREE_FILES)
    concurrent = migrations.write("004_index.sql", "CREATE INDEX CONCURRENTLY c_id ON c (id);")
    env = database.env(MIGRATIONS_DIR=str(migrations.path), SINGLE_TRANSACTION="true")
    result = run_runner(env=env)
    assert result.returncode == 78, result
    error = result.last_event()["error"]
    assert error.startswith(f"SINGLE_TRANSACTION is set, but {concurrent} must run outside")
    assert "CREATE INDEX CONCURRENTLY" in error
    assert database.scalar("SELECT to_regclass('a')") is None
