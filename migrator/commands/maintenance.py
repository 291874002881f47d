"""The commands a person runs by hand: adopt another tool's history, baseline a database
built without any tool, roll back. Each works under the migration lock; none runs on its own
in the init container.

>>> adopt(config, find_migrations(Path("migrations")))
'adopted 12 version(s) from dbmate; schema_migrations kept as schema_migrations_dbmate'
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from migrator.config import Config
from migrator.database.connect import connect, wait_for_connection
from migrator.database.lock import LockGuard, advisory_lock, lock_key
from migrator.errors import ConfigError, HistoryMismatchError, MigrationFilesError, UsageError
from migrator.files.folder import MigrationSet
from migrator.files.formats import flyway_checksum, flyway_order, read_source
from migrator.files.migration import Migration
from migrator.history import table as history
from migrator.history.foreign import Applied, ForeignHistory, Tool
from migrator.history.foreign_reads import (
    find_foreign_history,
    read_foreign_history,
    refuse_foreign_history,
)
from migrator.history.plan import make_plan
from migrator.logs import get_logger

log = get_logger("maintenance")

BASELINE_DESCRIPTION = "baseline"
ADOPTED_BY = "{tool} (adopted)"
# A repeatable file changed since Flyway ran it: a checksum that differs makes migrate rerun it.
FLYWAY_CHECKSUM = "flyway-crc32:{crc}"
VERSION_LIKE = re.compile(r"\d+(?:[._]\d+)*")

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
ERR_UNKNOWN_VERSION = "{flag} {value}: no migration file has that version"
ERR_BASELINE_HISTORY = (
    "the history already has {count} row(s) (newest {newest}): baseline is for a database "
    "without history; use migrate"
)
ERR_NO_DOWN = (
    "{file} has no down part: nothing was rolled back; write its down part "
    "(a -- migrate:down section or a .down.sql file), or roll back to a later version"
)


# --- shared: the lock, the target version ------------------------------------------------------


@dataclass(frozen=True)
class Session:
    conn: psycopg.Connection[Any]  # autocommit; transactions are explicit
    guard: LockGuard
    lock_conn: psycopg.Connection[Any]

    def check_lock(self, what: str) -> None:
        """Before committing: the lock's session must still hold it."""
        try:
            self.conn.execute(self.guard.sql)
        except psycopg.errors.DivisionByZero:
            raise self.guard.lost(what) from None


@contextmanager
def locked(config: Config) -> Iterator[Session]:
    """The migration lock (the one ``migrate`` takes) and a work connection."""
    key = lock_key(config.dbname, history.QUALIFIED_NAME)
    with (
        wait_for_connection(config.connect_kwargs(), config.wait_timeout) as lock_conn,
        advisory_lock(lock_conn, key, config.migration_lock_timeout),
        connect(config.connect_kwargs(), config.wait_timeout) as conn,
    ):
        yield Session(conn, LockGuard(lock_conn.info.backend_pid, key), lock_conn)


def target_key(files: MigrationSet, value: str, flag: str) -> tuple[int, ...]:
    """The order of version ``value``: a file's version, its number, or a bare number.

    >>> target_key(files, "002_add_feature", "--to"), target_key(files, "0", "--to")
    ((2,), (0,))
    """
    for migration in files.versioned:
        if value in (migration.version, migration.key, migration.path.name):
            return migration.sort_key
    if VERSION_LIKE.fullmatch(value):
        return flyway_order(value)
    raise UsageError(ERR_UNKNOWN_VERSION.format(flag=flag, value=value))


def versioned_rows(recorded: dict[str, history.AppliedMigration], files: MigrationSet) -> list[str]:
    bootstrap = files.bootstrap.version if files.bootstrap else None
    return sorted(version for version in recorded if version != bootstrap)


# --- adopt -------------------------------------------------------------------------------------


def adopt(config: Config, files: MigrationSet) -> str:
    """Take over the history another tool wrote: the runner's rows for every version it
    applied, its table renamed, in one transaction. A no-op once adopted."""
    with locked(config) as session:
        tool = find_foreign_history(session.conn)
        recorded = history.read_history(session.conn) if tool is None else {}
        if tool is None:
            if history.history_table_exists(session.conn):
                summary = f"nothing to adopt: {config.dbname} already uses this runner's history"
                log.info("adopt_nothing_to_do", summary=summary, recorded=len(recorded))
                return summary
            raise ConfigError(ERR_NOTHING_TO_ADOPT.format(dbname=config.dbname))
        refuse_both_histories(session.conn, files, tool, config.dbname)
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
        take_over(session, tool, rows)
    summary = (
        f"adopted {len(rows)} version(s) from {tool.name}; {tool.table} kept as {tool.renamed_to}"
    )
    log.info(
        "adopted",
        tool=tool.name,
        table=tool.table,
        renamed_to=tool.renamed_to,
        versions=[row[0] for row in rows],
        summary=summary,
    )
    return summary


