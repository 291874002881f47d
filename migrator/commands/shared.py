"""What the commands that write share: the migration lock's settings, the target version.

>>> settings = lock_settings(Config(password="s3cret"))
>>> settings.connect_kwargs["dbname"], settings.timeout  # MIGRATION_LOCK_TIMEOUT
('auth_service', 600.0)
"""

from __future__ import annotations

import re

from migrator.config import Config
from migrator.database.lock import LockSettings
from migrator.errors import UsageError
from migrator.files.folder import MigrationSet
from migrator.files.formats import flyway_order
from migrator.history import table as history

VERSION_LIKE = re.compile(r"\d+(?:[._]\d+)*")
ERR_UNKNOWN_VERSION = "{flag} {value}: no migration file has that version"


def lock_settings(config: Config) -> LockSettings:
    """Every command that writes takes this lock (the lock's view is in the target database)."""
    return LockSettings(
        connect_kwargs=config.connect_kwargs(),
        wait_timeout=config.wait_timeout,
        timeout=config.migration_lock_timeout,
        application_name=config.application_name,
        relation=config.history_table.lock,
    )


def target_key(files: MigrationSet, value: str, flag: str) -> tuple[int, ...]:
    """The order of version ``value``: a file's version, its number, or a bare number.

    >>> from pathlib import Path
    >>> from migrator.files.folder import find_migrations
    >>> files = find_migrations(Path("migrations"))
    >>> target_key(files, "002_security_invariants", "--to"), target_key(files, "1.2", "--to")
    ((2,), (1, 2))
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
