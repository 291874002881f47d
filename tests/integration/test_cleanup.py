"""`entrypoint.py cleanup`: expired rows of every covered table removed, live rows and audit
events within retention kept, in short batches under the cleanup role; budgets, signals,
overlapping runs, and the roles that may not run it.

The database is the shipped schema, migrated by the runner with CLEANUP_DB_PASSWORD (so
bootstrap set the cleanup role's password); every run is a real process, checked centrally.
"""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import launch
from tests.integration import schema_fixtures
from tests.integration.schema_fixtures import (
    APP_PASSWORD,
    APP_ROLE,
    CLEANUP_PASSWORD,
    CLEANUP_ROLE,
    OWNER_PASSWORD,
    OWNER_ROLE,
    SchemaDatabase,
)
from tests.integration.test_schema_functions import remaining, seed_cleanup_rows

fresh_schema_db = schema_fixtures.fresh_schema_db

EX_TERMINATED = 143
COVERED = ("auth_codes", "tokens", "refresh_tokens", "user_sessions", "rate_limits",
           "security_events")  # fmt: skip


def cleanup_env(db: SchemaDatabase, **extra: str) -> dict[str, str]:
    """The CronJob's environment: the cleanup role, the image's migrations."""
    return db.db.env(DB_USER=CLEANUP_ROLE, DB_PASSWORD=CLEANUP_PASSWORD, **extra)


def start_cleanup(db: SchemaDatabase, tmp_path: Any, **extra: str) -> Any:
    return launch("cleanup", env=cleanup_env(db, **extra), workdir=tmp_path)


def assert_cleaned(db: SchemaDatabase, keys: dict[str, dict[str, set[Any]]]) -> None:
    left = remaining(db)
    for table, sets in keys.items():
        assert sets["live"] <= left[table], f"{table}: a live row was removed"
        assert not (sets["expired"] & left[table]), f"{table}: an expired row is left"


def expired_left(db: SchemaDatabase, keys: dict[str, dict[str, set[Any]]]) -> dict[str, int]:
    left = remaining(db)
    return {table: len(sets["expired"] & left[table]) for table, sets in keys.items()}


@pytest.fixture
def held_row(fresh_schema_db: SchemaDatabase) -> Iterator[Any]:
    """``hold(table)`` locks one expired row of ``table`` (FOR UPDATE, the owner's open
    transaction) until the test ends or calls ``release()``: a batch meets it and waits."""
    conn = fresh_schema_db.owner()

    class Holder:
        def hold(self, table: str, column: str = "expires_at") -> None:
            conn.execute("BEGIN")
            row = conn.execute(
                f"SELECT 1 FROM {table} WHERE {column} < now() LIMIT 1 FOR UPDATE"
            ).fetchone()
            assert row is not None

        def release(self) -> None:
            conn.execute("ROLLBACK")

    yield Holder()
    conn.close()


def wait_until_blocked(db: SchemaDatabase, timeout: float = 30) -> None:
    """Until a session of the cleanup role waits for a lock (its batch met the held row)."""
    deadline = time.monotonic() + timeout
    with db.superuser() as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE usename = %s "
                "AND wait_event_type = 'Lock'",
                (CLEANUP_ROLE,),
            ).fetchone()
            if row and row[0]:
                return
            time.sleep(0.05)
    pytest.fail("the cleanup never waited for the held row")


def wait_for_sessions(db: SchemaDatabase, count: int, timeout: float = 30) -> None:
    """Until ``count`` sessions of the cleanup role are connected."""
    deadline = time.monotonic() + timeout
    with db.superuser() as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE usename = %s", (CLEANUP_ROLE,)
            ).fetchone()
            if row and row[0] >= count:
                return
            time.sleep(0.05)
    pytest.fail(f"{count} cleanup sessions never connected")


