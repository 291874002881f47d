"""Progress of a long migration: elapsed time, and the phase of an index build, every few seconds.

>>> with ProgressReporter(monitor_conn, backend_pid=4242, interval=5) as progress:
...     with progress.watching("002_big_index"):
...         run_the_long_statement()
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Any

import psycopg

from migrator.logs import get_logger

log = get_logger("progress")

DEFAULT_PROGRESS_INTERVAL = 5.0
TICK = 0.1  # how often the reporter thread looks at the clock
INDEX_PROGRESS = """
SELECT phase, blocks_done, blocks_total, tuples_done, tuples_total
FROM pg_stat_progress_create_index WHERE pid = %s
"""
INDEX_FIELDS = ("phase", "blocks_done", "blocks_total", "tuples_done", "tuples_total")


def index_progress(conn: psycopg.Connection[Any], backend_pid: int) -> dict[str, Any]:
    """The index build running in ``backend_pid``, if any (empty dict otherwise)."""
    row = conn.execute(INDEX_PROGRESS, (backend_pid,)).fetchone()
    return dict(zip(INDEX_FIELDS, row, strict=True)) if row else {}


class ProgressReporter:
    """One thread for the whole run that logs ``migration_progress`` for the running migration.

    ``monitor`` is another connection (the lock's, idle while migrations run): the
    migration's own connection is busy with the statement. One long-lived thread, not
    one per file: starting and joining a thread per file costs more than small files do.
    """

    def __init__(
        self, monitor: psycopg.Connection[Any] | None, backend_pid: int, interval: float
    ) -> None:
        self.monitor = monitor
        self.backend_pid = backend_pid
        self.interval = interval
        self._current: tuple[str, float] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def enabled(self) -> bool:
        return self.monitor is not None and self.interval > 0

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
            assert self.monitor is not None
            fields.update(index_progress(self.monitor, self.backend_pid))
        except psycopg.Error as error:  # progress is best effort, never a failure
            fields["progress_unavailable"] = type(error).__name__
        log.info("migration_progress", version=version, **fields)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> ProgressReporter:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
