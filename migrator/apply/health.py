"""What the throttle's signals mean (migrator/apply/throttle.py reads them from the server):
the numbers read, as a pause or none, and how long a pause sleeps before the next check.

Kept apart from the reads so that the unit tests pin each decision, as lint/findings.py is
apart from lint/linter.py. For example::

    waiters_pause(2, limit=0)       # Pause('lock_waiters', '2 session(s) waited on ...', ...)
    lag_pause((0, 2**30, "standby"), limit=64 * 2**20)  # (Pause('replica_lag', ...), 0)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

REPLICA_LAG = "replica_lag"
LOCK_WAITERS = "lock_waiters"
AUTOVACUUM = "autovacuum"


@dataclass(frozen=True)
class Pause:
    """Why to pause: the signal, a sentence for people, the numbers for the log."""

    signal: str
    message: str
    numbers: dict[str, Any] = field(default_factory=dict)


def size_text(size: float) -> str:
    """Bytes as PostgreSQL's pg_size_pretty writes them, roughly.

    >>> size_text(64 * 2**20), size_text(1536), size_text(12)
    ('64.0 MB', '1.5 kB', '12 bytes')
    """
    for unit in ("TB", "GB", "MB", "kB"):
        scale = 2 ** (10 * ("kB", "MB", "GB", "TB").index(unit) + 10)
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size:.0f} bytes"


def through_functions(
    sees_views: bool, lag_function: bool, autovacuum_function: bool
) -> dict[str, bool]:
    """Whether each signal is read through 000's function: only for a role that does not see
    the views itself (they name the standby) and may call it; else the views (a role that sees
    neither finds the rows hidden there, and is told once).

    >>> through_functions(False, True, False)
    {'replica_lag': True, 'autovacuum': False}
    >>> through_functions(True, True, True)
    {'replica_lag': False, 'autovacuum': False}
    """
    use = {REPLICA_LAG: lag_function, AUTOVACUUM: autovacuum_function}
    return {signal: may and not sees_views for signal, may in use.items()}


def waiters_pause(waiters: int, limit: int) -> Pause | None:
    """A pause when more sessions than ``limit`` (BATCH_MAX_LOCK_WAITERS) waited on the last
    batch's locks."""
    if waiters <= limit:
        return None
    message = f"{waiters} session(s) waited on the last batch's locks (at most {limit})"
    return Pause(LOCK_WAITERS, message, {"lock_waiters": waiters, "max_lock_waiters": limit})


def lag_pause(row: tuple[Any, ...], limit: int) -> tuple[Pause | None, int]:
    """From the replica lag's row (walsenders hidden from this role, the worst lag in bytes or
    NULL, its standby's name): a pause when the lag is over ``limit`` (BATCH_MAX_REPLICA_LAG),
    and the walsenders hidden. Any hidden one makes the lag unknown: no pause."""
    hidden, lag, standby = row
    if hidden:
        return None, int(hidden)
    if lag is None or lag <= limit:
        return None, 0
    replica = f"replica {standby!r}" if standby is not None else "a replica"
    message = f"{replica} has {size_text(lag)} of WAL not replayed (at most {size_text(limit)})"
    numbers = {"replica_lag_bytes": lag, "max_replica_lag": limit, "standby": standby}
    return Pause(REPLICA_LAG, message, numbers), 0


def autovacuum_pause(row: tuple[Any, ...]) -> tuple[Pause | None, int]:
    """From the autovacuum row (vacuums whose table this role may not see, the first seen
    relation, its phase, whether any is anti-wraparound, the workers seen on the table): a
    pause while a worker is on the table, and the vacuums hidden (they do not stop one seen)."""
    hidden, relation, phase, wraparound, workers = row
    if not workers:
        return None, int(hidden or 0)
    kind = "an anti-wraparound autovacuum" if wraparound else "autovacuum"
    message = f"{kind} is working on {relation} ({phase})"
    numbers = {"relation": relation, "phase": phase, "wraparound": wraparound}
    return Pause(AUTOVACUUM, message, numbers), int(hidden or 0)


def pause_length(pause: Pause, check_interval: float, batch_seconds: float) -> float:
    """How long to sleep before checking again: the check interval; after a batch that
    sessions waited on, as long as that batch took (``batch_seconds``, 0 when not measured)
    if shorter. The waiters went on when it committed, and the application then has the table
    to itself at least half the time: a pause of a whole second after each 150 ms batch made a
    backfill six times slower under a steady load of point updates (docs/configuration.md)."""
    if pause.signal == LOCK_WAITERS and batch_seconds > 0:
        return min(check_interval, batch_seconds)
    return check_interval
