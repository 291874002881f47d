"""The throttle of a batched data migration: pause between batches while the database is busy.

Three health signals, each a setting (``ThrottleSettings``, from BATCH_* variables):

- replica replay lag: the bytes of WAL the primary wrote that a standby has not replayed yet
  (``pg_stat_replication.replay_lsn``, the worst walsender). Bytes, not ``replay_lag``: that
  interval stays frozen at its last value while replay is paused (``pg_wal_replay_pause()``,
  a standby's long query under ``max_standby_streaming_delay``) and reads NULL when idle, so
  it says "fine" exactly when it is not;
- sessions waiting on a lock the batch held: counted by ``WAITERS_SQL`` inside the batch's
  transaction (between batches the runner holds nothing, so nobody waits on it then);
- autovacuum working on the table (or its TOAST table, or a partition of it): the backfill
  makes the dead rows it cleans; both at once double the table's I/O.

Both the lag and autovacuum are visible only to members of pg_read_all_stats, which bootstrap
refuses for the owner (it sees every session's statements). A superuser's bootstrap (000) gives
the owner two functions in schema ``migrator_stats`` that read them as a dedicated role and
return numbers only; a role that sees the views itself (a superuser, pg_monitor) reads the
views, which also name the standby. Neither: the signal is logged once as unknown.

Between two batches the loop calls ``wait_until_healthy``, which returns at once when
everything is fine::

    throttle = Throttle(config.throttle, "public.tokens")
    paused = throttle.wait_until_healthy(conn, "005_backfill")   # 0.0
    ...  # the batch's transaction, then WAITERS_SQL in it
    throttle.after_batch(waiters)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import errors

from migrator.apply.health import (
    AUTOVACUUM,
    REPLICA_LAG,
    Pause,
    autovacuum_pause,
    lag_pause,
    pause_length,
    through_functions,
    waiters_pause,
)
from migrator.logs import get_logger

log = get_logger("throttle")

DEFAULT_CHECK_INTERVAL = 1.0
DEFAULT_MAX_REPLICA_LAG = 64 * 2**20
DEFAULT_MAX_LOCK_WAITERS = 0


@dataclass(frozen=True)
class ThrottleSettings:
    check_interval: float = DEFAULT_CHECK_INTERVAL  # BATCH_CHECK_INTERVAL, seconds
    # BATCH_MAX_REPLICA_LAG: bytes of WAL not yet replayed by a standby; 0 turns the check off.
    max_replica_lag: int = DEFAULT_MAX_REPLICA_LAG
    # BATCH_MAX_LOCK_WAITERS: after a batch that more sessions than this waited on, a pause
    # as long as that batch (at most check_interval).
    max_lock_waiters: int = DEFAULT_MAX_LOCK_WAITERS
    pause_on_autovacuum: bool = True  # BATCH_PAUSE_ON_AUTOVACUUM


# Run inside the batch's transaction, after its statement: the sessions now waiting on a lock
# this backend holds (a row it updated, the table). pg_locks is read by any role (unlike
# pg_stat_activity's wait_event of another role's session), and pg_blocking_pids only for the
# sessions that wait at all: usually none, and each call locks the whole lock table briefly.
WAITERS_SQL = (
    "SELECT count(*)::int FROM (SELECT DISTINCT pid FROM pg_locks WHERE NOT granted) w "
    "WHERE pg_backend_pid() = ANY(pg_blocking_pids(w.pid))"
)

# The worst walsender's unreplayed WAL. A role without pg_read_all_stats (pg_monitor has it)
# sees each walsender's pid and NULL for everything else: ``hidden`` counts those.
REPLICA_LAG_SQL = (
    "SELECT count(*) FILTER (WHERE state IS NULL)::int, "
    "max(pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn))::bigint, "
    "(array_agg(application_name ORDER BY pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn) "
    "DESC NULLS LAST))[1] FROM pg_stat_replication"
)

# The same through 000's functions (SECURITY DEFINER, owned by <owner>_stats): nothing hidden,
# no standby name (the function returns the bytes only).
REPLICA_LAG_FUNCTION_SQL = "SELECT 0, migrator_stats.replica_lag_bytes(), NULL::text"

# Autovacuum workers on the table, its partitions (pg_partition_tree lists nothing for a plain
# table), or their TOAST tables, in this database.
# An anti-wraparound run says so in its query text. A vacuum whose relation this role may not
# see (without pg_read_all_stats an autovacuum worker's relid reads NULL) counts as hidden.
AUTOVACUUM_SQL = """
WITH tables AS (
    SELECT to_regclass(%(table)s) AS oid
    UNION SELECT relid FROM pg_partition_tree(to_regclass(%(table)s))
), target AS (
    SELECT c.oid, c.reltoastrelid FROM pg_class c JOIN tables t ON c.oid = t.oid
)
SELECT count(*) FILTER (WHERE v.relid IS NULL)::int,
       (array_agg(v.relid::regclass::text) FILTER (WHERE v.relid IS NOT NULL))[1],
       (array_agg(v.phase) FILTER (WHERE v.relid IS NOT NULL))[1],
       coalesce(bool_or(a.query LIKE '%%(to prevent wraparound)'), false),
       count(*) FILTER (WHERE v.relid IS NOT NULL)::int
