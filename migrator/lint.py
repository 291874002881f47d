"""The hazard lint: apply the pending files on a scratch database, statement by statement, and
let PostgreSQL say what each one locks, rewrites and scans among the tables that existed before
(and, with migrator/contract.py, what it breaks or deletes of what the running release uses).

The target is only read (its history and its tables' sizes from the catalog, which takes no
lock); the scratch database is created with the admin credentials on the target's server and
dropped afterwards, or given with ``--shadow-url``.

    $ python entrypoint.py lint        # exit 65 on an unwaived hazard
    >>> lint(config, find_migrations(Path("migrations")))
    'lint: 3 file(s), 0 hazard(s), 0 waived, 0 on small tables, 0 unwaived'
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import psycopg
from psycopg import pq, sql

from migrator import history
from migrator.apply import StatementFailed, migration_failed, run_script
from migrator.bootstrap import (
    APP_ROLE_SETTING,
    MAINTENANCE_DATABASE,
    OWNER_ROLE_SETTING,
    database_exists,
)
from migrator.config import Config
from migrator.contract import (
    CLEAR_STATS_SNAPSHOT,
    NOT_HISTORY,
    TABLE_KINDS,
    USER_SCHEMAS,
    Catalog,
    ContractObserver,
    held_locks,
    read_catalog,
)
from migrator.errors import (
    ConfigError,
    HazardsFoundError,
    MigrationFailedError,
    MigrationFilesError,
)
from migrator.hazards import (
    KINDS,
    LOCK_KINDS,
    NOT_OBSERVED,
    Finding,
    Lock,
    documented,
    is_hazard,
    safe_alternative,
)
from migrator.logs import get_logger
from migrator.migration import Migration
from migrator.migrations import MigrationSet
from migrator.plan import make_plan
from migrator.sql import Statement, TransactionMode, concurrent_index, transaction_mode
from migrator.wait import ERR_NO_DATABASE, connect

log = get_logger("lint")

DEFAULT_MIN_ROWS = 10_000  # LINT_MIN_ROWS with a target; 0 without one
STATEMENT_EXCERPT_LENGTH = 200
SCRATCH_SUFFIX = "_lint_"
MAX_IDENTIFIER = 63
TRANSACTION_CONTROL = frozenset({"BEGIN", "START", "COMMIT", "END", "ROLLBACK", "ABORT"})
ANY_RELATION = "*"
INVALID_TRANSACTION_TERMINATION = "2D000"
OWN_TRANSACTIONS = "it commits its own transactions (a procedure that COMMITs), so it ran bare"

ERR_NO_SCRATCH = (
    "lint needs a scratch database: set DB_ADMIN_USER and its password (a database is created "
    "on the target's server and dropped afterwards), or --shadow-url / LINT_SHADOW_URL"
)
ERR_SHADOW_NOT_EMPTY = (
    "the shadow database (LINT_SHADOW_URL / --shadow-url) is not empty, it holds {relation}: "
    "give an empty database, lint applies every file to it"
)
ERR_BAD_WAIVER = (
    "{file}: line {line}: {text!r} must read -- migrate:allow <kind> <relation>: <reason> "
    "(kinds: {kinds}; the reason is required)"
)
ERR_HAZARDS = (
    "{count} unwaived hazard(s) in {files}: see the hazard events; use the safe alternative, "
    "or waive one in the file's header with -- migrate:allow <kind> <relation>: <reason>"
)

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
            FROM pg_partition_tree(c.oid) t JOIN pg_class p ON p.oid = t.relid)
            WHEN c.reltuples >= 0 THEN c.reltuples::bigint END,
       CASE WHEN c.relkind = 'p' THEN (SELECT sum(p.relpages)::bigint
            FROM pg_partition_tree(c.oid) t JOIN pg_class p ON p.oid = t.relid)
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
CAN_BECOME = (
    "SELECT CASE WHEN EXISTS (SELECT 1 FROM pg_roles WHERE rolname = %(role)s) "
    "THEN current_user <> %(role)s AND pg_has_role(%(role)s, 'MEMBER') ELSE false END"
)
WAIVER_RE = re.compile(r"--\s*migrate\s*:\s*allow\b(?P<body>.*)$", re.IGNORECASE)
WAIVER_BODY_RE = re.compile(r"^\s*(?P<kind>[\w-]+)\s+(?P<relation>[^\s:]+)\s*:\s*(?P<reason>\S.*)$")


# --- what one statement did ------------------------------------------------------------------


@dataclass(frozen=True)
class Relation:
    name: str  # schema-qualified, quoted only where needed (public.tokens)
    relkind: str


class Observer(Protocol):
    """Measures one kind of effect around each statement of a file, in its transaction.

    ``tag`` is the statement's command tag, as the server returned it (``DELETE 12``).
    The lock, rewrite and scan observer is below; breaking changes and data loss are
    ContractObserver's (migrator/contract.py); OBSERVERS lists them.
    """

    def before(self, conn: psycopg.Connection[Any]) -> None: ...

    def after(
        self, conn: psycopg.Connection[Any], statement: Statement, tag: str
    ) -> list[Finding]: ...


@dataclass
class _Snapshot:
    relfilenode: int
    seq_scan: int
    indexes: tuple[tuple[int, int], ...]  # (index oid, relfilenode)


def _snapshot(conn: psycopg.Connection[Any], oids: Sequence[int]) -> dict[int, _Snapshot]:
    conn.execute(CLEAR_STATS_SNAPSHOT)
    rows = conn.execute(SNAPSHOT, (list(oids),)).fetchall()
    return {
        oid: _Snapshot(node, scans, tuple(zip(index_oids, nodes, strict=True)))
        for oid, node, scans, nodes, index_oids in rows
    }


@dataclass
class LockObserver:
    """Locks held, rewrites (relfilenode changed) and full scans (seq_scan grew) per statement."""

    relations: dict[int, Relation]
    _before: dict[int, _Snapshot] = field(default_factory=dict)
    _reported: dict[int, Lock] = field(default_factory=dict)  # locks already listed

    def before(self, conn: psycopg.Connection[Any]) -> None:
        self._before = _snapshot(conn, list(self.relations))

    def after(self, conn: psycopg.Connection[Any], statement: Statement, tag: str) -> list[Finding]:
        now = _snapshot(conn, list(self.relations))
        locks = held_locks(conn, self.relations)
        truncate = tag.startswith("TRUNCATE")  # the server's command tag
        findings = []
        for oid, before in self._before.items():
            after = now.get(oid)
            if after is None:  # dropped by the statement
                continue
            finding = self._finding(oid, before, after, locks.get(oid), truncate)
            if finding:
                findings.append(finding)
        return findings

    def _finding(
        self, oid: int, before: _Snapshot, after: _Snapshot, lock: Lock | None, truncate: bool
    ) -> Finding | None:
        relation = self.relations[oid]
        already = self._reported.get(oid)
        if lock is not None:
            self._reported[oid] = max(lock, already or lock)
        # TRUNCATE swaps in an empty file: a new relfilenode, but nothing is copied.
        rewrite = (
            not truncate and before.relfilenode != 0 and after.relfilenode != before.relfilenode
        )
        index_build = bool(set(after.indexes) - set(before.indexes))
        scanned = after.seq_scan > before.seq_scan
        kind = (
            "rewrite" if rewrite else "index_build" if index_build else "scan" if scanned else None
        )
        if kind and is_hazard(
            lock, rewrite=rewrite or index_build, scanned=scanned, relkind=relation.relkind
        ):
            return Finding(kind, relation.name, lock)
        if lock is None or lock < Lock.SHARE or (already is not None and already >= lock):
            return None  # weak, or listed for an earlier statement of the file
        return Finding(None, relation.name, lock)


@dataclass(frozen=True)
class Baseline:
    """What existed before the release (with a target) or before the file (without one)."""

    relations: dict[int, Relation]
    catalog: Catalog

    @property
    def tables(self) -> dict[int, str]:
        return {oid: r.name for oid, r in self.relations.items() if r.relkind in TABLE_KINDS}


def read_baseline(conn: psycopg.Connection[Any]) -> Baseline:
    return Baseline(existing_relations(conn), read_catalog(conn))


OBSERVERS: tuple[Callable[[Baseline], Observer], ...] = (
    lambda baseline: LockObserver(baseline.relations),
    lambda baseline: ContractObserver(baseline.catalog, baseline.tables),
)


# --- running a file on the scratch database ----------------------------------------------------


@dataclass(frozen=True)
class Located:
    migration: Migration
    statement: Statement
    finding: Finding


def _is_transaction_control(statement: Statement) -> bool:
    words = statement.text.split(None, 1)
    return bool(words) and words[0].upper().rstrip(";") in TRANSACTION_CONTROL


def _refused_in_transaction(statement: Statement) -> bool:
    decision = transaction_mode(statement.text, [statement])
    return decision.mode is TransactionMode.NO_TRANSACTION and not _is_transaction_control(
        statement
    )


def _execute(
    conn: psycopg.Connection[Any], migration: Migration, statement: Statement, index: int
) -> str:
    """Run one statement; its command tag (``ALTER TABLE``, ``DELETE 3``)."""
    try:
        results = run_script(conn, statement.text)
        status = results[-1].command_status if results else None
        return status.decode() if status else ""
    except StatementFailed as failure:
        if conn.pgconn.transaction_status == pq.TransactionStatus.INERROR:
            conn.execute("ROLLBACK")
        raise migration_failed(migration, failure, statement, index) from None


def run_file(
    conn: psycopg.Connection[Any],
    migration: Migration,
    baseline: Baseline | None = None,
) -> list[Located]:
    """Apply ``migration`` as the runner would, observing each statement when ``baseline``
    (what existed before) is given; returns what was found."""
    observers = [make(baseline) for make in OBSERVERS] if baseline else []
    transactional = migration.mode_decision.mode is TransactionMode.TRANSACTION
    found: list[Located] = []
    if transactional:
        conn.execute("BEGIN")
    for index, statement in enumerate(migration.statements):
        if not transactional and _refused_in_transaction(statement):
            found += _documented(conn, migration, statement, index, baseline)
            continue
        wrap = bool(observers) and not transactional and not _is_transaction_control(statement)
        wrap = wrap and conn.info.transaction_status is pq.TransactionStatus.IDLE
        if wrap:
            conn.execute("BEGIN")
        for observer in observers:
            observer.before(conn)
        try:
            tag = _execute(conn, migration, statement, index)
        except MigrationFailedError as failure:
            if not wrap or failure.fields.get("sqlstate") != INVALID_TRANSACTION_TERMINATION:
                raise
            # A CALL of a procedure that COMMITs: it runs bare, as the runner runs it, unobserved.
            _execute(conn, migration, statement, index)
            finding = Finding(None, "", observed=False, note=OWN_TRANSACTIONS)
            found.append(Located(migration, statement, finding))
            continue
        for observer in observers:
            found += [
                Located(migration, statement, f) for f in observer.after(conn, statement, tag)
            ]
        if wrap:
            conn.execute("COMMIT")
    if transactional:
        conn.execute("COMMIT")
    return found


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
    found = []
    built = concurrent_index(statement.text)
    for target in doc.targets or ((built.table,) if built else ("",)):
        name = _resolve(conn, target) if target and not target.startswith("(") else target
        if doc.kind and name and not name.startswith("(") and name not in existing:
            continue  # created by this release: empty, not a hazard
        finding = Finding(doc.kind, name or "", doc.lock, observed=False, note=doc.note)
        found.append(Located(migration, statement, finding))
    return found


def _resolve(conn: psycopg.Connection[Any], name: str) -> str:
    row = conn.execute(
        "SELECT format('%%I.%%I', n.nspname, c.relname) FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = to_regclass(%s)",
        (name,),
    ).fetchone()
    return str(row[0]) if row else name


def existing_relations(conn: psycopg.Connection[Any]) -> dict[int, Relation]:
    return {oid: Relation(name, kind) for oid, name, kind in conn.execute(RELATIONS).fetchall()}


# --- the scratch database, the target and the waivers --------------------------------------------


def _shadow_kwargs(config: Config) -> dict[str, Any]:
    """psycopg.connect arguments for the shadow URL, with libpq's defaults for what it omits."""
    from psycopg.conninfo import conninfo_to_dict

    parts = conninfo_to_dict(config.shadow_url or "")
    user = str(parts.get("user") or config.user)
    defaults = {"host": "localhost", "port": 5432, "user": user, "dbname": user}
    return {**defaults, "application_name": config.application_name, **parts}


