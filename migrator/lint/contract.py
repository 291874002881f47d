"""Breaking changes and data loss: what a statement changed, between two readings of the scratch
database's catalog (lint/linter.py reads them), of the objects the running application may use
(tables, views, columns, functions, types, enum values), and the rows a statement removes.

A catalog maps (kind, name) to (type or relkind, identity), as lint/linter.py reads it:

>>> scope = {("column", "public.tokens.scope"): ("text", "16390.3")}
>>> [(f.kind, f.change) for f in compare(baseline=scope, before=scope, after={})]
[('breaking', 'column dropped'), ('data_loss', 'column dropped with its data')]
>>> removing_command("DELETE 12")
'DELETE'
"""

from __future__ import annotations

import re

from migrator.lint.hazards import BREAKING, DATA_LOSS, Finding, Lock

# Command tags (from the server, not the SQL text) of statements that remove rows.
REMOVING_TAGS = ("DELETE", "TRUNCATE", "MERGE")
TABLE_KINDS = ("r", "p")  # relations that hold rows of their own

WITHOUT_DEFAULT = " NOT NULL without a default"
Key = tuple[str, str]
Catalog = dict[Key, tuple[str, str]]


def _finding(kind: str, name: str, change: str, table: str | None = None) -> Finding:
    return Finding(kind, name, change=change, table=table)


def _renamed(catalog: Catalog, kind: str, ident: str) -> str | None:
    return next((name for (k, name), (_, i) in catalog.items() if k == kind and i == ident), None)


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


def compare(baseline: Catalog, before: Catalog, after: Catalog) -> list[Finding]:
    """What a statement changed (``before`` -> ``after``) of what existed at ``baseline``."""
    gone = [key for key in before if key in baseline and key not in after]
    gone_parents = {name for kind, name in gone if kind in ("table", "type")}
    found: list[Finding] = []
    for kind, name in gone:
        value, ident = before[(kind, name)]
        table = name.rsplit(".", 1)[0] if kind == "column" else name
        parent = name.rsplit(".", 1)[0] if kind in ("column", "enum value") else None
        if parent in gone_parents:
            continue  # its table or type is reported
        new_name = _renamed(after, kind, ident)
        if new_name:
            found.append(_finding(BREAKING, name, f"{kind} renamed to {new_name}"))
            continue
        found.append(_finding(BREAKING, name, f"{kind} dropped"))
        if kind == "column" or (kind == "table" and value in TABLE_KINDS):
            found.append(_finding(DATA_LOSS, name, f"{kind} dropped with its data", table))
    for key, (value, _) in before.items():
        now = after.get(key)
        if key not in baseline or now is None:
            continue
        kind, name = key
        old_type, new_type = (
            value.removesuffix(WITHOUT_DEFAULT),
            now[0].removesuffix(WITHOUT_DEFAULT),
        )
        if now[0].endswith(WITHOUT_DEFAULT) and not value.endswith(WITHOUT_DEFAULT):
            change = "column becomes NOT NULL without a default (INSERTs that omit it fail)"
        elif relaxes(old_type, new_type):
            continue
        else:
            change = f"{kind} changes from {value} to {now[0]}"
        found.append(_finding(BREAKING, name, change))
    known = {ident for (kind, _), (_, ident) in before.items() if kind == "column"}
    tables = {
        name
        for (kind, name), (value, _) in baseline.items()
        if kind == "table" and value in TABLE_KINDS
    }
    for (kind, name), (value, ident) in after.items():
        existing_table = name.rsplit(".", 1)[0] in tables
        new_column = kind == "column" and ident not in known and existing_table
        if new_column and value.endswith(WITHOUT_DEFAULT):
            change = "new column is NOT NULL without a default (INSERTs that omit it fail)"
            found.append(_finding(BREAKING, name, change))
    return found


def removing_command(tag: str) -> str | None:
    """``DELETE`` for the command tag ``DELETE 12``: a command that removes rows, else None."""
    return tag.split()[0] if tag.startswith(REMOVING_TAGS) else None


def removed_rows(
    tables: dict[int, str],
    command: str,
    locks: tuple[dict[int, Lock], dict[int, Lock]],
    deleted: tuple[dict[int, int], dict[int, int]],
) -> list[Finding]:
    """The tables ``command`` (``DELETE``, ``TRUNCATE``, ``MERGE``) removed rows from, given the
    locks held on ``tables`` and their deleted-row counters (before, after the statement)."""
    (locks_before, locks_after), (deleted_before, deleted_after) = locks, deleted
    found = []
    for oid, lock in locks_after.items():
        # The table the statement writes: a lock it did not hold before, or rows gone.
        fresh = lock >= Lock.ROW_EXCLUSIVE and locks_before.get(oid, Lock.ACCESS_SHARE) < lock
        if fresh or deleted_after.get(oid, 0) > deleted_before.get(oid, 0):
            name = tables[oid]
            found.append(_finding(DATA_LOSS, name, f"rows removed ({command})", name))
    return found
