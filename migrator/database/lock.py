"""The migration lock: one protocol for every command that writes (migrate, adopt, baseline,
rollback), direct or through a pooler, that only the owner (and superusers) can take.

The lock is ``LOCK TABLE public.schema_migrations_lock IN SHARE UPDATE EXCLUSIVE MODE``: a lock
on a view that only the owner holds privileges on. The view is named after the history table
(MIGRATIONS_TABLE plus ``_lock``, in its schema), so two histories in one database (two
services, each with its own MIGRATIONS_TABLE) do not wait for each other. An advisory lock
needs no privilege at all, so any role that can connect (the runtime role, an SQL injection
in it) could hold its key and block every release; ``LOCK TABLE`` in this mode needs UPDATE,
DELETE, TRUNCATE or MAINTAIN on the relation, and the locks a role without privileges can take
by naming it (a SELECT or an INSERT being parsed) are weaker modes that do not conflict with
it. A view is never vacuumed or analyzed, so maintenance does not contend for it.

The lock is transaction-level: taken in a transaction left open on a dedicated connection for
the whole run, because a transaction is the one thing a transaction pooler never splits across
server sessions, and it ends with its session. The holder's backend pid is read inside that
transaction, so the guard that each commit checks names the right server session even behind
a pooler. A waiter gives up its work connection and, behind a pooler, its lock connection
between polls: it holds no pooled server connection while it waits. The bootstrap's lock is a
separate, session-level advisory lock in the maintenance database (``advisory_lock``), whose
squatters bootstrap evicts.

For example::

    with locked(settings) as held:
        held.guard.check(held.conn, "baseline")
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

import psycopg
from psycopg import sql

from migrator.database.catalog import CREATED_MEANWHILE, check_history_schema, revoke_from_others
from migrator.database.connect import (
    ConnectionAhead,
    behind_pooler,
    connect,
    reason_of,
    wait_for_connection,
)
from migrator.errors import LockLostError, LockTimeoutError, PermissionDeniedError
from migrator.history.name import DEFAULT_TABLE, TableName
from migrator.logs import get_logger

log = get_logger("lock")

POLL_INTERVAL = 0.1
HOLDER_LOG_INTERVAL = 10.0
INT64_BITS = 64

POOLED_POLL_INTERVAL = 0.25  # each poll behind a pooler is a new client login

TRY_LOCK = "SELECT pg_try_advisory_lock(%s)"
LOCK_RELATION = DEFAULT_TABLE.lock  # with the default MIGRATIONS_TABLE
LOCK_MODE = "ShareUpdateExclusiveLock"  # as pg_locks names SHARE UPDATE EXCLUSIVE
# The lock's relation, created once by the owner, and kept the owner's alone: every privilege
# of any other role on it is revoked in the same round trip (the owner's default privileges
# would give the runtime role UPDATE, enough to take the lock). One that another role owns is
# refused: its owner could hold the lock, or grant it away.
ENSURE_LOCK_RELATION = """
DO $migrator$
BEGIN
    IF pg_catalog.to_regclass({regclass}) IS NULL THEN
        CREATE VIEW {relation} AS SELECT 1 AS migration_lock;
        COMMENT ON VIEW {relation} IS
            'The migration lock (LOCK TABLE ... IN SHARE UPDATE EXCLUSIVE MODE); owner only.';
    END IF;
    IF NOT pg_catalog.pg_has_role((SELECT c.relowner FROM pg_catalog.pg_class c
            WHERE c.oid OPERATOR(pg_catalog.=)
                  pg_catalog.to_regclass({regclass})), 'USAGE') THEN
        RAISE EXCEPTION USING ERRCODE = '42501', MESSAGE = pg_catalog.format(
            {owned_by},
            (SELECT c.relowner::pg_catalog.regrole FROM pg_catalog.pg_class c
             WHERE c.oid OPERATOR(pg_catalog.=)
                   pg_catalog.to_regclass({regclass})), current_user);
    END IF;
