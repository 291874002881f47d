"""Applying one migration: in a transaction (the default) or statement by statement.

>>> applier = Applier(conn, config)
>>> applier.apply(migration, record=history.record)
412  # milliseconds
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from functools import partial
from typing import Any

import psycopg
import tenacity
from psycopg import errors as pg_errors
from psycopg import generators, pq, sql

from migrator.config import Config
from migrator.errors import ConnectionLostError, MigrationFailedError
from migrator.logs import get_logger
from migrator.migration import Migration
from migrator.progress import ProgressReporter
from migrator.repair import drop_invalid_index
from migrator.sql import Statement, TransactionMode, concurrent_index, position_to_line_column
from migrator.wait import reason_of, session_lost

log = get_logger("apply")

LOCK_RETRY_FIRST_DELAY = 0.5
LOCK_RETRY_MAX_DELAY = 5.0
LOCK_RETRY_JITTER = 0.25
LOCK_NOT_AVAILABLE = "55P03"
STATEMENT_EXCERPT_LENGTH = 200

ERR_FAILED = "{file}:{line}:{column}: {sqlstate} {message}"
ERR_CONNECTION_LOST = (
    "lost the connection to PostgreSQL while applying {file} ({reason}): {outcome}"
)
# The COMMIT may have reached the server just before the connection broke: the history tells.
ROLLED_BACK = (
    "it runs in one transaction, so it is applied and recorded entirely or not at all; run again"
)
PARTLY_DONE = (
    "the statements before line {line} stay applied, the file is not recorded; "
    "run again to finish it"
)
ERR_OPEN_TRANSACTION = (
    "{file}: the file opens a transaction (BEGIN) that it does not end with COMMIT; "
    "it was rolled back and not recorded"
)
NOT_RECORDED = "its statements ran but it is not recorded; run again to record it"

Recorder = Callable[[psycopg.Connection[Any], Migration, int], None]
LockCheck = Callable[[str], None]  # raises LockLostError when the migration lock is gone


def _lock_assumed(version: str) -> None:
    """For callers that hold no migration lock (tests, tools)."""


class StatementFailed(Exception):
    """The server rejected statement ``index`` of what was sent."""

    def __init__(self, error: psycopg.Error, index: int) -> None:
        super().__init__(str(error))
        self.error = error
        self.index = index


def run_script(conn: psycopg.Connection[Any], text: str) -> None:
    """Send ``text`` (one or many statements) in one round trip, the simple query protocol.

    Counting the results that came back before the error tells which statement failed,
    even when the server gives no error position.
    """
    conn.pgconn.send_query(text.encode(conn.info.encoding))
    results = conn.wait(generators.execute(conn.pgconn))
    for index, result in enumerate(results):
        if result.status == pq.ExecStatus.FATAL_ERROR:
            raise StatementFailed(pg_errors.error_from_result(result, conn.info.encoding), index)


def _is_lock_timeout(error: BaseException) -> bool:
    return isinstance(error, StatementFailed) and error.error.sqlstate == LOCK_NOT_AVAILABLE


@dataclass
class Applier:
    """Applies migrations on one connection (autocommit; transactions are explicit)."""

    conn: psycopg.Connection[Any]
    config: Config
    progress: ProgressReporter | None = None  # logs progress of long migrations
    # Checked before anything is recorded: a runner whose lock died must not go on.
    lock_check: LockCheck = _lock_assumed

    def apply(self, migration: Migration, record: Recorder) -> int:
        """Apply ``migration`` and call ``record`` (same transaction when transactional)."""
        decision = migration.mode_decision
        log.info(
            "migration_started",
            version=migration.version,
            mode=decision.mode.value,
            mode_reason=decision.reason,
        )
        start = time.monotonic()
        watching = self.progress.watching(migration.version) if self.progress else nullcontext()
        with self._notices_logged(migration), watching, self._loss_explained(migration):
            if decision.mode is TransactionMode.TRANSACTION:
                self._retrying(migration, lambda: self._in_transaction(migration, record, start))
            else:
                self._statement_by_statement(migration, record, start)
        elapsed_ms = _ms_since(start)
        log.info("migration_applied", version=migration.version, duration_ms=elapsed_ms)
        return elapsed_ms

    def _in_transaction(self, migration: Migration, record: Recorder, start: float) -> None:
        with self.conn.transaction():
            self._set_timeouts(local=True)
            if not migration.is_empty:
                run_script(self.conn, migration.sql)
            self.lock_check(migration.version)
            record(self.conn, migration, _ms_since(start))

    def _statement_by_statement(self, migration: Migration, record: Recorder, start: float) -> None:
        self._set_timeouts(local=False)
        for index, statement in enumerate(migration.statements):
            log.debug("statement_started", version=migration.version, line=statement.line)
            self.lock_check(migration.version)
            with self._loss_explained(migration, statement):
                self._retrying(migration, partial(self._run_statement, migration, statement),
                               statement, index)  # fmt: skip
        if self.conn.info.transaction_status is not pq.TransactionStatus.IDLE:
            # Recording now would put the row inside the file's transaction, lost at exit.
            self.conn.rollback()
            raise MigrationFailedError(
                ERR_OPEN_TRANSACTION.format(file=migration.path), file=str(migration.path)
            )
        self.lock_check(migration.version)
        self.conn.execute("RESET lock_timeout")
        self.conn.execute("RESET statement_timeout")
        record(self.conn, migration, _ms_since(start))

    def _run_statement(self, migration: Migration, statement: Statement) -> None:
        index = concurrent_index(statement.text)
        if index is not None:
            try:
                drop_invalid_index(self.conn, index, migration.version)
            except psycopg.Error as error:
                if not error.sqlstate:  # the connection itself failed: not the statement's fault
                    raise
                raise StatementFailed(error, 0) from None  # e.g. 55P03, retried like the rest
        run_script(self.conn, statement.text)

    def _set_timeouts(self, local: bool) -> None:
        scope = sql.SQL("SET LOCAL" if local else "SET")
        for name, seconds in (
            ("lock_timeout", self.config.ddl_lock_timeout),
            ("statement_timeout", self.config.statement_timeout),
        ):
            value = sql.Literal(f"{round(seconds * 1000)}ms")
            self.conn.execute(sql.SQL("{} {} = {}").format(scope, sql.Identifier(name), value))

    def _retrying(
        self,
        migration: Migration,
        action: Callable[[], None],
        statement: Statement | None = None,
        index: int = 0,
    ) -> None:
        """Run ``action``, retrying on lock_timeout (55P03) with backoff; map errors."""

        def log_retry(state: tenacity.RetryCallState) -> None:
            log.warning(
                "lock_timeout_retry",
                version=migration.version,
                attempt=state.attempt_number,
                lock_timeout_ms=round(self.config.ddl_lock_timeout * 1000),
                retries=self.config.ddl_lock_retries,
            )

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(_is_lock_timeout),
            stop=tenacity.stop_after_attempt(self.config.ddl_lock_retries + 1),
            wait=tenacity.wait_exponential_jitter(
                initial=LOCK_RETRY_FIRST_DELAY, max=LOCK_RETRY_MAX_DELAY, jitter=LOCK_RETRY_JITTER
            ),
            before_sleep=log_retry,
            reraise=True,
        )
        try:
            retrying(action)
        except StatementFailed as failure:
            if session_lost(failure.error, self.conn):  # e.g. 57P01 from a server shutting down
                raise failure.error from None
            raise migration_failed(migration, failure, statement, index) from None

    @contextmanager
    def _loss_explained(
        self, migration: Migration, statement: Statement | None = None
    ) -> Iterator[None]:
        """A lost session becomes the user's error, saying what of the file stays applied."""
        try:
            yield
        except psycopg.Error as error:  # also raised while rolling back on a dead connection
            if not session_lost(error, self.conn):
                raise
            if migration.mode_decision.mode is TransactionMode.TRANSACTION:
                outcome = ROLLED_BACK
            elif statement is not None:
                outcome = PARTLY_DONE.format(line=statement.line)
            else:
                outcome = NOT_RECORDED
            message = ERR_CONNECTION_LOST.format(
                file=migration.path, reason=reason_of(error), outcome=outcome
            )
            raise ConnectionLostError(message, file=str(migration.path)) from None

    @contextmanager
    def _notices_logged(self, migration: Migration) -> Iterator[None]:
        def handler(diag: psycopg.errors.Diagnostic) -> None:
            log.info(
                "notice",
                version=migration.version,
                severity=diag.severity,
                message=diag.message_primary,
                detail=diag.message_detail,
            )

        self.conn.add_notice_handler(handler)
        try:
            yield
        finally:
            self.conn.remove_notice_handler(handler)


