"""The schema's expiry cleanup, run in short transactions by page range, within a time budget.

``004_cleanup_role.sql`` gives the database three functions, executable by the cleanup role
alone: the tables it covers with their size in pages, the deletion of the expired rows of a
range of one table's pages, and an ANALYZE. Each table is read once per run, front to back, in
batches of pages sized so that each batch takes about ``TARGET_BATCH_SECONDS``: a TID range
scan deletes a page range at the speed of a plain DELETE, where deleting by key (the older
``cleanup_expired_data()``) walks an index and looks each row up again. Every batch is its own
transaction, under ``lock_timeout``, retried with backoff on a lock conflict; it locks only the
expired rows it deletes. For example::

    summary = run_cleanup(CleanupSettings(connect_kwargs, wait_timeout=60, time_budget=300))
    # 'removed 1000000 expired row(s) in 2.1s: tokens 1000000'
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
import tenacity
from psycopg import pq, sql

from migrator.apply.retry import LOCK_RETRY_WAIT
from migrator.apply.statistics import ANALYZE_ROWS, AUTOVACUUM_WILL, NOT_REFRESHED
from migrator.database.connect import behind_pooler, reason_of, session_lost, wait_for_connection
from migrator.database.lock import cleanup_lock
from migrator.errors import (
    HistoryMismatchError,
    LockTimeoutError,
    MigrationFailedError,
    PermissionDeniedError,
)
from migrator.logs import get_logger

log = get_logger("cleanup")

# A batch's pages: the first is small (a table's first pages may hold the oldest, expired,
# rows), then each batch is sized from the last one's rate to take about TARGET_BATCH_SECONDS,
# growing at most GROWTH times per batch. Short batches keep each transaction's row locks and
# WAL small; at a quarter second, the round trip and commit of a batch cost under 1%.
FIRST_BATCH_PAGES = 64
MIN_BATCH_PAGES = 8
MAX_BATCH_PAGES = 1 << 20
TARGET_BATCH_SECONDS = 0.25
GROWTH = 4.0
MAX_BLOCK = 4294967295  # the first block number a table cannot have (2^32 - 1)
TID_RANGE_MIN_VERSION = 140000  # TID range scans: a page range read without the rest

TABLES = "SELECT table_name, pages FROM public.cleanup_expired_tables()"
RUN_STARTED = "SELECT now()"
# One round trip per batch: the settings, the deletion and the commit. Everything in it is a
# literal the runner wrote (the table name comes from the database, quoted).
BATCH = (
    "BEGIN; SET LOCAL lock_timeout = '{lock_timeout}ms'; "
    "SET LOCAL statement_timeout = '{statement_timeout}ms'; "
    "SELECT public.cleanup_expired_pages({table}, {first}, {end}); COMMIT"
)
ANALYZE = "SELECT public.cleanup_analyze(%s, %s)"
# ANALYZE waits behind a VACUUM of the table, which a large cleanup sets autovacuum off to do:
# it does not wait, since autovacuum then analyzes the table too (its analyze threshold is
# passed as well).
ANALYZE_LOCK_TIMEOUT = 0.1
ROLLBACK = "ROLLBACK"

LOCK_CONFLICTS = frozenset({"55P03", "40P01"})  # lock_timeout, deadlock detected
MISSING_SQLSTATES = frozenset({"42883", "3F000", "42P01"})  # no such function, schema, table

ERR_NOT_ALLOWED = (
    "{user} may not run the cleanup ({reason}): connect as the cleanup role, {hint}, "
    "whose password bootstrap sets from CLEANUP_DB_PASSWORD, or as the owner"
)
CLEANUP_ROLE_HINT = "the owner's name with _cleanup (auth_service_cleanup)"
ERR_NOT_MIGRATED = (
    "the database has no cleanup functions ({reason}): apply the migrations first "
    "(004_cleanup_role.sql defines them), then run cleanup again"
)
ERR_LOCKED = (
    "a cleanup batch of {table} (pages {first}-{end}) waited for row locks {attempts} times "
    "({reason}); the batches before it are committed — retry later"
)
ERR_BATCH = (
    "a cleanup batch of {table} (pages {first}-{end}) failed: {sqlstate} {reason}; "
    "the batches before it are committed"
)
ERR_NO_PROGRESS = (
    "the cleanup's time budget ({budget:g}s) was spent before one batch was done; raise "
    "CLEANUP_TIME_BUDGET, or look for what holds the tables' locks"
)


@dataclass(frozen=True)
class CleanupSettings:
    """What a cleanup run needs of the configuration."""

    connect_kwargs: Mapping[str, Any]
    wait_timeout: float
    time_budget: float
    lock_timeout: float = 5.0
    lock_retries: int = 5
    statement_timeout: float = 0.0
    progress_interval: float = 5.0

    @property
    def dbname(self) -> str:
        return str(self.connect_kwargs["dbname"])


@dataclass
class TableProgress:
    """One table's run: rows removed, pages read, batches committed, seconds spent."""

    name: str
    pages: int
    removed: int = 0
    pages_done: int = 0
    batches: int = 0
    seconds: float = 0.0
    longest: float = 0.0  # the longest batch: how long its row locks were held

    @property
    def rate(self) -> float:
        return round(self.removed / self.seconds) if self.seconds else 0.0


