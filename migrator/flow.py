"""The flow of a run: bootstrap, lock, plan and apply; the dry run; the status report.

>>> summary = run(load_config(sys.argv[1:], os.environ))
'applied 2 migration(s), 0 already applied'
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import psycopg

from migrator import history
from migrator.config import Config
from migrator.errors import ConfigError, ConnectionLostError
from migrator.logs import get_logger
from migrator.migrations import MigrationSet, find_migrations
from migrator.plan import Plan, make_plan
from migrator.wait import connect, reason_of, wait_for_connection

# The modules that do work (bootstrap, lock, apply, progress, status, the SQL lexer) are
# imported where they are used: a start with nothing to do, every pod start but one, does not
# pay for importing them (about 15 ms of a 200 ms start).
if TYPE_CHECKING:
    from migrator.apply import Applier
    from migrator.migration import Migration

log = get_logger("flow")

ERR_NOT_IN_ONE_TRANSACTION = (
    "SINGLE_TRANSACTION is set, but {file} must run outside a transaction ({reason}): "
    "apply it in a run without SINGLE_TRANSACTION"
)


def migrate(config: Config, files: MigrationSet) -> str:
    """Bootstrap when asked, then apply what is pending under the migration lock."""
    if config.bootstrap_enabled:
        from migrator.bootstrap import bootstrap

        bootstrap(config, files.bootstrap)
        if config.init_only:
            return "bootstrap done (--init-only)"
    owner_first = not config.bootstrap_enabled  # else bootstrap's connection came first
    with wait_for_connection(
        config.connect_kwargs(), config.wait_timeout, first=owner_first
    ) as lock_conn:
        # Most starts find nothing to do: one connection and one read decide it, no lock.
        plan = make_plan(
            files, history.read_history(lock_conn), config.allow_out_of_order,
            config.tolerate_future,
        )  # fmt: skip
        if not plan.pending:
            return summarise(plan, {}, time.monotonic())
        from migrator.memory import check_memory

        # Before the lock and the first file: a file that cannot fit is refused, not OOM-killed.
        check_memory(plan.pending, config.single_transaction)
        from migrator.apply import Applier
        from migrator.bootstrap import check_can_create
        from migrator.lock import LockGuard, advisory_lock, lock_key
        from migrator.progress import ProgressReporter

        check_can_create(lock_conn, config)
        key = lock_key(config.dbname, history.QUALIFIED_NAME)
        with (
            advisory_lock(lock_conn, key, config.migration_lock_timeout),
            connect(config.connect_kwargs(), config.wait_timeout) as conn,
        ):
            # Read again under the lock: a runner that waited usually finds nothing to do.
            history.ensure_history_table(conn)
            plan = make_plan(
                files, history.read_history(conn), config.allow_out_of_order,
                config.tolerate_future,
            )  # fmt: skip
            pid = conn.info.backend_pid
            with ProgressReporter(lock_conn, pid, config.progress_interval) as progress:
                guard = LockGuard(lock_conn.info.backend_pid, key)
                applier = Applier(conn, config, progress, guard)
                return apply_plan(applier, plan, config.single_transaction)


def apply_plan(applier: Applier, plan: Plan, single_transaction: bool = False) -> str:
    start = time.monotonic()
    if single_transaction and plan.pending:
        refuse_outside_transaction(plan.pending)
        durations = applier.apply_in_one_transaction(plan.pending)
    else:
        durations = {m.version: applier.apply(m) for m in plan.pending}
    return summarise(plan, durations, start)


def refuse_outside_transaction(pending: Sequence[Migration]) -> None:
    """--single-transaction cannot hold a file PostgreSQL runs only outside a transaction."""
    from migrator.sql import TransactionMode

    for migration in pending:
        decision = migration.mode_decision
        if decision.mode is not TransactionMode.TRANSACTION:
            raise ConfigError(
                ERR_NOT_IN_ONE_TRANSACTION.format(file=migration.path, reason=decision.reason)
            )


def summarise(plan: Plan, durations: dict[str, int], start: float) -> str:
    from migrator.status import warn_future

    warn_future(plan.future)
    for migration in plan.unverified:
        log.warning(
            "checksum_not_verified",
            version=migration.version,
            reason="recorded by hand without a SHA-256 checksum",
        )
    summary = f"applied {len(durations)} migration(s), {len(plan.applied)} already applied"
    log.info(
        "migrations_complete",
        applied=list(durations),
        skipped=len(plan.applied),
        durations_ms=durations,
        duration_ms=round((time.monotonic() - start) * 1000),
        summary=summary,
    )
    return summary


def dry_run(config: Config, files: MigrationSet) -> str:
    """Print the plan; read only (no lock, no table created, nothing applied)."""
    if config.bootstrap_enabled:
        from migrator.bootstrap import MAINTENANCE_DATABASE, database_exists

        admin_kwargs = config.connect_kwargs(admin=True, dbname=MAINTENANCE_DATABASE)
        with wait_for_connection(admin_kwargs, config.wait_timeout) as admin:
            exists = database_exists(admin, config.dbname)
        roles = [config.user] + ([config.app_user] if config.app_password else [])
        log.info(
            "plan_bootstrap",
            create_database=None if exists else config.dbname,
            script=files.bootstrap.version if files.bootstrap else None,
            set_passwords_for=roles,
        )
        if not exists:
            return plan_summary(make_plan(files, {}, config.allow_out_of_order))
    owner_first = not config.bootstrap_enabled
    with wait_for_connection(
        config.connect_kwargs(), config.wait_timeout, first=owner_first
    ) as conn:
        plan = make_plan(
            files, history.read_history(conn), config.allow_out_of_order, config.tolerate_future
        )
    return plan_summary(plan)


def plan_summary(plan: Plan) -> str:
    from migrator.status import warn_future

    warn_future(plan.future)
    for migration in plan.pending:
        decision = migration.mode_decision
        log.info(
            "plan_migration",
            version=migration.version,
            checksum=migration.checksum,
            mode=decision.mode.value,
            mode_reason=decision.reason,
            statements=len(migration.statements),
        )
    summary = f"dry run: {len(plan.pending)} pending, {len(plan.applied)} applied, nothing changed"
    log.info("plan_complete", pending=[m.version for m in plan.pending], summary=summary)
    return summary


def status(config: Config, files: MigrationSet) -> str:
    from migrator.status import future_rows, problems, status_document, status_rows, warn_future

    with wait_for_connection(config.connect_kwargs(), config.wait_timeout) as conn:
        rows = status_rows(files, history.read_history(conn))
    pending = [row["version"] for row in rows if row["state"] == "pending"]
    summary = f"{len(rows) - len(pending)} applied or recorded, {len(pending)} pending"
    up_to_date = not problems(rows, config.tolerate_future)
    warn_future(future_rows(rows))
    if config.status_json:
        # The one document on stdout (the log went to stderr): `status --json | jq`.
        runner = {"version": config.version, "revision": config.revision}
        document = status_document(rows, config.dbname, config.tolerate_future, runner)
        sys.stdout.write(json.dumps(document, default=str) + "\n")
    else:
        for row in rows:
            log.info("migration_status", **row)
    log.info("status_summary", summary=summary, up_to_date=up_to_date)
    return summary


def wait(config: Config, files: MigrationSet) -> str:
    from migrator.ready import wait_until_applied

    return wait_until_applied(config, files)


COMMANDS = {"migrate": migrate, "status": status, "wait": wait}


ERR_CONNECTION_LOST = "lost the connection to PostgreSQL ({reason}); run again"


def run(config: Config) -> str:
    files = find_migrations(config.migrations_dir)  # bad files fail before touching the database
    try:
        if config.dry_run and config.command == "migrate":
            return dry_run(config, files)
        return COMMANDS[config.command](config, files)
    except psycopg.OperationalError as error:
        # Between files (reading the history, polling the lock): the session simply ended.
        if error.sqlstate and not error.sqlstate.startswith(("08", "57P")):
            raise
        raise ConnectionLostError(ERR_CONNECTION_LOST.format(reason=reason_of(error))) from None