def migration_failed(
    migration: Migration,
    failure: StatementFailed,
    statement: Statement | None,
    index: int,
) -> MigrationFailedError:
    """The user's error: file, line and column from the server's position, SQLSTATE, message."""
    diag = failure.error.diag
    if statement is None:  # the whole file was sent: indexes and positions are the file's
        statement = migration.statements[min(failure.index, len(migration.statements) - 1)]
        base = 0
    else:
        base = statement.offset
    if diag.statement_position:
        line, column = position_to_line_column(
            migration.sql, base + int(diag.statement_position) - 1
        )
    else:
        line, column = position_to_line_column(migration.sql, statement.offset)
    fields = {
        "file": str(migration.path),
        "version": migration.version,
        "line": line,
        "column": column,
        "sqlstate": diag.sqlstate,
        "server_message": diag.message_primary,
        "detail": diag.message_detail,
        "hint": diag.message_hint,
        "context": diag.context,
        "statement": statement.text[:STATEMENT_EXCERPT_LENGTH],
    }
    message = ERR_FAILED.format(
        file=migration.path,
        line=line,
        column=column,
        sqlstate=diag.sqlstate,
        message=diag.message_primary,
    )
    return MigrationFailedError(message, **{k: v for k, v in fields.items() if v is not None})


def _ms_since(start: float) -> int:
    return round((time.monotonic() - start) * 1000)
