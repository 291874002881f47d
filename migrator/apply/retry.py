"""When a file is tried again: after a lock timeout (55P03, with backoff), and outside a
transaction when PostgreSQL refuses it inside one (the whole file was rolled back).

>>> from psycopg.errors import LockNotAvailable
>>> error = LockNotAvailable("canceling statement due to lock timeout")
>>> is_lock_timeout(StatementFailed(error, 0))
True
"""

from __future__ import annotations

from migrator.apply.transport import StatementFailed
from migrator.database.connect import capped_backoff

LOCK_RETRY_FIRST_DELAY = 0.5
LOCK_RETRY_MAX_DELAY = 5.0
LOCK_RETRY_JITTER = 0.25
LOCK_RETRY_WAIT = capped_backoff(LOCK_RETRY_FIRST_DELAY, LOCK_RETRY_MAX_DELAY, LOCK_RETRY_JITTER)
LOCK_NOT_AVAILABLE = "55P03"
# PostgreSQL refuses these in the runner's transaction but runs them in autocommit, as psql
# does; the failed transaction was rolled back whole, so the file runs again statement by
# statement (mode_changed).  Text alone cannot tell: a partitioned table, a procedure that
# commits, an enum value used after ALTER TYPE ... ADD VALUE.
FALLBACK_SQLSTATES = {
    "25001": "PostgreSQL refuses it inside a transaction block",
    "2D000": "it ends the transaction itself (COMMIT or ROLLBACK in a procedure or DO block)",
    "55P04": "a new enum value cannot be used in the transaction that added it",
}
MODE_CHANGED_REASON = "line {line}: {sqlstate} {message}: {why}; run again statement by statement"


def is_lock_timeout(error: BaseException) -> bool:
    return isinstance(error, StatementFailed) and error.error.sqlstate == LOCK_NOT_AVAILABLE
