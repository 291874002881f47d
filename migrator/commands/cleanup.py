"""The cleanup command: the schema's expiry cleanup in short batches, within a time budget.

Run on a schedule (the Kubernetes CronJob, a compose one-off) as the cleanup role, which may
do nothing else (docs/security.md)::

    run(config, files)  # 'removed 1200 expired row(s) in 0.4s: tokens 1000, auth_codes 200'
"""

from __future__ import annotations

from migrator.config import Config
from migrator.database.cleanup import CleanupSettings, run_cleanup
from migrator.files.folder import MigrationSet


def cleanup_settings(config: Config) -> CleanupSettings:
    """The run's part of the configuration: each batch waits for locks as a migration does.

    >>> cleanup_settings(Config(password="s3cret", cleanup_time_budget=60.0)).time_budget
    60.0
    """
    return CleanupSettings(
        connect_kwargs=config.connect_kwargs(),
        wait_timeout=config.wait_timeout,
        time_budget=config.cleanup_time_budget,
        lock_timeout=config.ddl_lock_timeout,
        lock_retries=config.ddl_lock_retries,
        statement_timeout=config.statement_timeout,
        progress_interval=config.progress_interval,
    )


def run(config: Config, files: MigrationSet) -> str:
    return run_cleanup(cleanup_settings(config))
