"""Applying files: transactions leave no trace on failure, non-transactional statements are detected."""

from __future__ import annotations

import threading
import time
from datetime import datetime

import pytest

HOLD_SECONDS = 5


def _seconds(event: dict[str, object]) -> float:
    return datetime.fromisoformat(str(event["timestamp"])).timestamp()


def test_a_failing_file_leaves_no_trace_and_names_file_line_column(
    database, run_runner, migrations
):
    migrations.add({"001_ok.sql": "CREATE TABLE ok (id int);"})
    bad = migrations.write(
        "002_bad.sql",
        "CREATE TABLE half_done (id int);\n"
        "INSERT INTO half_done VALUES (1);\n"
        "SELECT * FROM\n    no_such_table;\n",
    )
    migrations.add({"003_later.sql": "CREATE TABLE later (id int);"})
    result = run_runner(env=database.env(MIGRATIONS_DIR=str(migrations.path)))

    assert result.returncode == 65, result
    failure = result.events_named("migration_failed")[0]
    assert failure["file"] == str(bad)
    assert (failure["line"], failure["column"]) == (4, 5)
    assert failure["sqlstate"] == "42P01"
    assert failure["server_message"] == 'relation "no_such_table" does not exist'
    assert failure["error"] == f'{bad}:4:5: 42P01 relation "no_such_table" does not exist'
    assert database.scalar("SELECT to_regclass('half_done')") is None
    assert database.scalar("SELECT to_regclass('later')") is None
    assert database.query("SELECT version FROM schema_migrations") == [("001_ok",)]
    assert result.termination_message.strip() == failure["error"]


def test_an_error_without_position_names_the_failing_statement(database, run_runner, migrations):
    bad = migrations.write(
        "001_violation.sql",
        "CREATE TABLE t (id int PRIMARY KEY);\n"
        "INSERT INTO t VALUES (1);\n"
        "\n"
        "INSERT INTO t VALUES (1);\n",
    )
    result = run_runner(env=database.env(MIGRATIONS_DIR=str(migrations.path)))
    assert result.returncode == 65, result
    failure = result.events_named("migration_failed")[0]
    assert (failure["file"], failure["line"], failure["sqlstate"]) == (str(bad), 4, "23505")
    assert "Key (id)=(1) already exists" in failure["detail"]


def test_create_index_concurrently_is_detected_without_annotation(database, run_runner, migrations):
    migrations.add({
        "001_table.sql": "CREATE TABLE items (id int, name text);",
        "002_index.sql": "-- no annotation needed\n"
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS items_name ON items (name);\n"
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS items_id ON items (id)",
    })  # fmt: skip
    result = run_runner(env=database.env(MIGRATIONS_DIR=str(migrations.path)))
    assert result.returncode == 0, result
    started = {e["version"]: e for e in result.events_named("migration_started")}
    assert started["002_index"]["mode"] == "no-transaction"
    assert "CONCURRENTLY" in started["002_index"]["mode_reason"]
    assert started["001_table"]["mode"] == "transaction"
    indexes = database.query(
        "SELECT indexname FROM pg_indexes WHERE tablename = 'items' ORDER BY 1"
    )
    assert indexes == [("items_id",), ("items_name",)]
    assert database.scalar("SELECT count(*) FROM schema_migrations") == 2


def test_the_no_transaction_annotation_forces_the_mode(database, run_runner, migrations):
    migrations.add({
        "001_forced.sql": "-- migrate:no-transaction\nCREATE TABLE a (id int);\nCREATE TABLE b (id int);",
    })  # fmt: skip
    result = run_runner(env=database.env(MIGRATIONS_DIR=str(migrations.path)))
    assert result.returncode == 0, result
    assert result.events_named("migration_started")[0]["mode"] == "no-transaction"


def test_a_failing_non_transactional_statement_names_its_line_and_can_be_rerun(
    database, run_runner, migrations
):
    bad = migrations.write(
        "001_concurrent.sql",
        "CREATE TABLE items (id int);\n"
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS items_id ON items (id);\n"
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS items_x ON items (no_such_column);\n",
    )
    env = database.env(MIGRATIONS_DIR=str(migrations.path))
    result = run_runner(env=env)
    assert result.returncode == 65, result
    failure = result.events_named("migration_failed")[0]
    assert (failure["file"], failure["line"], failure["sqlstate"]) == (str(bad), 3, "42703")
    assert failure["column"] == 1, "no server position for this error: the statement's start"
    assert database.scalar("SELECT count(*) FROM schema_migrations") == 0, "no row after a failure"
    fixed = bad.read_text().replace("no_such_column", "id")
    bad.write_text(fixed.replace("CREATE TABLE items", "CREATE TABLE IF NOT EXISTS items"))
    rerun = run_runner(env=env)
    assert rerun.returncode == 0, rerun


