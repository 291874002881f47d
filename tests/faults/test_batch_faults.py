"""A batched data migration stopped mid-walk (kill -9, SIGTERM, a server restart): the rows done
are exactly the keys up to the checkpoint, and the next run finishes the rest, each row once.

The statement counts (``done = done + 1``) and naps on chosen rows (``nap_at``), so the runner
can be stopped while a batch runs; a trigger on the checkpoint table naps too, so it can be
stopped between the batch's statement and its COMMIT.
"""

from __future__ import annotations

import signal
import time

import pytest

from migrator.errors import EX_OK, EX_TERMINATED, EX_UNAVAILABLE
from tests.conftest import LEFTOVER_LOCKS, LOCK_HOLDERS, Database, PgServer
from tests.faults.conftest import runner_backends, wait_until
from tests.integration.test_batch import ROWS, TABLE, backfill, checkpoint, recorded

NAPS = (
    "CREATE TABLE naps (at bigint PRIMARY KEY, seconds float NOT NULL);\n"
    "CREATE FUNCTION nap_at(k bigint) RETURNS boolean LANGUAGE plpgsql AS $$\n"
    "BEGIN PERFORM pg_sleep(coalesce((SELECT seconds FROM naps WHERE at = k), 0)); "
    "RETURN true; END $$;\n"
)
NAPPING = "UPDATE items SET done = done + 1 WHERE id BETWEEN $1 AND $2 AND nap_at(id);\n"
# Naps while the checkpoint moves: after the batch's statement, before its COMMIT.
CHECKPOINT_NAP = (
    "CREATE FUNCTION checkpoint_nap() RETURNS trigger LANGUAGE plpgsql AS $$\n"
    "BEGIN PERFORM pg_sleep(coalesce((SELECT seconds FROM naps WHERE at = 0), 0)); "
    "RETURN NEW; END $$;\n"
    "CREATE TRIGGER checkpoint_nap BEFORE UPDATE ON schema_migrations_batch "
    "FOR EACH ROW EXECUTE FUNCTION checkpoint_nap()"
)
NAPPING_QUERY = (
    "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep' AND pid <> "
    "pg_backend_pid() AND datname = current_database()"
)


def assert_done_up_to_checkpoint(database: Database) -> int:
    """Every key up to the checkpoint done once, none after it: the checkpoint and the rows it
    covers committed together. Returns the checkpoint (0: none yet)."""
    found = checkpoint(database)
    upto = int(found[0]) if found else 0
    wrong = database.scalar(
        "SELECT count(*) FROM items WHERE done <> CASE WHEN id <= %s THEN 1 ELSE 0 END", upto
    )
    assert wrong == 0, f"rows done do not match the checkpoint {upto}"
    if found:
        assert found[1] == upto, "rows_done counts the keys walked"
    return upto


def settle(database: Database) -> None:
    """The killed runner's backends gone (the server notices a dead client within ~1 s)."""
    wait_until(lambda: runner_backends(database) == 0)


def nap(database: Database, at: int, seconds: float) -> None:
    database.query(
        "INSERT INTO naps VALUES (%s, %s) ON CONFLICT (at) DO UPDATE SET seconds = "
        "EXCLUDED.seconds RETURNING at",
        at,
        seconds,
    )


@pytest.fixture
def napping(own_database, migrations):
    """A database with the table filled (pre phase) and the napping batch file."""
    migrations.add({"001_items.sql": TABLE + NAPS, "002_backfill.sql": backfill(body=NAPPING)})
    # The test servers commit asynchronously (scripts/pgserver.py): an immediate stop would
    # lose the last commits, batches and checkpoints alike. A deployment's server does not.
    with own_database.connect() as conn:
        conn.execute(f'ALTER DATABASE "{own_database.name}" SET synchronous_commit = on')
    return own_database


def env_of(database: Database, migrations, **extra: str) -> dict[str, str]:
    return database.env(MIGRATIONS_DIR=str(migrations.path), **extra)


def napping_run(database: Database, start_watched, env: dict[str, str]):
    """A post run, once one of its batches naps (in its statement or its checkpoint)."""
    runner = start_watched("--phase", "post", env=env)
    wait_until(lambda: database.scalar(NAPPING_QUERY) == 1, timeout=30)
    return runner


def rerun_finishes(database: Database, run_runner, env: dict[str, str], at: int) -> None:
    """Without the nap the next run resumes after the checkpoint, does every row left, each
    once, and records the file."""
    found = checkpoint(database)
    nap(database, at, 0)
    rerun = run_runner("--phase", "post", env=env)
    assert rerun.returncode == 0, rerun
    (started,) = rerun.events_named("batch_started")
    assert started["checkpoint"] == (found[0] if found else None)
    assert database.query("SELECT done, count(*) FROM items GROUP BY 1") == [(1, ROWS)]
    assert "002_backfill" in recorded(database)
    assert checkpoint(database) is None


