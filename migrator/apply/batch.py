"""Batched data migrations: a ``-- migrate:batch`` file's statement run once per batch of its
table's key, each batch a short transaction that also moves the checkpoint.

One batch, on the applier's session (its timeouts; behind a pooler, one transaction)::

    BEGIN; SET LOCAL lock_timeout ...; SET LOCAL statement_timeout ...;
    SELECT to_json(min(k)) #>> '{}', to_json(max(k)) #>> '{}', count(*)
      FROM (SELECT id AS k FROM public.tokens WHERE id > '5000' ORDER BY id LIMIT 1000) s;
    UPDATE tokens SET ... WHERE id BETWEEN $1 AND $2;     -- ('5001', '6000'), not prepared
    INSERT INTO public.schema_migrations_batch ... checkpoint = '6000' ...;
    SELECT count(*) ... pg_blocking_pids ...;                -- WAITERS_SQL (the throttle)
    SELECT 1 / count(*) FROM pg_catalog.pg_locks WHERE ...;   -- the lock guard
    COMMIT;

Exactly once: the checkpoint commits with the rows it covers, or neither does (kill -9, a
failover, SIGTERM); the next run starts after it. Rows whose key equals the batch's highest
are all in the batch (BETWEEN includes them), so a key need not be unique. The batch that
finds fewer rows than its size is the last: the file's history row and the checkpoint's
deletion commit with it. For example::

    run_batches(applier, migration)  # logs batch_started ... batch_finished
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any, Protocol

import psycopg
import tenacity
from psycopg import pq, sql

from migrator.apply.health import Pause
from migrator.apply.location import migration_failed
from migrator.apply.retry import LOCK_NOT_AVAILABLE, LOCK_RETRY_WAIT
from migrator.apply.session import SessionStatements
from migrator.apply.throttle import WAITERS_SQL, Throttle
from migrator.apply.transport import StatementFailed, run_bounded, run_script
from migrator.config import BatchSettings, Config
from migrator.database.catalog import refuse_unindexed_key
from migrator.database.connect import session_lost
from migrator.database.lock import LockGuard
from migrator.errors import MigrationFailedError
from migrator.files.batch import BatchSpec
from migrator.files.migration import Migration
from migrator.history import checkpoint as checkpoints
from migrator.history import table as history
from migrator.logs import get_logger

log = get_logger("apply")

# After this many lock timeouts in a row the batch is halved (down to one row).
SPLIT_AFTER = 3
# After a split, this many batches that go through keep the split size for the next one (it
# may shrink, not grow). The batch that timed out spanned two batches of the halved size and
# the locked rows are in the second, where one that grew straight back would run into them
# again: SPLIT_AFTER more lock timeouts, with backoff, for every halving. One batch more, as
# an application's transaction often holds neighbouring keys; a held batch costs a round trip.
HOLD_AFTER_SPLIT = 2
# How many of the last batches the next size is measured from; how far one step may move it.
MEASURED_BATCHES = 3
SHRINK_LIMIT = 0.5
GROWTH_LIMIT = 2.0
# The walk's own read: the batch's bounds, at most ``size`` keys after the checkpoint, in the
# key's index order. The bounds travel as text, as the checkpoint is stored: JSON's text of
# the value, which (unlike ::text) does not follow DateStyle, so a timestamptz checkpoint
# reads back the same in a later run whose session writes dates another way.
BOUNDS = (
    "SELECT to_json(min(k)) #>> '{{}}', to_json(max(k)) #>> '{{}}', count(*) "
    "FROM (SELECT {key} AS k FROM {table}{after} ORDER BY {key} LIMIT {size}) s"
)
AFTER = " WHERE {key} > {checkpoint}"
# pg_class.reltuples: the planner's estimate, -1 before the first ANALYZE (PostgreSQL 14+;
# 0 before it on older servers, which also reads as unknown).
ESTIMATED_ROWS = (
    "SELECT nullif(greatest(c.reltuples, 0), 0)::bigint FROM pg_catalog.pg_class c "
    "WHERE c.oid = pg_catalog.to_regclass(%s)"
)
KEPT = (
    "; the {batches} batch(es) committed before it stay, with the checkpoint at {checkpoint}: "
    "the next run resumes after it"
)
ERR_LOCKED = (
    "{file}: a batch of one row ({where}) failed {attempts} times in a row ({reason}; "
    "DDL_LOCK_TIMEOUT={timeout_ms}ms): a session holds a lock on it; "
    "the batches before it stay committed and the next run resumes there"
)


class Applier(Protocol):
    """What the walk uses of migrator.apply.applier.Applier: its session, settings and guard."""

    conn: psycopg.Connection[Any]
    config: Config
    guard: LockGuard | None
    session: SessionStatements


# What rolls a batch back and is worth trying again: the batch is whole or not at all, so
# running it again does each row once. A deadlock (the application locked rows in another
# order) or a serialization failure goes away like a lock wait does.
RETRIED = {
    LOCK_NOT_AVAILABLE: "lock timeout",
    "40P01": "deadlock",
    "40001": "serialization failure",
}


class LockTimedOut(Exception):
    """The batch waited longer than lock_timeout (55P03), was a deadlock's victim or failed to
    serialize; rolled back whole."""

    def __init__(self, sqlstate: str) -> None:
        super().__init__(sqlstate)
        self.sqlstate = sqlstate


@dataclass
class Batch:
    """One committed batch: its bounds, the keys it walked, the rows its statement changed."""

    lower: str
    upper: str
    walked: int
    changed: int
    seconds: float  # the statement's own time
    last: bool  # the file was recorded with it


def next_size(
    size: int, measured: list[tuple[int, float]], settings: BatchSettings, hold: bool = False
) -> int:
    """The size of the next batch: the rows the last batches did per second times the target
    duration, moved at most x0.5..x2 from ``size`` (x0.5..x1 when ``hold``: just after a
    split), within ``[1, BATCH_MAX_SIZE]``.

    >>> settings = BatchSettings(target_duration=0.1, size=100, max_size=1000)
    >>> next_size(100, [(100, 0.2)], settings)  # 500 rows/s: 50 rows take 0.1 s
    50
    >>> next_size(100, [(100, 0.001)], settings), next_size(800, [(800, 0.001)], settings)
    (200, 1000)
    """
    rows = sum(walked for walked, _ in measured)
    seconds = sum(spent for _, spent in measured)
    ideal = settings.target_duration * rows / seconds if seconds > 0 else size * GROWTH_LIMIT
    bounded = min(max(ideal, size * SHRINK_LIMIT), size * (1.0 if hold else GROWTH_LIMIT))
    return max(1, min(settings.max_size, round(bounded)))


@dataclass
class BatchRun:
    """The walk of one batch file, on the applier's session."""

    applier: Applier
    migration: Migration
    spec: BatchSpec
    settings: BatchSettings
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    relation: str = ""  # the table, qualified and quoted (from the catalog)
    checkpoint: str | None = None
    rows_done: int = 0  # every run's, as the checkpoint row counts them
    batches: int = 0
    size: int = 0
    # The table's rows as the planner estimates them; None before its first ANALYZE.
    estimated: int | None = None
    throttle: Throttle = field(init=False)
    measured: deque[tuple[int, float]] = field(
        default_factory=lambda: deque(maxlen=MEASURED_BATCHES)
    )
    # This run's own figures, for the rate and the events.
    walked: int = 0
    changed: int = 0
    paused: float = 0.0
    last_report: float = 0.0  # when batch_progress was last logged (clock)
    held: int = 0  # batches still to go through before the size may grow (HOLD_AFTER_SPLIT)

    @property
    def conn(self) -> psycopg.Connection[Any]:
        return self.applier.conn

    def run(self) -> None:
        """Walk from the checkpoint to the end; the last batch records the file."""
        self._start()
        started = self.last_report = self.clock()

        def heartbeat(pause: Pause, pausing: float) -> None:
            if self._progress_due():
                self._progress(started, pause, pausing)

        while True:
            # Between batches nothing is open: wait while a replica lags, sessions waited on the
            # last batch's locks, or autovacuum works on the table; a long wait still reports.
            version = self.migration.version
            self.paused += self.throttle.wait_until_healthy(self.conn, version, heartbeat)
            batch = self._with_retries()
            if batch is not None:
                self._done(batch)
            if batch is None or batch.last:
                break
            if self._progress_due():
                self._progress(started)
        log.info(
            "batch_finished",
            version=self.migration.version,
            table=self.relation,
            batches=self.batches,
            rows_done=self.rows_done,
            rows_changed=self.changed,
            duration_ms=round((self.clock() - started) * 1000),
            paused_seconds=round(self.paused, 3),
        )

    def _start(self) -> None:
        history_table = self.applier.config.history_table
        checkpoints.ensure_checkpoint_table(self.conn, history_table)
        found = checkpoints.read_checkpoint(self.conn, history_table, self.migration.version)
        checkpoints.refuse_changed(self.migration, found, history_table)
        self.relation = refuse_unindexed_key(self.conn, self.spec, self.migration.path)
        self.throttle = Throttle(self.applier.config.throttle, self.relation, self.sleep)
        if found is not None:
            self.checkpoint, self.rows_done, self.batches = (
                found.checkpoint,
                found.rows_done,
                found.batches,
            )
        self.size = min(self.spec.size or self.settings.size, self.settings.max_size)
        row = self.conn.execute(ESTIMATED_ROWS, (self.relation,)).fetchone()
        self.estimated = int(row[0]) if row and row[0] is not None else None
        log.info(
            "batch_started",
            version=self.migration.version,
            table=self.relation,
            key=self.spec.key,
            size=self.size,
            estimated_rows=self.estimated,
            checkpoint=self.checkpoint,
            rows_done=self.rows_done,
        )

    def _done(self, batch: Batch) -> None:
        self.checkpoint = batch.upper
        self.rows_done += batch.walked
        self.batches += 1
        self.walked += batch.walked
        self.changed += batch.changed
        self.measured.append((batch.walked, batch.seconds))
        hold, self.held = self.held > 0, max(self.held - 1, 0)
        previous = self.size
        self.size = next_size(self.size, list(self.measured), self.settings, hold)
        log.debug(
            "batch_committed",
            version=self.migration.version,
            lower=batch.lower,
            upper=batch.upper,
            rows=batch.walked,
            changed=batch.changed,
            statement_ms=round(batch.seconds * 1000, 1),
            batch_size=previous,
            next_batch_size=self.size,
        )

    def _progress_due(self) -> bool:
        interval = self.applier.config.progress_interval  # 0: no progress events
        return interval > 0 and self.clock() - self.last_report >= interval

    def _progress(self, started: float, pause: Pause | None = None, pausing: float = 0.0) -> None:
        """A batch_progress event; during a pause (``pause``, ``pausing`` seconds so far) it
        says so, with the reason, and the rate leaves the pause out."""
        self.last_report = self.clock()
        elapsed = max(self.clock() - started - self.paused - pausing, 1e-9)
        rate = self.walked / elapsed
        # An estimate the walk has passed (rows added since ANALYZE) is raised to it.
        total = max(self.estimated, self.rows_done) if self.estimated is not None else None
        eta = (total - self.rows_done) / rate if total is not None and rate > 0 else None
        log.info(
            "batch_progress",
            version=self.migration.version,
            rows_done=self.rows_done,
            estimated_total=total,
            rows_per_second=round(rate, 1),
            eta_seconds=round(eta, 1) if eta is not None else None,
            batch_size=self.size,
            batches=self.batches,
            checkpoint=self.checkpoint,
            paused_seconds=round(self.paused + pausing, 3),
            paused=pause is not None,
            **({"reason": pause.message, "signal": pause.signal} if pause else {}),
        )

    def _with_retries(self) -> Batch | None:
        """One batch, tried again after a lock timeout, a deadlock or a serialization failure
        (with backoff); halved after SPLIT_AFTER of them in a row; failed once a single row
        keeps failing."""
        in_row = at_one = 0
        config = self.applier.config
        while True:
            try:
                return self._attempt()
            except LockTimedOut as timeout:
                in_row += 1
                at_one += self.size == 1
                if self.size == 1 and at_one > config.ddl_lock_retries:
                    raise self._locked(at_one, timeout.sqlstate) from None
                since_split = (in_row - 1) % SPLIT_AFTER + 1
                log.warning(
                    "lock_timeout_retry"
                    if timeout.sqlstate == LOCK_NOT_AVAILABLE
                    else "batch_retry",
                    version=self.migration.version,
                    attempt=in_row,
                    sqlstate=timeout.sqlstate,
                    reason=RETRIED[timeout.sqlstate],
                    batch_size=self.size,
                    checkpoint=self.checkpoint,
                    lock_timeout_ms=round(config.ddl_lock_timeout * 1000),
                )
                if since_split == SPLIT_AFTER and self.size > 1:
                    previous, self.size = self.size, max(1, self.size // 2)
                    self.held = HOLD_AFTER_SPLIT
                    log.warning(
                        "batch_split",
                        version=self.migration.version,
                        batch_size=self.size,
                        previous_size=previous,
                        checkpoint=self.checkpoint,
                    )
                self.sleep(_backoff(since_split))

    def _locked(self, attempts: int, sqlstate: str) -> MigrationFailedError:
        message = ERR_LOCKED.format(
            file=self.migration.path,
            where="the first key" if self.checkpoint is None else f"key after {self.checkpoint}",
            reason=RETRIED[sqlstate],
            attempts=attempts,
            timeout_ms=round(self.applier.config.ddl_lock_timeout * 1000),
        )
        return MigrationFailedError(message, file=str(self.migration.path), sqlstate=sqlstate)

    def _attempt(self) -> Batch | None:
        """One batch's transaction; rolled back whole on any failure or interruption."""
        try:
            return self._transaction()
        except BaseException:
            self._roll_back()
            raise

    def _transaction(self) -> Batch | None:
        begin = self.applier.session.begin
        results = self._send((*begin, self._bounds()), "the batch's bounds")
        lower, upper, count = (results[-1].get_value(0, column) for column in range(3))
        if not count or int(count) == 0:
            self._commit(self._recording(), "recording the file")
            return None
        walked = int(count)
        lower_text, upper_text = lower.decode(), upper.decode()  # type: ignore[union-attr]
        start = self.clock()
        changed = self._statement(lower_text, upper_text)
        seconds = self.clock() - start
        last = walked < self.size
        rows = checkpoints.upsert(
            self.conn, self.applier.config.history_table, self.migration, upper_text, walked
        )
        # The sessions waiting on this batch's locks, counted while it still holds them.
        results = self._commit(
            (WAITERS_SQL, rows, *(self._recording() if last else ())), "moving the checkpoint"
        )
        waiters = results[0].get_value(0, 0)
        self.throttle.after_batch(int(waiters) if waiters is not None else 0)
        return Batch(lower_text, upper_text, walked, changed, seconds, last)

    def _bounds(self) -> str:
        key = sql.Identifier(self.spec.key_name)
        after: sql.Composable = sql.SQL("")
        if self.checkpoint is not None:
            after = sql.SQL(AFTER).format(key=key, checkpoint=sql.Literal(self.checkpoint))
        return (
            sql.SQL(BOUNDS)
            .format(
                key=key,
                table=sql.SQL(self.relation),
                after=after,
                size=sql.Literal(self.size),
            )
            .as_string(self.conn)
        )

    def _recording(self) -> tuple[str, ...]:
        """The file's history row and the end of its checkpoint, in the last batch's commit."""
        table = self.applier.config.history_table
        return (
            history.insert_row(self.conn, table, self.migration),
            checkpoints.delete(self.conn, table, self.migration),
        )

    def _statement(self, lower: str, upper: str) -> int:
        """The file's statement with the bounds as parameters (run_bounded: not prepared)."""
        statement = self.migration.statements[0]
        try:
            return run_bounded(self.conn, statement.text, (lower, upper)).rows
        except StatementFailed as failure:
            error = failure.error
            if session_lost(error, self.conn):  # e.g. 57P01
                raise error from None  # the applier says what stays: the batches before
            if error.sqlstate in RETRIED:
                raise LockTimedOut(str(error.sqlstate)) from None
            located = StatementFailed(error, 0, migration=self.migration)
            raise self._kept(migration_failed(self.migration, located, statement, 0)) from None

    def _send(self, statements: tuple[str, ...], what: str) -> list[pq.abc.PGresult]:
        """The runner's own statements of the batch, in one round trip."""
        try:
            return run_script(self.conn, "".join(f"{text};\n" for text in statements))
        except StatementFailed as failure:
            if session_lost(failure.error, self.conn):
                raise failure.error from None
            if failure.error.sqlstate in RETRIED:
                raise LockTimedOut(failure.error.sqlstate) from None
            guard = self.applier.guard
            if guard is not None and statements[failure.index] == guard.sql:
                raise guard.lost(self.migration.version) from None
            message = (
                f"{self.migration.path}: {what} failed: {failure.error.sqlstate} "
                f"{failure.error.diag.message_primary}"
            )
            raise self._kept(MigrationFailedError(message, file=str(self.migration.path))) from None

    def _commit(self, statements: tuple[str, ...], what: str) -> list[pq.abc.PGresult]:
        guard = self.applier.guard
        return self._send((*statements, *((guard.sql,) if guard else ()), "COMMIT"), what)

    def _kept(self, error: MigrationFailedError) -> MigrationFailedError:
        """``error``, saying that the batches before stay and where the next run resumes."""
        if not self.batches:
            return error
        message = error.message + KEPT.format(batches=self.batches, checkpoint=self.checkpoint)
        return MigrationFailedError(message, **error.fields)

    def _roll_back(self) -> None:
        """End the batch's transaction, if the session is still there to end it."""
        if self.conn.closed or self.conn.pgconn.transaction_status == pq.TransactionStatus.IDLE:
            return
        with suppress(psycopg.Error):  # the session is gone: the server rolled it back
            self.conn.rollback()


def _backoff(attempt: int) -> float:
    """The existing lock retry's wait (migrator/apply/retry.py) for the ``attempt``-th try."""
    state = tenacity.RetryCallState(None, None, (), {})  # type: ignore[arg-type]
    state.attempt_number = attempt
    return float(LOCK_RETRY_WAIT(state))


def run_batches(applier: Applier, migration: Migration) -> None:
    """Apply a batch file on ``applier``'s session: walk, checkpoint, record."""
    assert migration.batch is not None
    BatchRun(applier, migration, migration.batch, applier.config.batch).run()
