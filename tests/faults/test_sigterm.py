"""SIGTERM while waiting for the server, for the lock, and in a non-transactional statement: 143 within 2 s.

SIGTERM in a long transactional statement is tests/integration/test_signals.py.
"""

from __future__ import annotations

import signal
import time

import pytest

from migrator.errors import EX_TERMINATED
from tests.conftest import LEFTOVER_LOCKS, LOCK_HOLDERS, PgServer, hold_migration_lock
from tests.faults.conftest import runner_backends, wait_until

REPEATS = 3
EXIT_BUDGET = 2.0
# The server ends a backend shortly after its client said goodbye (or vanished).
BACKEND_GONE_BUDGET = 1.0
LONG_NON_TRANSACTIONAL = (
    "-- migrate:no-transaction\n"
    "CREATE TABLE IF NOT EXISTS before_sleep (id int);\n"
    "SELECT pg_sleep(coalesce((SELECT seconds FROM sleep_control), 0));\n"
    "CREATE TABLE IF NOT EXISTS after_sleep (id int);\n"
)
LATENCIES: dict[str, list[float]] = {}


def terminate(runner, case: str):
    """SIGTERM; the run must end with 143 within EXIT_BUDGET, saying so."""
    sent = runner.signal(signal.SIGTERM)
    result = runner.finish(timeout=30)
    latency = time.monotonic() - sent
    LATENCIES.setdefault(case, []).append(latency)
    print(f"SIGTERM {case}: exit after {latency:.3f}s (max so far {max(LATENCIES[case]):.3f}s)")
    assert result.returncode == EX_TERMINATED, result
    assert latency < EXIT_BUDGET, f"exit took {latency:.2f}s"
    assert result.events[-1]["event"] == "interrupted", result
    assert "SIGTERM" in result.termination_message
    return result


@pytest.mark.parametrize("repeat", range(REPEATS))
def test_sigterm_while_waiting_for_the_server(start_watched, migrations, repeat):
    server = PgServer.create()  # created, never started: nothing listens on its port
    try:
        migrations.add({"001_t.sql": "CREATE TABLE t (id int);"})
        env = {"DB_HOST": "127.0.0.1", "DB_PORT": str(server.port), "DB_NAME": "postgres",
               "DB_USER": "postgres", "DB_PASSWORD": server.password, "DB_WAIT_TIMEOUT": "60",
               "MIGRATIONS_DIR": str(migrations.path)}  # fmt: skip
        runner = start_watched(env=env)
        runner.wait_for(lambda e: e["event"] == "database_not_ready")
        terminate(runner, "waiting for the server")
    finally:
        server.destroy()


@pytest.mark.parametrize("repeat", range(REPEATS))
def test_sigterm_while_waiting_for_the_lock(database, start_watched, migrations, repeat):
    migrations.add({"001_t.sql": "CREATE TABLE t (id int);"})
    with database.connect(application_name="holder") as holder:
        hold_migration_lock(holder)
        runner = start_watched(env=database.env(MIGRATIONS_DIR=str(migrations.path)))
        runner.wait_for(lambda e: e["event"] == "lock_waiting")
        terminate(runner, "waiting for the lock")
        wait_until(lambda: runner_backends(database) == 0, BACKEND_GONE_BUDGET)
        holder_pids = database.query(LOCK_HOLDERS)
        assert holder_pids == [(holder.info.backend_pid,)]
    assert database.scalar("SELECT to_regclass('t')") is None


@pytest.mark.parametrize("repeat", range(REPEATS))
def test_sigterm_in_a_long_non_transactional_statement(
    database, start_watched, run_runner, migrations, repeat
):
    with database.connect() as conn:
        conn.execute("CREATE TABLE sleep_control (seconds int)")
        conn.execute("INSERT INTO sleep_control VALUES (60)")
    migrations.add({"001_long.sql": LONG_NON_TRANSACTIONAL})
    env = database.env(MIGRATIONS_DIR=str(migrations.path))
    runner = start_watched(env=env)
    runner.wait_for(lambda e: e["event"] == "statement_started" and e["line"] == 3)
    wait_until(lambda: database.scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE %s",
        "%pg_sleep(coalesce%",
    ) == 1)  # fmt: skip
    terminate(runner, "in a non-transactional statement")
    wait_until(lambda: runner_backends(database) == 0, BACKEND_GONE_BUDGET)
    assert database.scalar(LEFTOVER_LOCKS) == 0
    # The statements before the cancelled one stay; the file is not recorded.
    assert database.scalar("SELECT to_regclass('before_sleep')") is not None
    assert database.scalar("SELECT to_regclass('after_sleep')") is None
    assert database.scalar("SELECT count(*) FROM schema_migrations") == 0

    with database.connect() as conn:
        conn.execute("UPDATE sleep_control SET seconds = 0")
    rerun = run_runner(env=env)
    assert rerun.returncode == 0, rerun
    assert database.query("SELECT version FROM schema_migrations") == [("001_long",)]
    assert database.scalar("SELECT to_regclass('after_sleep')") is not None
