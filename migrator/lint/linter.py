"""The hazard lint: apply the pending files on a scratch database, statement by statement, and
let PostgreSQL say what each one locks, rewrites and scans among the tables that existed before
and what it breaks or deletes of what the running release uses. This module talks to the
databases and measures; what the measurements mean is decided in migrator/lint/findings.py and
migrator/lint/contract.py, which also log the report.

The target is only read (its history and its tables' sizes from the catalog, which takes no
lock); the scratch database is created with the admin credentials on the target's server and
dropped afterwards, or given with ``--shadow-url``. For example::

    $ python entrypoint.py lint        # exit 65 on an unwaived hazard

and from Python, with admin credentials (or ``--shadow-url``) in ``config``::

    lint(config, find_migrations(Path("migrations")))
    # 'lint: 3 file(s), 0 hazard(s), 0 waived, 0 on small tables, 0 unwaived'
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

import psycopg
from psycopg import pq, sql

from migrator.apply.location import migration_failed
from migrator.apply.session import FileSession, SessionStatements
from migrator.apply.transport import Bounds, StatementFailed, run_bounded, run_script
from migrator.config import MAX_NAME_BYTES, Config, name_prefix
from migrator.database.bootstrap import APP_ROLE_SETTING, OWNER_ROLE_SETTING, set_role_passwords
from migrator.database.catalog import (
    MAINTENANCE_DATABASE,
    database_exists,
    refuse_unindexed_key,
    role_exists,
)
from migrator.database.connect import behind_pooler, connect
from migrator.database.scratch import scratch_database
from migrator.errors import ConfigError, DatabaseMissingError, MigrationFailedError, MigratorError
from migrator.files.folder import MigrationSet
from migrator.files.migration import POST, Migration
from migrator.files.sql import Statement, TransactionMode, concurrent_index, inner_statements
from migrator.history import table as history
from migrator.history.name import TableName
from migrator.history.plan import in_phase, make_plan, phase_order
from migrator.lint.contract import (
    TABLE_KINDS,
    Catalog,
    Release,
    row_command,
    written_rows,
)
from migrator.lint.findings import (
    Located,
    LockJudge,
    Relation,
    Report,
    Snapshot,
    bounds_finding,
    documented_findings,
    is_transaction_control,
    min_rows_of,
    refused_in_transaction,
    rerun_finding,
    reruns_on_scratch,
)
from migrator.lint.hazards import DATA_LOSS, Finding, Lock, documented
from migrator.logs import get_logger

log = get_logger("lint")

SCRATCH_SUFFIX = "_lint_"
SCRATCH_TOKEN_BYTES = 5  # ten hex digits
INVALID_TRANSACTION_TERMINATION = "2D000"
OWN_TRANSACTIONS = "it commits its own transactions (a procedure that COMMITs), so it ran bare"

ERR_NO_SCRATCH = (
    "lint needs a scratch database: set DB_ADMIN_USER and its password (a database is created "
    "on the target's server and dropped afterwards), or --shadow-url / LINT_SHADOW_URL"
)
ERR_OWNER_LOGIN = (
    "lint runs the files over the owner's own login (DB_USER {owner}) in the scratch database, "
    "as migrate does, never in the admin's session: {reason}; bootstrap the target first (it "
    "creates the owner and sets its password) or lint with LINT_SHADOW_URL"
)
ERR_SHADOW_NOT_EMPTY = (
    "the shadow database (LINT_SHADOW_URL / --shadow-url) is not empty, it holds {relation}: "
    "give an empty database, lint applies every file to it"
)
USER_SCHEMAS = (
    "n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'"
)
# The runner's history table (MIGRATIONS_TABLE) is not the files': filled in by _on_history.
NOT_HISTORY = "(n.nspname, c.relname) <> ({history_schema}, {history_name})"
# (kind, name) -> (value, identity): the identity survives a rename, the value is the contract.
# A column "refuses NULL" through NOT NULL, an enforced CHECK (col IS NOT NULL) (valid or not:
# NOT VALID constraints are checked on new rows), or its domain's NOT NULL or CHECK (VALUE IS
# NOT NULL); it has a default of its own or its domain's. Partitions' columns are their
# parent's (a partition cannot have columns of its own): only the parent's are listed.
CATALOG = f"""
WITH RECURSIVE chain(top, oid) AS (
  SELECT t.oid, t.oid FROM pg_type t WHERE t.typtype = 'd'
  UNION ALL
  SELECT chain.top, t.typbasetype FROM chain JOIN pg_type t ON t.oid = chain.oid
  WHERE t.typtype = 'd'
), domains AS (
  SELECT chain.top AS oid,
         bool_or(d.typnotnull OR EXISTS (SELECT 1 FROM pg_constraint k
             WHERE k.contypid = d.oid AND k.contype = 'c'
               AND CASE WHEN k.conrelid = 0 THEN pg_get_expr(k.conbin, 0) END
                   = '(VALUE IS NOT NULL)')) AS not_null,
         bool_or(d.typdefaultbin IS NOT NULL) AS has_default
  FROM chain JOIN pg_type d ON d.oid = chain.oid AND d.typtype = 'd'
  GROUP BY chain.top
)
SELECT 'table', format('%I.%I', n.nspname, c.relname),
       c.relkind::text || coalesce((SELECT ' partition of ' || format('%I.%I', pn.nspname,
           p.relname) FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhparent
           JOIN pg_namespace pn ON pn.oid = p.relnamespace
           WHERE i.inhrelid = c.oid AND c.relispartition), ''),
       c.oid::text
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') AND {USER_SCHEMAS} AND {NOT_HISTORY}
UNION ALL
SELECT 'column', format('%I.%I.%I', n.nspname, c.relname, a.attname),
       format_type(a.atttypid, a.atttypmod)
       || CASE WHEN (a.attnotnull OR coalesce(dom.not_null, false) OR EXISTS (
                    SELECT 1 FROM pg_constraint k
                    WHERE k.conrelid = c.oid AND k.contype = 'c' AND k.conkey = ARRAY[a.attnum]
                      AND CASE WHEN k.conrelid = c.oid THEN pg_get_expr(k.conbin, k.conrelid) END
                          = format('(%s IS NOT NULL)', quote_ident(a.attname))
                      AND coalesce((to_jsonb(k) ->> 'conenforced')::boolean, true)))
                 AND NOT a.atthasdef AND NOT coalesce(dom.has_default, false)
                 AND a.attidentity = '' AND a.attgenerated = ''
               THEN ' NOT NULL without a default' ELSE '' END,
       c.oid::text || '.' || a.attnum::text
FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN domains dom ON dom.oid = a.atttypid
WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
  AND NOT c.relispartition AND {USER_SCHEMAS} AND {NOT_HISTORY}
UNION ALL
SELECT 'function', format('%I.%I(%s)', n.nspname, p.proname,
       pg_get_function_identity_arguments(p.oid)),
       'returns ' || coalesce(pg_get_function_result(p.oid), '') || '; defaults '
       || p.pronargdefaults::text,
       p.oid::text
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE {USER_SCHEMAS} AND NOT EXISTS (SELECT 1 FROM pg_depend d
      WHERE d.objid = p.oid AND d.classid = 'pg_proc'::regclass AND d.deptype = 'e')
UNION ALL
SELECT 'type', format('%I.%I', n.nspname, t.typname), t.typtype::text, t.oid::text
FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
WHERE t.typtype IN ('e', 'd') AND {USER_SCHEMAS}
UNION ALL
SELECT 'enum value', format('%I.%I', n.nspname, t.typname) || '.' || quote_literal(e.enumlabel),
       '', e.oid::text
FROM pg_enum e JOIN pg_type t ON t.oid = e.enumtypid JOIN pg_namespace n ON n.oid = t.typnamespace
WHERE {USER_SCHEMAS}"""
# Partition -> its partitioned table, to fold rows removed from both into one finding.
PARTITION_PARENTS = """
SELECT i.inhrelid, i.inhparent FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
WHERE c.relispartition AND i.inhrelid = ANY(%s)"""
# pg_stat views are snapshotted inside a transaction: drop the snapshot before each read.
CLEAR_STATS_SNAPSHOT = "SELECT pg_stat_clear_snapshot()"
ROWS_WRITTEN = """
SELECT relid, n_tup_del + n_tup_upd FROM pg_stat_xact_user_tables WHERE relid = ANY(%s)"""
HELD_LOCKS = """
SELECT relation, mode FROM pg_locks
WHERE pid = pg_backend_pid() AND locktype = 'relation' AND granted AND relation = ANY(%s)"""
RELATIONS = f"""
SELECT c.oid, format('%I.%I', n.nspname, c.relname), c.relkind
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'm') AND {USER_SCHEMAS} AND {NOT_HISTORY}"""
FIRST_TABLE = f"""
SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'm', 'v') AND {USER_SCHEMAS} LIMIT 1"""
# Catalog estimates only: pg_relation_size() would take a lock on the target's tables.
TARGET_SIZES = """
SELECT format('%I.%I', n.nspname, c.relname),
       CASE WHEN c.relkind = 'p' THEN (SELECT sum(greatest(p.reltuples, 0))::bigint
            FROM pg_partition_tree(c.oid) t JOIN pg_class p ON p.oid = t.relid WHERE t.isleaf)
            WHEN c.reltuples >= 0 THEN c.reltuples::bigint END,
       CASE WHEN c.relkind = 'p' THEN (SELECT sum(p.relpages)::bigint
            FROM pg_partition_tree(c.oid) t JOIN pg_class p ON p.oid = t.relid WHERE t.isleaf)
            ELSE c.relpages::bigint END * current_setting('block_size')::bigint
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'm')"""
SNAPSHOT = """
SELECT c.oid, c.relfilenode, coalesce(s.seq_scan, 0),
       array(SELECT ic.relfilenode::bigint
             FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
             WHERE i.indrelid = c.oid ORDER BY i.indexrelid),
       array(SELECT i.indexrelid::bigint FROM pg_index i WHERE i.indrelid = c.oid
             ORDER BY i.indexrelid)
