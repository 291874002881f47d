"""Breaking changes and data loss, read from the scratch database's catalog before and after each
statement: the objects the running application may use (tables, views, columns, functions,
types, enum values) and the rows a statement removes.

>>> observer = ContractObserver(baseline)
>>> observer.after(conn, statement, "DROP TABLE")
[Finding(kind='data_loss', relation='public.legacy', ...)]
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import psycopg

from migrator.hazards import BREAKING, DATA_LOSS, Finding, Lock
from migrator.sql import Statement

USER_SCHEMAS = (
    "n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'"
)
NOT_HISTORY = "(n.nspname, c.relname) <> ('public', 'schema_migrations')"
# (kind, name) -> (value, identity): the identity survives a rename, the value is the contract.
CATALOG = f"""
SELECT 'table', format('%I.%I', n.nspname, c.relname), c.relkind::text, c.oid::text
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') AND {USER_SCHEMAS} AND {NOT_HISTORY}
UNION ALL
SELECT 'column', format('%I.%I.%I', n.nspname, c.relname, a.attname),
       format_type(a.atttypid, a.atttypmod)
       || CASE WHEN a.attnotnull AND NOT a.atthasdef AND a.attidentity = '' AND a.attgenerated = ''
               THEN ' NOT NULL without a default' ELSE '' END,
       c.oid::text || '.' || a.attnum::text
FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
  AND {USER_SCHEMAS} AND {NOT_HISTORY}
UNION ALL
SELECT 'function', format('%I.%I(%s)', n.nspname, p.proname,
       pg_get_function_identity_arguments(p.oid)), '', p.oid::text
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
# pg_stat views are snapshotted inside a transaction: drop the snapshot before each read.
CLEAR_STATS_SNAPSHOT = "SELECT pg_stat_clear_snapshot()"
ROWS_DELETED = """
SELECT relid, n_tup_del FROM pg_stat_xact_user_tables WHERE relid = ANY(%s)"""
HELD_LOCKS = """
SELECT relation, mode FROM pg_locks
WHERE pid = pg_backend_pid() AND locktype = 'relation' AND granted AND relation = ANY(%s)"""
# Command tags (from the server, not the SQL text) of statements that remove rows.
REMOVING_TAGS = ("DELETE", "TRUNCATE", "MERGE")
TABLE_KINDS = ("r", "p")  # relations that hold rows of their own

WITHOUT_DEFAULT = " NOT NULL without a default"
Key = tuple[str, str]
Catalog = dict[Key, tuple[str, str]]


def held_locks(conn: psycopg.Connection[Any], oids: Iterable[int]) -> dict[int, Lock]:
    """The strongest lock this session holds on each of ``oids`` (pg_locks, granted only)."""
    held: dict[int, Lock] = {}
    for oid, mode in conn.execute(HELD_LOCKS, (list(oids),)).fetchall():
        lock = Lock.from_pg_locks(mode)
        held[oid] = max(lock, held.get(oid, lock))
    return held


def read_catalog(conn: psycopg.Connection[Any]) -> Catalog:
    return {(kind, name): (value, ident) for kind, name, value, ident in conn.execute(CATALOG)}


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
        if key not in baseline or now is None or now[0] == value:
            continue
        kind, name = key
        if now[0].endswith(WITHOUT_DEFAULT) and not value.endswith(WITHOUT_DEFAULT):
            change = "column becomes NOT NULL without a default (INSERTs that omit it fail)"
        elif widens(value.removesuffix(WITHOUT_DEFAULT), now[0].removesuffix(WITHOUT_DEFAULT)):
            continue
        else:
            change = f"{kind} changes from {value} to {now[0]}"
        found.append(_finding(BREAKING, name, change))
    known = {ident for (kind, _), (_, ident) in before.items() if kind == "column"}
    for (kind, name), (value, ident) in after.items():
        table = name.rsplit(".", 1)[0]
        existing_table = baseline.get(("table", table), ("", ""))[0] in TABLE_KINDS
        new_column = kind == "column" and ident not in known and existing_table
        if new_column and value.endswith(WITHOUT_DEFAULT):
            change = "new column is NOT NULL without a default (INSERTs that omit it fail)"
            found.append(_finding(BREAKING, name, change))
    return found


@dataclass
class ContractObserver:
    """Breaking changes (catalog before and after each statement) and removed rows."""

    baseline: Catalog
    tables: dict[int, str]  # oid -> name of the tables that existed before the release
    _before: Catalog = field(default_factory=dict)
    _deleted: dict[int, int] = field(default_factory=dict)
    _locks: dict[int, Lock] = field(default_factory=dict)

    def before(self, conn: psycopg.Connection[Any]) -> None:
        self._before = read_catalog(conn)
        self._deleted = self._rows_deleted(conn)
        self._locks = held_locks(conn, self.tables)

    def after(self, conn: psycopg.Connection[Any], statement: Statement, tag: str) -> list[Finding]:
        changes = compare(self.baseline, self._before, read_catalog(conn))
        if tag.startswith(REMOVING_TAGS):
            deleted = self._rows_deleted(conn)
            for oid, lock in held_locks(conn, self.tables).items():
                # The table the statement writes: a lock it did not hold before, or rows gone.
                fresh = lock >= Lock.ROW_EXCLUSIVE and self._locks.get(oid, Lock(1)) < lock
                if fresh or deleted.get(oid, 0) > self._deleted.get(oid, 0):
                    name = self.tables[oid]
                    what = f"rows removed ({tag.split()[0]})"
                    changes.append(_finding(DATA_LOSS, name, what, name))
        return changes

    def _rows_deleted(self, conn: psycopg.Connection[Any]) -> dict[int, int]:
        conn.execute(CLEAR_STATS_SNAPSHOT)
        rows = conn.execute(ROWS_DELETED, (list(self.tables),)).fetchall()
        return {oid: deleted for oid, deleted in rows}
