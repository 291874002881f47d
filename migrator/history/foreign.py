"""Other tools' history tables: recognising them, and what their rows say was applied.

One entry per tool (its table, the columns that identify it, the name it keeps once
adopted, what to read of it and what the rows mean); ``adopt`` and the refusal to migrate
such a database use the table. Only decisions live here: migrator.history.foreign_reads
fetches the rows and the columns from the database.

>>> tool = tool_in([("schema_migrations", ["version"])])
>>> tool.name, tool.table
('dbmate', 'schema_migrations')
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from psycopg import sql

from migrator.errors import ConfigError, HistoryMismatchError
from migrator.files.formats import flyway_order

SCHEMA = "public"
# applied_by of the rows adopt writes: they also say that the tool's table, when adopt left it
# under its name (MIGRATIONS_TABLE elsewhere), was taken over.
ADOPTED_BY = "{tool} (adopted)"
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


Row = tuple[Any, ...]
# What a tool's rows mean: a function of the rows alone (history.foreign_reads fetches them).
Interpret = Callable[["Tool", Iterable[Row]], ForeignHistory]


@dataclass(frozen=True)
class Tool:
    name: str
    table: str
    columns: frozenset[str]  # a table with these columns (and maybe more) is this tool's
    renamed_to: str  # the name the table keeps once adopted, so nothing is lost
    history: Interpret
    read: str  # the columns its history function takes, in this order
    order: str = ""  # the order it takes the rows in

    def matches(self, columns: set[str]) -> bool:
        # dbmate, golang-migrate and the runner share the name schema_migrations: only the
        # exact column set tells them apart (the runner's table altered by hand is not dbmate's).
        if self.table == "schema_migrations":
            return columns == self.columns
        return self.columns <= columns

    def select(self) -> sql.Composed:
        """The query for the rows its history function takes.

        >>> TOOLS[1].select().as_string()
        'SELECT version FROM "public"."schema_migrations"'
        """
        order = f" ORDER BY {self.order}" if self.order else ""
        query = f"SELECT {self.read} FROM {{table}}{order}"
        return sql.SQL(query).format(table=sql.Identifier(SCHEMA, self.table))


def dbmate_history(tool: Tool, rows: Iterable[Row]) -> ForeignHistory:
    """dbmate: one row per applied version (pkg/driver/postgres: version varchar primary key).

    >>> dbmate_history(TOOLS[1], [("20240101120000",)]).applied
    {'20240101120000': Applied(key='20240101120000', applied_at=None, checksum=None, by=None)}
    """
    return ForeignHistory(tool, {row[0]: Applied(row[0]) for row in rows})


def golang_migrate_history(tool: Tool, rows: Iterable[Row]) -> ForeignHistory:
    """golang-migrate keeps one row, the current version: every version up to it is applied.

    >>> golang_migrate_history(TOOLS[0], [(3, False)]).up_to
    (3,)
    """
    row = next(iter(rows), None)
    if row is None or row[0] < 0:  # -1: NilVersion, nothing applied
        return ForeignHistory(tool)
    if row[1]:
        raise HistoryMismatchError(ERR_GOLANG_DIRTY.format(version=row[0]), version=row[0])
    return ForeignHistory(tool, up_to=(int(row[0]),))


def goose_history(tool: Tool, rows: Iterable[Row]) -> ForeignHistory:
    """goose: a row per up (and, in old versions, per down with is_applied false); the newest
    row of a version says its state; version 0 is goose's own first row.

    >>> t = datetime(2024, 1, 1)
    >>> rows = [(0, True, t), (1, True, t), (2, True, t), (2, False, t)]
    >>> list(goose_history(TOOLS[2], rows).applied)
    ['1']
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


def flyway_history(tool: Tool, rows: Iterable[Row]) -> ForeignHistory:
    """Flyway: rows in installed_rank order; an undo removes its version; a baseline row
    covers every version up to it; repeatable rows (no version) by description.

    >>> t = datetime(2024, 1, 1)
    >>> flyway_history(TOOLS[3], [(1, "1", "init", "BASELINE", None, t, "me", True)]).up_to
    (1,)
    """
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
        golang_migrate_history,
        "version, dirty",
    ),
    Tool(
        "dbmate",
        "schema_migrations",
        frozenset({"version"}),
        "schema_migrations_dbmate",
        dbmate_history,
        "version",
    ),
    Tool(
        "goose",
        "goose_db_version",
        frozenset({"id", "version_id", "is_applied", "tstamp"}),
        "goose_db_version_adopted",
        goose_history,
        "version_id, is_applied, tstamp",
        "id",
    ),
    Tool(
        "Flyway",
        "flyway_schema_history",
        frozenset({"installed_rank", "version", "type", "checksum", "success"}),
        "flyway_schema_history_adopted",
        flyway_history,
        "installed_rank, version, description, type, checksum, installed_on, installed_by, success",
        "installed_rank",
    ),
)


def tool_of(table: str, columns: set[str]) -> Tool | None:
    """The tool whose table this is; None for the runner's own schema_migrations (dbmate's and
    golang-migrate's are told apart from it by their exact columns).

    >>> tool_of("schema_migrations", {"version", "dirty"}).name
    'golang-migrate'
    """
    return next((t for t in TOOLS if t.table == table and t.matches(columns)), None)


def tool_in(tables: Iterable[tuple[str, Sequence[str]]]) -> Tool | None:
    """The other tool whose history is among these tables (name, columns), or None.

    >>> tool_in([("schema_migrations", ["version", "dirty"])]).name
    'golang-migrate'
    """
    found = (tool_of(table, set(columns)) for table, columns in tables)
    return next((tool for tool in found if tool is not None), None)


def foreign_history_error(tool: Tool) -> ConfigError:
    """Exit 78 before anything is applied on a database another tool migrated.

    >>> foreign_history_error(TOOLS[1]).message[:46]
    'public.schema_migrations was written by dbmate'
    """
    return ConfigError(
        ERR_FOREIGN.format(schema=SCHEMA, table=tool.table, tool=tool.name),
        tool=tool.name,
        table=f"{SCHEMA}.{tool.table}",
    )
