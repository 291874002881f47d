"""Finding the migration files in a folder (any tool's format), in order, rejecting duplicates.

>>> found = find_migrations(Path("migrations"))
>>> found.bootstrap.version, [m.version for m in found.versioned][:2]
('000_init_database', ['001_initial_production_schema', '002_security_invariants'])
"""

from __future__ import annotations

import itertools
import os
import pwd
from dataclasses import dataclass
from pathlib import Path

from migrator.errors import ConfigError, MigrationFilesError
from migrator.files.formats import RUNNER, read_folder
from migrator.files.migration import Migration, parse_file_name

ERR_NO_FOLDER = "MIGRATIONS_DIR {path} does not exist or is not a folder"
ERR_UNREADABLE_FOLDER = (
    "MIGRATIONS_DIR {path} cannot be read by uid {uid}{user} ({reason}): make it readable "
    "(the image runs as uid 10001), e.g. chmod -R a+rX on the host folder"
)
ERR_NO_FILES = (
    "MIGRATIONS_DIR {path} holds no migration file ({holds}): a mistyped or empty mount "
    "would start the application on an empty schema; mount the folder of <number>_<name>.sql "
    "files"
)
SHOWN_OTHER_FILES = 5
ERR_OUTSIDE = "{path} is a symlink to {target}, outside {directory}: copy the file in instead"
ERR_DUPLICATE = "{first} and {second} have the same version number {number}"


@dataclass(frozen=True)
class MigrationSet:
    """The bootstrap script (000_*, optional), the versioned migrations in order, then the
    repeatable ones (Flyway's R__ files, re-applied when they change, after the others)."""

    bootstrap: Migration | None
    versioned: tuple[Migration, ...]
    repeatable: tuple[Migration, ...] = ()
    format: str = RUNNER  # which tool's files: for the log only

    @property
    def all(self) -> tuple[Migration, ...]:
        return ((self.bootstrap,) if self.bootstrap else ()) + self.versioned + self.repeatable

    def by_version(self) -> dict[str, Migration]:
        return {migration.version: migration for migration in self.all}


def find_migrations(directory: Path) -> MigrationSet:
    """Read every ``*.sql`` file of ``directory``; other files (a README) are ignored."""
    if not directory.is_dir():
        raise ConfigError(ERR_NO_FOLDER.format(path=directory))
    try:
        entries = sorted(directory.iterdir())
    except PermissionError as error:
        raise ConfigError(unreadable_folder(directory, error)) from None
    candidates = [p for p in entries if p.suffix == ".sql" and not p.name.startswith(".")]
    for path in candidates:
        reject_link_outside(path, directory)
    folder_format, found = read_folder(candidates)
    repeatable = tuple(sorted((m for m in found if m.repeatable), key=lambda m: m.version))
    migrations = sorted((m for m in found if not m.repeatable), key=lambda m: m.sort_key)
    reject_duplicate_numbers(migrations)
    bootstrap = next((m for m in migrations if m.is_bootstrap), None)
    versioned = tuple(m for m in migrations if not m.is_bootstrap)
    return MigrationSet(bootstrap, versioned, repeatable, folder_format)


def refuse_empty(files: MigrationSet, directory: Path) -> None:
    """A run needs at least one migration file: an empty or mistyped mount is a mistake."""
    if files.all:
        return
    others = sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []
    if not others:
        holds = "it is empty"
    else:
        shown = ", ".join(others[:SHOWN_OTHER_FILES])
        more = f" and {len(others) - SHOWN_OTHER_FILES} more" if others[SHOWN_OTHER_FILES:] else ""
        holds = f"it holds {shown}{more}"
    raise MigrationFilesError(ERR_NO_FILES.format(path=directory, holds=holds))


def unreadable_folder(directory: Path, error: OSError) -> str:
    uid = os.geteuid()
    try:
        user = f" ({pwd.getpwuid(uid).pw_name})"
    except KeyError:  # a uid without a passwd entry, as in many images
        user = ""
    return ERR_UNREADABLE_FOLDER.format(
        path=directory, uid=uid, user=user, reason=error.strerror or "permission denied"
    )


def reject_link_outside(path: Path, directory: Path) -> None:
    """A symlink may stay inside the folder (Kubernetes ConfigMaps use ..data/), not leave it."""
    if not path.is_symlink():
        return
    # realpath, not resolve(): a symlink loop is left for read_migration to report as unreadable.
    target, home = Path(os.path.realpath(path)), Path(os.path.realpath(directory))
    if not target.is_relative_to(home):
        raise MigrationFilesError(
            ERR_OUTSIDE.format(path=path, target=target, directory=directory), file=str(path)
        )


def reject_duplicate_numbers(migrations: list[Migration]) -> None:
    """``01_a.sql`` and ``1_b.sql`` collide: versions are ordered as numbers."""
    for previous, current in itertools.pairwise(migrations):
        if previous.sort_key == current.sort_key:
            first, second = sorted((previous.path, current.path))
            raise MigrationFilesError(
                ERR_DUPLICATE.format(first=first, second=second, number=current.number),
                file=str(second),
            )


__all__ = ["MigrationSet", "find_migrations", "parse_file_name", "reject_duplicate_numbers"]
