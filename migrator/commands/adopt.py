"""The adopt command: take over the history another tool wrote (dbmate, golang-migrate, goose,
Flyway), under the migration lock, keeping its table (renamed, unless
MIGRATIONS_TABLE is set elsewhere: see renames). For example, on a database dbmate migrated::

    run(config, find_migrations(Path("migrations")))
    # 'adopted 12 version(s) from dbmate; schema_migrations kept as schema_migrations_dbmate'
"""

from __future__ import annotations

from datetime import datetime

from psycopg import sql

from migrator.commands.shared import lock_settings, versioned_rows
from migrator.config import Config
from migrator.database.catalog import check_history_schema
from migrator.database.lock import Locked, locked
from migrator.errors import ConfigError, HistoryMismatchError
from migrator.files.folder import MigrationSet
from migrator.files.formats import flyway_checksum, read_source
from migrator.files.migration import Migration
from migrator.history import table as history
from migrator.history.foreign import ADOPTED_BY, SCHEMA, Applied, ForeignHistory, Tool
from migrator.history.foreign_reads import (
    find_foreign_history,
    in_place_of,
    read_foreign_history,
)
from migrator.history.name import DEFAULT_TABLE, TableName
from migrator.logs import get_logger

log = get_logger("maintenance")

# A repeatable file changed since Flyway ran it: a checksum that differs makes migrate rerun it.
FLYWAY_CHECKSUM = "flyway-crc32:{crc}"

ERR_NOTHING_TO_ADOPT = (
    "no other tool's history (dbmate, golang-migrate, goose, Flyway) in {dbname}: for a "
    "database built without a tool, record its files with 'baseline --version V'"
)
ERR_BOTH_HISTORIES = (
    "{dbname} has both {table} ({tool}) and this runner's history with {count} row(s): "
    "adopt only into an empty history"
)
ERR_NOT_IN_FOLDER = (
    "{tool} recorded version {key} as applied, but no file of {folder} has that version: "
    "restore the file before adopting{more}"
)
MORE_MISSING = " ({count} more such version(s))"
ERR_FLYWAY_CHECKSUM = (
    "{file} differs from what Flyway applied: Flyway's checksum {recorded}, the file's {actual}; "
    "restore the file as it was applied"
)
ERR_RENAMED_EXISTS = "{table} exists already: cannot keep {tool}'s table under that name"


def run(config: Config, files: MigrationSet) -> str:
    """Take over the history another tool wrote: the runner's rows for every version it
    applied, its table renamed if in the way, in one transaction. A no-op once adopted."""
    table = config.history_table
    with locked(lock_settings(config)) as session:
        tool = find_foreign_history(session.conn)
        # In the history table's place, the other tool's table is not the runner's history.
        in_place = tool is not None and in_place_of(tool, table)
        recorded = {} if in_place else history.read_history(session.conn, table)
        if tool is not None and adopted_before(tool, recorded):
            tool = None  # its table was left as it is, beside the history it was adopted into
        if tool is None:
            if history.history_table_exists(session.conn, table):
                summary = f"nothing to adopt: {config.dbname} already uses this runner's history"
                log.info("adopt_nothing_to_do", summary=summary, recorded=len(recorded))
                return summary
            raise ConfigError(ERR_NOTHING_TO_ADOPT.format(dbname=config.dbname))
        refuse_both_histories(files, tool, config.dbname, recorded)
        found = read_foreign_history(session.conn, tool)
        rows = adoption_rows(files, found, config)
        for version, description, checksum, applied_at, _ in rows:
            log.info(
                "adopt_version" if not config.dry_run else "plan_adopt_version",
                tool=tool.name,
                version=version,
                description=description,
                checksum=checksum,
                applied_at=applied_at.isoformat() if applied_at else None,
            )
        if config.dry_run:
            summary = f"dry run: would adopt {len(rows)} version(s) from {tool.name}"
            log.info("plan_complete", tool=tool.name, versions=len(rows), summary=summary)
            return summary
        renamed_to = take_over(session, tool, rows, table)
    kept = f"kept as {renamed_to}" if renamed_to else f"left as it is, beside {table}"
    summary = f"adopted {len(rows)} version(s) from {tool.name}; {tool.table} {kept}"
    log.info(
        "adopted",
        tool=tool.name,
        table=tool.table,
        renamed_to=renamed_to,
        history=str(table),
        versions=[row[0] for row in rows],
        summary=summary,
    )
    return summary