END
$migrator$"""
# One round trip per poll. The lock transaction must outlive any timeout the server or the
# role sets, and holds no snapshot and no xid once this SELECT is done (LOCK TABLE takes no
# snapshot; READ COMMITTED): CREATE INDEX CONCURRENTLY waits only for transactions with a
# snapshot, so it does not wait for this one. NOWAIT: a busy lock is an error (55P03) that
# ends the try; ROLLBACK ends it (and the lock at the end of the run).
TRY_TRANSACTION_LOCK = (
    "BEGIN ISOLATION LEVEL READ COMMITTED;\n"
    "SET LOCAL idle_in_transaction_session_timeout = 0;\n"
    "SET LOCAL statement_timeout = 0;\n"
    "SET LOCAL lock_timeout = 0;\n"
    "{transaction_timeout}"
    "SET LOCAL application_name = {application_name};\n"
    "LOCK TABLE {relation} IN SHARE UPDATE EXCLUSIVE MODE NOWAIT;\n"
    "SELECT pg_catalog.pg_backend_pid(), "
    "pg_catalog.to_regclass({regclass})::pg_catalog.oid"
)
TRANSACTION_TIMEOUT_MIN_VERSION = 170000
NO_TRANSACTION_TIMEOUT = "SET LOCAL transaction_timeout = 0;\n"
END_LOCK_TRANSACTION = "ROLLBACK"
UNLOCK = "SELECT pg_advisory_unlock(%s)"
# The session that holds the migration lock, and since when (its transaction's start).
HOLDER = """
SELECT a.pid, a.application_name, a.usename, a.client_addr::text, a.xact_start
FROM pg_catalog.pg_locks l JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'relation' AND l.granted AND l.mode = 'ShareUpdateExclusiveLock'
  AND l.relation = pg_catalog.to_regclass(%s)
  AND l.database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database())
