"""The migrate command: bootstrap when asked, then the pending files under the migration lock;
with ``--dry-run`` the plan, read only. For example, against the database::

    run(load_config([], os.environ), find_migrations(Path("migrations")))
    # 'applied 2 migration(s), 0 already applied'
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import closing
from functools import partial
from typing import TYPE_CHECKING, Any

import psycopg

from migrator.config import Config
from migrator.database.catalog import MAINTENANCE_DATABASE, database_exists
from migrator.database.connect import (
    ConnectionAhead,
    connect,
    open_connection,
    wait_for_connection,
)
from migrator.errors import ConfigError
from migrator.files.folder import MigrationSet
from migrator.files.migration import MAY_HOLD_WAIVER
from migrator.history import table as history
from migrator.history.plan import Plan, deferred_note, make_plan
from migrator.history.status import warn_future
from migrator.logs import get_logger

# The modules that do work (bootstrap, lock, apply, progress, lint, the SQL lexer) are
# imported where they are used, each import marked "lazy": a start with nothing to do, every
# pod start but one, does not pay for importing them (about 15 ms of a 200 ms start).
if TYPE_CHECKING:
    from migrator.apply.applier import Applier
    from migrator.files.migration import Migration

log = get_logger("flow")

MONITOR_CONNECT_TIMEOUT = 5

ERR_NOT_IN_ONE_TRANSACTION = (
    "SINGLE_TRANSACTION is set, but {file} must run outside a transaction ({reason}): "
    "apply it in a run without SINGLE_TRANSACTION"
)


BATCHED_REASON = "a batched data migration commits each batch with its checkpoint"


def migrate(config: Config, files: MigrationSet) -> str:
    """Bootstrap when asked, then apply what is pending under the migration lock."""
    owner: psycopg.Connection[Any] | None = None
    if config.bootstrap_enabled:
        # lazy: not on the no-op start
        from migrator.database.bootstrap import bootstrap
        from migrator.files.prefetch import read_ahead

        if files.bootstrap:
            files.bootstrap.refuse_unsupported()

        def creating() -> None:  # a new database: every file is pending, lex them meanwhile
            if not config.init_only:
                read_ahead(files.all)  # 000 first: the applier needs it first

        owner = bootstrap(config, files.bootstrap, on_create=creating)
        if config.init_only:
            if owner:
                owner.close()
            return "bootstrap done (--init-only)"
    owner_first = not config.bootstrap_enabled  # else bootstrap's connection came first
    # The owner's login that recorded 000 goes on: one connection (and login) fewer.
    with owner or wait_for_connection(
        config.connect_kwargs(), config.wait_timeout, first=owner_first
    ) as lock_conn:
        # Most starts find nothing to do: one connection and one read decide it, no lock.
        plan = make_plan(
            files, history.read_history(lock_conn, config.history_table),
            config.allow_out_of_order,
            config.tolerate_future,
            config.run_phase,
        )  # fmt: skip
        if not plan.pending:
            return summarise(plan, {}, time.monotonic())
        # The applying connection logs in meanwhile (the checks below, the lock, the imports).
        reconnect = partial(connect, config.connect_kwargs(), config.wait_timeout)
        with ConnectionAhead(reconnect) as apply_conn:
            # Refused before anything runs (exit 65); this decides every file's mode too, so
            # no file is lexed again later.
            for migration in plan.pending:
                migration.refuse_unsupported()
            if config.lint_before_apply:
                # lazy: not on the no-op start
                from migrator.lint.linter import lint

                lint(config, files)  # HazardsFoundError (65) before anything is applied
            # lazy: not on the no-op start
            from migrator.apply.memory import check_memory

            # Before the lock and the first file: a file that cannot fit is refused, not
            # OOM-killed.
            check_memory(plan.pending, config.single_transaction)
            history.check_can_create(lock_conn, config.history_table, config.user, config.dbname)
            return apply_under_lock(config, files, lock_conn, apply_conn)


def apply_under_lock(
    config: Config,
    files: MigrationSet,
    lock_conn: psycopg.Connection[Any],
    apply_conn: ConnectionAhead,
) -> str:
    """Take the migration lock on ``lock_conn``, read the history again, apply the plan on
    ``apply_conn`` (given up while the lock is busy: a waiting runner holds one connection)."""
    # lazy: not on the no-op start
    from migrator.apply.applier import Applier
    from migrator.apply.progress import ProgressReporter
    from migrator.commands.shared import lock_settings
    from migrator.database.lock import migration_lock

    with migration_lock(lock_settings(config), lock_conn, apply_conn) as held:
        conn = held.conn
        # Read again under the lock: a runner that waited usually finds nothing to do.
        history.ensure_history_table(conn, config.history_table)
        recorded = history.read_history(conn, config.history_table)
        plan = make_plan(
            files, recorded, config.allow_out_of_order, config.tolerate_future, config.run_phase
        )
        if not recorded and (
            plan.pending or plan.deferred
        ):  # a first run, or a history under another name
            versions = [m.version for m in files.all]
            history.refuse_history_elsewhere(conn, config.history_table, versions)
        # Behind a pooler the applying backend changes between transactions: progress looks
        # for the index build of this database instead of a pid.
        backend = None if held.pooled else conn.info.backend_pid
        # One attempt for the monitor: progress is a log line, not worth a wait.
        open_monitor = partial(open_connection, config.connect_kwargs(), MONITOR_CONNECT_TIMEOUT)
        # A file that changes the defaults a login reads is followed by a new login.
        reopen = partial(connect, config.connect_kwargs(), config.wait_timeout)
        with ProgressReporter(open_monitor, backend, config.progress_interval) as progress:
            applier = Applier(conn, config, progress, held.guard, pooled=held.pooled, reopen=reopen)
            with closing(applier):
                return apply_plan(applier, plan, config.single_transaction)


def apply_plan(applier: Applier, plan: Plan, single_transaction: bool = False) -> str:
    start = time.monotonic()
    log_waivers(plan.pending)
    versioned = [m for m in plan.pending if not m.repeatable]
    if single_transaction and versioned:
        refuse_outside_transaction(versioned)
        durations = applier.apply_in_one_transaction(versioned)
    else:
        durations = {m.version: applier.apply(m) for m in versioned}
    for migration in plan.pending:
        if migration.repeatable:  # its row is replaced, in the same transaction
            durations[migration.version] = applier.apply(migration, applier.record_again)
    return summarise(plan, durations, start)


def log_waivers(pending: Sequence[Migration]) -> None:
    """The hazards a file waives (``-- migrate:allow``), and why, logged when it is applied."""
    waiving = [m for m in pending if MAY_HOLD_WAIVER.search(m.sql)]  # most files: none
    if waiving:
        # lazy: not on the no-op start
        from migrator.lint.findings import waivers_of

        for migration in waiving:
            for waiver in waivers_of(migration):
                log.warning(
                    "hazard_waived",
                    version=migration.version,
                    kind=waiver.kind,
                    relation=waiver.relation,
                    reason=waiver.reason,
                    line=waiver.line,
                )


def refuse_outside_transaction(pending: Sequence[Migration]) -> None:
    """--single-transaction cannot hold a file PostgreSQL runs only outside a transaction."""
    # lazy: not on the no-op start
    from migrator.files.sql import TransactionMode

    for migration in pending:
        if migration.batch is not None:  # each batch commits on its own
            raise ConfigError(
                ERR_NOT_IN_ONE_TRANSACTION.format(file=migration.path, reason=BATCHED_REASON)
            )
        decision = migration.mode_decision
        if decision.mode is not TransactionMode.TRANSACTION:
            raise ConfigError(
                ERR_NOT_IN_ONE_TRANSACTION.format(file=migration.path, reason=decision.reason)
            )


def summarise(plan: Plan, durations: dict[str, int], start: float) -> str:
    warn_future(plan.future)
    for migration in plan.unverified:
        log.warning(
            "checksum_not_verified",
            version=migration.version,
            reason="recorded by hand without a SHA-256 checksum",
        )
    summary = f"applied {len(durations)} migration(s), {len(plan.applied)} already applied"
    summary += deferred_note(plan)
    log.info(
        "migrations_complete",
        applied=list(durations),
        skipped=len(plan.applied),
        deferred=[m.version for m in plan.deferred],
        durations_ms=durations,
        duration_ms=round((time.monotonic() - start) * 1000),
        summary=summary,
    )
    return summary


def dry_run(config: Config, files: MigrationSet) -> str:
    """Print the plan; read only (no lock, no table created, nothing applied)."""
    if config.bootstrap_enabled:
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
            return plan_summary(
                make_plan(files, {}, config.allow_out_of_order, phase=config.run_phase),
                config.batch.size,
            )
    owner_first = not config.bootstrap_enabled
    with wait_for_connection(
        config.connect_kwargs(), config.wait_timeout, first=owner_first
    ) as conn:
        plan = make_plan(
            files,
            history.read_own_history(conn, config.history_table),
            config.allow_out_of_order,
            config.tolerate_future,
            config.run_phase,
        )
    summary = plan_summary(plan, config.batch.size)
    if plan.pending and (config.admin_user or config.shadow_url):
        # Only where a scratch database can be had; the findings are reported, not enforced.
        # lazy: not on the no-op start
        from migrator.lint.linter import run_lint

        summary += "; " + run_lint(config, files).summary
    return summary


def batch_plan(migration: Migration, default_size: int) -> dict[str, Any]:
    """What the dry run says of a batch file: the table and key it walks, its first size."""
    spec = migration.batch
    if spec is None:
        return {}
    return {"batch": {"table": spec.table, "key": spec.key, "size": spec.size or default_size}}


def plan_summary(plan: Plan, config_batch_size: int) -> str:
    warn_future(plan.future)
    for migration in plan.pending:
        migration.refuse_unsupported()
    for migration in plan.pending:
        decision = migration.mode_decision
        log.info(
            "plan_migration",
            version=migration.version,
            checksum=migration.checksum,
            mode=decision.mode.value,
            mode_reason=decision.reason,
            statements=len(migration.statements),
            phase=migration.phase,
            **batch_plan(migration, config_batch_size),
        )
    summary = f"dry run: {len(plan.pending)} pending, {len(plan.applied)} applied, nothing changed"
    summary += deferred_note(plan)
    log.info(
        "plan_complete",
        pending=[m.version for m in plan.pending],
        deferred=[m.version for m in plan.deferred],
        summary=summary,
    )
    return summary


def run(config: Config, files: MigrationSet) -> str:
    return dry_run(config, files) if config.dry_run else migrate(config, files)
