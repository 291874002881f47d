"""A long transaction holds the table a migration alters: the migration waits at most DDL_LOCK_TIMEOUT per try, and so do readers."""

from __future__ import annotations

import threading
import time

import pytest

from tests.faults.conftest import wait_until

REPEATS = 3
DDL_LOCK_TIMEOUT = 1.0
HOLD_SECONDS = 3.5
# A reader queued behind the waiting ALTER is released when the ALTER gives up; allow the
# scheduling noise of a loaded 2-core machine on top.
READER_SLACK = 0.5
FILES = {
    "001_busy.sql": "CREATE TABLE busy (id int);\nINSERT INTO busy SELECT generate_series(1, 1000);"
}
ALTER = {"002_alter_busy.sql": "ALTER TABLE busy ADD COLUMN note text;"}
ALTER_WAITING = (
    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
    "AND query LIKE '%ALTER TABLE busy%'"
)


class Reader(threading.Thread):
    """Reads the table in a loop, as live traffic would, and records how long each read took."""

    def __init__(self, database) -> None:
        super().__init__(daemon=True)
        self.database = database
        self.latencies: list[float] = []
        self.stop = threading.Event()

    def run(self) -> None:
        with self.database.connect(application_name="reader") as conn:
            while not self.stop.is_set():
                started = time.monotonic()
                conn.execute("SELECT count(*) FROM busy").fetchone()
                self.latencies.append(time.monotonic() - started)
                time.sleep(0.01)


@pytest.mark.parametrize("repeat", range(REPEATS))
def test_a_held_table_blocks_neither_the_migration_nor_readers_for_long(
    database, run_runner, start_runner, migrations, repeat
):
    migrations.add(FILES)
    env = database.env(MIGRATIONS_DIR=str(migrations.path), DDL_LOCK_TIMEOUT=f"{DDL_LOCK_TIMEOUT}s",
                       DDL_LOCK_RETRIES="20")  # fmt: skip
    assert run_runner(env=env).returncode == 0
    migrations.add(ALTER)
    reader = Reader(database)
    with database.connect(autocommit=False, application_name="long-transaction") as holder:
        holder.execute("SELECT count(*) FROM busy")  # ACCESS SHARE until the transaction ends
        release = threading.Timer(HOLD_SECONDS, holder.rollback)
        reader.start()
        wait_until(lambda: len(reader.latencies) > 0)
        runner = start_runner(env=env)
        # The hold counts from the ALTER's first wait, not from the process start, which a
        # loaded machine stretches: 3.5 s cover two tries of 1 s and their backoff.
        wait_until(lambda: database.scalar(ALTER_WAITING) > 0, timeout=30)
        release.start()
        result = runner.wait()
        release.join()
    reader.stop.set()
    reader.join()

    assert result.returncode == 0, result
    retries = result.events_named("lock_timeout_retry")
    assert len(retries) >= 2, result
    worst = max(reader.latencies)
    median = sorted(reader.latencies)[len(reader.latencies) // 2]
    print(f"DDL lock: {len(retries)} retries, {len(reader.latencies)} reads, "
          f"reader blocked max {worst:.3f}s, median {median * 1000:.1f}ms")  # fmt: skip
    assert worst < DDL_LOCK_TIMEOUT + READER_SLACK, f"a reader waited {worst:.2f}s"
    assert worst > DDL_LOCK_TIMEOUT / 2, "the reader should have queued behind the ALTER"
    assert (
        database.scalar(
            "SELECT count(*) FROM information_schema.columns WHERE table_name = 'busy' AND column_name = 'note'"
        )
        == 1
    )
