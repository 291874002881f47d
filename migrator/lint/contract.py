"""Breaking changes and data loss: what the running application, which knows the catalog at the
release's start (the baseline), meets in a later reading of the scratch database's catalog
(lint/linter.py reads them), of the objects it may use (tables, views, columns, functions,
types, enum values), and the rows a statement removes. ``Release`` says which of them other
sessions can see, and when: at each commit, never between two statements of one transaction.

A catalog maps (kind, name) to (type or relkind, identity), as lint/linter.py reads it:

>>> tokens = {("table", "public.tokens"): ("r", "16390")}
>>> scope = {**tokens, ("column", "public.tokens.scope"): ("text", "16390.3")}
>>> [(f.kinds, f.change) for f in compare(baseline=scope, state=tokens)]
[(('breaking', 'data_loss'), 'column dropped with its data')]
>>> row_command("DELETE 12")
'DELETE'
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Generic, TypeVar

from migrator.lint.hazards import BREAKING, DATA_LOSS, KINDS, UNBATCHED, Finding, Lock

# Command tags (from the server, not the SQL text) of statements that remove rows.
REMOVING_TAGS = ("DELETE", "TRUNCATE", "MERGE")
# ... and of those the batched form (-- migrate:batch) does in short transactions instead: in
# one statement over a large table they hold their row locks to the end (Report decides what
# is large, from the target's size).
BATCHABLE_TAGS = ("UPDATE", "DELETE")
TABLE_KINDS = ("r", "p")  # relations that hold rows of their own
RELKIND_NAMES = {"r": "table", "p": "partitioned table", "m": "materialized view",
                 "f": "foreign table", "v": "view"}  # fmt: skip

# A column that refuses NULL (NOT NULL, a CHECK (col IS NOT NULL), its domain's NOT NULL) and
# has no default (its own or its domain's): INSERTs that omit it fail.
WITHOUT_DEFAULT = " NOT NULL without a default"
PARTITION_OF = " partition of "  # a table's value: r partition of public.audit
# A function's value: returns integer; defaults 1 (pg_get_function_result, pronargdefaults).
FUNCTION_RE = re.compile(r"^returns (?P<result>.*); defaults (?P<defaults>\d+)$")
Key = tuple[str, str]
Catalog = dict[Key, tuple[str, str]]
FindingKey = tuple[str, tuple[str, ...]]


def _finding(kind: str, name: str, change: str, table: str | None = None) -> Finding:
    return Finding(kind, name, change=change, table=table)


VARCHAR_RE = re.compile(r"^character varying(?:\((\d+)\))?$")


def widens(old: str, new: str) -> bool:
    """varchar(10) -> varchar(20), varchar or text: every value the old type held still fits,
    and readers see the same strings."""
    old_match = VARCHAR_RE.match(old)
    if not old_match:
        return False
    if new == "text":
        return True
    new_match = VARCHAR_RE.match(new)
    if not new_match:
        return False
    return new_match[1] is None or (
        old_match[1] is not None and int(new_match[1]) >= int(old_match[1])
    )


def relaxes(old: str, new: str) -> bool:
    """The same type (a column that now takes NULLs, or got a default) or a widened one: every
    INSERT of the running release still works, and it reads the values it wrote.

    >>> relaxes("bigint", "bigint"), relaxes("character varying(10)", "text")
    (True, True)
    """
    return old == new or widens(old, new)


def _signature(name: str) -> tuple[str, list[str]]:
    """``public.f(a integer, b text)`` -> (``public.f``, [``a integer``, ``b text``])."""
    head, _, args = name.partition("(")
    args = args.removesuffix(")")
    return head, args.split(", ") if args else []


def still_resolves(name: str, value: str, state: Catalog) -> str | None:
    """The function of ``state`` that every call of the gone function ``name`` still resolves
    to: same schema and name, same result, the same arguments first, then only arguments with
    a default (``f(a int)`` replaced by ``f(a int, b int DEFAULT 0)``); None when there is none.

    >>> still_resolves("public.f(a integer)", "returns integer; defaults 0",
    ...                {("function", "public.f(a integer, b integer)"):
    ...                 ("returns integer; defaults 1", "7")})
    'public.f(a integer, b integer)'
    """
    head, args = _signature(name)
    old = FUNCTION_RE.match(value)
    for (kind, other), (other_value, _) in state.items():
        new = FUNCTION_RE.match(other_value)
        if kind != "function" or not old or not new:
            continue
        other_head, other_args = _signature(other)
        extra = len(other_args) - len(args)
        if (
            other_head == head
            and extra > 0
            and other_args[: len(args)] == args
            and new["result"] == old["result"]
            and int(new["defaults"]) >= extra + int(old["defaults"])
        ):
            return other
    return None


def _column_change(old: str, new: str) -> str | None:
    if new.endswith(WITHOUT_DEFAULT) and not old.endswith(WITHOUT_DEFAULT):
        return "column becomes NOT NULL without a default (INSERTs that omit it fail)"
    if relaxes(old.removesuffix(WITHOUT_DEFAULT), new.removesuffix(WITHOUT_DEFAULT)):
        return None
    return f"column changes from {old} to {new}"


def _function_change(old: str, new: str) -> str | None:
    before, after = FUNCTION_RE.match(old), FUNCTION_RE.match(new)
    if not before or not after:
        return None if old == new else f"function changes from {old} to {new}"
    if before["result"] != after["result"]:
        return f"function returns {after['result']} instead of {before['result']}"
    if int(after["defaults"]) < int(before["defaults"]):
        return "function loses a default (calls that omit that argument fail)"
    return None


def _relation_change(old: str, new: str) -> str | None:
    """A view replaced by a table of the same name: its rows no longer follow the tables the
    view read. (A table replaced by a view, the rename path, is judged by its columns.)"""
    old_kind, new_kind = old.split(PARTITION_OF)[0], new.split(PARTITION_OF)[0]
    if old_kind == "v" and new_kind != "v":
        kind = RELKIND_NAMES.get(new_kind, new_kind)
        return f"view replaced by a {kind} (it no longer follows the tables the view read)"
    return None


CHANGES = {"column": _column_change, "function": _function_change, "table": _relation_change}


def _holds_rows(kind: str, value: str) -> bool:
    return kind == "column" or (kind == "table" and value.split(PARTITION_OF)[0] in TABLE_KINDS)


@dataclass(frozen=True)
class _State:
    """A catalog reading, with its objects found by identity too (a rename keeps it)."""

    catalog: Catalog
    by_identity: dict[tuple[str, str], str]

    @classmethod
    def of(cls, catalog: Catalog) -> _State:
        return cls(catalog, {(k, ident): name for (k, name), (_, ident) in catalog.items()})


def _judge(kind: str, name: str, value: str, ident: str, state: _State) -> list[Finding]:
    """What became of one object of the baseline in ``state``: by name, as the application
    finds it, and by identity, for its data and its renames."""
    parent = name.rsplit(".", 1)[0]
    parent_kind = {"column": "table", "enum value": "type"}.get(kind)
    if parent_kind and (parent_kind, parent) not in state.catalog:
        return []  # its table or type is reported
    partition_of = value.partition(PARTITION_OF)[2] if kind == "table" else ""
    if partition_of and ("table", partition_of) not in state.catalog:
        return []  # its partitioned table is reported
    table = parent if kind == "column" else name if kind == "table" else None
    now = state.catalog.get((kind, name))
    moved = state.by_identity.get((kind, ident))
    survives = moved is not None
    if kind == "column" and moved and moved.rsplit(".", 1)[0] != parent:
        moved = None  # its table was renamed: the name the application reads lost a column
    # A column's data is reported with its table when the table itself is gone.
    table_kept = kind != "column" or ("table", ident.split(".")[0]) in state.by_identity
    lost = _holds_rows(kind, value) and not survives and table_kept
    found = []
    if now is None:
        if moved:
            return [_finding(BREAKING, name, f"{kind} renamed to {moved}", table)]
        if kind == "function" and still_resolves(name, value, state.catalog):
            return []
        change = f"{kind} dropped with its data" if lost else f"{kind} dropped"
        also = (DATA_LOSS,) if lost else ()
        return [Finding(BREAKING, name, change=change, table=table, also=also)]
    same_table = now[1].split(".")[0] == ident.split(".")[0]
    if now[1] != ident and (kind == "table" or same_table):  # another object took its name
        if moved and kind == "column":
            renamed = f"column renamed to {moved} (a new column took its name)"
            found.append(_finding(BREAKING, name, renamed, table))
        elif lost:
            found.append(_finding(DATA_LOSS, name, f"{kind} dropped with its data "
                                  f"(a new {kind} took its name)", table))  # fmt: skip
    judge = CHANGES.get(kind)
    narrowed = judge(value, now[0]) if judge else None
    if narrowed:
        found.append(_finding(BREAKING, name, narrowed, table))
    return found


def _merged(findings: list[Finding]) -> list[Finding]:
    """One finding per object, carrying every kind of what happened to it."""
    merged: dict[str, Finding] = {}
    for finding in findings:
        first = merged.get(finding.relation)
        if first is None:
            merged[finding.relation] = finding
            continue
        kinds = sorted({*first.kinds, *finding.kinds}, key=KINDS.index)
        merged[finding.relation] = replace(
            first,
            kind=kinds[0],
            also=tuple(kinds[1:]),
            change=f"{first.change}; {finding.change}",
            table=first.table or finding.table,
        )
    return list(merged.values())


def compare(baseline: Catalog, state: Catalog) -> list[Finding]:
    """What the running application, which knows ``baseline``, meets in ``state``: one finding
    per object of the baseline dropped, renamed or narrowed, and per new column of one of its
    tables that INSERTs cannot omit."""
    reading = _State.of(state)
    found = []
    for (kind, name), (value, ident) in baseline.items():
        found += _judge(kind, name, value, ident, reading)
    known = {ident for (kind, _), (_, ident) in baseline.items() if kind == "column"}
    tables = {
        name
        for (kind, name), (value, _) in baseline.items()
        if kind == "table" and value.split(PARTITION_OF)[0] in TABLE_KINDS
    }
    for (kind, name), (value, ident) in state.items():
        table = name.rsplit(".", 1)[0]
        new_column = kind == "column" and (kind, name) not in baseline and ident not in known
        if new_column and table in tables and value.endswith(WITHOUT_DEFAULT):
            change = "new column is NOT NULL without a default (INSERTs that omit it fail)"
            found.append(_finding(BREAKING, name, change, table))
    return _merged(found)


def row_command(tag: str) -> str | None:
    """``DELETE`` for the command tag ``DELETE 12``: a command that removes rows or that the
    batched form does (``UPDATE``), else None."""
    command = tag.split()[0] if tag else ""
    return command if command in (*REMOVING_TAGS, *BATCHABLE_TAGS) else None


def written_rows(
    tables: dict[int, str],
    command: str,
    locks: tuple[dict[int, Lock], dict[int, Lock]],
    deleted: tuple[dict[int, int], dict[int, int]],
    parents: Mapping[int, int] | None = None,
) -> list[Finding]:
    """The tables ``command`` (``DELETE``, ``TRUNCATE``, ``MERGE``, ``UPDATE``) removed or
    changed rows of, given the locks held on ``tables`` and their deleted- or updated-row
    counters (before, after the statement). ``parents`` maps a partition to its partitioned
    table: a partition whose parent lost rows too is folded into it (one finding for one
    statement). A ``DELETE`` is data loss and unbatched (one change, two kinds), an
    ``UPDATE`` unbatched only.

    >>> [(f.kinds, f.change) for f in written_rows({1: "public.t"}, "UPDATE",
    ...                                            ({}, {1: Lock.ROW_EXCLUSIVE}), ({}, {}))]
    [(('unbatched',), 'rows updated in one statement (UPDATE)')]
    """
    (locks_before, locks_after), (deleted_before, deleted_after) = locks, deleted
    written = []
    for oid, lock in locks_after.items():
        # The table the statement writes: a lock it did not hold before, or rows gone.
        fresh = lock >= Lock.ROW_EXCLUSIVE and locks_before.get(oid, Lock.ACCESS_SHARE) < lock
        if fresh or deleted_after.get(oid, 0) > deleted_before.get(oid, 0):
            written.append(oid)
    removes = command in REMOVING_TAGS
    kinds = ((DATA_LOSS,) if removes else ()) + ((UNBATCHED,) if command in BATCHABLE_TAGS else ())
    change = f"rows {'removed' if removes else 'updated in one statement'} ({command})"
    found = []
    for oid in written:
        if (_ancestors(oid, parents or {}) - {oid}) & set(written):
            continue
        name = tables[oid]
        found.append(Finding(kinds[0], name, change=change, table=name, also=kinds[1:]))
    return found


def _ancestors(oid: int, parents: Mapping[int, int]) -> set[int]:
    found: set[int] = set()
    while oid in parents and parents[oid] not in found:
        oid = parents[oid]
        found.add(oid)
    return found


# --- what other sessions see ------------------------------------------------------------------

Statement = TypeVar("Statement")


def key_of(finding: Finding) -> FindingKey:
    """A change, whatever its message says now: a column renamed twice is one rename."""
    return finding.relation, finding.kinds


@dataclass
class Release(Generic[Statement]):
    """What other sessions see of a release, which they meet at each commit: after each
    statement of a non-transactional file, at the end of a transactional one. A change is
    reported once, at the first commit that shows it, for the statement since which it has
    been there (a function dropped and created again in one transaction is never seen)."""

    baseline: Catalog
    shown: set[FindingKey] = field(default_factory=set)
    _since: dict[FindingKey, tuple[Statement, Finding]] = field(default_factory=dict)
    _rows: dict[FindingKey, tuple[Statement, Finding]] = field(default_factory=dict)

    def observe(self, statement: Statement, state: Catalog) -> None:
        """The catalog after ``statement``: what it changed stays attributed to it."""
        now = {key_of(finding): finding for finding in compare(self.baseline, state)}
        self._since = {
            key: (self._since[key][0] if key in self._since else statement, finding)
            for key, finding in now.items()
        }

    def removed(self, statement: Statement, findings: list[Finding]) -> None:
        """Rows ``statement`` removed (never undone by a later statement)."""
        for finding in findings:
            self._rows.setdefault(key_of(finding), (statement, finding))

    def commit(self) -> list[tuple[Statement, Finding]]:
        """What other sessions now see and were not shown yet, with the statement behind it."""
        visible = [*self._since.items(), *self._rows.items()]
        self._rows = {}
        found = []
        for key, (statement, finding) in visible:
            if key not in self.shown:
                self.shown.add(key)
                found.append((statement, finding))
        return found
