"""Other tools' history tables: recognising them, and reading which versions they applied.

One entry per tool (its table, the columns that identify it, the name it keeps once
adopted, its reader); ``adopt`` and the refusal to migrate such a database use the table.

>>> found = find_foreign_history(conn)
>>> found.tool.name, found.tool.table
('dbmate', 'schema_migrations')
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from migrator.errors import ConfigError, HistoryMismatchError

SCHEMA = "public"
# Columns of every candidate table in one query (only run when a run has work to do).
TABLE_COLUMNS = """
SELECT c.relname, array_agg(a.attname::text ORDER BY a.attnum)
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
WHERE n.nspname = %s AND c.relname = ANY(%s) AND c.relkind IN ('r', 'p')
GROUP BY c.relname
"""
ERR_FOREIGN = (
    "{schema}.{table} was written by {tool}, not by this runner: nothing was applied; "
    "take it over with 'entrypoint.py adopt' (see README, Adopting an existing database)"
)
ERR_GOLANG_DIRTY = (
    "golang-migrate left version {version} dirty: that migration failed part-way. Check which "
    "of its statements ran, finish or undo them by hand, set dirty = false, then adopt"
)
ERR_FLYWAY_FAILED = (
    "flyway_schema_history has a failed row for {what} (installed_rank {rank}): Flyway stopped "
    "there. Undo what of it ran, delete the row (flyway repair), then adopt"
)


@dataclass(frozen=True)
class Applied:
    """One version another tool recorded as applied."""

    key: str  # as the folder's readers write Migration.key
    applied_at: datetime | None = None
    checksum: int | None = None  # Flyway's CRC32, when it recorded one
    by: str | None = None


@dataclass(frozen=True)
class ForeignHistory:
    tool: Tool
    applied: dict[str, Applied] = field(default_factory=dict)
    # golang-migrate and Flyway's baseline record a version that covers all below it.
    up_to: tuple[int, ...] | None = None


Reader = Callable[[psycopg.Connection[Any], "Tool"], ForeignHistory]


@dataclass(frozen=True)
class Tool:
    name: str
    table: str
    columns: frozenset[str]  # a table with these columns (and maybe more) is this tool's
    renamed_to: str  # the name the table keeps once adopted, so nothing is lost
    read: Reader

    def matches(self, columns: set[str]) -> bool:
        # dbmate, golang-migrate and the runner share the name schema_migrations: only the
        # exact column set tells them apart (the runner's table altered by hand is not dbmate's).
        if self.table == "schema_migrations":
            return columns == self.columns
        return self.columns <= columns

    def select(self, columns: str, order: str = "") -> sql.Composed:
        query = f"SELECT {columns} FROM {{table}}" + (f" ORDER BY {order}" if order else "")
        return sql.SQL(query).format(table=sql.Identifier(SCHEMA, self.table))


# Each reader fetches the rows; a function of the rows alone decides what they mean.
Row = tuple[Any, ...]


def read_dbmate(conn: psycopg.Connection[Any], tool: Tool) -> ForeignHistory:
    return dbmate_history(tool, conn.execute(tool.select("version")).fetchall())


def dbmate_history(tool: Tool, rows: Iterable[Row]) -> ForeignHistory:
    """dbmate: one row per applied version (pkg/driver/postgres: version varchar primary key).

    >>> dbmate_history(tool, [("20240101120000",)]).applied
    {'20240101120000': Applied(key='20240101120000', applied_at=None, checksum=None, by=None)}
    """
    return ForeignHistory(tool, {row[0]: Applied(row[0]) for row in rows})


def read_golang_migrate(conn: psycopg.Connection[Any], tool: Tool) -> ForeignHistory:
    return golang_migrate_history(tool, conn.execute(tool.select("version, dirty")).fetchone())


def golang_migrate_history(tool: Tool, row: Row | None) -> ForeignHistory:
    """golang-migrate keeps one row, the current version: every version up to it is applied.

    >>> golang_migrate_history(tool, (3, False)).up_to
    (3,)
    """
    if row is None or row[0] < 0:  # -1: NilVersion, nothing applied
        return ForeignHistory(tool)
    if row[1]:
        raise HistoryMismatchError(ERR_GOLANG_DIRTY.format(version=row[0]), version=row[0])
    return ForeignHistory(tool, up_to=(int(row[0]),))


def read_goose(conn: psycopg.Connection[Any], tool: Tool) -> ForeignHistory:
    return goose_history(tool, conn.execute(tool.select("version_id, is_applied, tstamp", "id")))


def goose_history(tool: Tool, rows: Iterable[Row]) -> ForeignHistory:
    """goose: a row per up (and, in old versions, per down with is_applied false); the newest
    row of a version says its state; version 0 is goose's own first row.

    >>> list(goose_history(tool, [(0, True, t0), (1, True, t1), (1, False, t2)]).applied)
    []
    """
    latest: dict[int, tuple[bool, datetime]] = {}
    for version, is_applied, tstamp in rows:
        latest[version] = (is_applied, tstamp)
    applied = {
        str(version): Applied(str(version), applied_at)
        for version, (is_applied, applied_at) in latest.items()
        if is_applied and version != 0
    }
    return ForeignHistory(tool, applied)


def read_flyway(conn: psycopg.Connection[Any], tool: Tool) -> ForeignHistory:
    query = tool.select(
        "installed_rank, version, description, type, checksum, installed_on, installed_by, success",
        "installed_rank",
    )
    return flyway_history(tool, conn.execute(query))


def flyway_history(tool: Tool, rows: Iterable[Row]) -> ForeignHistory:
    """Flyway: rows in installed_rank order; an undo removes its version; a baseline row
    covers every version up to it; repeatable rows (no version) by description.

    >>> flyway_history(tool, [(1, "1", "init", "BASELINE", None, t, "me", True)]).up_to
    (1,)
    """
    from migrator.formats import flyway_order

    applied: dict[str, Applied] = {}
    up_to: tuple[int, ...] | None = None
    for rank, version, description, kind, checksum, installed_on, by, success in rows:
        if not success:
            what = f"version {version}" if version else f"repeatable {description!r}"
            raise HistoryMismatchError(
                ERR_FLYWAY_FAILED.format(what=what, rank=rank), version=version or description
            )
        if kind == "SCHEMA":  # Flyway created the schema: not a migration
            continue
        key = ".".join(map(str, flyway_order(version))) if version else description
        if kind == "BASELINE":
            up_to = flyway_order(version)
        elif kind.startswith("UNDO"):
            applied.pop(key, None)
        elif kind != "DELETE":
            applied[key] = Applied(key, installed_on, checksum, by)
    return ForeignHistory(tool, applied, up_to)


# Columns from each tool's own DDL (see tests/integration/test_adopt.py for the sources).
TOOLS = (
    Tool(
        "golang-migrate",
        "schema_migrations",
        frozenset({"version", "dirty"}),
        "schema_migrations_golang_migrate",
        read_golang_migrate,
    ),
    Tool(
        "dbmate",
        "schema_migrations",
        frozenset({"version"}),
        "schema_migrations_dbmate",
        read_dbmate,
    ),
    Tool(
        "goose",
        "goose_db_version",
        frozenset({"id", "version_id", "is_applied", "tstamp"}),
        "goose_db_version_adopted",
        read_goose,
    ),
    Tool(
        "Flyway",
        "flyway_schema_history",
        frozenset({"installed_rank", "version", "type", "checksum", "success"}),
        "flyway_schema_history_adopted",
        read_flyway,
    ),
)
RUNNER_COLUMNS = frozenset({"version", "description", "checksum", "applied_at"})


def tool_of(table: str, columns: set[str]) -> Tool | None:
    """The tool whose table this is: a schema_migrations with the runner's columns is None."""
    if table == "schema_migrations" and columns >= RUNNER_COLUMNS:
        return None
    return next((t for t in TOOLS if t.table == table and t.matches(columns)), None)


def find_foreign_history(conn: psycopg.Connection[Any]) -> Tool | None:
    """The other tool whose history this database holds, or None."""
    tables = sorted({tool.table for tool in TOOLS})
    for table, columns in conn.execute(TABLE_COLUMNS, (SCHEMA, tables)).fetchall():
        tool = tool_of(table, set(columns))
        if tool is not None:
            return tool
    return None


def refuse_foreign_history(conn: psycopg.Connection[Any]) -> None:
    """Exit 78 before anything is applied on a database another tool migrated."""
    tool = find_foreign_history(conn)
    if tool is not None:
        raise ConfigError(
            ERR_FOREIGN.format(schema=SCHEMA, table=tool.table, tool=tool.name),
            tool=tool.name,
            table=f"{SCHEMA}.{tool.table}",
        )