def test_kill_9_in_a_batch_statement_then_between_statement_and_commit(
    napping, migrations, start_watched, run_runner
):
    env = env_of(napping, migrations)
    assert run_runner("--phase", "pre", env=env).returncode == 0

    # 1. Killed while a batch's statement runs (it naps on row 1700).
    nap(napping, 1700, 60)
    napping_run(napping, start_watched, env).kill()
    settle(napping)
    first = assert_done_up_to_checkpoint(napping)
    assert 0 < first < 1700, "batches before the napping one committed"

    # 2. Killed after a batch's statement, while its checkpoint moves (before COMMIT).
    nap(napping, 1700, 0)
    nap(napping, 0, 60)
    with napping.connect() as conn:
        conn.execute(CHECKPOINT_NAP)
    napping_run(napping, start_watched, env).kill()
    settle(napping)
    assert assert_done_up_to_checkpoint(napping) == first, "the napping batch rolled back whole"

    # 3. The next run resumes after the checkpoint and finishes.
    rerun_finishes(napping, run_runner, env, 0)


def test_sigterm_in_a_batch_exits_143_and_the_next_run_resumes(
    napping, migrations, start_watched, run_runner
):
    env = env_of(napping, migrations)
    assert run_runner("--phase", "pre", env=env).returncode == 0
    nap(napping, 1200, 60)
    runner = napping_run(napping, start_watched, env)
    sent = runner.signal(signal.SIGTERM)
    result = runner.finish(timeout=30)
    assert time.monotonic() - sent < 5
    assert result.returncode == EX_TERMINATED, result
    assert result.events_named("interrupted")[0]["signal"] == "SIGTERM"
    assert napping.scalar(NAPPING_QUERY) == 0, "the batch's statement was cancelled"
    assert napping.scalar(LEFTOVER_LOCKS) == 0
    upto = assert_done_up_to_checkpoint(napping)
    assert 0 < upto < 1200

    rerun_finishes(napping, run_runner, env, 1200)


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_server_restart_mid_backfill_then_the_next_run_resumes(
    own_server, napping, migrations, start_watched, run_runner, mode
):
    env = env_of(napping, migrations, DB_WAIT_TIMEOUT="5")
    assert run_runner("--phase", "pre", env=env).returncode == 0
    nap(napping, 2100, 60)
    runner = napping_run(napping, start_watched, env)
    own_server.stop(mode)
    try:
        result = runner.finish(timeout=30)
    finally:
        own_server.start()
    assert result.returncode in (EX_OK, EX_UNAVAILABLE), result
    assert "Traceback" not in result.stdout + result.stderr, result
    if result.returncode == EX_UNAVAILABLE:  # the migration's session or the lock's noticed
        assert "run again" in result.events[-1]["error"], result
    upto = assert_done_up_to_checkpoint(napping)
    assert 0 < upto < 2100
    rerun_finishes(napping, run_runner, env, 2100)


def test_a_lost_lock_stops_the_batch_before_its_commit(
    napping, migrations, start_watched, run_runner
):
    """The lock guard travels in every batch's commit: once the lock's session is gone, the
    batch running rolls back with its checkpoint (another runner may hold the lock now)."""
    env = env_of(napping, migrations)
    assert run_runner("--phase", "pre", env=env).returncode == 0
    nap(napping, 1500, 1.5)
    runner = napping_run(napping, start_watched, env)
    assert napping.scalar("SELECT pg_terminate_backend(%s)", napping.scalar(LOCK_HOLDERS))
    result = runner.finish(timeout=30)
    assert result.returncode == EX_UNAVAILABLE, result
    lost = result.events_named("lock_lost")
    assert lost and "002_backfill" in lost[0]["error"], result
    upto = assert_done_up_to_checkpoint(napping)
    assert 0 < upto < 1500, "the napping batch did not commit without the lock"
    rerun_finishes(napping, run_runner, env, 1500)


def test_a_failover_mid_backfill_then_the_promoted_standby_resumes(
    own_server, napping, migrations, start_watched, run_runner
):
    """The primary dies during a batch; on the promoted standby the rows done are exactly the
    keys up to the checkpoint it replayed (a commit streamed or not, rows and checkpoint went
    together), and a run there finishes every row once."""
    env = env_of(napping, migrations)
    assert run_runner("--phase", "pre", env=env).returncode == 0
    standby = PgServer.standby_of(own_server)
    standby.start()
    try:
        replica = Database(standby, napping.name)
        nap(napping, 1800, 60)
        runner = napping_run(napping, start_watched, env)
        wait_until(lambda: (checkpoint(replica) or ("0",))[0] != "0", timeout=30)
        own_server.stop("immediate")
        try:
            result = runner.finish(timeout=30)
            assert result.returncode in (EX_OK, EX_UNAVAILABLE), result
            standby.promote()
            upto = assert_done_up_to_checkpoint(replica)
            assert 0 < upto < 1800
            rerun_finishes(replica, run_runner, env_of(replica, migrations), 1800)
        finally:
            own_server.start()
    finally:
        standby.destroy()
