"""Readiness check: exit 0 when every migration file is applied unchanged, else 1 with the reason.

Files of the post phase (``-- migrate:phase post``) are applied after the rollout, so their
being pending does not make the application unready: the pre phase is checked unless
``--phase all`` (or MIGRATE_PHASE) asks for more.

One connection, one query, so it can serve as a readiness probe or a compose healthcheck:

    $ python healthcheck.py
    ok: 2 migrations applied, database auth_service is up to date
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence

import psycopg

from migrator.config import load_config
from migrator.database.connect import open_connection, reason_of
from migrator.errors import MigratorError
from migrator.files.folder import find_migrations
from migrator.files.migration import POST, PRE
from migrator.history import table as history
from migrator.history.status import future_rows, left_for_other_phase, problems, status_rows
from migrator.logs import Redactor

HEALTHY = 0
UNHEALTHY = 1
CONNECT_TIMEOUT = 3
# The files of the other phase, pending: applied by their own run (docs/writing-migrations.md).
DEFERRED_NOTE = "; {count} pending {phase} migration(s) ({versions}), applied by --phase {phase}"
NOT_A_HISTORY = "MIGRATIONS_TABLE names {table}, which is not this runner's history"
FUTURE_WARNING = (
    "; warning: future_migrations {versions} applied by a newer release (FUTURE_MIGRATIONS=fail "
    "makes this unhealthy)"
)


def check(argv: Sequence[str], environ: Mapping[str, str]) -> tuple[int, str]:
    """(exit code, the one line saying why)."""
    try:
        config = load_config(argv, environ, interactive=False)
        files = find_migrations(config.migrations_dir)
    except MigratorError as error:
        return UNHEALTHY, f"unhealthy: {error.message}"
    try:
        # No retries here, but the runner's pooler-safe connection (nothing prepared or left set).
        with open_connection(config.connect_kwargs(read_only=True), CONNECT_TIMEOUT) as conn:
            try:
                recorded = history.select_history(conn, config.history_table)
            except psycopg.errors.UndefinedTable:
                # Nothing applied yet, or MIGRATIONS_TABLE's schema is missing (ConfigError):
                # a second query, on this path only.
                history.history_table_exists(conn, config.history_table)
                recorded = {}
    except MigratorError as error:
        return UNHEALTHY, f"unhealthy: {error.message}"
    except psycopg.errors.UndefinedColumn as error:
        reason = reason_of(error)
        return UNHEALTHY, f"unhealthy: {NOT_A_HISTORY.format(table=config.history_table)}: {reason}"
    except psycopg.Error as error:
        reason = Redactor(config.secrets).redact_text(reason_of(error))
        return UNHEALTHY, f"unhealthy: database not reachable: {reason}"
    rows = status_rows(files, recorded)
    bad = problems(rows, config.tolerate_future, config.ready_phase)
    if bad:
        listed = ", ".join(f"{row['version']} {row['state']}" for row in bad)
        return UNHEALTHY, f"unhealthy: {len(bad)} migration(s) not up to date: {listed}"
    left = [row["version"] for row in rows if left_for_other_phase(row, config.ready_phase)]
    count = len(files.versioned) - len(left)
    line = f"ok: {count} migrations applied, database {config.dbname} is up to date"
    if left:
        other = POST if config.ready_phase == PRE else PRE
        line += DEFERRED_NOTE.format(count=len(left), phase=other, versions=", ".join(left))
    future = future_rows(rows)
    if future:
        # An older image after a rollback: healthy, but say what the newer release left.
        line += FUTURE_WARNING.format(versions=", ".join(future))
    return HEALTHY, line


def main() -> int:
    code, line = check(sys.argv[1:], os.environ)
    print(line)
    return code


if __name__ == "__main__":
    sys.exit(main())