def test_expired_rows_of_every_table_go_live_rows_and_recent_audit_events_stay(
    fresh_schema_db, run_runner
):
    db = fresh_schema_db
    keys = seed_cleanup_rows(db, 7)
    inserted = time.monotonic()
    with db.owner() as conn:  # live when the run starts, expired a few seconds later
        soon = {row[0] for row in conn.execute(
            "INSERT INTO tokens (token_hash, client_id, user_id, created_at, expires_at) "
            "SELECT sha256(('soon' || g)::bytea), client_id, user_id, now(), "
            "now() + interval '8 seconds' FROM (SELECT client_id, user_id FROM tokens LIMIT 1) t, "
            "generate_series(1, 5) g RETURNING id")}  # fmt: skip

    result = run_runner("cleanup", env=cleanup_env(db))

    assert result.returncode == 0, result
    assert_cleaned(db, keys)
    assert soon <= remaining(db)["tokens"], "a token was removed before it expired"
    summary = result.events_named("cleanup_complete")[0]
    assert summary["removed"] == {table: len(keys[table]["expired"]) for table in COVERED}
    assert summary["finished"] is True
    assert summary["total"] == sum(len(sets["expired"]) for sets in keys.values())
    done = {event["table"]: event for event in result.events_named("cleanup_table_done")}
    assert list(done) == list(COVERED)
    assert all("rows_per_s" in event and event["finished"] for event in done.values())
    assert "removed" in result.termination_message

    # The next run (here as the owner: the same settings as every command) removes what
    # expired since, and nothing else.
    time.sleep(max(0.0, inserted + 8.5 - time.monotonic()))
    again = run_runner("cleanup", env=db.db.env(DB_USER=OWNER_ROLE, DB_PASSWORD=OWNER_PASSWORD))
    assert again.returncode == 0, again
    assert again.events_named("cleanup_complete")[0]["removed"]["tokens"] == len(soon)
    assert not (soon & remaining(db)["tokens"])
    assert_cleaned(db, keys)


def test_the_runtime_role_may_not_run_the_cleanup(fresh_schema_db, run_runner):
    db = fresh_schema_db
    keys = seed_cleanup_rows(db, 3)
    result = run_runner("cleanup", env=db.db.env(DB_USER=APP_ROLE, DB_PASSWORD=APP_PASSWORD))
    assert result.returncode == 77, result
    [error] = [event for event in result.events if event["level"] == "error"]
    assert "may not run the cleanup" in error["error"] and "_cleanup" in error["error"]
    assert expired_left(db, keys) == {table: len(keys[table]["expired"]) for table in keys}


def test_a_database_without_the_cleanup_functions_is_refused(database, run_runner, migrations):
    migrations.write("001_t.sql", "CREATE TABLE t (id int);")
    result = run_runner("cleanup", env=database.env(MIGRATIONS_DIR=str(migrations.path)))
    assert result.returncode == 65, result
    assert "004_cleanup_role.sql" in result.events_named("history_mismatch")[0]["error"]


def test_sigterm_mid_run_leaves_whole_batches_only(fresh_schema_db, held_row, tmp_path):
    db = fresh_schema_db
    keys = seed_cleanup_rows(db, 7)
    held_row.hold("refresh_tokens")  # auth_codes and tokens go first; refresh_tokens waits
    runner = start_cleanup(db, tmp_path, DDL_LOCK_TIMEOUT="60s")
    wait_until_blocked(db)

    runner.process.send_signal(signal.SIGTERM)
    result = runner.wait(30)

    assert result.returncode == EX_TERMINATED, result
    assert result.events_named("interrupted")
    stopped = result.events_named("cleanup_stopped")[0]
    assert stopped["removed"]["tokens"] == len(keys["tokens"]["expired"])
    # Committed batches stay done; the interrupted one was rolled back whole.
    left = expired_left(db, keys)
    assert left["auth_codes"] == left["tokens"] == 0
    assert left["refresh_tokens"] == len(keys["refresh_tokens"]["expired"])
    with db.superuser() as conn:
        sessions = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = %s", (CLEANUP_ROLE,)
        ).fetchone()
        advisory = conn.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")
        assert sessions == (0,) and advisory.fetchone() == (0,)

    held_row.release()
    again = launch("cleanup", env=cleanup_env(db), workdir=tmp_path).wait(60)
    assert again.returncode == 0, again
    assert_cleaned(db, keys)


