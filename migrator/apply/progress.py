"""Progress of a long migration: elapsed time, and the phase of an index build, every few seconds.

For example, with ``open_monitor`` a function that opens another connection::

    with ProgressReporter(open_monitor, backend_pid=4242, interval=5) as progress:
        with progress.watching("002_big_index"):
            run_the_long_statement()
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Any

import psycopg

from migrator.errors import MigratorError
from migrator.logs import get_logger

log = get_logger("progress")

TICK = 0.1  # how often the reporter thread looks at the clock
MONITOR_JOIN_TIMEOUT = 2.0
INDEX_PROGRESS = """
SELECT phase, blocks_done, blocks_total, tuples_done, tuples_total
FROM pg_stat_progress_create_index WHERE pid = %s
"""
# Behind a pooler the applying backend is not known by pid (it changes between transactions):
# the index build of this database. Under the migration lock it is the runner's, unless the
# application builds an index at that very moment: progress is only ever a log line.
POOLED_INDEX_PROGRESS = """
SELECT phase, blocks_done, blocks_total, tuples_done, tuples_total
FROM pg_stat_progress_create_index
WHERE datname = current_database() AND pid <> pg_backend_pid()
ORDER BY pid LIMIT 1
"""
INDEX_FIELDS = ("phase", "blocks_done", "blocks_total", "tuples_done", "tuples_total")


def index_progress(conn: psycopg.Connection[Any], backend_pid: int | None) -> dict[str, Any]:
    """The index build running in ``backend_pid`` (None: in this database), else an empty dict.

    ``conn`` is in autocommit: statistics views read inside a transaction would repeat the
    snapshot taken by its first read (until pg_stat_clear_snapshot()).
    """
    if backend_pid is None:
        row = conn.execute(POOLED_INDEX_PROGRESS).fetchone()
    else:
        row = conn.execute(INDEX_PROGRESS, (backend_pid,)).fetchone()
    return dict(zip(INDEX_FIELDS, row, strict=True)) if row else {}


class ProgressReporter:
    """One thread for the whole run that logs ``migration_progress`` for the running migration.

    ``open_monitor`` opens another connection, the first time a migration runs long: the
    migration's own connection is busy with the statement, and the lock's must not run
    queries (a query's snapshot there would make CREATE INDEX CONCURRENTLY wait for the
    lock's transaction, that is for the end of the run). One long-lived thread, not one per
    file: starting and joining a thread per file costs more than small files do.
    """

    def __init__(
        self,
        open_monitor: Callable[[], psycopg.Connection[Any]] | None,
        backend_pid: int | None,
        interval: float,
    ) -> None:
        self.open_monitor = open_monitor
        self.monitor: psycopg.Connection[Any] | None = None
        self.backend_pid = backend_pid
        self.interval = interval
        self._current: tuple[str, float] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def enabled(self) -> bool:
        return self.open_monitor is not None and self.interval > 0

    @contextmanager
    def watching(self, version: str) -> Iterator[None]:
        if self.enabled and self._thread is None:
            self._thread = threading.Thread(target=self._report, name="progress", daemon=True)
            self._thread.start()
        self._current = (version, time.monotonic())
        try:
            yield
        finally:
            self._current = None

    def _report(self) -> None:
        last: tuple[str, float] | None = None
        next_at = 0.0
        while not self._stop.wait(TICK):
            current = self._current
            if current is None:
                continue
            if current != last:
                last, next_at = current, current[1] + self.interval
            now = time.monotonic()
            if now >= next_at:
                self._log(current[0], now - current[1])
                next_at += self.interval

    def _log(self, version: str, elapsed: float) -> None:
        fields: dict[str, Any] = {"elapsed_s": round(elapsed, 1)}
        try:
            if self.monitor is None:
                assert self.open_monitor is not None
                self.monitor = self.open_monitor()
            fields.update(index_progress(self.monitor, self.backend_pid))
        except (psycopg.Error, MigratorError) as error:  # best effort, never a failure
            fields["progress_unavailable"] = type(error).__name__
        log.info("migration_progress", version=version, **fields)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            # A monitor still waiting for a pooled server must not hold up the run's end.
            self._thread.join(MONITOR_JOIN_TIMEOUT)
            if self._thread.is_alive():
                return
        if self.monitor is not None:
            self.monitor.close()

    def __enter__(self) -> ProgressReporter:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
