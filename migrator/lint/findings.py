"""What the hazard lint concludes from what it observed (migrator/lint/linter.py drives the scratch
database and measures; this module decides): the finding for a table from its snapshots and
locks, the documented statements' findings, the waivers, and the report with its events.

>>> judge = LockJudge({16384: Relation("public.tokens", "r")})
>>> judge.findings({16384: Snapshot(1, 0, ())}, {16384: Snapshot(2, 0, ())},
...                {16384: Lock.ACCESS_EXCLUSIVE}, "ALTER TABLE")
[Finding(kind='rewrite', relation='public.tokens', lock=<Lock.ACCESS_EXCLUSIVE: 8>, ...)]
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from migrator.apply.location import STATEMENT_EXCERPT_LENGTH
from migrator.config import DEFAULT_LINT_BATCH_ROWS
from migrator.errors import HazardsFoundError, MigrationFilesError
from migrator.files.migration import Migration
from migrator.files.sql import (
    TRANSACTION_CONTROL,
    Statement,
    TransactionMode,
    concurrent_index,
    transaction_mode,
)
from migrator.lint.hazards import (
    INDEX_BUILD,
    KINDS,
    LOCK_KINDS,
    NOT_OBSERVED,
    RERUN,
    REWRITE,
    SCAN,
    UNBATCHED,
    UNBOUNDED,
    Documented,
    Finding,
    Lock,
    documented,
    is_hazard,
    normalized,
    safe_alternative,
)
from migrator.logs import get_logger

log = get_logger("lint")

DEFAULT_MIN_ROWS = 10_000  # LINT_MIN_ROWS with a target; 0 without one
# The first words of the statements that open or close a transaction block.
TRANSACTION_CONTROL_WORDS = frozenset(prefix[0] for prefix in TRANSACTION_CONTROL)
ANY_RELATION = "*"

ERR_BAD_WAIVER = (
    "{file}: line {line}: {text!r} must read -- migrate:allow <kind> <relation>: <reason> "
    "(kinds: {kinds}; the reason is required)"
)
ERR_HAZARDS = (
    "{count} unwaived hazard(s) in {files}: see the hazard events; use the safe alternative, "
    "or waive one in the file's header with -- migrate:allow <kind> <relation>: <reason>"
)

WAIVER_RE = re.compile(r"--\s*migrate\s*:\s*allow\b(?P<body>.*)$", re.IGNORECASE)
WAIVER_BODY_RE = re.compile(r"^\s*(?P<kind>[\w-]+)\s+(?P<relation>[^\s:]+)\s*:\s*(?P<reason>\S.*)$")


# --- what one statement did to the tables that existed before ----------------------------------


@dataclass(frozen=True)
class Relation:
    name: str  # schema-qualified, quoted only where needed (public.tokens)
    relkind: str


@dataclass
class Snapshot:
    """One table's storage and statistics at one moment (pg_class, pg_stat_xact_user_tables)."""

    relfilenode: int
    seq_scan: int
    indexes: tuple[tuple[int, int], ...]  # (index oid, relfilenode)