def refuse_both_histories(
    conn: psycopg.Connection[Any], files: MigrationSet, tool: Tool, dbname: str
) -> None:
    """goose and Flyway tables leave the runner's name free: it may hold only bootstrap's row."""
    if tool.table == history.HISTORY_TABLE or not history.history_table_exists(conn):
        return
    rows = versioned_rows(history.read_history(conn), files)
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


def take_over(
    session: Session, tool: Tool, rows: list[tuple[str, str, str, datetime | None, str]]
) -> None:
    conn = session.conn
    if history.table_exists(conn, f"public.{tool.renamed_to}"):
        raise ConfigError(ERR_RENAMED_EXISTS.format(table=tool.renamed_to, tool=tool.name))
    with conn.transaction():
        conn.execute(
            sql.SQL("ALTER TABLE {} RENAME TO {}").format(
                sql.Identifier("public", tool.table), sql.Identifier(tool.renamed_to)
            )
        )
        conn.execute(history.CREATE_TABLE)
        history.record_taken_over(conn, rows)
        session.check_lock("adopt")


# --- baseline ----------------------------------------------------------------------------------


def baseline(config: Config, files: MigrationSet) -> str:
    """Record every file up to ``--version`` as applied, for a database built by hand."""
    assert config.target_version is not None  # config requires it
    target = target_key(files, config.target_version, "--version")
    chosen = [m for m in files.versioned if m.sort_key <= target]
    with locked(config) as session:
        if config.dry_run:
            refuse_foreign_history(session.conn)  # what ensure_history_table would refuse
        else:
            history.ensure_history_table(session.conn)
        recorded = history.read_history(session.conn)
        rows = versioned_rows(recorded, files)
        if rows:
            raise HistoryMismatchError(
                ERR_BASELINE_HISTORY.format(count=len(rows), newest=rows[-1])
            )
        if config.verify:
            from migrator.commands.verify import verify_baseline

            verify_baseline(config, session.conn, chosen)
        event = "plan_baseline_version" if config.dry_run else "baseline_version"
        for migration in chosen:
            log.info(event, version=migration.version, checksum=migration.checksum)
        if config.dry_run:
            summary = f"dry run: would record {len(chosen)} file(s) as applied"
            log.info("plan_complete", versions=len(chosen), summary=summary)
            return summary
        user = session.conn.info.user
        with session.conn.transaction():
            history.record_taken_over(
                session.conn,
                [(m.version, BASELINE_DESCRIPTION, m.checksum, None, user) for m in chosen],
            )
            session.check_lock("baseline")
    summary = f"baseline: {len(chosen)} file(s) recorded as applied, up to {config.target_version}"
    log.info("baseline_recorded", versions=[m.version for m in chosen], summary=summary)
    return summary


# --- rollback ----------------------------------------------------------------------------------


def rollback_targets(
    config: Config, files: MigrationSet, recorded: dict[str, history.AppliedMigration]
) -> list[Migration]:
    """The applied files to undo, newest first; refused before anything runs when one of them
    has no down part."""
    make_plan(files, recorded, allow_out_of_order=True)  # drift: the files must be as applied
    applied = sorted(
        (m for m in files.versioned if m.version in recorded),
        key=lambda m: m.sort_key,
        reverse=True,
    )
    if config.rollback_steps is not None:
        chosen = applied[: config.rollback_steps]
    else:
        assert config.target_version is not None
        target = target_key(files, config.target_version, "--to")
        chosen = [m for m in applied if m.sort_key > target]
    refuse_without_down(chosen)
    return chosen


def refuse_without_down(chosen: Sequence[Migration]) -> None:
    for migration in chosen:
        if migration.down is None:
            raise MigrationFilesError(
                ERR_NO_DOWN.format(file=migration.path), file=str(migration.path)
            )


def forgetting(version: str) -> Callable[[psycopg.Connection[Any], Migration, int], None]:
    """What the down part records: its up part's row deleted, in the same transaction."""

    def forget(conn: psycopg.Connection[Any], _down: Migration, _execution_ms: int) -> None:
        history.forget(conn, version)

    return forget


def rollback(config: Config, files: MigrationSet) -> str:
    """Run the down parts newest first, each with its history row deleted in its transaction."""
    from migrator.apply.applier import Applier

    with locked(config) as session:
        chosen = rollback_targets(config, files, history.read_history(session.conn))
        for migration in chosen:
            assert migration.down is not None
            log.info(
                "plan_rollback" if config.dry_run else "rollback_started",
                version=migration.version,
                file=str(migration.down.path),
                mode=migration.down.mode_decision.mode.value,
            )
        if config.dry_run:
            summary = f"dry run: would roll back {len(chosen)} migration(s)"
            log.info("plan_complete", rollback=[m.version for m in chosen], summary=summary)
            return summary
        applier = Applier(session.conn, config, None, session.guard)
        for migration in chosen:
            assert migration.down is not None
            applier.apply(migration.down, forgetting(migration.version))
            log.info("migration_rolled_back", version=migration.version)
    summary = f"rolled back {len(chosen)} migration(s)"
    log.info("rollback_complete", versions=[m.version for m in chosen], summary=summary)
    return summary
