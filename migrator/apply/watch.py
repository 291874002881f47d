"""What a file's run shows while it runs: the server's NOTICEs as log events, and the progress
of a long migration.

For example::

    with watched(conn, progress, "002_add_feature"):
        run_script(conn, text)  # RAISE NOTICE 'backfilled 10 rows' -> event "notice"
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import psycopg

from migrator.apply.progress import ProgressReporter
from migrator.logs import get_logger

log = get_logger("apply")


@contextmanager
def watched(
    conn: psycopg.Connection[Any], progress: ProgressReporter | None, version: str
) -> Iterator[None]:
    """NOTICEs become log events; a long migration logs its progress."""
    watching = progress.watching(version) if progress else nullcontext()
    with notices_logged(conn, version), watching:
        yield


@contextmanager
def notices_logged(conn: psycopg.Connection[Any], version: str) -> Iterator[None]:
    def handler(diag: psycopg.errors.Diagnostic) -> None:
        log.info(
            "notice",
            version=version,
            severity=diag.severity,
            message=diag.message_primary,
            detail=diag.message_detail,
        )

    conn.add_notice_handler(handler)
    try:
        yield
    finally:
        conn.remove_notice_handler(handler)
