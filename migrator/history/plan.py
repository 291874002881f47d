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
from migrator.files.migration import (
    ALL,
    PHASES,
    POST,
    Migration,
    looks_like_checksum,
    parse_file_name,
)
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
    # Pending, but in the phase this run does not apply (--phase): left for that run.
    deferred: tuple[Migration, ...] = ()


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
    """Pending files numbered below an applied file they should have run before.

    A post file runs after the pre files of its release, so a pending post file below
    applied *pre* files is in order; below an applied post file it is not. A pending pre
    file below any applied file is out of order (every run applies pre files before post
    files, so it should have come first).
    """
    problems = []
    for migration in pending:
        newest = newest_before(migration, applied)
        if newest is not None and migration.sort_key < newest.sort_key:
            problems.append(ERR_OUT_OF_ORDER.format(file=migration.path, newest=newest.version))
    return problems


def newest_before(migration: Migration, applied: list[Migration]) -> Migration | None:
    """The newest applied file that ``migration`` must not sort below: for a post file the
    newest applied post file, for a pre file the newest applied file of either phase."""
    relevant = [m for m in applied if migration.phase != POST or m.phase == POST]
    return max(relevant, key=lambda m: m.sort_key, default=None)


def in_phase(migration: Migration, phase: str) -> bool:
    """Whether a run of ``phase`` (pre, post or all) applies ``migration``.

    Repeatable files have no phase of their own: they run with the pre files.
    """
    return phase == ALL or migration.phase == phase


def phase_order(pending: list[Migration]) -> list[Migration]:
    """Pre files first, then post files, each in version order (``pending`` is in it)."""
    return sorted(pending, key=lambda m: PHASES.index(m.phase))


def changed_or_new(migration: Migration, history: Mapping[str, AppliedMigration]) -> bool:
    row = history.get(migration.version)
    return row is None or row.checksum != migration.checksum


def make_plan(
    files: MigrationSet,
    history: Mapping[str, AppliedMigration],
    allow_out_of_order: bool = False,
    tolerate_future: bool = False,
    phase: str = ALL,
) -> Plan:
    """The versioned files still to apply, or HistoryMismatchError (exit 65).

    ``tolerate_future``: versions a newer release applied (above the newest file) are listed
    in ``Plan.future`` instead of failing the run (FUTURE_MIGRATIONS=warn).
    ``phase``: pre or post applies the pending files of that phase only (the others are
    ``Plan.deferred``); all applies the pre files, then the post files. The history is checked
    whole whatever the phase: a problem stops the init container, before the rollout.
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
    chosen = phase_order([m for m in pending if in_phase(m, phase)])
    deferred = [m for m in pending if not in_phase(m, phase)]
    return Plan(tuple(chosen), tuple(applied), tuple(unverified), tuple(future), tuple(deferred))


def deferred_note(plan: Plan) -> str:
    """What the summary adds when files of the other phase are pending: who applies them.

    >>> post = Migration(Path("003_x.sql"), 3, "003_x", "", "", phase="post")
    >>> deferred_note(Plan((), (), (), (), (post,)))
    '; 1 pending post file(s) left for --phase post'
    """
    phases = sorted({m.phase for m in plan.deferred})
    if not phases:
        return ""
    names = " and ".join(phases)
    flags = " / ".join(f"--phase {phase}" for phase in phases)
    return f"; {len(plan.deferred)} pending {names} file(s) left for {flags}"