@pytest.mark.parametrize("content", ["", "-- only a comment\n/* and a block */\n", "  \n;\n"])
def test_empty_and_comment_only_files_are_recorded_no_ops(
    database, run_runner, migrations, content
):
    migrations.add({"001_nothing.sql": content})
    result = run_runner(env=database.env(MIGRATIONS_DIR=str(migrations.path)))
    assert result.returncode == 0, result
    assert database.query("SELECT version FROM schema_migrations") == [("001_nothing",)]


def test_notices_become_log_events(database, run_runner, migrations):
    migrations.add(
        {"001_notice.sql": "DO $$ BEGIN RAISE NOTICE 'hello from %', 'plpgsql'; END $$;"}
    )
    result = run_runner(env=database.env(MIGRATIONS_DIR=str(migrations.path)))
    assert result.returncode == 0, result
    notice = result.events_named("notice")[0]
    assert (notice["version"], notice["message"]) == ("001_notice", "hello from plpgsql")


def test_lock_timeout_retries_until_the_table_is_free(database, run_runner, migrations):
    migrations.add({"001_table.sql": "CREATE TABLE busy (id int);"})
    env = database.env(MIGRATIONS_DIR=str(migrations.path))
    assert run_runner(env=env).returncode == 0
    migrations.add({"002_alter.sql": "ALTER TABLE busy ADD COLUMN name text;"})

    holding = threading.Event()

    def hold_lock_for_a_while() -> None:
        with database.connect(autocommit=False) as conn:
            conn.execute("LOCK TABLE busy IN ACCESS SHARE MODE")
            holding.set()
            time.sleep(HOLD_SECONDS)
            conn.rollback()

    holder = threading.Thread(target=hold_lock_for_a_while)
    holder.start()
    assert holding.wait(10)
    result = run_runner(env={**env, "DDL_LOCK_TIMEOUT": "1s", "DDL_LOCK_RETRIES": "10"})
    holder.join()

    assert result.returncode == 0, result
    retries = result.events_named("lock_timeout_retry")
    assert len(retries) >= 2, "the migration should have timed out on the lock and retried"
    assert all(retry["lock_timeout_ms"] == 1000 for retry in retries)
    # Each attempt waits at most DDL_LOCK_TIMEOUT for the lock, then backs off.
    started = _seconds(result.events_named("migration_started")[-1])
    first_retry = _seconds(retries[0])
    assert 1.0 <= first_retry - started < 1.0 + 0.5
    assert (
        database.scalar(
            "SELECT count(*) FROM information_schema.columns WHERE table_name = 'busy' AND column_name = 'name'"
        )
        == 1
    )


def test_lock_timeout_gives_up_after_the_retries(database, run_runner, migrations):
    migrations.add({"001_table.sql": "CREATE TABLE busy (id int);"})
    env = database.env(MIGRATIONS_DIR=str(migrations.path))
    assert run_runner(env=env).returncode == 0
    migrations.add({"002_alter.sql": "ALTER TABLE busy ADD COLUMN name text;"})
    with database.connect(autocommit=False) as conn:
        conn.execute("LOCK TABLE busy IN ACCESS SHARE MODE")
        result = run_runner(env={**env, "DDL_LOCK_TIMEOUT": "200ms", "DDL_LOCK_RETRIES": "2"})
        conn.rollback()
    assert result.returncode == 65, result
    assert len(result.events_named("lock_timeout_retry")) == 2
    assert result.events_named("migration_failed")[0]["sqlstate"] == "55P03"


