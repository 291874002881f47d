"""The rollback command: run down parts newest first under the migration lock, each with its
history row deleted in the same transaction. For example, against the database::

    run(config, find_migrations(Path("migrations")))  # 'rolled back 1 migration(s)'
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import closing
from functools import partial
from typing import Any

import psycopg

from migrator.apply.applier import Applier
from migrator.commands.shared import lock_settings, target_key
from migrator.config import Config
from migrator.database.connect import connect
from migrator.database.lock import locked
from migrator.errors import MigrationFilesError
from migrator.files.folder import MigrationSet
from migrator.files.migration import Migration
from migrator.history import table as history
from migrator.history.name import TableName
from migrator.history.plan import in_phase, make_plan
from migrator.logs import get_logger

log = get_logger("maintenance")

ERR_NO_DOWN = (
    "{file} has no down part: nothing was rolled back; write its down part "
    "(a -- migrate:down section or a .down.sql file), or roll back to a later version"
)


def rollback_targets(
    config: Config, files: MigrationSet, recorded: dict[str, history.AppliedMigration]
) -> list[Migration]:
    """The applied files to undo, newest first; refused before anything runs when one of them
    has no down part. ``--phase pre`` or ``post`` undoes files of that phase only (``--steps 1
    --phase post``: the newest post file); by default both, newest version first."""
    make_plan(files, recorded, allow_out_of_order=True)  # drift: the files must be as applied
    applied = sorted(
        (m for m in files.versioned if m.version in recorded and in_phase(m, config.run_phase)),
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


def forgetting(
    table: TableName, version: str
) -> Callable[[psycopg.Connection[Any], Migration, int], None]:
    """What the down part records: its up part's row deleted, in the same transaction."""

    def forget(conn: psycopg.Connection[Any], _down: Migration, _execution_ms: int) -> None:
        history.forget(conn, table, version)

    return forget


def run(config: Config, files: MigrationSet) -> str:
    """Run the down parts newest first, each with its history row deleted in its transaction."""
    with locked(lock_settings(config)) as session:
        recorded = history.read_history(session.conn, config.history_table)
        chosen = rollback_targets(config, files, recorded)
        for migration in chosen:
            assert migration.down is not None
            log.info(
                "plan_rollback" if config.dry_run else "rollback_started",
                version=migration.version,
                phase=migration.phase,
                file=str(migration.down.path),
                mode=migration.down.mode_decision.mode.value,
            )
        if config.dry_run:
            summary = f"dry run: would roll back {len(chosen)} migration(s)"
            log.info("plan_complete", rollback=[m.version for m in chosen], summary=summary)
            return summary
        reopen = partial(connect, config.connect_kwargs(), config.wait_timeout)
        applier = Applier(
            session.conn, config, None, session.guard, pooled=session.pooled, reopen=reopen
        )
        with closing(applier):
            for migration in chosen:
                assert migration.down is not None
                applier.apply(migration.down, forgetting(config.history_table, migration.version))
                log.info("migration_rolled_back", version=migration.version)
    summary = f"rolled back {len(chosen)} migration(s)"
    log.info("rollback_complete", versions=[m.version for m in chosen], summary=summary)
    return summary
