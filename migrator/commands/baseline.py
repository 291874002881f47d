"""The baseline command: record the files up to ``--version`` as applied, for a database built
without a tool, under the migration lock; ``--verify`` first compares its schema with theirs.
For example, with ``--version 002_security_invariants`` in ``config``::

    run(config, find_migrations(Path("migrations")))
    # 'baseline: 2 file(s) recorded as applied, up to 002_security_invariants'
"""

from __future__ import annotations

from migrator.commands.shared import lock_settings, target_key, versioned_rows
from migrator.commands.verify import verify_baseline
from migrator.config import Config
from migrator.database.lock import locked
from migrator.errors import HistoryMismatchError
from migrator.files.folder import MigrationSet
from migrator.files.migration import Migration
from migrator.history import table as history
from migrator.history.foreign_reads import refuse_foreign_history
from migrator.logs import get_logger

log = get_logger("maintenance")

BASELINE_DESCRIPTION = "baseline"
ERR_BASELINE_HISTORY = (
    "the history already has {count} row(s) (newest {newest}): baseline is for a database "
    "without history; use migrate"
)


def run(config: Config, files: MigrationSet) -> str:
    """Record every file up to ``--version`` as applied, for a database built by hand."""
    assert config.target_version is not None  # config requires it
    target = target_key(files, config.target_version, "--version")
    # Both phases (--phase is not read): the database built by hand has what every file up
    # to the version made, the post files' contractions included.
    chosen = [m for m in files.versioned if m.sort_key <= target]
    with locked(lock_settings(config)) as session:
        if config.dry_run:
            # what ensure_history_table would refuse
            refuse_foreign_history(session.conn, config.history_table)
        else:
            history.ensure_history_table(session.conn, config.history_table)
        recorded = history.read_history(session.conn, config.history_table)
        rows = versioned_rows(recorded, files)
        if rows and recorded_already(chosen, recorded):
            # A retried Job, or copies started together: the first one did the work.
            summary = f"nothing to do: the files up to {config.target_version} are recorded"
            log.info("baseline_nothing_to_do", summary=summary, recorded=len(rows))
            return summary
        if rows:
            raise HistoryMismatchError(
                ERR_BASELINE_HISTORY.format(count=len(rows), newest=rows[-1])
            )
        if config.verify:
            verify_baseline(config, session.conn, chosen)
        event = "plan_baseline_version" if config.dry_run else "baseline_version"
        for migration in chosen:
            log.info(
                event, version=migration.version, checksum=migration.checksum, phase=migration.phase
            )
        if config.dry_run:
            summary = f"dry run: would record {len(chosen)} file(s) as applied"
            log.info("plan_complete", versions=len(chosen), summary=summary)
            return summary
        user = session.conn.info.user
        with session.conn.transaction():
            history.record_taken_over(
                session.conn,
                config.history_table,
                [(m.version, BASELINE_DESCRIPTION, m.checksum, None, user) for m in chosen],
            )
            session.guard.check(session.conn, "baseline")
    summary = f"baseline: {len(chosen)} file(s) recorded as applied, up to {config.target_version}"
    log.info("baseline_recorded", versions=[m.version for m in chosen], summary=summary)
    return summary


def recorded_already(
    chosen: list[Migration], recorded: dict[str, history.AppliedMigration]
) -> bool:
    """Every chosen file has its row, with the file's checksum: this baseline ran before."""
    return bool(chosen) and all(
        m.version in recorded and not m.changed_since(recorded[m.version].checksum) for m in chosen
    )