@dataclass
class LockJudge:
    """Locks held, rewrites (relfilenode changed) and full scans (seq_scan grew) per statement
    of one file: a brief lock is listed once, unless a later statement takes a stronger one."""

    relations: dict[int, Relation]
    _reported: dict[int, Lock] = field(default_factory=dict)  # locks already listed

    def findings(
        self,
        before: dict[int, Snapshot],
        now: dict[int, Snapshot],
        locks: dict[int, Lock],
        tag: str,
    ) -> list[Finding]:
        """The findings of one statement, whose command tag (from the server) is ``tag``."""
        truncate = tag.startswith("TRUNCATE")
        findings = []
        for oid, old in before.items():
            new = now.get(oid)
            if new is None:  # dropped by the statement
                continue
            finding = self._finding(oid, old, new, locks.get(oid), truncate)
            if finding:
                findings.append(finding)
        return findings

    def _finding(
        self, oid: int, before: Snapshot, after: Snapshot, lock: Lock | None, truncate: bool
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
        if is_hazard(
            lock, rewrite=rewrite or index_build, scanned=scanned, relkind=relation.relkind
        ):
            kind = REWRITE if rewrite else INDEX_BUILD if index_build else SCAN
            return Finding(kind, relation.name, lock)
        if lock is None or lock < Lock.SHARE or (already is not None and already >= lock):
            return None  # weak, or listed for an earlier statement of the file
        return Finding(None, relation.name, lock)


def is_transaction_control(statement: Statement) -> bool:
    """``BEGIN``, ``COMMIT;``, ``rollback``...: the file manages its own transaction there."""
    words = statement.text.split(None, 1)
    return bool(words) and words[0].upper().rstrip(";") in TRANSACTION_CONTROL_WORDS


def refused_in_transaction(statement: Statement) -> bool:
    """A statement PostgreSQL refuses in a transaction block (transaction control excepted)."""
    decision = transaction_mode(statement.text, [statement])
    return decision.mode is TransactionMode.NO_TRANSACTION and not is_transaction_control(statement)


def documented_findings(
    doc: Documented,
    built_on: str | None,
    existing: set[str],
    resolve: Callable[[str], str],
) -> list[Finding]:
    """The findings of a statement classified from the documentation (not observed).

    ``built_on`` is the table a concurrent index build names, ``existing`` the relations that
    existed before, ``resolve`` a table name as written -> its schema-qualified name.
    """
    found = []
    for target in doc.targets or (built_on or "",):
        name = resolve(target) if target and not target.startswith("(") else target
        if doc.kind and name and not name.startswith("(") and name not in existing:
            continue  # created by this release: empty, not a hazard
        found.append(Finding(doc.kind, name, doc.lock, observed=False, note=doc.note))
    return found


# --- statements of a non-transactional file that cannot run twice ------------------------------

# A second run refused for these reasons says nothing about the statement: a procedure that
# commits, a statement that cannot run in the transaction the second run is tried in.
NOT_RERUN_FAILURES = ("2D000", "25001")
COLUMN_OF_RE = re.compile(r'column "(?P<column>[^"]+)" of relation "(?P<table>[^"]+)"')
QUOTED_RE = re.compile(r'"(?P<name>[^"]+)"')
UNNAMED_CONCURRENT_INDEX_RE = re.compile(r"^CREATE (UNIQUE )?INDEX CONCURRENTLY\b")
THE_STATEMENT = "(statement)"  # a failure that names no object: waived with *


def reruns_on_scratch(statement: Statement) -> bool:
    """Whether a statement PostgreSQL refuses in a transaction may run a second time, bare, on
    the scratch database: one that fails changes nothing, one that succeeds must not add
    anything (a CREATE INDEX CONCURRENTLY without a name would build a second index)."""
    if not documented(statement.text).runs_on_scratch:
        return False
    unnamed = UNNAMED_CONCURRENT_INDEX_RE.match(normalized(statement.text))
    return not (unnamed and concurrent_index(statement.text) is None)


def rerun_finding(
    sqlstate: str | None, message: str, resolve: Callable[[str], str]
) -> Finding | None:
    """The finding for a statement of a non-transactional file whose second run failed with
    ``sqlstate`` and ``message``: a failure after it leaves it applied and the file unrecorded,
    and the re-run of the file fails there. ``resolve`` qualifies a relation's name.

    >>> rerun_finding("42P07", 'relation "t_a" already exists', lambda n: "public." + n)
    Finding(kind='rerun', relation='public.t_a', ...)
    """
    if sqlstate in NOT_RERUN_FAILURES:
        return None
    column = COLUMN_OF_RE.search(message)
    quoted = QUOTED_RE.search(message)
    if column:
        name = f"{resolve(column['table'])}.{column['column']}"
    else:
        name = resolve(quoted["name"]) if quoted else THE_STATEMENT
    change = f"a second run fails: {message} ({sqlstate})"
    return Finding(RERUN, name, change=change)


@dataclass(frozen=True)
class Located:
    migration: Migration
    statement: Statement
    finding: Finding


# --- a batch file's bounds ----------------------------------------------------------------------

COMPARISON = r"\s*(?:<=|>=|<|>|=)\s*"


def _bounds_key(alias: str, key: str, parameter: str, conditions: str) -> bool:
    """Whether ``conditions`` (a plan node's, as EXPLAIN VERBOSE prints them) compare the
    column ``key`` of ``alias`` with the parameter, either way round: ``(t.id >= $1)``,
    ``($1 <= t.id)``, a cast of the parameter too."""
    column = rf'"?{re.escape(alias)}"?\."?{re.escape(key)}"?(?![\w"])'
    param = rf"\(?\{parameter}(?!\d)\)?(?:::[\w ]+)?"
    pattern = rf"{column}{COMPARISON}{param}|{param}{COMPARISON}{column}"
    return re.search(pattern, conditions) is not None


def bounds_finding(table: str, key: str, scans: list[tuple[str, str]]) -> Finding | None:
    """The ``unbounded`` finding of a batch file whose statement, in PostgreSQL's generic plan
    of it, has no scan of the walked ``table`` (or of a partition of it) that compares its
    ``key`` with both $1 and $2; None when one does. ``scans`` holds each such scan node's
    alias and conditions (Index Cond, Filter...).

    >>> bounds_finding("public.t", "id", [("t", "((t.id >= $1) AND (t.id <= $2))")]) is None
    True
    >>> bounds_finding("public.t", "id", [("t", "((t.other >= $1) AND (t.other <= $2))")]).kind
    'unbounded'
    """
    for alias, conditions in scans:
        if all(_bounds_key(alias, key, bound, conditions) for bound in ("$1", "$2")):
            return None
    change = (
        f"no scan of {table} in PostgreSQL's plan of the statement compares {key} with both $1 "
        "and $2: its batches would not each take their own rows"
    )
    return Finding(UNBOUNDED, table, change=change, table=table)


# --- the waivers --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Waiver:
    kind: str
    relation: str
    reason: str
    line: int

    def covers(self, finding: Finding) -> bool:
        """``tokens`` covers public.tokens; ``tokens.scope`` covers public.tokens.scope; a
        waiver covers the one of the finding's kinds it names."""
        name = finding.relation
        return self.kind in finding.kinds and (
            self.relation in (name, ANY_RELATION) or name.endswith("." + self.relation)
        )


def waivers_for(finding: Finding, waivers: list[Waiver]) -> dict[str, Waiver]:
    """Kind -> the first waiver that covers it, for each kind of ``finding`` that is waived: a
    finding with two kinds (a dropped column: breaking and data_loss) is waived when both are."""
    found = {}
    for kind in finding.kinds:
        waiver = next((w for w in waivers if w.kind == kind and w.covers(finding)), None)
        if waiver:
            found[kind] = waiver
    return found


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


def min_rows_of(setting: int | None, has_target: bool) -> int:
    """LINT_MIN_ROWS when set; else 10,000 against a target, 0 without one (nothing is big)."""
    if setting is not None:
        return setting
    return DEFAULT_MIN_ROWS if has_target else 0


def batch_sized(
    located: Located, rows: int | None, batch_rows: int, batched: bool = False
) -> Located | None:
    """``located`` without its ``unbatched`` kind when its table is not large (fewer than
    ``batch_rows`` estimated rows on the target, or no estimate) or the file is ``batched``
    (-- migrate:batch, the form the kind asks for); None when no kind is left (an UPDATE of a
    small table is nothing)."""
    finding = located.finding
    large = rows is not None and rows >= batch_rows
    if UNBATCHED not in finding.kinds or (large and not batched):
        return located
    kinds = [kind for kind in finding.kinds if kind != UNBATCHED]
    if not kinds:
        return None
    return replace(located, finding=replace(finding, kind=kinds[0], also=tuple(kinds[1:])))


@dataclass
class Report:
    min_rows: int
    sizes: dict[str, tuple[int | None, int | None]]  # relation -> (rows, bytes) on the target
    batch_rows: int = DEFAULT_LINT_BATCH_ROWS  # LINT_BATCH_ROWS: from here a table is large
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
        """Log what one file was found to do, and count its hazards."""
        self.files += 1
        waivers = waivers_of(migration)
        used: set[Waiver] = set()
        for each in found:
            batched = migration.batch is not None
            located = batch_sized(each, self._rows(each.finding), self.batch_rows, batched)
            if located is None:
                continue
            if located.finding.kind is None:
                self._info(located)
                continue
            waived = waivers_for(located.finding, waivers)
            used.update(waived.values())
            self._hazard(located, waived)
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

    def complete(self, duration_ms: int) -> None:
        """The ``lint_complete`` event."""
        log.info(
            "lint_complete",
            files=self.files,
            hazards=self.hazards,
            waived=self.waived,
            below_min_rows=self.small,
            unwaived=self.unwaived,
            duration_ms=duration_ms,
            summary=self.summary,
        )

    def verdict(self) -> str:
        """The summary, or HazardsFoundError (exit 65) when a hazard is unwaived."""
        if self.unwaived:
            files = ", ".join(self.unwaived_files)
            message = ERR_HAZARDS.format(count=self.unwaived, files=files)
            raise HazardsFoundError(message, hazards=self.unwaived)
        return self.summary

    def _rows(self, finding: Finding) -> int | None:
        """The estimated rows on the target of the table ``finding`` is about."""
        return self.sizes.get(finding.table or finding.relation, (None, None))[0]

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

    def _hazard(self, located: Located, waived: dict[str, Waiver]) -> None:
        fields = self._fields(located)
        kinds = located.finding.kinds
        fields["kind"], fields["kinds"] = kinds[0], list(kinds)
        table = located.finding.table or located.finding.relation
        alternatives = (safe_alternative(kind, located.statement.text, table) for kind in kinds)
        fields["alternative"] = "; ".join(dict.fromkeys(a for a in alternatives if a)) or None
        self.hazards += 1
        rows = fields["rows"]
        unwaived = [kind for kind in kinds if kind not in waived]
        if not unwaived:
            self.waived += 1
            reasons = dict.fromkeys(waiver.reason for waiver in waived.values())
            log.warning("hazard", waived=True, waiver="; ".join(reasons), **fields)
        elif waived:  # one kind of the change waived, not the other: still a hazard
            if fields["file"] not in self.unwaived_files:
                self.unwaived_files.append(fields["file"])
            log.error("hazard", unwaived_kinds=unwaived, **fields)
        elif set(kinds) <= set(LOCK_KINDS) and rows is not None and rows < self.min_rows:
            self.small += 1
            log.warning("hazard", below_min_rows=self.min_rows, **fields)
        else:
            if fields["file"] not in self.unwaived_files:
                self.unwaived_files.append(fields["file"])
            log.error("hazard", **fields)
