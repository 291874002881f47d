"""What the lint's measurements mean: lock strengths, hazard kinds, the standard safe alternative
for each, and what PostgreSQL documents for statements that cannot run inside a transaction.

>>> is_hazard(Lock.ACCESS_EXCLUSIVE, rewrite=True, scanned=False, relkind="r")
True
>>> safe_alternative("scan", "ALTER TABLE t ALTER COLUMN c SET NOT NULL")
'ADD CONSTRAINT ... CHECK (c IS NOT NULL) NOT VALID, then VALIDATE CONSTRAINT in a later ...'
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import IntEnum

from migrator.files.sql import strip_comments


class Lock(IntEnum):
    """Table lock modes, weakest first (PostgreSQL's "Explicit Locking", table 13.2)."""

    ACCESS_SHARE = 1
    ROW_SHARE = 2
    ROW_EXCLUSIVE = 3
    SHARE_UPDATE_EXCLUSIVE = 4
    SHARE = 5
    SHARE_ROW_EXCLUSIVE = 6
    EXCLUSIVE = 7
    ACCESS_EXCLUSIVE = 8

    @classmethod
    def from_pg_locks(cls, mode: str) -> Lock:
        """``AccessExclusiveLock`` (pg_locks.mode) -> Lock.ACCESS_EXCLUSIVE."""
        words = re.findall(r"[A-Z][a-z]+", mode.removesuffix("Lock"))
        return cls["_".join(word.upper() for word in words)]

    @property
    def sql_name(self) -> str:
        return self.name.replace("_", " ")


# The weakest lock that blocks writes (INSERT/UPDATE/DELETE take ROW EXCLUSIVE) and reads.
BLOCKS_WRITES = Lock.SHARE
BLOCKS_READS = Lock.ACCESS_EXCLUSIVE
# A materialized view is never written by the application: only a lock that blocks reads matters.
MATERIALIZED_VIEW = "m"

REWRITE = "rewrite"
SCAN = "scan"
INDEX_BUILD = "index_build"
LOCK_KINDS = (REWRITE, SCAN, INDEX_BUILD)
BREAKING = "breaking"  # what the running release uses is dropped, renamed or narrowed
DATA_LOSS = "data_loss"  # rows or columns that existed before the release are removed
RERUN = "rerun"  # a statement of a non-transactional file fails when the file runs again
# An UPDATE or DELETE of a large table in one statement: its row locks held to its end, its
# WAL written at once (LINT_BATCH_ROWS says large; -- migrate:batch is the way).
UNBATCHED = "unbatched"
# A batch file whose statement does not select the walked table's rows by the key between $1
# and $2 (in PostgreSQL's plan of it): its batches would not each take their own rows.
UNBOUNDED = "unbounded"
KINDS = (*LOCK_KINDS, BREAKING, DATA_LOSS, RERUN, UNBATCHED, UNBOUNDED)
# Where a kind's alternative names the finding's table.
TABLE_PLACEHOLDER = "<table>"


@dataclass(frozen=True)
class Finding:
    """One thing a statement did to an object that existed before the file (or the release)."""

    kind: str | None  # a hazard kind, None for a brief lock
    relation: str  # the table, or for breaking changes the object (public.tokens.scope)
    lock: Lock | None = None
    observed: bool = True  # False: classified from the documentation, not measured
    note: str | None = None
    change: str | None = None  # breaking / data_loss / rerun: what happened to the object
    table: str | None = None  # where the object's rows live, for the target's size
    also: tuple[str, ...] = ()  # the change's other kinds (a dropped column: data_loss too)

    @property
    def kinds(self) -> tuple[str, ...]:
        """Every kind of the change: one change is one finding, whatever its kinds."""
        return (self.kind, *self.also) if self.kind else ()


def is_hazard(lock: Lock | None, *, rewrite: bool, scanned: bool, relkind: str) -> bool:
    """A rewrite or full scan while a lock that blocks writes (or, for a view, reads) is held."""
    if lock is None or not (rewrite or scanned):
        return False
    return lock >= (BLOCKS_READS if relkind == MATERIALIZED_VIEW else BLOCKS_WRITES)


def normalized(statement: str) -> str:
    """Upper case, comments out, whitespace collapsed: what the patterns below read."""
    return " ".join(strip_comments(statement).upper().split())


# (kind, pattern on the normalized statement, alternative); the first match wins.
ALTERNATIVES: tuple[tuple[str, re.Pattern[str], str], ...] = tuple(
    (kind, re.compile(pattern), text)
    for kind, pattern, text in (
        (INDEX_BUILD, r"\bADD\b.*\b(PRIMARY KEY|UNIQUE)\b",
         "CREATE UNIQUE INDEX CONCURRENTLY (a file with -- migrate:no-transaction), then "
         "ALTER TABLE ... ADD CONSTRAINT ... PRIMARY KEY / UNIQUE USING INDEX"),
        (INDEX_BUILD, r"^REINDEX\b", "REINDEX ... CONCURRENTLY"),
        (INDEX_BUILD, r"^CREATE\b.*\bINDEX\b",
         "CREATE INDEX CONCURRENTLY, in a file of its own (run outside a transaction)"),
        (SCAN, r"\bSET NOT NULL\b",
         "ADD CONSTRAINT ... CHECK (column IS NOT NULL) NOT VALID, then VALIDATE CONSTRAINT in a "
         "later transaction; SET NOT NULL then skips the scan (drop the CHECK afterwards)"),
        (SCAN, r"\bATTACH PARTITION\b",
         "first add a CHECK constraint matching the partition bound (NOT VALID, then VALIDATE "
         "CONSTRAINT): ATTACH PARTITION then skips the scan"),
        (SCAN, r"\bADD\b.*\b(CHECK|FOREIGN KEY|REFERENCES)\b",
         "ADD CONSTRAINT ... NOT VALID, then VALIDATE CONSTRAINT in a later transaction "
         "(it takes SHARE UPDATE EXCLUSIVE: reads and writes go on)"),
        (SCAN, r"^(UPDATE|DELETE|INSERT|SELECT|WITH)\b",
         "move the data change into a file of its own: here it reads the table while an "
         "earlier statement of the file holds a lock that blocks writes"),
        (REWRITE, r"\b(ALTER COLUMN|ALTER)\b.*\bTYPE\b",
         "expand and contract: add a column of the new type, backfill it in batches, "
         "switch the application, then drop the old column"),
        (REWRITE, r"\bADD\b",
         "add the column without the volatile default (a constant default needs no rewrite), "
         "then backfill it in batches"),
        (REWRITE, r"^REFRESH MATERIALIZED VIEW\b",
         "REFRESH MATERIALIZED VIEW CONCURRENTLY (needs a unique index on the view)"),
        (REWRITE, r"^(CLUSTER|VACUUM)\b",
         "pg_repack (rewrites the table online), or a maintenance window"),
        (BREAKING, r"",
         "expand and contract: add the new object beside the old one, deploy the release that "
         "uses it, and drop or rename the old one in a later release (a rename can go through a "
         "view)"),
        (DATA_LOSS, r"",
         "keep a backup (CREATE TABLE ... AS SELECT) and remove the data in a later release, once "
         "no running release reads it"),
        (RERUN, r"",
         "make the statement re-runnable (CREATE ... IF NOT EXISTS, ADD COLUMN IF NOT EXISTS, "
         "DROP ... IF EXISTS, INSERT ... ON CONFLICT DO NOTHING), or move it to a transactional "
         "file: after a failure part-way the file is run again from its first statement"),
        (UNBATCHED, r"",
         f"a batched data migration: a post file (-- migrate:phase post) with -- migrate:batch "
         f"table={TABLE_PLACEHOLDER} key=<an indexed column, e.g. its primary key> and the "
         "statement selecting its rows with WHERE key BETWEEN $1 AND $2: the runner runs it in "
         "short transactions, resumable and throttled (docs/writing-migrations.md)"),
        (UNBOUNDED, r"",
         f"select the rows of {TABLE_PLACEHOLDER} by the key the header names, WHERE <key> "
         "BETWEEN $1 AND $2 on that table (the bounds are values of its key, batch after batch)"),
    )
)  # fmt: skip


def safe_alternative(kind: str, statement: str, table: str | None = None) -> str | None:
    """The standard safe way to do what ``statement`` does (to ``table``, when the way names
    it), None when there is none.

    >>> "-- migrate:batch table=public.t key=" in safe_alternative("unbatched", "", "public.t")
    True
    """
    text = normalized(statement)
    for candidate, pattern, alternative in ALTERNATIVES:
        if candidate == kind and pattern.search(text):
            if table:
                alternative = alternative.replace(TABLE_PLACEHOLDER, table)
            # The SET NOT NULL alternative names the column when the statement does.
            column = re.search(r"ALTER (?:COLUMN )?(\S+) SET NOT NULL", text)
            if column:
                return alternative.replace("(column IS", f"({column[1].lower()} IS")
            return alternative
    return None


# --- statements PostgreSQL refuses inside a transaction ----------------------------------------


@dataclass(frozen=True)
class Documented:
    """What PostgreSQL's documentation says a non-transactional statement locks and does."""

    kind: str | None  # a hazard kind, or None when it is safe
    lock: Lock | None
    note: str
    targets: tuple[str, ...] = ()  # the tables it names, as written
    runs_on_scratch: bool = True  # cluster-wide statements are not run on the scratch database


OPTIONS_RE = re.compile(r"^\s*\([^)]*\)")
COLUMN_LIST_RE = re.compile(r"\([^)]*\)")
NOT_OBSERVED = (
    "not observed (it cannot run inside a transaction): classified from the documentation"
)


def _targets(rest: str) -> tuple[str, ...]:
    """Table names of ``a, b (col1, col2)`` after VACUUM's options: column lists dropped."""
    names = (name.strip() for name in COLUMN_LIST_RE.sub("", rest).split(","))
    return tuple(name for name in names if name)


def documented(statement: str) -> Documented:
    """Classify a statement that cannot run in a transaction block, from PostgreSQL's docs.

    >>> documented("VACUUM (FULL) tokens").kind
    'rewrite'
    """
    text = " ".join(strip_comments(statement).split())
    upper = text.upper()
    if (
        re.match(
            r"^(CREATE (UNIQUE )?INDEX|DROP INDEX|REINDEX \S+ CONCURRENTLY|REINDEX "
            r"\(.*\) \S+ CONCURRENTLY)",
            upper,
        )
        and "CONCURRENTLY" in upper
    ):
        return Documented(
            None,
            Lock.SHARE_UPDATE_EXCLUSIVE,
            "concurrent build or drop: SHARE UPDATE EXCLUSIVE, reads and writes go on",
        )
    if "DETACH PARTITION" in upper:
        return Documented(
            None,
            Lock.SHARE_UPDATE_EXCLUSIVE,
            "DETACH PARTITION CONCURRENTLY: SHARE UPDATE EXCLUSIVE on the parent",
        )
    vacuum = re.match(r"^VACUUM\b(.*)$", text, re.IGNORECASE)
    if vacuum:
        rest = vacuum[1]
        options = OPTIONS_RE.match(rest)
        full = bool(re.match(r"^\s*FULL\b", rest, re.IGNORECASE)) or bool(
            options and re.search(r"\bFULL\b(?!\s+(FALSE|OFF|0)\b)", options[0], re.IGNORECASE)
        )
        rest = re.sub(
            r"^\s*((FULL|FREEZE|VERBOSE|ANALYZE)\b\s*)*",
            "",
            OPTIONS_RE.sub("", rest),
            flags=re.IGNORECASE,
        )
        targets = _targets(rest) or ("(every table)",)
        if full:
            return Documented(
                REWRITE,
                Lock.ACCESS_EXCLUSIVE,
                "VACUUM FULL rewrites the table under ACCESS EXCLUSIVE",
                targets,
            )
        return Documented(
            None,
            Lock.SHARE_UPDATE_EXCLUSIVE,
            "VACUUM: SHARE UPDATE EXCLUSIVE, reads and writes go on",
            targets,
        )
    if upper.startswith("CLUSTER"):
        return Documented(
            REWRITE,
            Lock.ACCESS_EXCLUSIVE,
            "CLUSTER rewrites every clustered table under ACCESS EXCLUSIVE",
            ("(every clustered table)",),
        )
    reindex = re.match(r"^REINDEX (\(.*?\) )?(SCHEMA|DATABASE|SYSTEM)\b ?(\S*)", upper)
    if reindex:
        return Documented(
            INDEX_BUILD,
            Lock.SHARE,
            f"REINDEX {reindex[2]} rebuilds every index under SHARE locks",
            (f"({reindex[2].lower()} {reindex[3].lower()})".replace(" )", ")"),),
        )
    return Documented(None, None, "touches no table of the database", runs_on_scratch=False)