def test_the_catalog_queries_of_each_round_trip_are_prepared_once(database, run_runner, migrations):
    migrations.add({
        "001_t.sql": "CREATE TABLE t (id int);",
        "002_u.sql": "ALTER TABLE t ADD COLUMN name text;",
        "003_list.sql": "CREATE TABLE prepared_seen AS SELECT name, statement "
        "FROM pg_prepared_statements;",
    })  # fmt: skip
    result = run_runner(env=database.env(MIGRATIONS_DIR=str(migrations.path)))
    assert result.returncode == 0, result
    # The lock report still comes from the prepared query: 002 altered a table 001 made.
    applied = {e["version"]: e for e in result.events_named("migration_applied")}
    assert applied["002_u"]["locks"] == {"public.t": "ACCESS EXCLUSIVE"}
    seen = database.query("SELECT name, statement FROM prepared_seen ORDER BY name")
    assert [name.split("_")[0] for name, _ in seen] == ["migrator"] * len(seen)
    statements = " ".join(statement for _, statement in seen)
    assert "pg_locks" in statements and "max(oid)" in statements


def test_migration_applied_names_each_tables_strongest_lock_as_sql_writes_it(
    database, run_runner, migrations
):
    # The database reads strings without standard_conforming_strings, as an old application
    # may have set it: the report's own query must not read differently.
    with database.connect() as conn:
        conn.execute(f'ALTER DATABASE "{database.name}" SET standard_conforming_strings = off')
    migrations.add({
        "001_t.sql": "CREATE TABLE a (id int);\nCREATE TABLE b (id int);\nCREATE TABLE c (id int);",
        "002_locks.sql": "LOCK TABLE a IN SHARE ROW EXCLUSIVE MODE;\n"
        "CREATE INDEX ON b (id);\nLOCK TABLE c IN ROW SHARE MODE;\nSELECT count(*) FROM a;",
    })  # fmt: skip
    result = run_runner(env=database.env(MIGRATIONS_DIR=str(migrations.path)))
    assert result.returncode == 0, result
    applied = {e["version"]: e for e in result.events_named("migration_applied")}
    assert applied["002_locks"]["locks"] == {
        "public.a": "SHARE ROW EXCLUSIVE",
        "public.b": "SHARE",
        "public.c": "ROW SHARE",
    }
    assert applied["001_t"]["locks"] == {}  # its own new tables are not reported


def test_a_file_that_deallocates_prepared_statements_is_applied_once(
    database, run_runner, migrations
):
    # 001 defines a function that deallocates every prepared statement of the session; 002
    # calls it (the word is not in 002's text): the runner's prepared lock report is gone
    # after the file, its transaction rolls back, and it runs again with the queries as text.
    migrations.add({
        "001_f.sql": "CREATE TABLE calls (n int);\n"
        "CREATE FUNCTION forget() RETURNS void LANGUAGE plpgsql AS "
        "$$BEGIN EXECUTE 'DEALLOC' || 'ATE ALL'; END$$;",
        "002_call.sql": "INSERT INTO calls VALUES (1);\nSELECT forget();",
        "003_again.sql": "INSERT INTO calls VALUES (2);\nDEALLOCATE ALL;",
        "004_after.sql": "ALTER TABLE calls ADD COLUMN at timestamptz;",
    })  # fmt: skip
    result = run_runner(env=database.env(MIGRATIONS_DIR=str(migrations.path)))
    assert result.returncode == 0, result
    assert database.query("SELECT n FROM calls ORDER BY n") == [(1,), (2,)]
    applied = {e["version"]: e for e in result.events_named("migration_applied")}
    assert list(applied) == ["001_f", "002_call", "003_again", "004_after"]
    assert applied["004_after"]["locks"] == {"public.calls": "ACCESS EXCLUSIVE"}
    assert database.scalar("SELECT count(*) FROM schema_migrations") == 4


def test_a_file_that_resets_all_settings_is_applied(database, run_runner, migrations):
    """RESET ALL also resets what the runner remembered at BEGIN (set_config(..., true)): the
    lock report and the statistics measure go without it, not fail the file."""
    migrations.add(
        {
            "001_t.sql": "CREATE TABLE t (id int);\n",
            "002_reset.sql": "RESET ALL;\nINSERT INTO t SELECT generate_series(1, 6000);\n",
        }
    )
    result = run_runner(env=database.env(MIGRATIONS_DIR=str(migrations.path)))
    assert result.returncode == 0, result
    assert database.scalar("SELECT count(*) FROM t") == 6000
    analyzed = [e["relation"] for e in result.events_named("statistics_refreshed")]
    assert analyzed == ["public.t"]