def test_two_overlapping_runs_remove_each_row_once(fresh_schema_db, held_row, tmp_path):
    db = fresh_schema_db
    keys = seed_cleanup_rows(db, 7)
    held_row.hold("refresh_tokens")
    first = start_cleanup(db, tmp_path, DDL_LOCK_TIMEOUT="60s")
    wait_until_blocked(db)
    second = start_cleanup(db, tmp_path)
    wait_for_sessions(db, 2)
    time.sleep(1)  # the second polls the cleanup lock meanwhile
    held_row.release()

    results = [first.wait(60), second.wait(60)]

    assert [result.returncode for result in results] == [0, 0], results
    totals = [result.events_named("cleanup_complete")[0]["removed"] for result in results]
    for table in COVERED:
        assert totals[0][table] + totals[1][table] == len(keys[table]["expired"]), table
    assert results[1].events_named("lock_waiting"), "the second run did not wait for the first"
    assert results[1].events_named("lock_acquired")[0]["waited_s"] >= 0.9
    assert_cleaned(db, keys)


def test_the_time_budget_ends_a_run_with_progress_as_success(fresh_schema_db, held_row, tmp_path):
    db = fresh_schema_db
    keys = seed_cleanup_rows(db, 7)
    held_row.hold("refresh_tokens")
    result = start_cleanup(db, tmp_path, CLEANUP_TIME_BUDGET="3s", DDL_LOCK_TIMEOUT="500ms").wait(
        60
    )
    assert result.returncode == 0, result
    summary = result.events_named("cleanup_complete")[0]
    assert summary["finished"] is False and "time budget" in summary["summary"]
    assert result.events_named("cleanup_batch_retry")
    left = expired_left(db, keys)
    assert left["tokens"] == 0 and left["refresh_tokens"] == len(keys["refresh_tokens"]["expired"])


def test_a_budget_spent_without_one_batch_is_a_retryable_failure(
    fresh_schema_db, held_row, tmp_path
):
    db = fresh_schema_db
    keys = seed_cleanup_rows(db, 7)
    held_row.hold("auth_codes")  # the first table: nothing can be done
    result = start_cleanup(db, tmp_path, CLEANUP_TIME_BUDGET="2s", DDL_LOCK_TIMEOUT="500ms").wait(
        60
    )
    assert result.returncode == 75, result
    assert "before one batch was done" in result.events_named("lock_timeout")[0]["error"]
    assert expired_left(db, keys)["auth_codes"] == len(keys["auth_codes"]["expired"])


def test_a_large_cleanup_refreshes_the_statistics_of_what_it_emptied(fresh_schema_db, run_runner):
    db = fresh_schema_db
    client_id, user_id = db.create_client(), db.create_user()
    with db.owner() as conn:
        conn.execute(
            "INSERT INTO tokens (token_hash, client_id, user_id, created_at, expires_at) "
            "SELECT sha256(('x' || g)::bytea), %s, %s, now() - interval '2 hours', "
            "now() - interval '1 hour' FROM generate_series(1, 20000) g",
            (client_id, user_id),
        )
    with db.superuser() as conn:
        conn.execute("ALTER TABLE tokens SET (autovacuum_enabled = off)")
        conn.execute("ANALYZE tokens")
    result = run_runner("cleanup", env=cleanup_env(db))
    assert result.returncode == 0, result
    [refreshed] = result.events_named("statistics_refreshed")
    assert refreshed["relation"] == "public.tokens" and refreshed["rows_removed"] == 20000
    with db.superuser() as conn:
        row = conn.execute("SELECT reltuples FROM pg_class WHERE oid = 'tokens'::regclass")
        assert row.fetchone() == (0.0,)


def test_a_zero_budget_is_a_configuration_error(database, run_runner):
    result = run_runner("cleanup", env=database.env(CLEANUP_TIME_BUDGET="0"))
    assert result.returncode == 78, result
    assert "CLEANUP_TIME_BUDGET" in result.events_named("invalid_configuration")[0]["error"]


def test_the_cleanup_role_cannot_log_in_without_the_password_bootstrap_sets(
    fresh_schema_db, run_runner
):
    wrong = "cleanup-" + uuid.uuid4().hex
    env = fresh_schema_db.db.env(DB_USER=CLEANUP_ROLE, DB_PASSWORD=wrong)
    result = run_runner("cleanup", env=env)
    assert result.returncode == 77, result