def adopted_before(tool: Tool, recorded: dict[str, history.AppliedMigration]) -> bool:
    """Whether the runner's history holds rows adopted from ``tool``: then its table, which
    did not stand in the history's place, was left as it is, and there is nothing to adopt.

    >>> from migrator.history.foreign import TOOLS
    >>> adopted_before(TOOLS[0], {})
    False
    """
    by = ADOPTED_BY.format(tool=tool.name)
    return any(row.applied_by == by for row in recorded.values())


def refuse_both_histories(
    files: MigrationSet, tool: Tool, dbname: str, recorded: dict[str, history.AppliedMigration]
) -> None:
    """A table of another tool's that leaves the history's name free: the history may hold
    only bootstrap's row."""
    rows = versioned_rows(recorded, files)
    if rows:
        raise HistoryMismatchError(
            ERR_BOTH_HISTORIES.format(
                dbname=dbname, table=tool.table, tool=tool.name, count=len(rows)
            )
        )


def adoption_rows(
    files: MigrationSet, found: ForeignHistory, config: Config
) -> list[tuple[str, str, str, datetime | None, str]]:
    """(version, description, checksum, applied_at, applied_by) for each file the tool applied."""
    candidates = [*files.versioned, *files.repeatable]
    by_key = {m.key: m for m in candidates}
    missing = sorted(key for key in found.applied if key not in by_key)
    if missing:
        raise HistoryMismatchError(
            ERR_NOT_IN_FOLDER.format(
                tool=found.tool.name,
                key=missing[0],
                folder=config.migrations_dir,
                more=MORE_MISSING.format(count=len(missing) - 1) if missing[1:] else "",
            ),
            missing=missing,
        )
    rows = []
    applied_by = ADOPTED_BY.format(tool=found.tool.name)
    for migration in candidates:
        applied = found.applied.get(migration.key)
        covered = found.up_to is not None and not migration.repeatable
        if applied is None and not (covered and migration.sort_key <= (found.up_to or ())):
            continue
        checksum = checked_checksum(migration, applied)
        when = applied.applied_at if applied else None
        rows.append((migration.version, migration.description, checksum, when, applied_by))
    return rows


def checked_checksum(migration: Migration, applied: Applied | None) -> str:
    """The file's checksum, once Flyway's CRC32 (when recorded) says it is the file applied."""
    if applied is None or applied.checksum is None:
        return migration.checksum
    actual = flyway_checksum(read_source(migration.path))
    if actual == applied.checksum:
        return migration.checksum
    if migration.repeatable:  # Flyway would run it again: so will migrate
        return FLYWAY_CHECKSUM.format(crc=applied.checksum)
    raise HistoryMismatchError(
        ERR_FLYWAY_CHECKSUM.format(file=migration.path, recorded=applied.checksum, actual=actual),
        file=str(migration.path),
    )


def renames(tool: Tool, table: TableName) -> bool:
    """Whether adopt renames ``tool``'s table: when it stands in the history's place, and, with
    the default MIGRATIONS_TABLE, always (goose's and Flyway's keep an ``_adopted`` name, as
    before the setting existed). With MIGRATIONS_TABLE set elsewhere the table keeps its name:
    a history whose own files alter golang-migrate's table must find it there.

    >>> from migrator.history.foreign import TOOLS
    >>> goose = TOOLS[2]
    >>> renames(goose, TableName()), renames(goose, TableName("public", "migrator_history"))
    (True, False)
    """
    return in_place_of(tool, table) or table == DEFAULT_TABLE


def take_over(
    session: Locked,
    tool: Tool,
    rows: list[tuple[str, str, str, datetime | None, str]],
    table: TableName,
) -> str | None:
    """Create the history ``table`` with ``rows``, in one transaction with renaming the other
    tool's table (see renames); returns its new name, if renamed."""
    conn = session.conn
    renamed = TableName(SCHEMA, tool.renamed_to) if renames(tool, table) else None
    if renamed is not None and history.table_exists(conn, renamed):
        raise ConfigError(ERR_RENAMED_EXISTS.format(table=tool.renamed_to, tool=tool.name))
    check_history_schema(conn, table)
    with conn.transaction():
        if renamed is not None:
            conn.execute(
                sql.SQL("ALTER TABLE {} RENAME TO {}").format(
                    sql.Identifier(SCHEMA, tool.table), sql.Identifier(renamed.name)
                )
            )
            # The other tool's table is kept, read only as ours is: its grants followed it.
            conn.execute(history.keep_writes_to_owner(conn, renamed))
        history.create_table(conn, table)
        history.record_taken_over(conn, table, rows)
        session.guard.check(conn, "adopt")
    return renamed.name if renamed is not None else None