FROM pg_class c LEFT JOIN pg_stat_xact_user_tables s ON s.relid = c.oid
WHERE c.oid = ANY(%s)"""


# --- what one statement did ------------------------------------------------------------------


class Observer(Protocol):
    """Measures one kind of effect around each statement of a file, in its transaction.

    ``tag`` is the statement's command tag, as the server returned it (``DELETE 12``).
    The observers read the catalog and statistics; what the readings mean is decided in
    findings.py (locks, rewrites, scans) and contract.py (breaking changes,
    data loss). OBSERVERS lists them. ``bare`` follows a statement that ran outside their
    transaction (unobserved), ``committed`` a commit: what other sessions now see.
    """

    def before(self, conn: psycopg.Connection[Any]) -> None: ...

    def after(
        self, conn: psycopg.Connection[Any], statement: Statement, tag: str
    ) -> list[Finding]: ...

    def bare(self, conn: psycopg.Connection[Any], statement: Statement) -> None: ...

    def committed(self) -> list[tuple[Statement, Finding]]: ...


def _snapshot(conn: psycopg.Connection[Any], oids: Sequence[int]) -> dict[int, Snapshot]:
    conn.execute(CLEAR_STATS_SNAPSHOT)
    rows = conn.execute(SNAPSHOT, (list(oids),)).fetchall()
    return {
        oid: Snapshot(node, scans, tuple(zip(index_oids, nodes, strict=True)))
        for oid, node, scans, nodes, index_oids in rows
    }


def held_locks(conn: psycopg.Connection[Any], oids: Iterable[int]) -> dict[int, Lock]:
    """The strongest lock this session holds on each of ``oids`` (pg_locks, granted only)."""
    held: dict[int, Lock] = {}
    for oid, mode in conn.execute(HELD_LOCKS, (list(oids),)).fetchall():
        lock = Lock.from_pg_locks(mode)
        held[oid] = max(lock, held.get(oid, lock))
    return held


def _on_history(query: str, history: TableName) -> sql.Composed:
    """``query`` with NOT_HISTORY naming the history table."""
    return sql.SQL(query).format(history_schema=history.schema, history_name=history.name)


def read_catalog(conn: psycopg.Connection[Any], history: TableName) -> Catalog:
    rows = conn.execute(_on_history(CATALOG, history))
    return {(kind, name): (value, ident) for kind, name, value, ident in rows}


@dataclass
class LockObserver:
    """Snapshots of the tables that existed before, and the locks held, around each statement."""

    relations: dict[int, Relation]
    _judge: LockJudge = field(init=False)
    _before: dict[int, Snapshot] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._judge = LockJudge(self.relations)

    def before(self, conn: psycopg.Connection[Any]) -> None:
        self._before = _snapshot(conn, list(self.relations))

    def after(self, conn: psycopg.Connection[Any], statement: Statement, tag: str) -> list[Finding]:
        now = _snapshot(conn, list(self.relations))
        return self._judge.findings(self._before, now, held_locks(conn, self.relations), tag)

    def bare(self, conn: psycopg.Connection[Any], statement: Statement) -> None:
        return None

    def committed(self) -> list[tuple[Statement, Finding]]:
        return []  # a lock is held (and listed) by the statement that takes it


@dataclass
class ContractObserver:
    """The catalog after each statement, judged against the release's start (``release``);
    locks and deleted or updated rows around a DELETE, TRUNCATE, MERGE or UPDATE."""

    release: Release[Statement]
    tables: dict[int, str]  # oid -> name of the tables that existed before the release
    parents: dict[int, int]  # partition -> its partitioned table, among ``tables``
    history: TableName  # the runner's own table, left out of the catalog
    _written: dict[int, int] = field(default_factory=dict)
    _locks: dict[int, Lock] = field(default_factory=dict)

    def before(self, conn: psycopg.Connection[Any]) -> None:
        self._written = self._rows_written(conn)
        self._locks = held_locks(conn, self.tables)

    def after(self, conn: psycopg.Connection[Any], statement: Statement, tag: str) -> list[Finding]:
        self.release.observe(statement, read_catalog(conn, self.history))
        command = row_command(tag)
        if not command:
            return []
        locks = (self._locks, held_locks(conn, self.tables))
        written = (self._written, self._rows_written(conn))
        rows = written_rows(self.tables, command, locks, written, self.parents)
        # Rows removed are reported when committed (what other sessions can see), once per
        # release; an UPDATE of a whole table is the statement's own doing: each one, now.
        self.release.removed(statement, [f for f in rows if DATA_LOSS in f.kinds])
        return [f for f in rows if DATA_LOSS not in f.kinds]

    def bare(self, conn: psycopg.Connection[Any], statement: Statement) -> None:
        self.release.observe(statement, read_catalog(conn, self.history))

    def committed(self) -> list[tuple[Statement, Finding]]:
        return self.release.commit()

    def _rows_written(self, conn: psycopg.Connection[Any]) -> dict[int, int]:
        conn.execute(CLEAR_STATS_SNAPSHOT)
        rows = conn.execute(ROWS_WRITTEN, (list(self.tables),)).fetchall()
        return {oid: written for oid, written in rows}


@dataclass(frozen=True)
class Baseline:
    """What existed before the release (with a target) or before the file (without one), and
    what other sessions have seen of the release so far."""

    relations: dict[int, Relation]
    catalog: Catalog
    parents: dict[int, int]  # partition -> its partitioned table
    release: Release[Statement]
    history: TableName  # the runner's own table (MIGRATIONS_TABLE), left out of both

    @property
    def tables(self) -> dict[int, str]:
        return {oid: r.name for oid, r in self.relations.items() if r.relkind in TABLE_KINDS}


def read_baseline(conn: psycopg.Connection[Any], history: TableName) -> Baseline:
    relations = existing_relations(conn, history)
    catalog = read_catalog(conn, history)
    rows = conn.execute(PARTITION_PARENTS, (list(relations),)).fetchall()
    return Baseline(relations, catalog, dict(rows), Release(catalog), history)


OBSERVERS: tuple[Callable[[Baseline], Observer], ...] = (
    lambda baseline: LockObserver(baseline.relations),
    lambda baseline: ContractObserver(
        baseline.release, baseline.tables, baseline.parents, baseline.history
    ),
)


# --- running a file on the scratch database ----------------------------------------------------


def _execute(
    conn: psycopg.Connection[Any],
    migration: Migration,
    statement: Statement,
    index: int,
    bounds: Bounds | None = None,
) -> str:
    """Run one statement (a batch file's with ``bounds`` as $1 and $2); its command tag
    (``ALTER TABLE``, ``DELETE 3``)."""
    try:
        if bounds is not None:
            return run_bounded(conn, statement.text, bounds).status
        results = run_script(conn, statement.text)
        status = results[-1].command_status if results else None
        return status.decode() if status else ""
    except StatementFailed as failure:
        if conn.pgconn.transaction_status == pq.TransactionStatus.INERROR:
            conn.execute("ROLLBACK")
        raise migration_failed(migration, failure, statement, index) from None


# A batch file's statement runs once on the scratch database, for every row there: $1 and $2
# the lowest and highest key (NULL on an empty table: it runs and changes nothing).
WHOLE_KEY_RANGE = "SELECT min({key})::text, max({key})::text FROM {table}"


@dataclass(frozen=True)
class BatchRun:
    """How a batch file's statement runs on the scratch database, and what its plan says."""

    bounds: Bounds
    unbounded: Finding | None  # its statement does not bound the key by $1 and $2


def batch_run(conn: psycopg.Connection[Any], migration: Migration, judged: bool) -> BatchRun | None:
    """For a batch file, after the runner's own check of its table and key
    (refuse_unindexed_key: exit 65, one line, as migrate refuses the file right before its
    first batch): bounds covering its table's whole key range on the scratch database, and
    when ``judged`` (a pending file) whether its statement bounds the key; None for another
    file."""
    spec = migration.batch
    if spec is None:
        return None
    table = refuse_unindexed_key(conn, spec, migration.path)
    query = sql.SQL(WHOLE_KEY_RANGE).format(key=sql.Identifier(spec.key_name), table=sql.SQL(table))
    row = conn.execute(query).fetchone()
    bounds = (row[0], row[1]) if row else (None, None)
    scans = batch_scans(conn, migration.statements[0], table) if judged else None
    finding = None if scans is None else bounds_finding(table, spec.key_name, scans)
    return BatchRun(bounds, finding)


# The walked table and its partitions, whose scans may carry the bounds.
WALKED = """
SELECT n.nspname || '.' || c.relname FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.oid = %(table)s::regclass OR c.oid IN (
    SELECT relid FROM pg_catalog.pg_partition_tree(%(table)s::regclass))"""
PLAN_NAME = "migrator_lint_batch"
# A plan node's conditions that may hold the bounds of its scan.
CONDITIONS = ("Index Cond", "Recheck Cond", "Filter", "TID Cond")


def _scans(plan: dict[str, Any], relations: set[str]) -> Iterator[tuple[str, str]]:
    """(alias, conditions) of each scan of ``relations`` (schema.name, as the catalog stores
    them) in an EXPLAIN (VERBOSE, FORMAT JSON) plan."""
    name = f"{plan.get('Schema')}.{plan.get('Relation Name')}"
    if plan.get("Node Type") != "ModifyTable" and name in relations:
        conditions = " AND ".join(str(plan[k]) for k in CONDITIONS if k in plan)
        yield str(plan.get("Alias", plan.get("Relation Name"))), conditions
    for child in plan.get("Plans", ()):
        yield from _scans(child, relations)


def batch_scans(
    conn: psycopg.Connection[Any], statement: Statement, table: str
) -> list[tuple[str, str]] | None:
    """The scans of ``table`` (a batch file's, qualified as refuse_unindexed_key gives it) in
    PostgreSQL's generic plan of the statement, with $1 and $2 as the parameters they are;
    None when the server cannot plan it (running it then reports why)."""
    relations = {row[0] for row in conn.execute(WALKED, {"table": table}).fetchall()}
    try:
        run_script(conn, f"PREPARE {PLAN_NAME} AS {statement.text}")
    except StatementFailed:
        return None
    try:
        conn.execute("BEGIN")
        conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        row = conn.execute(f"EXPLAIN (VERBOSE, FORMAT JSON) EXECUTE {PLAN_NAME}(NULL, NULL)")
        [[plans]] = row.fetchall()
    finally:
        conn.execute("ROLLBACK")
        conn.execute(f"DEALLOCATE {PLAN_NAME}")
    return [scan for plan in plans for scan in _scans(plan["Plan"], relations)]


def second_run(
    conn: psycopg.Connection[Any], statement: Statement, in_transaction: bool
) -> psycopg.Error | None:
    """Run an applied statement again, as the re-run of its file would: the server's error, or
    None when it runs twice. In a transaction rolled back; a statement PostgreSQL refuses in
    one runs bare, where a failure changes nothing."""
    if in_transaction:
        conn.execute("BEGIN")
    try:
        run_script(conn, statement.text)
    except StatementFailed as failure:
        return failure.error
    finally:
        if in_transaction:
            conn.execute("ROLLBACK")
    return None


def _rerun(
    conn: psycopg.Connection[Any], migration: Migration, statement: Statement, refused: bool
) -> list[Located]:
    """A statement of a non-transactional file that fails when the file runs again."""
    if refused and not reruns_on_scratch(statement):
        return []
    error = second_run(conn, statement, in_transaction=not refused)
    if error is None:
        return []
    message = error.diag.message_primary or str(error)
    finding = rerun_finding(error.sqlstate, message, lambda name: _resolve(conn, name))
    return [Located(migration, statement, finding)] if finding else []


def _committed(migration: Migration, observers: Sequence[Observer]) -> list[Located]:
    return [
        Located(migration, statement, finding)
        for observer in observers
        for statement, finding in observer.committed()
    ]


def run_file(
    conn: psycopg.Connection[Any],
    migration: Migration,
    baseline: Baseline | None = None,
) -> list[Located]:
    """Apply ``migration`` as the runner would, observing each statement when ``baseline``
    (what existed before) is given; returns what was found, in the file's order."""
    observers = [make(baseline) for make in OBSERVERS] if baseline else []
    transactional = migration.mode_decision.mode is TransactionMode.TRANSACTION
    found: list[Located] = []
    batch = batch_run(conn, migration, judged=baseline is not None)
    bounds = batch.bounds if batch else None
    if batch and batch.unbounded:
        found.append(Located(migration, migration.statements[0], batch.unbounded))
    if transactional:
        conn.execute("BEGIN")
    for index, statement in enumerate(migration.statements):
        if not transactional and refused_in_transaction(statement):
            found += _documented(conn, migration, statement, index, baseline)
            if observers:
                found += _settled(conn, migration, statement, observers, refused=True)
            continue
        steps = _steps(statement, transactional)
        # A block of several statements sent as one text runs in one implicit transaction.
        wrap = (bool(observers) or len(steps) > 1) and not transactional
        wrap = wrap and not is_transaction_control(statement)
        wrap = wrap and conn.info.transaction_status is pq.TransactionStatus.IDLE
        if wrap:
            conn.execute("BEGIN")
        own_transactions = False
        for step in steps:
            for observer in observers:
                observer.before(conn)
            try:
                tag = _execute(conn, migration, step, index, bounds)
            except MigrationFailedError as failure:
                sqlstate = failure.fields.get("sqlstate")
                if not wrap or len(steps) > 1 or sqlstate != INVALID_TRANSACTION_TERMINATION:
                    raise
                # A CALL of a procedure that COMMITs: it runs bare, as the runner runs it,
                # unobserved.
                _execute(conn, migration, step, index)
                finding = Finding(None, "", observed=False, note=OWN_TRANSACTIONS)
                found.append(Located(migration, step, finding))
                for observer in observers:
                    observer.bare(conn, step)
                found += _committed(migration, observers)
                own_transactions = True
                break
            for observer in observers:
                found += [Located(migration, step, f) for f in observer.after(conn, step, tag)]
        if own_transactions:
            continue
        if wrap and conn.info.transaction_status is not pq.TransactionStatus.IDLE:
            conn.execute("COMMIT")
            if observers:  # each statement of a block, so that a finding names its own
                for step in steps:
                    found += _rerun(conn, migration, step, refused=False)
        if not transactional and conn.info.transaction_status is pq.TransactionStatus.IDLE:
            found += _committed(migration, observers)  # the file's own COMMIT too
    if transactional:
        conn.execute("COMMIT")
        found += _committed(migration, observers)
    return sorted(found, key=lambda located: located.statement.offset)


def _settled(
    conn: psycopg.Connection[Any],
    migration: Migration,
    statement: Statement,
    observers: Sequence[Observer],
    refused: bool,
) -> list[Located]:
    """After a statement that ran bare (committed on its own): what other sessions now see,
    and whether it runs twice."""
    for observer in observers:
        observer.bare(conn, statement)
    return _committed(migration, observers) + _rerun(conn, migration, statement, refused)


def _steps(statement: Statement, transactional: bool) -> list[Statement]:
    """What runs and is observed on its own: each statement of a block that holds several
    (goose's StatementBegin/End), so that a finding names the one it is about. A block of a
    non-transactional file that ends or opens transactions itself runs whole, as migrate
    sends it."""
    inner = inner_statements(statement)
    if not transactional and any(is_transaction_control(each) for each in inner):
        return [statement]
    return inner


def _documented(
    conn: psycopg.Connection[Any],
    migration: Migration,
    statement: Statement,
    index: int,
    baseline: Baseline | None,
) -> list[Located]:
    """A statement PostgreSQL refuses in a transaction: classified from the documentation."""
    doc = documented(statement.text)
    if doc.runs_on_scratch:  # the schema must stay as the next statements expect it
        _execute(conn, migration, statement, index)
    if baseline is None:
        return []
    existing = {relation.name for relation in baseline.relations.values()}
    built = concurrent_index(statement.text)
    findings = documented_findings(
        doc, built.table if built else None, existing, lambda name: _resolve(conn, name)
    )
    return [Located(migration, statement, finding) for finding in findings]


def _resolve(conn: psycopg.Connection[Any], name: str) -> str:
    row = conn.execute(
        "SELECT format('%%I.%%I', n.nspname, c.relname) FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = to_regclass(%s)",
        (name,),
    ).fetchone()
    return str(row[0]) if row else name


def existing_relations(conn: psycopg.Connection[Any], history: TableName) -> dict[int, Relation]:
    rows = conn.execute(_on_history(RELATIONS, history)).fetchall()
    return {oid: Relation(name, kind) for oid, name, kind in rows}


# --- the scratch database and the target --------------------------------------------------------


def _shadow_kwargs(config: Config) -> dict[str, Any]:
    """psycopg.connect arguments for the shadow URL, with libpq's defaults for what it omits."""
    from psycopg.conninfo import conninfo_to_dict

    parts = conninfo_to_dict(config.shadow_url or "")
    user = str(parts.get("user") or config.user)
    defaults = {"host": "localhost", "port": 5432, "user": user, "dbname": user}
    return {**defaults, "application_name": config.application_name, **parts}


@contextmanager
def lint_database(
    config: Config,
) -> Iterator[tuple[psycopg.Connection[Any], dict[str, Any]]]:
    """A connection to an empty database that may be changed at will, dropped at the end, and
    the keyword arguments it was opened with."""
    if config.shadow_url:
        kwargs = _shadow_kwargs(config)
        with connect(kwargs, config.wait_timeout) as conn:
            conn.prepare_threshold = None  # nothing prepared: the server may sit behind a pooler
            refuse_filled_shadow(conn)
            yield conn, kwargs
        return
    if not config.admin_user:
        raise ConfigError(ERR_NO_SCRATCH)
    # Cut in bytes, whole characters: cut by the server, the name would lose its random part.
    room = MAX_NAME_BYTES - len(SCRATCH_SUFFIX) - 2 * SCRATCH_TOKEN_BYTES
    prefix = name_prefix(config.dbname, room)
    name = f"{prefix}{SCRATCH_SUFFIX}{secrets.token_hex(SCRATCH_TOKEN_BYTES)}"
    admin_kwargs = config.connect_kwargs(admin=True, dbname=MAINTENANCE_DATABASE)
    with scratch_database(admin_kwargs, name, config.wait_timeout, "lint"):
        kwargs = config.connect_kwargs(admin=True, dbname=name)
        with connect(kwargs, config.wait_timeout) as conn:
            conn.prepare_threshold = None
            yield conn, kwargs


def refuse_filled_shadow(conn: psycopg.Connection[Any]) -> None:
    """The files are applied from scratch: a shadow database already holding tables (a real
    database given by mistake, or the last lint's leftovers) is refused, never emptied."""
    row = conn.execute(FIRST_TABLE).fetchone()
    if row:
        raise ConfigError(ERR_SHADOW_NOT_EMPTY.format(relation=row[0]))


@dataclass(frozen=True)
class Target:
    applied: tuple[Migration, ...]
    pending: tuple[Migration, ...]
    sizes: dict[str, tuple[int | None, int | None]]  # relation -> (rows, bytes)
    # ``--phase post``: the pending pre files, which run before the post ones (the init
    # container's run): applied on the scratch database first, not judged.
    earlier: tuple[Migration, ...] = ()


def earlier_phase(pending: Sequence[Migration], phase: str) -> tuple[Migration, ...]:
    """Of ``pending`` (in phase order), the files a run of ``phase`` finds applied before its
    own: the pre files (and repeatable ones, which run with them) for ``--phase post``."""
    return tuple(m for m in pending if phase == POST and not in_phase(m, POST))


def read_target(config: Config, files: MigrationSet) -> Target | None:
    """The target's history and table sizes (read only), or None when it does not exist yet."""
    if config.admin_user and not _target_exists(config):
        return None  # before the bootstrap even the owner role may not exist: do not log in
    kwargs = config.connect_kwargs()
    try:
        with connect(kwargs, config.wait_timeout) as conn:
            recorded = history.read_history(conn, config.history_table)
            plan = make_plan(files, recorded, config.allow_out_of_order, phase=config.run_phase)
            sizes = {row[0]: (row[1], row[2]) for row in conn.execute(TARGET_SIZES).fetchall()}
    except DatabaseMissingError:
        return None
    earlier = earlier_phase(plan.deferred, config.run_phase)
    return Target(plan.applied, plan.pending, sizes, earlier)


def _target_exists(config: Config) -> bool:
    admin_kwargs = config.connect_kwargs(admin=True, dbname=MAINTENANCE_DATABASE)
    with connect(admin_kwargs, config.wait_timeout) as admin:
        return database_exists(admin, config.dbname)


# --- the command -------------------------------------------------------------------------------


@dataclass
class LintSession:
    """The session each file is linted in, as migrate gives it: after each file the session
    reset, and a new login when the file changed the defaults a login reads (FileSession)."""

    files: FileSession
    statements: SessionStatements

    @property
    def conn(self) -> psycopg.Connection[Any]:
        return self.files.conn

    def settle(self, migration: Migration) -> None:
        self.files.settle(migration.version, self.statements.reset)


@contextmanager
def lint_session(
    conn: psycopg.Connection[Any], kwargs: dict[str, Any], config: Config
) -> Iterator[LintSession]:
    """``conn``, opened with ``kwargs``, as the files' session; a new login closed at the end."""
    pooled = behind_pooler(conn)
    reopen = partial(connect, kwargs, config.wait_timeout)
    session = LintSession(
        FileSession(conn, reopen, pooled), SessionStatements.of(conn, config, pooled)
    )
    try:
        yield session
    finally:
        session.files.close()


@contextmanager
def files_session(
    scratch: psycopg.Connection[Any],
    kwargs: dict[str, Any],
    config: Config,
    files: MigrationSet,
    applied: Sequence[Migration],
) -> Iterator[LintSession]:
    """The bootstrap script on the scratch session, then the applied files, on the session the
    pending ones are linted in: the owner's own login, as migrate runs them. Never SET ROLE in
    the admin's session: a file would leave it with RESET ROLE and run as the superuser."""
    with lint_session(scratch, kwargs, config) as admin:
        if files.bootstrap:
            bootstrap_scratch(admin, config, files.bootstrap)
        with owner_session(admin, kwargs, config) as owner:
            # Files may grant on it, as on the target; its schema is 000's there, made here if not.
            history.ensure_schema(owner.conn, config.history_table)
            history.ensure_history_table(owner.conn, config.history_table)
            for migration in applied:
                run_file(owner.conn, migration)
                owner.settle(migration)
            yield owner


def bootstrap_scratch(admin: LintSession, config: Config, script: Migration) -> None:
    """000 in the admin's session, with the role names set, and the passwords of the roles it
    created; then what migrate's owner login would find (the defaults 000 set)."""
    scratch = admin.conn
    new_owner = not role_exists(scratch, config.user)
    for setting, value in (
        (OWNER_ROLE_SETTING, config.user),
        (APP_ROLE_SETTING, config.app_user),
    ):
        scratch.execute("SELECT pg_catalog.set_config(%s, %s, false)", (setting, value))
    run_file(scratch, script)
    if new_owner and role_exists(scratch, config.user):
        # 000 created the roles (they are cluster-wide): they get the passwords bootstrap
        # will give them, so that the owner can log in. An existing role is left as it is.
        set_role_passwords(scratch, config, script)
    admin.settle(script)


@contextmanager
def owner_session(
    admin: LintSession, kwargs: dict[str, Any], config: Config
) -> Iterator[LintSession]:
    """The scratch session itself when its user is the owner; else the owner's own login to
    the scratch database, which it then owns as bootstrap makes it own the target (a shadow
    database is used as it is given)."""
    scratch = admin.conn
    if scratch.info.user == config.user:
        yield admin
        return
    if not config.shadow_url and role_exists(scratch, config.user):
        owner = sql.Identifier(config.user)
        try:
            scratch.execute(
                sql.SQL("ALTER DATABASE {} OWNER TO {}; ALTER SCHEMA public OWNER TO {}").format(
                    sql.Identifier(kwargs["dbname"]), owner, owner
                )
            )
        except psycopg.errors.InsufficientPrivilege as error:  # an admin that is no superuser
            log.warning("lint_scratch_not_handed_over", reason=error.diag.message_primary)
    login = {**kwargs, "user": config.user, "password": config.password}  # None: libpq's own
    try:
        conn = connect(login, config.wait_timeout)
    except MigratorError as error:
        raise ConfigError(ERR_OWNER_LOGIN.format(owner=config.user, reason=error.message)) from None
    with conn, lint_session(conn, login, config) as session:
        conn.prepare_threshold = None
        yield session


def run_lint(config: Config, files: MigrationSet) -> Report:
    """Lint what is pending on the target (every file when there is no target); log findings."""
    start = time.monotonic()
    target = read_target(config, files)
    min_rows = min_rows_of(config.lint_min_rows, target is not None)
    phase = config.run_phase
    # No target yet: every file of the phase, in the order a first `migrate` applies them (pre,
    # then post); for --phase post, after the pre files.
    every = phase_order(list(files.versioned))
    pending = target.pending if target else tuple(m for m in every if in_phase(m, phase))
    earlier = target.earlier if target else earlier_phase(every, phase)
    for migration in pending:  # refused before anything runs (exit 65), as migrate does
        migration.refuse_unsupported()
    report = Report(min_rows, target.sizes if target else {}, config.lint_batch_rows)
    log.info(
        "lint_started",
        target=target is not None,
        pending=[m.version for m in pending],
        applied_first=[m.version for m in earlier],
        min_rows=min_rows,
        batch_rows=config.lint_batch_rows,
        scratch="shadow" if config.shadow_url else "created",
    )
    for migration in pending:  # what migrate refuses up front (exit 65), before the scratch
        migration.refuse_unsupported()
    if pending:  # else no scratch database, nothing to build
        # The release as --phase post meets it: the pre files applied (not judged here).
        applied = (*(target.applied if target else ()), *earlier)
        with (
            lint_database(config) as (scratch, kwargs),
            files_session(scratch, kwargs, config, files, applied) as session,
        ):
            # With a target, what the pending files create is new and empty for all of them;
            # without one, each file is linted as if the files before it were in production.
            table = config.history_table
            base = read_baseline(session.conn, table) if target else None
            for migration in pending:
                baseline = base if base is not None else read_baseline(session.conn, table)
                report.add(migration, run_file(session.conn, migration, baseline))
                session.settle(migration)
    report.complete(round((time.monotonic() - start) * 1000))
    return report


def lint(config: Config, files: MigrationSet) -> str:
    """The ``lint`` command, and the check ``LINT_BEFORE_APPLY`` runs: exit 65 on a hazard."""
    return run_lint(config, files).verdict()
