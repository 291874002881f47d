"""Progress of a long migration: elapsed time, and the phase of an index build, every few seconds.

>>> with progress_reported(monitor_conn, backend_pid=4242, version="002_big_index", interval=5):
...     run_the_long_statement()
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg

from migrator.logs import get_logger

log = get_logger("progress")

DEFAULT_PROGRESS_INTERVAL = 5.0
INDEX_PROGRESS = """
SELECT phase, blocks_done, blocks_total, tuples_done, tuples_total
FROM pg_stat_progress_create_index WHERE pid = %s
"""
INDEX_FIELDS = ("phase", "blocks_done", "blocks_total", "tuples_done", "tuples_total")


def index_progress(conn: psycopg.Connection[Any], backend_pid: int) -> dict[str, Any]:
    """The index build running in ``backend_pid``, if any (empty dict otherwise)."""
    row = conn.execute(INDEX_PROGRESS, (backend_pid,)).fetchone()
    return dict(zip(INDEX_FIELDS, row, strict=True)) if row else {}


@contextmanager
def progress_reported(
    monitor: psycopg.Connection[Any] | None,
    backend_pid: int,
    version: str,
    interval: float = DEFAULT_PROGRESS_INTERVAL,
) -> Iterator[None]:
    """Log ``migration_progress`` every ``interval`` seconds while the block runs.

    ``monitor`` is another connection (the lock's, idle while migrations run): the
    migration's own connection is busy with the statement.
    """
    if monitor is None or interval <= 0:
        yield
        return
    stop = threading.Event()
    start = time.monotonic()

    def report() -> None:
        while not stop.wait(interval):
            fields: dict[str, Any] = {"elapsed_s": round(time.monotonic() - start, 1)}
            try:
                fields.update(index_progress(monitor, backend_pid))
            except psycopg.Error as error:  # progress is best effort, never a failure
                fields["progress_unavailable"] = type(error).__name__
            log.info("migration_progress", version=version, **fields)

    reporter = threading.Thread(target=report, name=f"progress-{version}", daemon=True)
    reporter.start()
    try:
        yield
    finally:
        stop.set()
        reporter.join()
