"""The lock holder's session is terminated: PostgreSQL frees the lock, a waiting runner proceeds, nothing is applied twice."""

from __future__ import annotations

import pytest

from migrator.errors import EX_OK, EX_UNAVAILABLE
from tests.conftest import LOCK_HOLDERS, MigrationsFolder
from tests.faults.conftest import Snapshot, assert_converged, clean_run, wait_until

TRIALS = 4
SLEEP_SECONDS = 1.5
FILES = {
    "001_counter.sql": "CREATE TABLE applied_counter (version text);",
    # Terminated while it sleeps: the holder's transaction must not commit without the lock.
    "002_slow.sql": f"CREATE TABLE slow_done (id int);\nSELECT pg_sleep({SLEEP_SECONDS});\n"
    "INSERT INTO applied_counter VALUES ('002');",
    "003_more.sql": "INSERT INTO applied_counter VALUES ('003');",
}
LOCK_HOLDER = LOCK_HOLDERS


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> MigrationsFolder:
    return MigrationsFolder(tmp_path_factory.mktemp("holder") / "migrations").add(FILES)


@pytest.fixture(scope="module")
def reference(pg_server, files, tmp_path_factory) -> Snapshot:
    return clean_run(pg_server, files, tmp_path_factory.mktemp("reference"))


def _sleeping(database) -> bool:
    return bool(database.scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE %s",
        "%pg_sleep(1.5)%",
    ))  # fmt: skip


@pytest.mark.parametrize("trial", range(TRIALS))
def test_terminated_lock_holder_lets_the_waiter_apply_everything_once(
    database, start_watched, files, reference, trial
):
    env = database.env(MIGRATIONS_DIR=str(files.path), DDL_LOCK_TIMEOUT="1s")
    holder = start_watched(env=env)
    holder.wait_for(lambda e: e["event"] == "migration_started" and e["version"] == "002_slow")
    waiter = start_watched(env=env)
    waiter.wait_for(lambda e: e["event"] == "lock_waiting")
    wait_until(lambda: _sleeping(database))
    holder_pid = database.scalar(LOCK_HOLDER)
    assert database.scalar("SELECT pg_terminate_backend(%s)", holder_pid)

    held, waited = holder.finish(), waiter.finish()
    context = f"trial {trial}\nholder:\n{held}\nwaiter:\n{waited}"
    assert held.returncode == EX_UNAVAILABLE, context
    lost = held.events_named("lock_lost")
    assert lost and "002_slow" in lost[0]["error"], context
    assert not any(e["version"] == "002_slow" for e in held.events_named("migration_applied"))
    assert waited.returncode == EX_OK, context
    assert waited.events_named("migrations_complete")[0]["applied"] == ["002_slow", "003_more"]
    assert database.query(
        "SELECT version, count(*) FROM applied_counter GROUP BY version ORDER BY version"
    ) == [("002", 1), ("003", 1)], context
    assert_converged(database, reference, context)