@dataclass
class Run:
    """The state of one run: its deadline, and every table's progress so far."""

    settings: CleanupSettings
    start: float = field(default_factory=time.monotonic)
    tables: list[TableProgress] = field(default_factory=list)
    budget_spent: bool = False
    waited: float = 0.0

    @property
    def deadline(self) -> float:
        return self.start + self.settings.time_budget

    @property
    def removed(self) -> int:
        return sum(table.removed for table in self.tables)

    @property
    def batches(self) -> int:
        return sum(table.batches for table in self.tables)


def next_batch_pages(pages: int, seconds: float) -> int:
    """The next batch's page count, from the last batch of ``pages`` that took ``seconds``.

    >>> next_batch_pages(64, 0.01), next_batch_pages(1000, 0.5), next_batch_pages(10, 10.0)
    (256, 500, 8)
    """
    wanted = pages * TARGET_BATCH_SECONDS / seconds if seconds > 0 else pages * GROWTH
    return int(max(MIN_BATCH_PAGES, min(MAX_BATCH_PAGES, pages * GROWTH, wanted)))


def run_cleanup(settings: CleanupSettings) -> str:
    """Remove what is expired until nothing is left or the budget is spent; the summary.

    Exits through exceptions otherwise: LockTimeoutError (75) when no batch could be done in
    the budget or one kept meeting locks, PermissionDeniedError (77) for a role that may not
    run the cleanup, HistoryMismatchError (65) on a database without 004's functions.
    """
    run = Run(settings)  # the budget counts from the start: waits included
    with wait_for_connection(dict(settings.connect_kwargs), settings.wait_timeout) as conn:
        if behind_pooler(conn):
            # A session-level lock would stay on a pooled server session: rows are still never
            # removed twice (a row is deleted once), overlapping runs just share the work.
            log.info("cleanup_lock_skipped", reason="behind a connection pooler")
            return _run_tables(conn, run)
        wait = max(run.deadline - time.monotonic(), 0.0)
        with cleanup_lock(conn, settings.dbname, wait) as waited:
            run.waited = waited
            return _run_tables(conn, run)


def _run_tables(conn: psycopg.Connection[Any], run: Run) -> str:
    try:
        started_at, targets = _targets(conn)
        for name, pages in targets:
            table = TableProgress(name, pages)
            run.tables.append(table)
            _clean_table(conn, run, table)
            if run.budget_spent:
                break
        _refresh_statistics(conn, run, started_at)
    except BaseException:
        _log_summary(run, "cleanup_stopped")
        raise
    if run.budget_spent and run.batches == 0:
        raise LockTimeoutError(ERR_NO_PROGRESS.format(budget=run.settings.time_budget))
    return _log_summary(run, "cleanup_complete")