@contextmanager
def scratch_database(config: Config) -> Iterator[psycopg.Connection[Any]]:
    """A connection to an empty database that may be changed at will, dropped at the end."""
    if config.shadow_url:
        with connect(_shadow_kwargs(config), config.wait_timeout) as conn:
            conn.prepare_threshold = None  # nothing prepared: the server may sit behind a pooler
            refuse_filled_shadow(conn)
            yield conn
        return
    if not config.admin_user:
        raise ConfigError(ERR_NO_SCRATCH)
    name = f"{config.dbname[: MAX_IDENTIFIER - 16]}{SCRATCH_SUFFIX}{secrets.token_hex(5)}"
    admin_kwargs = config.connect_kwargs(admin=True, dbname=MAINTENANCE_DATABASE)
    with connect(admin_kwargs, config.wait_timeout) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        log.info("lint_scratch_created", scratch=name)
        try:
            kwargs = config.connect_kwargs(admin=True, dbname=name)
            with connect(kwargs, config.wait_timeout) as conn:
                conn.prepare_threshold = None
                yield conn
        finally:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
            log.info("lint_scratch_dropped", scratch=name)


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


def read_target(config: Config, files: MigrationSet) -> Target | None:
    """The target's history and table sizes (read only), or None when it does not exist yet."""
    if config.admin_user and not _target_exists(config):
        return None  # before the bootstrap even the owner role may not exist: do not log in
    kwargs = config.connect_kwargs()
    try:
        with connect(kwargs, config.wait_timeout) as conn:
            plan = make_plan(files, history.read_history(conn), config.allow_out_of_order)
            sizes = {row[0]: (row[1], row[2]) for row in conn.execute(TARGET_SIZES).fetchall()}
    except ConfigError as error:
        missing = ERR_NO_DATABASE.format(
            dbname=kwargs["dbname"], host=kwargs["host"], port=kwargs["port"]
        )
        if error.message != missing:
            raise
        return None
    return Target(plan.applied, plan.pending, sizes)


