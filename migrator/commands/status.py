"""The status command: applied and pending versions, as log events or one JSON document.

For example, against the database::

    run(config, find_migrations(Path("migrations")))  # '3 applied or recorded, 0 pending'
"""

from __future__ import annotations

import json
import sys

from migrator.config import Config
from migrator.database.connect import wait_for_connection
from migrator.files.folder import MigrationSet
from migrator.history import table as history
from migrator.history.checkpoint import read_checkpoints
from migrator.history.status import (
    future_rows,
    problems,
    status_document,
    status_rows,
    warn_future,
)
from migrator.logs import get_logger

log = get_logger("flow")


def run(config: Config, files: MigrationSet) -> str:
    with wait_for_connection(config.connect_kwargs(), config.wait_timeout) as conn:
        recorded = history.read_own_history(conn, config.history_table)
        # Only a folder with a batch file asks for the checkpoints of a backfill in progress.
        backfills = (
            {
                version: found.as_status()
                for version, found in read_checkpoints(conn, config.history_table).items()
            }
            if any(m.batch for m in files.all)
            else {}
        )
        rows = status_rows(files, recorded, backfills)
    pending = [row["version"] for row in rows if row["state"] == "pending"]
    summary = f"{len(rows) - len(pending)} applied or recorded, {len(pending)} pending"
    up_to_date = not problems(rows, config.tolerate_future, config.run_phase)
    warn_future(future_rows(rows))
    if config.status_json:
        # The one document on stdout (the log went to stderr): `status --json | jq`.
        runner = {"version": config.version, "revision": config.revision}
        document = status_document(
            rows, config.dbname, config.tolerate_future, runner, config.run_phase
        )
        sys.stdout.write(json.dumps(document, default=str) + "\n")
    else:
        for row in rows:
            log.info("migration_status", **row)
    log.info("status_summary", summary=summary, up_to_date=up_to_date)
    return summary