def _targets(conn: psycopg.Connection[Any]) -> tuple[datetime, list[tuple[str, int]]]:
    """The run's start on the server's clock, and the tables with their size in pages."""
    try:
        row = conn.execute(RUN_STARTED).fetchone()
        targets = [(str(name), int(pages)) for name, pages in conn.execute(TABLES)]
    except psycopg.errors.InsufficientPrivilege as error:
        raise _not_allowed(conn, error) from None
    except psycopg.Error as error:
        if error.sqlstate in MISSING_SQLSTATES:
            raise HistoryMismatchError(ERR_NOT_MIGRATED.format(reason=reason_of(error))) from None
        raise
    assert row is not None
    return row[0], targets


def _not_allowed(conn: psycopg.Connection[Any], error: psycopg.Error) -> PermissionDeniedError:
    user = conn.info.user
    message = ERR_NOT_ALLOWED.format(user=user, reason=reason_of(error), hint=CLEANUP_ROLE_HINT)
    return PermissionDeniedError(message, user=user)


def _clean_table(conn: psycopg.Connection[Any], run: Run, table: TableProgress) -> None:
    """Every page of ``table``, front to back, one batch at a time, until the budget ends."""
    batch_pages = FIRST_BATCH_PAGES
    if conn.info.server_version < TID_RANGE_MIN_VERSION:
        batch_pages = MAX_BLOCK  # each batch would scan the whole table: one batch does
    next_report = time.monotonic() + run.settings.progress_interval
    while table.pages_done < table.pages:
        if time.monotonic() >= run.deadline:
            run.budget_spent = True
            break
        first = table.pages_done
        # The last batch reaches past the size read at the start: rows appended meanwhile are
        # new, but a few may have expired already (a code lives a minute).
        end = MAX_BLOCK if first + batch_pages >= table.pages else first + batch_pages
        started = time.monotonic()
        removed = _batch(conn, run, table.name, first, end)
        if removed is None:  # the budget ended while the batch waited for locks
            run.budget_spent = True
            break
        seconds = time.monotonic() - started
        table.removed += removed
        table.batches += 1
        table.seconds += seconds
        table.longest = max(table.longest, seconds)
        table.pages_done = min(end, table.pages)
        batch_pages = next_batch_pages(end - first if end != MAX_BLOCK else batch_pages, seconds)
        if time.monotonic() >= next_report:
            _log_table("cleanup_progress", table)
            next_report = time.monotonic() + run.settings.progress_interval
    _log_table("cleanup_table_done", table, finished=table.pages_done >= table.pages)


def _batch(conn: psycopg.Connection[Any], run: Run, table: str, first: int, end: int) -> int | None:
    """The rows one batch removed, retried on a lock conflict; None when the budget ended
    while it waited."""
    settings = run.settings
    attempts = settings.lock_retries + 1

    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception(_lock_conflict),
        wait=LOCK_RETRY_WAIT,
        stop=tenacity.stop_after_attempt(attempts) | _BudgetEnds(run.deadline),
        before_sleep=_log_retry(table, first, end),
        reraise=True,
    )
    try:
        return retrying(_delete, conn, settings, table, first, end)
    except psycopg.Error as error:
        where = {"table": table, "first": first, "end": end, "reason": reason_of(error)}
        if _lock_conflict(error):
            if retrying.statistics.get("attempt_number", attempts) < attempts:
                return None
            raise LockTimeoutError(ERR_LOCKED.format(attempts=attempts, **where)) from None
        if isinstance(error, psycopg.errors.InsufficientPrivilege):
            raise _not_allowed(conn, error) from None
        if not error.sqlstate or session_lost(error, conn):
            raise  # the connection, not the batch: the run's usual handling
        raise MigrationFailedError(
            ERR_BATCH.format(sqlstate=error.sqlstate, **where), sqlstate=error.sqlstate
        ) from None