LIMIT 1
"""
# An advisory lock on a bigint key shows in pg_locks as classid = high 32 bits, objid = low.
ADVISORY_HOLDER = """
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
    "SELECT 1 / count(*) FROM pg_catalog.pg_locks WHERE locktype = 'relation' AND granted "
    "AND mode = 'ShareUpdateExclusiveLock' AND pid = {pid} AND relation = {relation}"
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
ERR_NOT_OURS = (
    "cannot take the migration lock ({reason}): only the owner of the schema may hold it; "
    "drop {relation} as a superuser and run again, as DB_USER"
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
    """Checks, from the applying connection, that the lock's session (``pid``) still holds the
    lock on ``relation`` (the lock view's oid).

    A runner whose lock session died (terminated, its node lost) must not record anything
    beside the runner that took the lock over.

    >>> LockGuard(pid=4242, relation=16390).sql
    "SELECT 1 / count(*) FROM pg_catalog.pg_locks WHERE ... AND pid = 4242 AND relation = 16390"
    """

    pid: int
    relation: int

    @property
    def sql(self) -> str:
        return STILL_HELD.format(pid=int(self.pid), relation=int(self.relation))

    def lost(self, version: str) -> LockLostError:
        return LockLostError(ERR_LOST.format(version=version, reason=LOST_REASON))

    def check(self, conn: psycopg.Connection[Any], what: str) -> None:
        """Before recording ``what``, on its own: raises LockLostError unless the lock's session
        still holds it (the division by zero aborts the transaction it is sent in)."""
        try:
            conn.execute(self.sql)
        except psycopg.errors.DivisionByZero:
            raise self.lost(what) from None


def lock_holder(
    conn: psycopg.Connection[Any], key: int | None = None, relation: TableName = LOCK_RELATION
) -> dict[str, Any] | None:
    """Who holds the migration lock on ``relation`` (``key`` None) or the advisory lock ``key``:
    its pid, application_name, user, client address and since when."""
    if key is None:
        row = conn.execute(HOLDER, (relation.regclass,)).fetchone()
    else:
        row = conn.execute(ADVISORY_HOLDER, _key_halves(key)).fetchone()
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


@dataclass(frozen=True)
class HeldLock:
    """The migration lock, held: ``pid`` is the server backend whose transaction holds it.

    The pid is read inside the lock transaction, so it stays true while the lock is held,
    even behind a transaction pooler (where the connection's own backend_pid is the pooler's).
    """

    conn: psycopg.Connection[Any]
    pid: int
    relation: int  # the lock view's oid
    waited: float


@contextmanager
def transaction_lock(
    conn: psycopg.Connection[Any],
    timeout: float,
    *,
    reconnect: Callable[[], psycopg.Connection[Any]] | None = None,
    application_name: str = "",
    name: str = "migrations",
    on_busy: Callable[[], None] | None = None,
    relation: TableName = LOCK_RELATION,
) -> Iterator[HeldLock]:
    """Hold the migration lock in a transaction open on ``conn`` for the block; the lock's view
    (``relation``) is created first when missing (and refused when another role owns it).

    ``reconnect`` (behind a pooler): a waiter closes its connection between polls, so that it
    holds no server session while it waits; in session pooling the holder needs a second one.
    ``on_busy`` is called once, when the first try finds the lock taken (before any wait).

    For example::

        with transaction_lock(conn, 600, reconnect=None) as held:
            LockGuard(held.pid, held.relation).check(apply_conn, "002_add_feature")
    """
    start = time.monotonic()
    next_report = start
    holder: dict[str, Any] | None = None
    opened: psycopg.Connection[Any] | None = None  # a connection of ours, closed at the end
    ensure_lock_relation(conn, relation)
    try:
        while (taken := _try_transaction_lock(conn, application_name, relation)) is None:
            if on_busy is not None:
                on_busy()
                on_busy = None
            now = time.monotonic()
            if now - start >= timeout:
                raise LockTimeoutError(
                    ERR_TIMEOUT.format(timeout=timeout, holder=holder), lock=name
                )
            if now >= next_report:
                holder = lock_holder(conn, relation=relation)
                log.info("lock_waiting", lock=name, holder=holder, waited_s=round(now - start, 3))
                next_report = now + HOLDER_LOG_INTERVAL
            if reconnect is None:
                time.sleep(POLL_INTERVAL)
                continue
            conn.close()
            time.sleep(POOLED_POLL_INTERVAL)
            conn = opened = reconnect()
        waited = time.monotonic() - start
        pid, view_oid = taken
        log.info("lock_acquired", lock=name, waited_s=round(waited, 3), pid=pid)
        try:
            yield HeldLock(conn, pid, view_oid, waited)
        finally:
            _end_transaction(conn, name)
    finally:
        if opened is not None:
            opened.close()


def ensure_lock_relation(
    conn: psycopg.Connection[Any], relation: TableName = LOCK_RELATION
) -> None:
    """Create the lock's view if missing, the owner's alone; PermissionDeniedError (77) when
    another role owns it. Also when another runner creates it at the same moment. In a schema
    that does not exist, or that another role owns, ConfigError (78) before anything is made."""
    check_history_schema(conn, relation)
    ensure = (
        ENSURE_LOCK_RELATION.format(
            regclass=sql.Literal(relation.regclass).as_string(conn),
            relation=relation.identifier.as_string(conn),
            owned_by=sql.Literal(f"{relation} is owned by %s, not by %s").as_string(conn),
        )
        + ";"
        + revoke_from_others(conn, relation.regclass)
    )
    try:
        conn.execute(ensure)
    except CREATED_MEANWHILE:
        conn.execute(ensure)  # it exists now: check its owner and privileges
    except psycopg.errors.InsufficientPrivilege as error:
        raise PermissionDeniedError(_not_ours(error, relation)) from None


def _not_ours(error: psycopg.Error, relation: TableName) -> str:
    return ERR_NOT_OURS.format(reason=reason_of(error), relation=relation)


def _try_transaction_lock(
    conn: psycopg.Connection[Any], application_name: str, relation: TableName = LOCK_RELATION
) -> tuple[int, int] | None:
    """The lock's backend pid and the view's oid, the transaction left open; None (the
    transaction ended) when another session holds the lock."""
    quote = psycopg.pq.Escaping(conn.pgconn).escape_literal
    text = TRY_TRANSACTION_LOCK.format(
        application_name=quote(application_name.encode()).decode(),
        transaction_timeout=NO_TRANSACTION_TIMEOUT
        if conn.info.server_version >= TRANSACTION_TIMEOUT_MIN_VERSION
        else "",
        relation=relation.identifier.as_string(conn),
        regclass=sql.Literal(relation.regclass).as_string(conn),
    )
    try:
        cursor = conn.execute(text.encode())
    except psycopg.errors.LockNotAvailable:
        conn.execute(END_LOCK_TRANSACTION)
        return None
    except psycopg.errors.InsufficientPrivilege as error:
        conn.execute(END_LOCK_TRANSACTION)
        raise PermissionDeniedError(_not_ours(error, relation)) from None
    while cursor.nextset():  # the SELECT's row is the last result
        pass
    row = cursor.fetchone()
    assert row is not None  # LOCK succeeded: the SELECT returns its one row
    return int(row[0]), int(row[1])


def _end_transaction(conn: psycopg.Connection[Any], name: str) -> None:
    # The transaction's end releases the lock; a lock whose session died is already free.
    try:
        if conn.closed or conn.broken:
            log.warning("lock_released", lock=name, how=RELEASED_WITH_SESSION)
            return
        conn.execute(END_LOCK_TRANSACTION)
        log.info("lock_released", lock=name)
    except psycopg.OperationalError as error:
        log.warning("lock_released", lock=name, how=RELEASED_WITH_SESSION, reason=reason_of(error))


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


CLEANUP_LOCK = "cleanup"
ERR_CLEANUP_BUSY = (
    "another cleanup run held the cleanup lock for this run's whole time budget ({timeout:g}s): "
    "held by {holder}; retry later"
)


@contextmanager
def cleanup_lock(conn: psycopg.Connection[Any], dbname: str, timeout: float) -> Iterator[float]:
    """One `cleanup` run at a time per database: a session-level advisory lock on ``conn``,
    waited for up to ``timeout`` (the run's budget); yields the seconds waited.

    Not the migration lock: the cleanup role may not take that one, and a cleanup must not hold
    up a release. Any role can hold an advisory key, so a squatter can only make runs wait and
    exit 75 (LockTimeoutError, naming it); rows are never removed twice in any case, since a
    row is deleted once and a concurrent DELETE of it waits for the first, then skips it.
    """
    key = lock_key(CLEANUP_LOCK, dbname)
    try:
        waited = acquire(conn, key, timeout, CLEANUP_LOCK)
    except LockTimeoutError:
        holder = lock_holder(conn, key)
        raise LockTimeoutError(
            ERR_CLEANUP_BUSY.format(timeout=timeout, holder=holder), lock=CLEANUP_LOCK
        ) from None
    try:
        yield waited
    finally:
        _release(conn, key, CLEANUP_LOCK)


@dataclass(frozen=True)
class LockSettings:
    """What the migration lock needs of the configuration: how to log in, how long to wait."""

    connect_kwargs: Mapping[str, Any]
    wait_timeout: float
    timeout: float  # MIGRATION_LOCK_TIMEOUT
    application_name: str
    relation: TableName  # the lock's view: MIGRATIONS_TABLE's name plus _lock


@dataclass(frozen=True)
class Locked:
    """The migration lock, held; ``conn`` (autocommit) does the work under it."""

    conn: psycopg.Connection[Any]
    guard: LockGuard
    pooled: bool  # behind a pooler: the work connection keeps no session state


@contextmanager
def migration_lock(
    settings: LockSettings, lock_conn: psycopg.Connection[Any], work: ConnectionAhead
) -> Iterator[Locked]:
    """Take the migration lock on ``lock_conn``; ``work`` (logging in meanwhile) is given up
    while the lock is busy, so a waiting runner holds at most one connection."""
    reconnect = partial(connect, dict(settings.connect_kwargs), settings.wait_timeout)
    pooled = behind_pooler(lock_conn)
    with (
        transaction_lock(
            lock_conn,
            settings.timeout,
            reconnect=reconnect if pooled else None,
            application_name=settings.application_name,
            on_busy=work.drop,
            relation=settings.relation,
        ) as held,
        work.take() as conn,
    ):
        yield Locked(conn, LockGuard(held.pid, held.relation), pooled)


@contextmanager
def locked(settings: LockSettings) -> Iterator[Locked]:
    """The migration lock for a command that has no connection yet (adopt, baseline, rollback)."""
    reconnect = partial(connect, dict(settings.connect_kwargs), settings.wait_timeout)
    with (
        wait_for_connection(dict(settings.connect_kwargs), settings.wait_timeout) as lock_conn,
        ConnectionAhead(reconnect) as work,
        migration_lock(settings, lock_conn, work) as held,
    ):
        yield held