def _target_exists(config: Config) -> bool:
    admin_kwargs = config.connect_kwargs(admin=True, dbname=MAINTENANCE_DATABASE)
    with connect(admin_kwargs, config.wait_timeout) as admin:
        return database_exists(admin, config.dbname)


@dataclass(frozen=True)
class Waiver:
    kind: str
    relation: str
    reason: str
    line: int

    def covers(self, finding: Finding) -> bool:
        """``tokens`` covers public.tokens; ``tokens.scope`` covers public.tokens.scope."""
        name = finding.relation
        return self.kind == finding.kind and (
            self.relation in (name, ANY_RELATION) or name.endswith("." + self.relation)
        )


def waivers_of(migration: Migration) -> list[Waiver]:
    """``-- migrate:allow <kind> <relation>: <reason>`` lines of the file's header."""
    statements = migration.statements
    header = migration.sql[: statements[0].offset] if statements else migration.sql
    waivers = []
    for number, text in enumerate(header.splitlines(), start=1):
        match = WAIVER_RE.match(text.strip())
        if not match:
            continue
        body = WAIVER_BODY_RE.match(match["body"])
        if not body or body["kind"] not in KINDS:
            message = ERR_BAD_WAIVER.format(
                file=migration.path, line=number, text=text.strip(), kinds=", ".join(KINDS)
            )
            raise MigrationFilesError(message, file=str(migration.path), line=number)
        waivers.append(Waiver(body["kind"], body["relation"], body["reason"].strip(), number))
    return waivers


