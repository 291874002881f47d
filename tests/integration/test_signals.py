"""SIGTERM during a long statement: cancelled on the server, lock released, exit 143, clean re-run."""

from __future__ import annotations

import signal
import time

from tests.conftest import LEFTOVER_LOCKS

SLEEPY = (
    "CREATE TABLE slept (id int);\n"
    "SELECT pg_sleep(coalesce((SELECT seconds FROM sleep_control), 0));\n"
)
EXIT_BUDGET = 2.0


def _wait_for_sleep(database, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if database.scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%%pg_sleep(coalesce%%' "
            "AND state = 'active' AND pid <> pg_backend_pid()"
        ):
            return
        time.sleep(0.05)
    raise AssertionError("the migration never started its long statement")


def test_sigterm_cancels_the_statement_releases_the_lock_and_exits_143(
    database, start_runner, run_runner, migrations
):
    with database.connect() as conn:
        conn.execute("CREATE TABLE sleep_control (seconds int)")
        conn.execute("INSERT INTO sleep_control VALUES (60)")
    migrations.add({"001_sleepy.sql": SLEEPY})
    env = database.env(MIGRATIONS_DIR=str(migrations.path))
    runner = start_runner(env=env)
    _wait_for_sleep(database)

    sent = time.monotonic()
    runner.process.send_signal(signal.SIGTERM)
    result = runner.wait(30)
    assert time.monotonic() - sent < EXIT_BUDGET
    assert result.returncode == 143, result
    assert result.events_named("interrupted")[0]["signal"] == "SIGTERM"
    assert "SIGTERM" in result.termination_message
    still_running = database.scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%%pg_sleep(coalesce%%' "
        "AND pid <> pg_backend_pid()"
    )
    assert still_running == 0, "the statement must be cancelled on the server"
    assert database.scalar(LEFTOVER_LOCKS) == 0
    assert database.scalar("SELECT to_regclass('slept')") is None
    assert database.scalar("SELECT count(*) FROM schema_migrations") == 0

    with database.connect() as conn:
        conn.execute("UPDATE sleep_control SET seconds = 0")
    rerun = run_runner(env=env)
    assert rerun.returncode == 0, rerun
    assert database.query("SELECT version FROM schema_migrations") == [("001_sleepy",)]