FROM pg_stat_progress_vacuum v LEFT JOIN pg_stat_activity a ON a.pid = v.pid
WHERE v.datid = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND (v.relid IS NULL
       OR (a.backend_type = 'autovacuum worker'
           AND v.relid IN (SELECT oid FROM target UNION ALL SELECT reltoastrelid FROM target)))
"""

AUTOVACUUM_FUNCTION_SQL = """
SELECT 0, (array_agg(relation::regclass::text))[1], (array_agg(phase))[1],
       coalesce(bool_or(wraparound), false), count(*)::int
FROM migrator_stats.autovacuum_on(to_regclass(%(table)s))
"""

# Which way each signal is read: whether this role sees the views itself, and which of 000's
# functions it may execute. Only functions in a schema a superuser owns count: one that another
# role could have planted would run whatever it holds on the runner's session.
STATS_FUNCTIONS_SQL = """
SELECT pg_has_role(current_user, 'pg_read_all_stats', 'USAGE'),
       coalesce(bool_or(p.proname = 'replica_lag_bytes'), false),
       coalesce(bool_or(p.proname = 'autovacuum_on'), false)
FROM pg_namespace n
JOIN pg_roles o ON o.oid = n.nspowner AND o.rolsuper
JOIN pg_proc p ON p.pronamespace = n.oid AND p.prosecdef
WHERE n.nspname = 'migrator_stats'
  AND (p.proname, p.proargtypes::text) IN (('replica_lag_bytes', ''),
                                          ('autovacuum_on', 'regclass'::regtype::oid::text))
  AND has_schema_privilege(n.oid, 'USAGE') AND has_function_privilege(p.oid, 'EXECUTE')
