"""Validating the files against the history, and deciding what to apply.

The history is read from the database (migrator.history.table.read_history); here, one row:

>>> from datetime import datetime, timezone
>>> from migrator.files.folder import find_migrations
>>> files = find_migrations(Path("migrations"))
>>> first = files.versioned[0]
>>> at = datetime(2024, 1, 1, tzinfo=timezone.utc)
>>> row = AppliedMigration(first.version, "schema", first.checksum, at, 412, "auth_service")
>>> plan = make_plan(files, {first.version: row})
>>> [m.version for m in plan.applied], [m.version for m in plan.pending][:1]
(['001_initial_production_schema'], ['002_security_invariants'])
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from migrator.errors import HistoryMismatchError
from migrator.files.folder import MigrationSet
from migrator.files.migration import Migration, looks_like_checksum, parse_file_name
from migrator.history.table import AppliedMigration

ERR_CHANGED = (
    "{file} was changed after it was applied: recorded checksum {recorded}, "
    "file checksum {actual}; restore the file and put the change in a new migration"
)
ERR_MISSING = (
    "{version} is recorded as applied (checksum {recorded}) but {file} is gone; restore the file"
)
ERR_OUT_OF_ORDER = (
    "{file} is pending but older than the newest applied migration {newest}; "
    "renumber it, or set ALLOW_OUT_OF_ORDER=true"
)
ERR_MORE = " (and {count} more problem(s))"


@dataclass(frozen=True)
class Plan:
    pending: tuple[Migration, ...]
    applied: tuple[Migration, ...]
    unverified: tuple[Migration, ...]  # recorded by hand, without a real checksum
    # Applied by a newer release: recorded versions above the newest file (FUTURE_MIGRATIONS).
    future: tuple[str, ...] = ()


def future_versions(files: MigrationSet, history: Mapping[str, AppliedMigration]) -> list[str]:
    """Recorded versions without a file, numbered above every file: a newer release's work.

    An older image running on a database that a newer one migrated sees them; a version
    missing *between* files is a lost file instead, and stays an error.

    >>> from datetime import datetime, timezone
    >>> from migrator.files.folder import find_migrations
    >>> files = find_migrations(Path("migrations"))  # 000 to 003
    >>> at = datetime(2024, 1, 1, tzinfo=timezone.utc)
    >>> row = AppliedMigration("999_add_x", "add x", "0" * 64, at, 5, "auth_service")
    >>> future_versions(files, {"999_add_x": row})
    ['999_add_x']
    """
    if not files.all:
        return []
    newest = max(m.number for m in files.all)
    known = files.by_version()
    future = []
    for version in sorted(history):
        parsed = parse_file_name(Path(f"{version}.sql"))
        if version not in known and parsed is not None and parsed[0] > newest:
            future.append(version)
    return future


def drift_problems(
    files: MigrationSet,
    history: Mapping[str, AppliedMigration],
    tolerated: frozenset[str] = frozenset(),
) -> list[str]:
    """Applied files whose checksum changed, and applied versions whose file is gone.

    ``tolerated``: versions without a file that are not a problem (a newer release's).
    """
    problems: list[str] = []
    by_version = files.by_version()
    folder = files.all[0].path.parent if files.all else None
    for version, row in sorted(history.items()):
        migration = by_version.get(version)
        if migration is None and version in tolerated:
            continue
        if migration is None:
            file = f"{folder / (version + '.sql')}" if folder else f"{version}.sql"
            problems.append(ERR_MISSING.format(version=version, file=file, recorded=row.checksum))
        elif migration.changed_since(row.checksum):
            problems.append(
                ERR_CHANGED.format(
                    file=migration.path, recorded=row.checksum, actual=migration.checksum
                )
            )
    return problems


def out_of_order_problems(pending: list[Migration], applied: list[Migration]) -> list[str]:
    if not applied:
        return []
    newest = max(applied, key=lambda m: m.sort_key)
    return [
        ERR_OUT_OF_ORDER.format(file=m.path, newest=newest.version)
        for m in pending
        if m.sort_key < newest.sort_key
    ]


def changed_or_new(migration: Migration, history: Mapping[str, AppliedMigration]) -> bool:
    row = history.get(migration.version)
    return row is None or row.checksum != migration.checksum


def make_plan(
    files: MigrationSet,
    history: Mapping[str, AppliedMigration],
    allow_out_of_order: bool = False,
    tolerate_future: bool = False,
) -> Plan:
    """The versioned files still to apply, or HistoryMismatchError (exit 65).

    ``tolerate_future``: versions a newer release applied (above the newest file) are listed
    in ``Plan.future`` instead of failing the run (FUTURE_MIGRATIONS=warn).
    """
    future = future_versions(files, history) if tolerate_future else []
    problems = drift_problems(files, history, frozenset(future))
    applied = [m for m in files.versioned if m.version in history]
    pending = [m for m in files.versioned if m.version not in history]
    if not allow_out_of_order:
        problems += out_of_order_problems(pending, applied)
    # Repeatable files run after the versioned ones, again whenever their checksum changes.
    pending += [m for m in files.repeatable if changed_or_new(m, history)]
    if problems:
        message = problems[0] + (ERR_MORE.format(count=len(problems) - 1) if problems[1:] else "")
        raise HistoryMismatchError(message, problems=problems)
    unverified = [m for m in applied if not looks_like_checksum(history[m.version].checksum)]
    return Plan(tuple(pending), tuple(applied), tuple(unverified), tuple(future))
