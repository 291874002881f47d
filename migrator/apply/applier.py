"""Applying migrations: each in its transaction (the default), statement by statement, or all
pending files in one transaction (``--single-transaction``).

A transactional file travels in one round trip with its BEGIN, its timeouts, its history row
and its COMMIT; the server measures its execution time. For example, on an open connection::

    applier = Applier(conn, config)
    applier.apply(migration)  # its duration in milliseconds: 412
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

import psycopg
import tenacity
from psycopg import pq

from migrator.apply import statistics
from migrator.apply.location import migration_failed
from migrator.apply.prepared import PreparedQueries
from migrator.apply.progress import ProgressReporter
from migrator.apply.repair import drop_invalid_index
from migrator.apply.retry import (
    FALLBACK_SQLSTATES,
    LOCK_RETRY_WAIT,
    MODE_CHANGED_REASON,
    is_lock_timeout,
)
from migrator.apply.session import FileSession, SessionStatements
from migrator.apply.transport import (
    Envelope,
    Part,
    PreparedQueryLost,
    StatementFailed,
    index_after,
    run_script,
)
from migrator.apply.watch import watched
from migrator.config import Config
from migrator.database.connect import reason_of, session_lost
from migrator.database.lock import LockGuard
from migrator.errors import ConnectionLostError, MigrationFailedError
from migrator.files.migration import Migration
from migrator.files.sql import (
    Statement,
    TransactionMode,
    concurrent_index,
    copy_direction,
    mentions_standard_strings,
    read_script,
    server_statements,
    settings_reset,
)
from migrator.history import table as history
from migrator.logs import get_logger

log = get_logger("apply")


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
# A non-transactional file that failed after its first statement: say what stayed, and why
# the next run must be able to run those statements again.
PARTLY_APPLIED = (
    "; its first {count} statement(s) (up to line {line}) stayed applied and the file is not "
    "recorded: the next run starts it again, so write its statements to be re-runnable "
    "(IF NOT EXISTS, IF EXISTS, CREATE OR REPLACE)"
)
BATCH_KEPT = (
    "the batch it was running rolled back with its checkpoint, the batches before it stay; "
    "run again to resume after the checkpoint"
)
NOT_RECORDED = "its statements ran but it is not recorded; run again to record it"
# migration_applied reports the strongest lock the file held on each table that existed before
# it (an oid above the newest one at BEGIN is the file's own) and its transaction's duration:
# two statements in the file's round trip, no extra one. A file's RESET ALL also resets the
# remembered oid: then no lock is reported, and the file is not failed for it.
REMEMBER_NEWEST_OID = (
    "SELECT set_config('migrator.newest_oid', (SELECT max(oid) FROM pg_class)::text, true)"
)
LOCK_STRENGTH = (
    "ARRAY['AccessShareLock', 'RowShareLock', 'RowExclusiveLock', 'ShareUpdateExclusiveLock', "
    "'ShareLock', 'ShareRowExclusiveLock', 'ExclusiveLock', 'AccessExclusiveLock']"
)
# pg_locks' AccessExclusiveLock as SQL writes it: ACCESS EXCLUSIVE. An E'' string reads the
# same whatever standard_conforming_strings says.
SQL_LOCK_NAME = (
    "upper(regexp_replace(regexp_replace({mode}, 'Lock$', ''), '([a-z])([A-Z])', "
    "E'\\\\1 \\\\2', 'g'))"
)
LOCKS_HELD = (
    "SELECT (SELECT json_object_agg(relation, mode) FROM ("
    "SELECT format('%I.%I', n.nspname, c.relname) AS relation, "
    + SQL_LOCK_NAME.format(
        mode=f"(array_agg(l.mode ORDER BY array_position({LOCK_STRENGTH}, l.mode) DESC))[1]"
    )
    + " AS mode "
    "FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
    "JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE l.pid = pg_backend_pid() AND l.locktype = 'relation' AND l.granted "
    "AND c.relkind IN ('r', 'p', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
    "AND c.oid <= nullif(current_setting('migrator.newest_oid', true), '')::oid "
    "GROUP BY 1) held)::text, "
    "(extract(epoch FROM clock_timestamp() - now()) * 1000)::integer"
)


Recorder = Callable[[psycopg.Connection[Any], Migration, int], None]


@dataclass
class Applier:
    """Applies migrations on one connection (autocommit; transactions are explicit)."""

    conn: psycopg.Connection[Any]
    config: Config
    progress: ProgressReporter | None = None  # logs progress of long migrations
    # Checked before anything is recorded: a runner whose lock died must not go on.
    guard: LockGuard | None = None
    # Behind a pooler no session setting is sent: the statements of a non-transactional file
    # each get their timeouts as SET LOCAL in their own implicit transaction instead.
    pooled: bool = False
    # How the file being applied runs now (a server refusal can move it out of its transaction).
    running_mode: TransactionMode = field(default=TransactionMode.TRANSACTION, init=False)
    # Statements that put back what a caller pinned on its session (bootstrap's search_path and
    # role): the session reset after each file would otherwise undo them.
    after_reset: tuple[str, ...] = ()
    # Opens a new login like ``conn``'s, for the file after one that changed the database or
    # role defaults (None: not followed, as for bootstrap's 000, the only file of its session).
    reopen: Callable[[], psycopg.Connection[Any]] | None = None
    # The session the files run on: ``conn``, or the new login that replaced it.
    files: FileSession = field(init=False)
    # The catalog queries of each file's round trip, prepared on the session once.
    queries: PreparedQueries = field(init=False)
    # The runner's statements around each file: BEGIN and timeouts, the session reset.
    session: SessionStatements = field(init=False)

    def __post_init__(self) -> None:
        self.queries = PreparedQueries(self.conn, enabled=not self.pooled)
        self.session = SessionStatements.of(self.conn, self.config, self.pooled, self.after_reset)
        self.files = FileSession(self.conn, self.reopen, self.pooled)

    def close(self) -> None:
        """Close the connection the applier opened itself (a renewal's), if any."""
        self.files.close()

    @property
    def _reset(self) -> tuple[str, ...]:
        """After a file: the session reset, then the read of the defaults a login gets."""
        return (*self.session.reset, *self.files.closing)

    def apply(self, migration: Migration, record: Recorder | None = None) -> int:
        """Apply ``migration`` and record it; returns its duration in milliseconds.

        ``record`` replaces the plain history row with work of the caller's (the bootstrap
        script's passwords and upsert), run in the same transaction after the file.
        """
        decision = migration.mode_decision
        log.info(
            "migration_started",
            version=migration.version,
            mode=decision.mode.value,
            mode_reason=decision.reason,
        )
        start = time.monotonic()
        held: dict[str, Any] = {}
        stale: list[statistics.StaleRelation] = []
        self.running_mode = decision.mode
        # A batch file logs its own progress (batch_progress), not that of one long statement.
        progress = None if migration.batch else self.progress
        with watched(self.conn, progress, migration.version), self._loss_explained(migration):
            if migration.batch is not None:
                # lazy: most runs hold no batch file
                from migrator.apply.batch import run_batches

                run_batches(self, migration)
            elif decision.mode is not TransactionMode.TRANSACTION:
                self._statement_by_statement(migration, record, start)
            else:
                try:
                    held, stale = self._transactional(migration, record, start)
                except MigrationFailedError as error:
                    self._out_of_transaction(migration, error)
                    self._statement_by_statement(migration, record, start)
        elapsed_ms = _ms_since(start)
        log.info("migration_applied", version=migration.version, duration_ms=elapsed_ms, **held)
        statistics.refresh(self.conn, self.config, migration.version, stale)  # committed: ANALYZE
        if self.files.follow(migration.version):
            self._renewed()
        return elapsed_ms

    def _renewed(self) -> None:
        """The next file runs on the new login: its own prepared queries, its backend's pid."""
        self.conn = self.files.conn
        self.queries = PreparedQueries(self.conn, enabled=not self.pooled)
        if self.progress is not None and self.progress.backend_pid is not None:
            self.progress.backend_pid = self.conn.info.backend_pid

    def _transactional(
        self, migration: Migration, record: Recorder | None, start: float
    ) -> tuple[dict[str, Any], list[statistics.StaleRelation]]:
        """Apply a transactional file; returns what migration_applied reports of its locks,
        and the relations whose statistics it left stale."""
        if record is not None:
            self._retrying(migration, lambda: self._in_transaction(migration, record, start))
            return {}, []
        envelope = self._transaction(migration)
        send = self._send_read if migration.needs_reading else self._send
        results: list[pq.abc.PGresult] = []

        def attempt() -> None:
            nonlocal envelope
            try:
                results[:] = send(migration, envelope)
            except PreparedQueryLost:
                # Something the file called deallocated them: it was rolled back whole.
                envelope = replace(envelope, executes={})
                results[:] = send(migration, envelope)

        self._retrying(migration, attempt)
        self.files.observe(results, envelope.after)
        return _locks_held(results, envelope), statistics.stale_relations(results, envelope.after)

    def _out_of_transaction(self, migration: Migration, error: MigrationFailedError) -> None:
        """Re-raise ``error`` unless PostgreSQL runs the file outside a transaction only;
        then log why the file runs again statement by statement (it was rolled back whole)."""
        sqlstate = error.fields.get("sqlstate")
        line = error.fields.get("line")
        if not isinstance(sqlstate, str) or sqlstate not in FALLBACK_SQLSTATES or line is None:
            raise error
        self.running_mode = TransactionMode.NO_TRANSACTION
        reason = MODE_CHANGED_REASON.format(
            line=line,
            sqlstate=sqlstate,
            message=error.fields.get("server_message"),
            why=FALLBACK_SQLSTATES[sqlstate],
        )
        log.warning(
            "mode_changed",
            version=migration.version,
            mode=TransactionMode.NO_TRANSACTION.value,
            previous_mode=TransactionMode.TRANSACTION.value,
            sqlstate=sqlstate,
            line=line,
            reason=reason,
        )

    def apply_in_one_transaction(self, migrations: Sequence[Migration]) -> dict[str, int]:
        """Apply all ``migrations`` in one transaction: all or nothing (Flyway's ``group``).

        Still one round trip per file: the first carries BEGIN, the last COMMIT. A lock
        timeout retries the whole transaction; any failure rolls back every file.
        """
        durations: dict[str, int] = {}
        self.running_mode = TransactionMode.TRANSACTION

        def attempt() -> None:
            durations.clear()
            for position, migration in enumerate(migrations):
                log.info("migration_started", version=migration.version, mode="single-transaction")
                start = time.monotonic()
                last = position == len(migrations) - 1
                # No new login between files: they share one transaction, as under psql -1.
                envelope = Envelope(
                    before=self.session.begin if position == 0 else (),
                    # The lock is checked once, before COMMIT: the locks of every file stay
                    # held until then, so a check per file would scan a growing pg_locks.
                    after=(
                        *self.session.reset,
                        *(self._guarded() if last else ()),
                        self._history_row(migration),
                    )
                    + (("COMMIT",) if last else ()),
                )
                send = self._send_read if migration.needs_reading else self._send
                with (
                    watched(self.conn, self.progress, migration.version),
                    self._loss_explained(migration),
                ):
                    send(migration, envelope)
                durations[migration.version] = _ms_since(start)
                log.info(
                    "migration_applied",
                    version=migration.version,
                    duration_ms=durations[migration.version],
                    committed=False,
                )

        try:
            self._retrying(None, attempt)
        except MigrationFailedError:
            log.warning("transaction_rolled_back", versions=[m.version for m in migrations])
            raise
        log.info("transaction_committed", versions=list(durations))
        return durations

    def _transaction(self, migration: Migration) -> Envelope:
        remember, measure = statistics.envelope_statements(self.config, migration.sql)
        guarded = self._guarded()
        self.queries.prepare(
            (REMEMBER_NEWEST_OID, *remember, LOCKS_HELD, *measure, *guarded, *self.files.closing),
            migration.sql,
        )
        after = (
            LOCKS_HELD,
            *measure,
            *self._reset,
            *guarded,
            self._history_row(migration),
            "COMMIT",
        )
        return Envelope(
            before=(*self.session.begin, REMEMBER_NEWEST_OID, *remember),
            after=after,
            executes=dict(self.queries.executes),
        )

    def _guarded(self) -> tuple[str, ...]:
        return (self.guard.sql,) if self.guard else ()

    def _ensure_lock(self, migration: Migration) -> None:
        """The guard on its own, between the statements of a non-transactional file."""
        if self.guard is not None:
            self.guard.check(self.conn, migration.version)

    def _history_row(self, migration: Migration) -> str:
        return history.insert_row(self.conn, self.config.history_table, migration)

    def _send(
        self, migration: Migration, envelope: Envelope, part: Part | None = None
    ) -> list[pq.abc.PGresult]:
        """One round trip: the envelope around the whole file, or around ``part`` of it."""
        try:
            return run_script(
                self.conn, envelope.wrap(migration.sql if part is None else part.text)
            )
        except StatementFailed as failure:
            self._end_failed_transaction()
            if envelope.executes and self.queries.lost(failure.error):
                raise PreparedQueryLost() from None
            # One result per statement the server ran, each statement of a block counted.
            count = len(
                server_statements(migration.statements if part is None else part.statements)
            )
            if self.guard and failure.index == index_after(count, envelope, self.guard.sql):
                raise self.guard.lost(migration.version) from None
            raise StatementFailed(failure.error, failure.index, envelope, migration, part) from None

    def _end_failed_transaction(self) -> None:
        # The envelope's own BEGIN is left aborted by a failure: end it before a retry.
        if self.conn.pgconn.transaction_status == pq.TransactionStatus.INERROR:
            self.conn.execute("ROLLBACK")

    def _send_read(self, migration: Migration, envelope: Envelope) -> list[pq.abc.PGresult]:
        """The file as psql reads it, in as few round trips as that allows: a COPY goes on its
        own (its data follows it), and a statement that may change standard_conforming_strings
        ends its round trip (the server parses a whole round trip with the value at its start).
        """
        head = envelope.before
        pending: list[Statement] = []

        def flush(after: tuple[str, ...] = ()) -> list[pq.abc.PGresult]:
            nonlocal head
            results = self._send(migration, Envelope(head, after), Part(tuple(pending)))
            head = ()
            pending.clear()
            return results

        for statement in self._following_server(migration):
            if copy_direction(statement.text):
                if pending or head:
                    flush()
                self._copy(migration, statement)
                continue
            pending.append(statement)
            reset = settings_reset(statement)
            if mentions_standard_strings(statement.text) or reset:
                flush()
            # The runner's timeouts again, in the transaction, before the next statement.
            head = self.session.restore(reset, "SET LOCAL") if reset else head
        return flush(envelope.after)  # the last round trip carries the envelope's tail

    def _following_server(self, migration: Migration) -> Iterator[Statement]:
        """The file's statements, read again from where the server's standard_conforming_strings
        stops matching what the text predicted (a DO block or a ROLLBACK changed it), as psql
        reads each statement with the value the server reported last."""
        statements = migration.statements
        index, resume = 0, 0
        while index < len(statements):
            actual = self.conn.info.parameter_status("standard_conforming_strings") != "off"
            if statements[index].standard_strings != actual:
                statements = [
                    *statements[:index],
                    *read_script(migration.sql, resume, actual).statements,
                ]
                if index >= len(statements):
                    return
            statement = statements[index]
            yield statement
            resume, index = statement.end, index + 1

    def _copy(self, migration: Migration, statement: Statement) -> None:
        """COPY ... FROM stdin with the file's inline data; COPY ... TO stdout read and dropped
        (psql prints it; a migration has no reader for it)."""
        try:
            with self.conn.cursor() as cursor, cursor.copy(statement.text) as copy:
                if statement.copy is not None:
                    copy.write(statement.copy.text)
                else:
                    for _ in copy:
                        pass
        except psycopg.Error as error:
            if not error.sqlstate:  # the connection itself failed
                raise
            self._end_failed_transaction()
            raise StatementFailed(error, 0, Envelope(), migration, Part((statement,))) from None

    def _in_transaction(self, migration: Migration, record: Recorder, start: float) -> None:
        with self.conn.transaction():
            for setting in self.session.timeouts("SET LOCAL"):
                self.conn.execute(setting)
            after = self._reset
            if migration.needs_reading:
                self.files.observe(self._send_read(migration, Envelope(after=after)), after)
            elif not migration.is_empty:
                self.files.observe(self._send(migration, Envelope(after=after)), after)
            self._ensure_lock(migration)
            record(self.conn, migration, _ms_since(start))

    def _statement_by_statement(
        self, migration: Migration, record: Recorder | None, start: float
    ) -> None:
        for setting in () if self.pooled else self.session.timeouts("SET"):
            self.conn.execute(setting)
        for index, statement in enumerate(self._following_server(migration)):
            log.debug("statement_started", version=migration.version, line=statement.line)
            if self.conn.info.transaction_status is pq.TransactionStatus.IDLE:
                # Not inside the file's own BEGIN: a query there would take its snapshot and
                # break a SET TRANSACTION that follows (psql sends nothing in between).
                self._ensure_lock(migration)
            action = partial(self._run_statement, migration, statement)
            with self._loss_explained(migration, statement):
                self._retrying(migration, action, statement, index)
            if not self.pooled:  # behind a pooler each statement carries its own SET LOCAL
                for setting in self.session.restore(settings_reset(statement), "SET"):
                    self.conn.execute(setting)
        if self.conn.info.transaction_status is not pq.TransactionStatus.IDLE:
            # Recording now would put the row inside the file's transaction, lost at exit.
            self.conn.rollback()
            raise MigrationFailedError(
                ERR_OPEN_TRANSACTION.format(file=migration.path), file=str(migration.path)
            )
        self._ensure_lock(migration)
        after = self._reset
        self.files.observe(run_script(self.conn, Envelope(after=after).wrap("")), after)
        (record or self.record)(self.conn, migration, _ms_since(start))

    def record(self, conn: psycopg.Connection[Any], migration: Migration, ms: int) -> None:
        """The plain history row (a Recorder), in the configured history table."""
        history.record(conn, self.config.history_table, migration, ms)

    def record_again(self, conn: psycopg.Connection[Any], migration: Migration, ms: int) -> None:
        """A repeatable file's row, replaced (a Recorder)."""
        history.record_again(conn, self.config.history_table, migration, ms)

    def _run_statement(self, migration: Migration, statement: Statement) -> None:
        if copy_direction(statement.text):
            self._copy(migration, statement)
            return
        index = concurrent_index(statement.text)
        if index is not None:
            try:
                drop_invalid_index(self.conn, index, migration.version)
            except psycopg.Error as error:
                if not error.sqlstate:  # the connection itself failed: not the statement's fault
                    raise
                raise StatementFailed(error, 0) from None  # e.g. 55P03, retried like the rest
        envelope = self.session.statement_envelope(statement)
        try:
            run_script(self.conn, envelope.head + statement.text)
        except StatementFailed as failure:
            raise StatementFailed(failure.error, failure.index, envelope) from None

    def _retrying(
        self,
        migration: Migration | None,
        action: Callable[[], None],
        statement: Statement | None = None,
        index: int = 0,
    ) -> None:
        """Run ``action``, retrying on lock_timeout (55P03) with backoff; map errors.

        ``migration`` is None for the single transaction: each failure names its own file.
        """

        def log_retry(state: tenacity.RetryCallState) -> None:
            log.warning(
                "lock_timeout_retry",
                version=migration.version if migration else "(single transaction)",
                attempt=state.attempt_number,
                lock_timeout_ms=round(self.config.ddl_lock_timeout * 1000),
                retries=self.config.ddl_lock_retries,
            )

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(is_lock_timeout),
            stop=tenacity.stop_after_attempt(self.config.ddl_lock_retries + 1),
            wait=LOCK_RETRY_WAIT,
            before_sleep=log_retry,
            reraise=True,
        )
        try:
            retrying(action)
        except StatementFailed as failure:
            if session_lost(failure.error, self.conn):  # e.g. 57P01 from a server shutting down
                raise failure.error from None
            failed = failure.migration or migration
            if failed is None:  # a bug: every round trip of the single transaction names its file
                raise
            error = migration_failed(failed, failure, statement, index)
            if statement is not None and index > 0:  # statements before it were committed
                raise partly_applied(error, failed, index) from None
            raise error from None

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
            if migration.batch is not None:
                outcome = BATCH_KEPT
            elif self.running_mode is TransactionMode.TRANSACTION:
                outcome = ROLLED_BACK
            elif statement is not None:
                outcome = PARTLY_DONE.format(line=statement.line)
            else:
                outcome = NOT_RECORDED
            message = ERR_CONNECTION_LOST.format(
                file=migration.path, reason=reason_of(error), outcome=outcome
            )
            raise ConnectionLostError(message, file=str(migration.path)) from None


def _locks_held(results: list[pq.abc.PGresult], envelope: Envelope) -> dict[str, Any]:
    """``locks`` (relation: strongest mode) and ``transaction_ms`` from the LOCKS_HELD result,
    counted from the end of the round trip (the file's own statements are not counted)."""
    result = results[envelope.after.index(LOCKS_HELD) - len(envelope.after)]
    held, duration = result.get_value(0, 0), result.get_value(0, 1)
    return {
        "locks": json.loads(held) if held else {},
        "transaction_ms": int(duration) if duration else None,
    }


def partly_applied(
    error: MigrationFailedError, migration: Migration, index: int
) -> MigrationFailedError:
    """``error`` of statement ``index`` (0-based) of a file run statement by statement, saying
    that the statements before it stayed applied."""
    previous = migration.statements[min(index, len(migration.statements)) - 1]
    line = previous.line + previous.text.count("\n")
    message = error.message + PARTLY_APPLIED.format(count=index, line=line)
    return MigrationFailedError(message, **error.fields, applied_statements=index)


def _ms_since(start: float) -> int:
    return round((time.monotonic() - start) * 1000)