# --- the report --------------------------------------------------------------------------------


@dataclass
class Report:
    min_rows: int
    sizes: dict[str, tuple[int | None, int | None]]
    files: int = 0
    hazards: int = 0
    waived: int = 0
    small: int = 0
    unwaived_files: list[str] = field(default_factory=list)

    @property
    def unwaived(self) -> int:
        return self.hazards - self.waived - self.small

    @property
    def summary(self) -> str:
        return (
            f"lint: {self.files} file(s), {self.hazards} hazard(s), {self.waived} waived, "
            f"{self.small} on small tables, {self.unwaived} unwaived"
        )

    def add(self, migration: Migration, found: list[Located]) -> None:
        self.files += 1
        waivers = waivers_of(migration)
        used: set[Waiver] = set()
        for located in found:
            if located.finding.kind is None:
                self._info(located)
                continue
            waiver = next((w for w in waivers if w.covers(located.finding)), None)
            if waiver:
                used.add(waiver)
            self._hazard(located, waiver)
        for waiver in waivers:
            if waiver not in used:
                log.warning(
                    "waiver_unused",
                    version=migration.version,
                    file=str(migration.path),
                    line=waiver.line,
                    kind=waiver.kind,
                    relation=waiver.relation,
                )

    def _fields(self, located: Located) -> dict[str, Any]:
        finding, statement = located.finding, located.statement
        rows, size = self.sizes.get(finding.table or finding.relation, (None, None))
        return {
            "version": located.migration.version,
            "file": str(located.migration.path),
            "line": statement.line,
            "statement": " ".join(statement.text.split())[:STATEMENT_EXCERPT_LENGTH],
            "relation": finding.relation,
            "lock": finding.lock.sql_name if finding.lock else None,
            "rows": rows,
            "bytes": size,
            "observed": finding.observed,
            **({"note": f"{NOT_OBSERVED}: {finding.note}"} if not finding.observed else {}),
            **({"change": finding.change} if finding.change else {}),
        }

    def _info(self, located: Located) -> None:
        event = "brief_lock" if located.finding.observed else "not_observed"
        log.info(event, **self._fields(located))

    def _hazard(self, located: Located, waiver: Waiver | None) -> None:
        finding = located.finding
        fields = self._fields(located)
        fields["kind"] = finding.kind
        fields["alternative"] = safe_alternative(finding.kind or "", located.statement.text)
        self.hazards += 1
        rows = fields["rows"]
        if waiver:
            self.waived += 1
            log.warning("hazard", waived=True, waiver=waiver.reason, **fields)
        elif finding.kind in LOCK_KINDS and rows is not None and rows < self.min_rows:
            self.small += 1
            log.warning("hazard", below_min_rows=self.min_rows, **fields)
        else:
            if fields["file"] not in self.unwaived_files:
                self.unwaived_files.append(fields["file"])
            log.error("hazard", **fields)


