"""Finding the migration files in a folder, in order, rejecting duplicates.

>>> found = find_migrations(Path("migrations"))
>>> [m.version for m in found.versioned]
['001_initial_production_schema']
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from pathlib import Path

from migrator.errors import ConfigError, MigrationFilesError
from migrator.migration import Migration, parse_file_name, read_migration

ERR_NO_FOLDER = "MIGRATIONS_DIR {path} does not exist or is not a folder"
ERR_OUTSIDE = "{path} is a symlink to {target}, outside {directory}: copy the file in instead"
ERR_DUPLICATE = "{first} and {second} have the same version number {number}"


@dataclass(frozen=True)
class MigrationSet:
    """The bootstrap script (000_*, optional) and the versioned migrations, ordered by number."""

    bootstrap: Migration | None
    versioned: tuple[Migration, ...]

    @property
    def all(self) -> tuple[Migration, ...]:
        return ((self.bootstrap,) if self.bootstrap else ()) + self.versioned

    def by_version(self) -> dict[str, Migration]:
        return {migration.version: migration for migration in self.all}


def find_migrations(directory: Path) -> MigrationSet:
    """Read every ``*.sql`` file of ``directory``; other files (a README) are ignored."""
    if not directory.is_dir():
        raise ConfigError(ERR_NO_FOLDER.format(path=directory))
    candidates = sorted(
        p for p in directory.iterdir() if p.suffix == ".sql" and not p.name.startswith(".")
    )
    for path in candidates:
        reject_link_outside(path, directory)
    migrations = sorted((read_migration(path) for path in candidates), key=lambda m: m.number)
    reject_duplicate_numbers(migrations)
    bootstrap = next((m for m in migrations if m.is_bootstrap), None)
    return MigrationSet(bootstrap, tuple(m for m in migrations if not m.is_bootstrap))


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
        if previous.number == current.number:
            first, second = sorted((previous.path, current.path))
            raise MigrationFilesError(
                ERR_DUPLICATE.format(first=first, second=second, number=current.number),
                file=str(second),
            )


__all__ = ["MigrationSet", "find_migrations", "parse_file_name", "reject_duplicate_numbers"]
