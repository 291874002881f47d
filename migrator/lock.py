"""The migration lock: a session-level advisory lock held on one dedicated connection.

>>> with advisory_lock(conn, lock_key("auth_service", "schema_migrations"), timeout=600):
...     apply_everything()
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg

from migrator.errors import LockLostError, LockTimeoutError
from migrator.logs import get_logger
from migrator.wait import reason_of

log = get_logger("lock")

POLL_INTERVAL = 0.1
HOLDER_LOG_INTERVAL = 10.0
INT64_BITS = 64

TRY_LOCK = "SELECT pg_try_advisory_lock(%s)"
UNLOCK = "SELECT pg_advisory_unlock(%s)"
# An advisory lock on a bigint key shows in pg_locks as classid = high 32 bits, objid = low.
HOLDER = """
SELECT a.pid, a.application_name, a.usename, a.client_addr::text, a.backend_start
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND l.classid::bigint = %s AND l.objid::bigint = %s
LIMIT 1
"""

# Division by zero unless the session still holds the lock: the error aborts the transaction
# the check is sent in, before the history row, in the same round trip as the file.
STILL_HELD = (
    "SELECT 1 / count(*) FROM pg_catalog.pg_locks WHERE locktype = 'advisory' AND granted "
    "AND objsubid = 1 AND pid = {pid} AND classid::bigint = {high} AND objid::bigint = {low}"
)
ERR_LOST = (
    "lost the migration lock before recording {version} ({reason}): its transaction, if any, "
    "was rolled back and nothing of it was recorded; another runner may go on — run again"
)
LOST_REASON = "the lock's session ended"
RELEASED_WITH_SESSION = "the lock's session ended, which released it"
ERR_TIMEOUT = (
    "could not get the migration lock within {timeout:g}s: held by {holder}; "
    "another runner is migrating — retry later"
)


def lock_key(*parts: str) -> int:
    """A stable signed 64-bit key from names, e.g. the database and the history table."""
    digest = hashlib.sha256(":".join(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _key_halves(key: int) -> tuple[int, int]:
    unsigned = key % (1 << INT64_BITS)
    return unsigned >> 32, unsigned & 0xFFFFFFFF


@dataclass(frozen=True)
class LockGuard:
    """Checks, from the applying connection, that the lock's session (``pid``) still holds it.

    A runner whose lock session died (terminated, its node lost) must not record anything
    beside the runner that took the lock over.

    >>> LockGuard(pid=4242, key=lock_key("auth_service", "public.schema_migrations")).sql
    "SELECT 1 / count(*) FROM pg_catalog.pg_locks WHERE ... AND pid = 4242 ..."
    """

    pid: int
    key: int

    @property
    def sql(self) -> str:
        high, low = _key_halves(self.key)
        return STILL_HELD.format(pid=self.pid, high=high, low=low)

    def lost(self, version: str) -> LockLostError:
        return LockLostError(ERR_LOST.format(version=version, reason=LOST_REASON))


def lock_holder(conn: psycopg.Connection[Any], key: int) -> dict[str, Any] | None:
    row = conn.execute(HOLDER, _key_halves(key)).fetchone()
    if row is None:
        return None
    pid, application_name, user, client, since = row
    return {
        "pid": pid,
        "application_name": application_name,
        "user": user,
        "client_addr": client,
        "since": since.isoformat() if since else None,
    }


# Called when the lock is busy: may end sessions that have no business holding it and take
# the lock itself (True). The bootstrap lock uses it (see trust.LockSquatters).
Evictor = Callable[[psycopg.Connection[Any], int], bool]


def acquire(
    conn: psycopg.Connection[Any],
    key: int,
    timeout: float,
    name: str,
    evict: Evictor | None = None,
) -> float:
    """Poll pg_try_advisory_lock until it succeeds; returns the seconds waited."""
    start = time.monotonic()
    next_report = start
    holder: dict[str, Any] | None = None
    while True:
        row = conn.execute(TRY_LOCK, (key,)).fetchone()
        if (row and row[0]) or (evict is not None and evict(conn, key)):
            waited = time.monotonic() - start
            log.info("lock_acquired", lock=name, key=key, waited_s=round(waited, 3))
            return waited
        now = time.monotonic()
        if now - start >= timeout:
            raise LockTimeoutError(ERR_TIMEOUT.format(timeout=timeout, holder=holder), lock=name)
        if now >= next_report:
            holder = lock_holder(conn, key)
            log.info("lock_waiting", lock=name, holder=holder, waited_s=round(now - start, 3))
            next_report = now + HOLDER_LOG_INTERVAL
        time.sleep(POLL_INTERVAL)


@contextmanager
def advisory_lock(
    conn: psycopg.Connection[Any],
    key: int,
    timeout: float,
    name: str = "migrations",
    evict: Evictor | None = None,
) -> Iterator[float]:
    """Hold the lock for the block; released on exit even when the block fails."""
    waited = acquire(conn, key, timeout, name, evict)
    try:
        yield waited
    finally:
        _release(conn, key, name)


def _release(conn: psycopg.Connection[Any], key: int, name: str) -> None:
    # A session-level lock dies with its session: then nothing is left to release.
    try:
        if conn.closed or conn.broken:
            log.warning("lock_released", lock=name, how=RELEASED_WITH_SESSION)
            return
        conn.execute(UNLOCK, (key,))
        log.info("lock_released", lock=name)
    except psycopg.OperationalError as error:
        log.warning("lock_released", lock=name, how=RELEASED_WITH_SESSION, reason=reason_of(error))
