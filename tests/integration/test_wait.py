"""Waiting for PostgreSQL: late servers are noticed fast, dead ones time out, bad passwords fail at once."""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "scripts"))
from pgserver import PgServer, free_port

SERVER_START_DELAY = 3.0
NOTICE_BUDGET = 0.25
# pg_ctl polls the server before it returns: allow its own latency on top of the budget.
PG_CTL_SLACK = 0.25


def _timestamp(event: dict[str, object]) -> float:
    return datetime.fromisoformat(str(event["timestamp"]).replace("Z", "+00:00")).timestamp()


def test_a_server_that_starts_late_is_noticed_quickly(tmp_path: Path, start_runner, migrations):
    server = PgServer.create()  # its own temp dir: the server user must reach it
    try:
        migrations.add({"001_one.sql": "CREATE TABLE one (id int);"})
        env = {
            "DB_HOST": "127.0.0.1",
            "DB_PORT": str(server.port),
            "DB_NAME": "postgres",
            "DB_USER": "postgres",
            "DB_PASSWORD": server.password,
            "DB_WAIT_TIMEOUT": "20",
            "MIGRATIONS_DIR": str(migrations.path),
        }
        runner = start_runner(env=env)
        time.sleep(SERVER_START_DELAY)
        server.start()
        ready_at = datetime.now(UTC).timestamp()
        result = runner.wait(60)
    finally:
        server.destroy()
    assert result.returncode == 0, result
    # The first failure is logged, then one line per 10 s: a 3 s wait writes one line.
    (retry,) = result.events_named("database_not_ready")
    assert "refused" in str(retry["reason"]).lower()
    assert retry["attempt"] == 1
    noticed = _timestamp(result.events_named("database_ready")[0])
    assert noticed - ready_at < NOTICE_BUDGET + PG_CTL_SLACK


# A run refuses a folder without migrations before it connects: these have one.
ONE_FILE = {"001_one.sql": "CREATE TABLE one (id int);"}


def no_server_env(folder: Path, wait_timeout: str) -> dict[str, str]:
    """A port nobody listens on."""
    (folder / "001_one.sql").write_text(ONE_FILE["001_one.sql"])
    return {
        "DB_HOST": "127.0.0.1",
        "DB_PORT": str(free_port()),
        "DB_PASSWORD": "unused-password",
        "DB_WAIT_TIMEOUT": wait_timeout,
        "MIGRATIONS_DIR": str(folder),
    }


def test_waiting_logs_the_first_failure_then_one_line_every_10_s(run_runner, migrations):
    result = run_runner(env=no_server_env(migrations.path, "11"))
    assert result.returncode == 69, result
    retries = result.events_named("database_not_ready")
    assert len(retries) == 2, [(e["attempt"], e["elapsed_s"]) for e in retries]
    assert retries[0]["attempt"] == 1
    assert retries[1]["attempt"] > 20, "the attempts between the lines still happened"
    assert 9.5 <= retries[1]["elapsed_s"] - retries[0]["elapsed_s"] <= 11.0


def test_no_server_ends_with_69_at_the_deadline(run_runner, migrations):
    env = no_server_env(migrations.path, "2")
    start = time.monotonic()
    result = run_runner(env=env)
    elapsed = time.monotonic() - start
    assert result.returncode == 69, result
    assert 2.0 <= elapsed < 6.0
    failure = result.events_named("database_unreachable")[0]
    assert "not reachable within 2s" in failure["error"]


def test_wrong_password_fails_at_once_with_77(database, run_runner, migrations):
    migrations.add(ONE_FILE)
    env = database.env(DB_PASSWORD="not-the-password", DB_WAIT_TIMEOUT="30",
                       MIGRATIONS_DIR=str(migrations.path))  # fmt: skip
    start = time.monotonic()
    result = run_runner(env=env)
    assert result.returncode == 77, result
    assert time.monotonic() - start < 5.0, (
        "an authentication failure must not wait for the deadline"
    )
    assert not result.events_named("database_not_ready")
    assert "password authentication failed" in result.events_named("permission_denied")[0]["error"]


def test_missing_database_without_admin_fails_at_once_with_advice(
    unborn_database, run_runner, migrations
):
    migrations.add(ONE_FILE)
    env = unborn_database.env(DB_WAIT_TIMEOUT="30", MIGRATIONS_DIR=str(migrations.path))
    result = run_runner(env=env)
    assert result.returncode == 78, result
    error = result.events_named("invalid_configuration")[0]["error"]
    assert f"database {unborn_database.name} does not exist" in error
    assert "DB_ADMIN_USER" in error


def test_tls_required_by_the_client_but_not_offered_fails_at_once_with_78(
    database, run_runner, migrations
):
    migrations.add(ONE_FILE)
    env = database.env(DB_SSLMODE="require", DB_WAIT_TIMEOUT="30",
                       MIGRATIONS_DIR=str(migrations.path))  # fmt: skip
    start = time.monotonic()
    result = run_runner(env=env)
    assert result.returncode == 78, result
    assert time.monotonic() - start < 5.0, "a TLS mismatch cannot pass by itself: no waiting"
    error = result.events_named("invalid_configuration")[0]["error"]
    assert "DB_SSLMODE=require" in error and "does not support SSL" in error