# --- the command -------------------------------------------------------------------------------


def _build(
    conn: psycopg.Connection[Any], config: Config, files: MigrationSet, applied: Sequence[Migration]
) -> None:
    """The bootstrap script as the admin, then the files as the owner when possible."""
    if files.bootstrap:
        for setting, value in (
            (OWNER_ROLE_SETTING, config.user),
            (APP_ROLE_SETTING, config.app_user),
        ):
            conn.execute("SELECT set_config(%s, %s, false)", (setting, value))
        run_file(conn, files.bootstrap)
    row = conn.execute(CAN_BECOME, {"role": config.user}).fetchone()
    if row and row[0]:
        conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(config.user)))
    history.ensure_history_table(conn)  # files may grant on it, as on the target
    for migration in applied:
        run_file(conn, migration)


def run_lint(config: Config, files: MigrationSet) -> Report:
    """Lint what is pending on the target (every file when there is no target); log findings."""
    start = time.monotonic()
    target = read_target(config, files)
    default_min_rows = DEFAULT_MIN_ROWS if target else 0
    min_rows = config.lint_min_rows if config.lint_min_rows is not None else default_min_rows
    pending = target.pending if target else files.versioned
    report = Report(min_rows, target.sizes if target else {})
    log.info(
        "lint_started",
        target=target is not None,
        pending=[m.version for m in pending],
        min_rows=min_rows,
        scratch="shadow" if config.shadow_url else "created",
    )
    if pending:  # else no scratch database, nothing to build
        with scratch_database(config) as conn:
            _build(conn, config, files, target.applied if target else ())
            # With a target, what the pending files create is new and empty for all of them;
            # without one, each file is linted as if the files before it were in production.
            base = read_baseline(conn) if target else None
            for migration in pending:
                baseline = base if base is not None else read_baseline(conn)
                report.add(migration, run_file(conn, migration, baseline))
    log.info(
        "lint_complete",
        files=report.files,
        hazards=report.hazards,
        waived=report.waived,
        below_min_rows=report.small,
        unwaived=report.unwaived,
        duration_ms=round((time.monotonic() - start) * 1000),
        summary=report.summary,
    )
    return report


def lint(config: Config, files: MigrationSet) -> str:
    """The ``lint`` command, and the check ``LINT_BEFORE_APPLY`` runs: exit 65 on a hazard."""
    report = run_lint(config, files)
    if report.unwaived:
        message = ERR_HAZARDS.format(count=report.unwaived, files=", ".join(report.unwaived_files))
        raise HazardsFoundError(message, hazards=report.unwaived)
    return report.summary
