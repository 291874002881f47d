"""The fault scenarios of tests/faults through PgBouncer: kill -9, the lock holder's backend terminated, SIGTERM."""

from __future__ import annotations

import random
import signal
import time

import pytest

from migrator.errors import EX_OK, EX_TEMPFAIL, EX_TERMINATED, EX_UNAVAILABLE
from tests.conftest import (
    LEFTOVER_LOCKS,
    LOCK_HOLDERS,
    MigrationsFolder,
    create_database,
    drop_database,
    hold_migration_lock,
)
from tests.faults.conftest import Snapshot, assert_converged, clean_run, wait_until
from tests.faults.migration_sets import NON_TRANSACTIONAL
from tests.faults.test_lock_holder_death import FILES as HOLDER_FILES
from tests.faults.test_lock_holder_death import LOCK_HOLDER, _sleeping

KILL_TRIALS = 3
ORPHAN_BUDGET = 3.0  # client_connection_check_interval = 1s, then the backend's exit
EXIT_BUDGET = 2.0
ADVISORY_LOCKS = LEFTOVER_LOCKS
LONG_FILE = {"001_long.sql": "CREATE TABLE long_one (id int);\nSELECT pg_sleep(60);"}
SLEEPING = "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE %s"


def test_kill_9_then_the_next_run_converges(pooled, pg_server, start_watched, run_runner, files,
                                            reference):  # fmt: skip
    rng = random.Random(pooled.name)
    for trial in range(KILL_TRIALS):
        database = create_database(pg_server)
        env = pooled.env(database, MIGRATIONS_DIR=str(files.path))
        target = rng.choice(NON_TRANSACTIONAL)
        context = f"{pooled.name}, trial {trial}, killed in {target}"
        try:
            runner = start_watched(env=env)
            runner.wait_for(lambda e, t=target: e["event"] == "migration_started"
                            and e["version"] == t)  # fmt: skip
            time.sleep(rng.uniform(0, 0.3))
            runner.kill()
            # PgBouncer closes the server session of a client gone inside a transaction.
            wait_until(lambda d=database: d.scalar(ADVISORY_LOCKS) == 0)
            rerun = run_runner(env=env)
            assert rerun.returncode == 0, f"{context}\n{rerun}"
            assert_converged(database, reference, context)
        finally:
            drop_database(database)


def test_the_server_aborts_the_statement_of_a_killed_runner_behind_the_pooler(
    pooled, database, start_watched, migrations
):
    """SET LOCAL client_connection_check_interval: the backend notices its client is gone."""
    migrations.add(LONG_FILE)
    runner = start_watched(env=pooled.env(database, MIGRATIONS_DIR=str(migrations.path)))
    runner.wait_for(lambda e: e["event"] == "migration_started")
    wait_until(lambda: database.scalar(SLEEPING, "%pg_sleep(60)%") == 1)
    runner.kill()
    gone_after = wait_until(lambda: database.scalar(SLEEPING, "%pg_sleep(60)%") == 0)
    print(f"{pooled.name} pooling: statement aborted {gone_after:.2f}s after kill -9")
    assert gone_after < ORPHAN_BUDGET
    assert database.scalar(ADVISORY_LOCKS) == 0
    assert database.scalar("SELECT to_regclass('long_one')") is None


@pytest.fixture(scope="module")
def holder_files(tmp_path_factory) -> MigrationsFolder:
    return MigrationsFolder(tmp_path_factory.mktemp("holder") / "migrations").add(HOLDER_FILES)


@pytest.fixture(scope="module")
def holder_reference(pg_server, holder_files, tmp_path_factory) -> Snapshot:
    return clean_run(pg_server, holder_files, tmp_path_factory.mktemp("holder-reference"))


def test_terminated_lock_holder_backend_lets_the_waiter_apply_everything_once(
    pooled, database, start_watched, holder_files, holder_reference
):
    """The holder's server backend is terminated: the runner behind the pooler notices."""
    env = pooled.env(database, MIGRATIONS_DIR=str(holder_files.path), DDL_LOCK_TIMEOUT="1s")
    holder = start_watched(env=env)
    holder.wait_for(lambda e: e["event"] == "migration_started" and e["version"] == "002_slow")
    waiter = start_watched(env=env)
    waiter.wait_for(lambda e: e["event"] == "lock_waiting")
    wait_until(lambda: _sleeping(database))
    assert database.scalar("SELECT pg_terminate_backend(%s)", database.scalar(LOCK_HOLDER))

    held, waited = holder.finish(), waiter.finish()
    context = f"{pooled.name}\nholder:\n{held}\nwaiter:\n{waited}"
    assert held.returncode == EX_UNAVAILABLE, context
    lost = held.events_named("lock_lost")
    assert lost and "002_slow" in lost[0]["error"], context
    assert waited.returncode == EX_OK, context
    assert waited.events_named("migrations_complete")[0]["applied"] == ["002_slow", "003_more"]
    assert database.query(
        "SELECT version, count(*) FROM applied_counter GROUP BY version ORDER BY version"
    ) == [("002", 1), ("003", 1)], context
    assert_converged(database, holder_reference, context)


def test_sigterm_cancels_the_statement_through_the_pooler(
    pooled, database, start_watched, migrations
):
    """PgBouncer forwards the cancel request to the server session running the statement."""
    migrations.add(LONG_FILE)
    runner = start_watched(env=pooled.env(database, MIGRATIONS_DIR=str(migrations.path)))
    runner.wait_for(lambda e: e["event"] == "migration_started")
    wait_until(lambda: database.scalar(SLEEPING, "%pg_sleep(60)%") == 1)
    sent = runner.signal(signal.SIGTERM)
    result = runner.finish(timeout=30)
    latency = time.monotonic() - sent
    print(f"SIGTERM through {pooled.name} pooling: exit after {latency:.3f}s")
    assert result.returncode == EX_TERMINATED, result
    assert latency < EXIT_BUDGET, result
    assert result.events[-1]["event"] == "interrupted", result
    # Cancelled on the server, not left sleeping on a pooled session.
    wait_until(lambda: database.scalar(SLEEPING, "%pg_sleep(60)%") == 0, timeout=1.0)
    assert database.scalar(ADVISORY_LOCKS) == 0
    assert database.scalar("SELECT to_regclass('long_one')") is None
    assert database.scalar("SELECT count(*) FROM schema_migrations") == 0


def test_waiting_for_the_lock_through_the_pooler_ends_with_75_or_143(
    pooled, database, start_watched, run_runner, migrations
):
    """A waiter behind the pooler names the holder, gives up at MIGRATION_LOCK_TIMEOUT, obeys SIGTERM."""
    migrations.add({"001_t.sql": "CREATE TABLE t (id int);"})
    env = pooled.env(database, MIGRATIONS_DIR=str(migrations.path))
    with database.connect(application_name="holder") as holder:
        hold_migration_lock(holder)
        timed_out = run_runner(env={**env, "MIGRATION_LOCK_TIMEOUT": "1s"})
        assert timed_out.returncode == EX_TEMPFAIL, timed_out
        assert timed_out.events_named("lock_waiting")[0]["holder"]["application_name"] == "holder"

        waiter = start_watched(env=env)
        waiter.wait_for(lambda e: e["event"] == "lock_waiting")
        sent = waiter.signal(signal.SIGTERM)
        result = waiter.finish(timeout=30)
        assert result.returncode == EX_TERMINATED, result
        assert time.monotonic() - sent < EXIT_BUDGET, result
        held = database.query(LOCK_HOLDERS)
        assert held == [(holder.info.backend_pid,)]
    assert database.scalar("SELECT to_regclass('t')") is None
