"""Reading ahead: the pending files are lexed in a thread while the server works on others.

Deciding a file's transaction mode can mean lexing it (a file with plpgsql bodies: 25 ms for
the shipped schema). When bootstrap creates the database, a thread works out the decisions in
order while the main thread waits for the server (CREATE DATABASE, the bootstrap script), so
that the refusal check and the applier find them made; otherwise that check makes them
first. Nothing is shared but the migrations' cached properties: the applier computes a
decision itself when the thread has not reached it yet, and meets any error itself too.

>>> from pathlib import Path
>>> from migrator.files.folder import find_migrations
>>> files = find_migrations(Path("migrations"))
>>> thread = read_ahead(files.all)
>>> thread.name, thread.daemon
('read-ahead', True)
>>> thread.join()
>>> files.all[-1].mode_decision.mode
<TransactionMode.TRANSACTION: 'transaction'>
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from migrator.files.migration import Migration

THREAD_NAME = "read-ahead"


def read_ahead(migrations: Sequence[Migration]) -> threading.Thread:
    """Decide the files' transaction modes in a daemon thread, in the order they will run."""
    thread = threading.Thread(
        target=_decide, args=(tuple(migrations),), name=THREAD_NAME, daemon=True
    )
    thread.start()
    return thread


def _decide(migrations: tuple[Migration, ...]) -> None:
    for migration in migrations:
        try:
            migration.mode_decision  # noqa: B018  (cached on the migration for the applier)
        except Exception:  # the applier meets the same error and reports it
            return