"""

# What makes a signal unreadable, rather than the connection or the run: a view or function
# the server lacks (a pooler's or managed service's target), a privilege, a standby.
UNREADABLE = (
    errors.UndefinedTable,
    errors.UndefinedFunction,
    errors.InsufficientPrivilege,
    errors.FeatureNotSupported,
    errors.ObjectNotInPrerequisiteState,
)
# Not simply "grant it": bootstrap refuses an owner with pg_read_all_stats (database/trust.py).
GRANT_HINT = (
    "the run goes on without pausing for it; a member of pg_monitor (or pg_read_all_stats) "
    "sees it, which bootstrap refuses for the owner: the owner reads it through the functions "
    "of schema migrator_stats that bootstrap by a superuser (DB_ADMIN_USER) creates "
    "(docs/configuration.md, Batched data migrations: pauses)"
)
HIDDEN_WALSENDERS = (
    "{count} walsender(s) in pg_stat_replication show no position to this role "
    "(not a member of pg_read_all_stats)"
)
HIDDEN_VACUUMS = (
    "{count} vacuum(s) in pg_stat_progress_vacuum show no table to this role "
    "(not a member of pg_read_all_stats)"
)

# Logged once (a warning) when the runner's role or the server will not show the signal.
UNKNOWN_EVENTS = {REPLICA_LAG: "replica_lag_unknown", AUTOVACUUM: "autovacuum_unknown"}


class Throttle:
    """The health checks of one batched file's loop; see the module's docstring."""

    def __init__(
        self,
        settings: ThrottleSettings,
        table: str,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.table = table
        self.sleep = sleep
        self.clock = clock
        self.waiters = 0
        # When the last wait ended (the batch began) and how long the batch then took.
        self.batch_started: float | None = None
        self.batch_seconds = 0.0
        # Each signal this role cannot read is logged once, then no longer asked for.
        self.unreadable: set[str] = set()
        # The query of each signal, once asked (STATS_FUNCTIONS_SQL): the views or 000's functions.
        self.queries: dict[str, str] | None = None

    def after_batch(self, waiters: int) -> None:
        """Record the sessions that waited on the last batch's locks (WAITERS_SQL), and how
        long the batch took since ``wait_until_healthy`` returned."""
        self.waiters = waiters
        if self.batch_started is not None:
            self.batch_seconds = self.clock() - self.batch_started

    def reason(self, conn: psycopg.Connection[Any]) -> str | None:
        """Why to pause now, None when healthy."""
        pause = self.check(conn)
        return pause.message if pause else None

    def check(self, conn: psycopg.Connection[Any]) -> Pause | None:
        """The first signal over its threshold. ``conn`` is in autocommit with no transaction
        open: statistics views read in a transaction would repeat its first snapshot."""
        return self._lock_waiters() or self._replica_lag(conn) or self._autovacuum(conn)

    def wait_until_healthy(
        self,
        conn: psycopg.Connection[Any],
        version: str,
        while_paused: Callable[[Pause, float], None] | None = None,
    ) -> float:
        """Block while a signal is over its threshold, re-checking every check interval;
        return the seconds paused. After each check that still pauses, ``while_paused`` is
        given the pause and its seconds so far (the loop's heartbeat: a pause may last
        hours). Interrupted (SIGTERM) from the sleep propagates."""
        pause = self.check(conn)
        if pause is None:
            self.batch_started = self.clock()
            return 0.0
        started = self.clock()
        log.info(
            "batch_paused",
            version=version,
            table=self.table,
            reason=pause.message,
            signal=pause.signal,
            check_interval=self.settings.check_interval,
            **pause.numbers,
        )
        while pause is not None:
            self.sleep(self._pause_length(pause))
            # The waiters were counted while the batch held its locks: one pause lets them
            # through; the next batch counts again.
            self.waiters = 0
            pause = self.check(conn)
            if pause is not None and while_paused is not None:
                while_paused(pause, self.clock() - started)
        self.batch_started = self.clock()
        paused = self.batch_started - started
        log.info(
            "batch_resumed", version=version, table=self.table, paused_seconds=round(paused, 3)
        )
        return paused

    def _pause_length(self, pause: Pause) -> float:
        return pause_length(pause, self.settings.check_interval, self.batch_seconds)

    def _lock_waiters(self) -> Pause | None:
        return waiters_pause(self.waiters, self.settings.max_lock_waiters)

    def _replica_lag(self, conn: psycopg.Connection[Any]) -> Pause | None:
        limit = self.settings.max_replica_lag
        if limit <= 0 or REPLICA_LAG in self.unreadable:
            return None
        row = self._read(conn, REPLICA_LAG, self._queries(conn)[REPLICA_LAG])
        if row is None:
            return None
        pause, hidden = lag_pause(row, limit)
        if hidden:
            self._unreadable(REPLICA_LAG, HIDDEN_WALSENDERS.format(count=hidden))
        return pause

    def _autovacuum(self, conn: psycopg.Connection[Any]) -> Pause | None:
        if not self.settings.pause_on_autovacuum or AUTOVACUUM in self.unreadable:
            return None
        row = self._read(conn, AUTOVACUUM, self._queries(conn)[AUTOVACUUM], {"table": self.table})
        if row is None:
            return None
        pause, hidden = autovacuum_pause(row)
        if hidden:
            self._unreadable(AUTOVACUUM, HIDDEN_VACUUMS.format(count=hidden))
        return pause

    def _queries(self, conn: psycopg.Connection[Any]) -> dict[str, str]:
        """The query of each signal, decided on the first check (``queries_for``)."""
        if self.queries is None:
            try:
                row = conn.execute(STATS_FUNCTIONS_SQL).fetchone()
            except UNREADABLE:
                row = None
            sees_views, lag_function, autovacuum_function = row or (False, False, False)
            self.queries = queries_for(sees_views, lag_function, autovacuum_function)
        return self.queries

    def _read(
        self,
        conn: psycopg.Connection[Any],
        signal: str,
        sql: str,
        params: dict[str, Any] | None = None,
    ) -> tuple[Any, ...] | None:
        """The signal's one row, or None (logged once) when the server will not tell."""
        try:
            return conn.execute(sql, params).fetchone()
        except UNREADABLE as error:
            why = f"{error.sqlstate} {error.diag.message_primary or error}"
            self._unreadable(signal, why)
            return None

    def _unreadable(self, signal: str, why: str) -> None:
        """Log once that ``signal`` is not watched, and why; it no longer pauses the run."""
        if signal in self.unreadable:
            return
        self.unreadable.add(signal)
        log.warning(UNKNOWN_EVENTS[signal], table=self.table, reason=why, hint=GRANT_HINT)


def queries_for(sees_views: bool, lag_function: bool, autovacuum_function: bool) -> dict[str, str]:
    """Each signal's query: 000's function or the views, as ``through_functions`` decides.

    >>> queries_for(False, True, False)[REPLICA_LAG] == REPLICA_LAG_FUNCTION_SQL
    True
    >>> queries_for(True, True, True)[AUTOVACUUM] == AUTOVACUUM_SQL
    True
    """
    views = {REPLICA_LAG: REPLICA_LAG_SQL, AUTOVACUUM: AUTOVACUUM_SQL}
    functions = {REPLICA_LAG: REPLICA_LAG_FUNCTION_SQL, AUTOVACUUM: AUTOVACUUM_FUNCTION_SQL}
    chosen = through_functions(sees_views, lag_function, autovacuum_function)
    return {signal: functions[signal] if chosen[signal] else views[signal] for signal in views}