class _BudgetEnds(tenacity.stop.stop_base):
    """Stop retrying when the next attempt would start after the deadline: the run ends
    there, not in error."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        return time.monotonic() + (retry_state.upcoming_sleep or 0.0) >= self.deadline


def _delete(
    conn: psycopg.Connection[Any], settings: CleanupSettings, table: str, first: int, end: int
) -> int:
    text = BATCH.format(
        lock_timeout=round(settings.lock_timeout * 1000),
        statement_timeout=round(settings.statement_timeout * 1000),
        table=sql.Literal(table).as_string(conn),
        first=int(first),
        end=int(end),
    )
    removed = 0
    try:
        cursor = conn.execute(text.encode())
        while True:
            if cursor.pgresult is not None and cursor.pgresult.status == pq.ExecStatus.TUPLES_OK:
                row = cursor.fetchone()
                removed = int(row[0]) if row else 0
            if not cursor.nextset():
                break
    except BaseException:
        _end_failed_batch(conn)  # an interrupted or failed batch is rolled back whole
        raise
    return removed


def _end_failed_batch(conn: psycopg.Connection[Any]) -> None:
    if conn.closed or conn.broken:
        return  # its transaction ended with its session
    if conn.info.transaction_status in (pq.TransactionStatus.INTRANS, pq.TransactionStatus.INERROR):
        # A session that is going away takes its transaction with it.
        with contextlib.suppress(psycopg.Error):
            conn.execute(ROLLBACK)


def _lock_conflict(error: BaseException) -> bool:
    return isinstance(error, psycopg.Error) and error.sqlstate in LOCK_CONFLICTS


def _log_retry(table: str, first: int, end: int) -> Any:
    def log_it(state: tenacity.RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        log.warning(
            "cleanup_batch_retry",
            table=table,
            first_page=first,
            end_page=end,
            attempt=state.attempt_number,
            sqlstate=getattr(error, "sqlstate", None),
            reason=reason_of(error) if isinstance(error, psycopg.Error) else repr(error),
        )

    return log_it


def _refresh_statistics(conn: psycopg.Connection[Any], run: Run, since: datetime) -> None:
    """ANALYZE each table the run emptied much of, unless autovacuum analyzed it meanwhile.

    As after a migration (migrator/apply/statistics.py): the planner otherwise plans from the
    row counts before the run until autovacuum catches up. ANALYZE waits behind a running
    VACUUM of the table: after ANALYZE_LOCK_TIMEOUT that is a warning, autovacuum analyzes it.
    """
    for table in run.tables:
        if table.removed < ANALYZE_ROWS:
            continue
        started = time.monotonic()
        try:
            with conn.transaction():
                conn.execute(f"SET LOCAL lock_timeout = '{round(ANALYZE_LOCK_TIMEOUT * 1000)}ms'")
                row = conn.execute(ANALYZE, (table.name, since)).fetchone()
        except psycopg.Error as error:
            if not error.sqlstate or session_lost(error, conn):
                raise
            log.warning(
                NOT_REFRESHED,
                relation=f"public.{table.name}",
                sqlstate=error.sqlstate,
                server_message=error.diag.message_primary,
                outcome=AUTOVACUUM_WILL,
            )
            continue
        analyzed = bool(row and row[0])
        log.info(
            "statistics_refreshed" if analyzed else "statistics_fresh",
            relation=f"public.{table.name}",
            rows_removed=table.removed,
            reason="rows removed" if analyzed else "analyzed since the run started",
            duration_ms=round((time.monotonic() - started) * 1000),
        )


def _log_table(event: str, table: TableProgress, **extra: Any) -> None:
    log.info(
        event,
        table=table.name,
        removed=table.removed,
        pages_done=table.pages_done,
        pages=table.pages,
        batches=table.batches,
        rows_per_s=table.rate,
        duration_ms=round(table.seconds * 1000),
        longest_batch_ms=round(table.longest * 1000),
        **extra,
    )


def _log_summary(run: Run, event: str) -> str:
    elapsed = time.monotonic() - run.start
    removed = {table.name: table.removed for table in run.tables}
    finished = not run.budget_spent and event == "cleanup_complete"
    detail = ", ".join(f"{name} {count}" for name, count in removed.items() if count)
    summary = f"removed {run.removed} expired row(s) in {elapsed:.1f}s" + (
        f": {detail}" if detail else ""
    )
    if run.budget_spent:
        summary += f"; the time budget ({run.settings.time_budget:g}s) ended the run, more is left"
    log.info(
        event,
        removed=removed,
        total=run.removed,
        batches=run.batches,
        rows_per_s=round(run.removed / elapsed) if elapsed else 0,
        duration_ms=round(elapsed * 1000),
        lock_waited_s=round(run.waited, 3),
        finished=finished,
        budget_s=run.settings.time_budget,
        summary=summary,
    )
    return summary
