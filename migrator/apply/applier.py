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
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

import psycopg
import tenacity
from psycopg import errors as pg_errors
from psycopg import generators, pq

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
from migrator.apply.watch import notices_logged, watched
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
# Consecutive plain transactional files travel together, each in its own envelope and
# transaction, at most so many files and bytes in one round trip: the server starts the next
# file as soon as the last one committed, without waiting for the client (issue 29). An error
# ends the round trip there: PostgreSQL skips the rest of a query string after an error, so
# no file after the failed one runs.
TOGETHER_FILES = 20
TOGETHER_BYTES = 1_000_000


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
    # Lock-timed-out attempts a file had in a shared round trip: its retries on its own count
    # them, so that DDL_LOCK_RETRIES holds.
    _lock_attempts: int = field(default=0, init=False)
    # At most so many files in the next shared round trip: those before a file with a syntax
    # error (PostgreSQL parses a whole round trip before running any of it).
    _together_limit: int = field(default=TOGETHER_FILES, init=False)

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
        _log_started(migration)
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

    def apply_files(self, migrations: Sequence[Migration]) -> dict[str, int]:
        """Apply ``migrations`` in order, each as apply() does; consecutive files that can
        share a round trip (``_may_go_together``) are sent in one. Returns their durations."""
        durations: dict[str, int] = {}
        position = 0
        while position < len(migrations):
            together = self._together(migrations[position:])
            alone = len(together) < 2
            if not alone:
                applied, alone = self._apply_together(together)
                durations.update(applied)
                position += len(applied)
            if alone and position < len(migrations):
                migration = migrations[position]
                durations[migration.version] = self.apply(migration)
                position += 1
        return durations

    def _together(self, migrations: Sequence[Migration]) -> Sequence[Migration]:
        """The leading files of ``migrations`` that may share one round trip."""
        size = 0
        limit, self._together_limit = self._together_limit, TOGETHER_FILES
        for count, migration in enumerate(migrations[:limit]):
            size += len(migration.sql)
            if size > TOGETHER_BYTES or not self._may_go_together(migration):
                return migrations[:count]
            if statistics.envelope_statements(self.config, migration.sql) != ((), ()):
                return migrations[: count + 1]  # its ANALYZE runs after its commit: the last
        return migrations[:limit]

    def _may_go_together(self, migration: Migration) -> bool:
        """Known before anything is sent: a versioned file run in one transaction, as one text
        (no COPY data, no setting the runner follows), not a batch file (its own transactions),
        on a server session of the runner's own (no pooler). One whose statistics are measured
        (an ANALYZE may follow its commit) ends the round trip."""
        return (
            not self.pooled
            and not migration.repeatable
            and migration.batch is None
            and migration.mode_decision.mode is TransactionMode.TRANSACTION
            and not migration.needs_reading
        )

    def _apply_together(self, migrations: Sequence[Migration]) -> tuple[dict[str, int], bool]:
        """``migrations`` in one round trip, each in the envelope apply() gives it; the
        results are read one by one, so that each file is logged (its NOTICEs too) and
        checked in order, and nothing of a file after a failed one runs. Returns the
        durations of the files applied, and True when the next file is to run on its own:
        what apply() tries again (a lock timeout, a statement PostgreSQL refuses in a
        transaction, the prepared queries lost). After a file that
        changed the defaults a login reads, the next file's fence fails (nothing of it runs)
        and the files go on on a new login."""
        envelopes = [self._transaction(migration) for migration in migrations]
        fence = self.files.fence
        if fence is not None:
            begin = len(self.session.begin)
            envelopes[1:] = [
                replace(e, before=(*e.before[:begin], fence, *e.before[begin:]))
                for e in envelopes[1:]
            ]
        texts = [e.wrap(m.sql) for m, e in zip(migrations, envelopes, strict=True)]
        self.running_mode = TransactionMode.TRANSACTION
        # The server sends a round trip's results when it ends (its output buffer fills
        # first only for large results): a long file among them shows in migration_progress
        # under the versions of the whole round trip.
        together = f"{migrations[0].version}..{migrations[-1].version}"
        watching = self.progress.watching(together) if self.progress else nullcontext()
        with watching:
            return self._results_together(migrations, envelopes, texts)

    def _results_together(
        self, migrations: Sequence[Migration], envelopes: list[Envelope], texts: list[str]
    ) -> tuple[dict[str, int], bool]:
        """The results of the round trip ``texts`` file by file (see _apply_together)."""
        results = self._received("".join(texts))
        preceding = 0  # characters of the round trip before the file's envelope
        applied: dict[str, int] = {}
        stale: list[statistics.StaleRelation] = []
        start = time.monotonic()
        for migration, envelope, sent in zip(migrations, envelopes, texts, strict=True):
            _log_started(migration)
            with notices_logged(self.conn, migration.version), self._loss_explained(migration):
                ended = self._file_results(results)
                if ended[-1].status == pq.ExecStatus.FATAL_ERROR:
                    error = pg_errors.error_from_result(ended[-1], self.conn.info.encoding)
                    later = _file_at(error, texts, preceding + len(sent))
                    if later is not None:  # a syntax error there: nothing of the round trip ran
                        self._finish(results)
                        self._together_limit = later  # this file and those up to that one
                        return applied, False
                    failure = StatementFailed(error, len(ended) - 1, preceding=preceding)
                    return applied, self._failed_together(migration, envelope, failure, results)
                self.files.observe(ended, envelope.after)
                if self.files.changed:  # the next file's fence fails: nothing of it ran
                    self._finish(results)
            held = _locks_held(ended, envelope)
            # The results came together: the server's measure of the file's own transaction.
            took = held["transaction_ms"]
            applied[migration.version] = _ms_since(start) if took is None else took
            log.info(
                "migration_applied",
                version=migration.version,
                duration_ms=applied[migration.version],
                **held,
            )
            start, preceding = time.monotonic(), preceding + len(sent)
            stale = statistics.stale_relations(ended, envelope.after)  # the last file's only
            if self.files.changed:
                statistics.refresh(self.conn, self.config, migration.version, stale)
                if self.files.follow(migration.version):
                    self._renewed()
                return applied, False
        with self._loss_explained(migrations[-1]):
            self._finish(results)  # the end of the round trip, after the last COMMIT
        statistics.refresh(self.conn, self.config, migrations[-1].version, stale)  # committed
        return applied, False

    def _received(self, text: str) -> Iterator[pq.abc.PGresult]:
        """Send ``text`` in one round trip (the simple query protocol); its results one by one
        as they arrive, up to the end of the round trip."""
        pgconn = self.conn.pgconn
        pgconn.send_query(text.encode(self.conn.info.encoding))
        self.conn.wait(generators.send(pgconn))
        while (result := self.conn.wait(generators.fetch(pgconn))) is not None:
            yield result

    @staticmethod
    def _file_results(results: Iterator[pq.abc.PGresult]) -> list[pq.abc.PGresult]:
        """One file's results: up to its envelope's COMMIT, or to the error that ended the
        round trip. A file sent together holds no COMMIT of its own (that decides another
        mode), and its functions cannot commit inside the envelope's transaction."""
        ended: list[pq.abc.PGresult] = []
        for result in results:
            ended.append(result)
            if result.status == pq.ExecStatus.FATAL_ERROR or result.command_status == b"COMMIT":
                return ended
        raise RuntimeError("the round trip ended before a file's COMMIT")  # a bug: never sent so

    def _finish(self, results: Iterator[pq.abc.PGresult]) -> None:
        """Read the rest of the round trip (the server skipped it after an error), and end
        the transaction the error left open."""
        for _ in results:
            pass
        self._end_failed_transaction()

    def _failed_together(
        self,
        migration: Migration,
        envelope: Envelope,
        failed: StatementFailed,
        results: Iterator[pq.abc.PGresult],
    ) -> bool:
        """``migration`` failed in a shared round trip; nothing after it ran. True when it is
        to run again on its own (as apply() tries it again); otherwise raise its error, as
        apply() reports it (file, line), or the lock lost."""
        self._finish(results)
        failure = self._attributed(failed, migration, envelope)
        if isinstance(failure, PreparedQueryLost):
            return True
        if not isinstance(failure, StatementFailed):
            raise failure  # the lock lost
        if is_lock_timeout(failure) and self.config.ddl_lock_retries > 0:
            # The shared attempt was the first: logged and waited for as apply() would.
            self._lock_attempts = 1
            self._log_lock_retry(migration, 1)
            state = tenacity.RetryCallState(tenacity.Retrying(), None, (), {})
            state.attempt_number = 1
            time.sleep(LOCK_RETRY_WAIT(state))
            return True
        if failure.error.sqlstate in FALLBACK_SQLSTATES:
            return True
        raise self._reported(failure, migration)

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
            raise self._attributed(failure, migration, envelope, part) from None

    def _attributed(
        self,
        failure: StatementFailed,
        migration: Migration,
        envelope: Envelope,
        part: Part | None = None,
    ) -> Exception:
        """What a failed round trip of ``migration`` in ``envelope`` raises: its prepared
        queries lost, the lock lost (the guard failed), or the statement's failure."""
        if envelope.executes and self.queries.lost(failure.error):
            return PreparedQueryLost()
        # One result per statement the server ran, each statement of a block counted.
        count = len(server_statements(migration.statements if part is None else part.statements))
        if self.guard and failure.index == index_after(count, envelope, self.guard.sql):
            return self.guard.lost(migration.version)
        return StatementFailed(
            failure.error, failure.index, envelope, migration, part, failure.preceding
        )

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
        tried, self._lock_attempts = self._lock_attempts, 0

        def log_retry(state: tenacity.RetryCallState) -> None:
            self._log_lock_retry(migration, state.attempt_number + tried)

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(is_lock_timeout),
            stop=tenacity.stop_after_attempt(self.config.ddl_lock_retries + 1 - tried),
            wait=LOCK_RETRY_WAIT,
            before_sleep=log_retry,
            reraise=True,
        )
        try:
            retrying(action)
        except StatementFailed as failure:
            raise self._reported(failure, migration, statement, index) from None

    def _log_lock_retry(self, migration: Migration | None, attempt: int) -> None:
        log.warning(
            "lock_timeout_retry",
            version=migration.version if migration else "(single transaction)",
            attempt=attempt,
            lock_timeout_ms=round(self.config.ddl_lock_timeout * 1000),
            retries=self.config.ddl_lock_retries,
        )

    def _reported(
        self,
        failure: StatementFailed,
        migration: Migration | None,
        statement: Statement | None = None,
        index: int = 0,
    ) -> Exception:
        """The error the user sees for a failed statement: its file, line and what stayed."""
        if session_lost(failure.error, self.conn):  # e.g. 57P01 from a server shutting down
            return failure.error
        failed = failure.migration or migration
        if failed is None:  # a bug: every round trip of the single transaction names its file
            return failure
        error = migration_failed(failed, failure, statement, index)
        if statement is not None and index > 0:  # statements before it were committed
            return partly_applied(error, failed, index)
        return error

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


def _file_at(error: psycopg.Error, texts: Sequence[str], end: int) -> int | None:
    """How many files of a shared round trip (``texts``) come before the one the server's
    error position points into, when it points past ``end`` (the failed file's end): a
    syntax error found when the server parsed the whole round trip, before it ran any of it.
    None when the error is the failed file's own."""
    position = error.diag.statement_position
    if not position or int(position) - 1 < end:
        return None
    start = 0
    for index, text in enumerate(texts):
        start += len(text)
        if int(position) - 1 < start:
            return index
    return None


def _log_started(migration: Migration) -> None:
    decision = migration.mode_decision
    log.info(
        "migration_started",
        version=migration.version,
        mode=decision.mode.value,
        mode_reason=decision.reason,
    )


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
