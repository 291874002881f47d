"""The wait command: poll the history, read only, until every file of this image is applied.

App pods that start while a migrate Job runs wait with it instead of migrating themselves::

    wait_until_applied(config, find_migrations(config.migrations_dir))
    # 'every migration of this image is applied (waited 3.2s)'
"""

from __future__ import annotations

import time
from typing import Any

import psycopg

from migrator.config import Config
from migrator.database.connect import wait_for_connection
from migrator.errors import WaitTimeoutError
from migrator.files.folder import MigrationSet
from migrator.history import table as history
from migrator.history.plan import Plan, deferred_note, make_plan
from migrator.history.status import warn_future
from migrator.logs import get_logger

log = get_logger("ready")

# A file applied by the Job is noticed within a second: one indexed read every half second.
POLL_INTERVAL = 0.5
# While waiting, one line every so often rather than one per poll.
REPORT_INTERVAL = 10.0

ERR_WAIT_TIMEOUT = (
    "not every migration of this image was applied within {timeout:g}s; still pending: "
    "{pending}; check the migrate Job (kubectl logs job/...), then retry"
)


def wait_until_applied(config: Config, files: MigrationSet) -> str:
    """Exit 0 once nothing of ``files`` is pending; WaitTimeoutError (75) at the deadline.

    Takes no lock and writes nothing: an absent history table reads as "all pending". A
    history that cannot match (changed file, a lost one) fails at once (65): no Job fixes it.
    """
    start = time.monotonic()
    deadline = start + config.migrations_wait_timeout
    connect_timeout = min(config.wait_timeout, config.migrations_wait_timeout)
    last_report: float | None = None
    with wait_for_connection(config.connect_kwargs(), connect_timeout) as conn:
        while True:
            plan = read_plan(conn, config, files)
            now = time.monotonic()
            if not plan.pending:
                return ready(plan, now - start)
            pending = [m.version for m in plan.pending]
            if now >= deadline:
                raise WaitTimeoutError(
                    ERR_WAIT_TIMEOUT.format(
                        timeout=config.migrations_wait_timeout, pending=", ".join(pending)
                    ),
                    pending=pending,
                )
            if last_report is None or now - last_report >= REPORT_INTERVAL:
                log.info(
                    "waiting_for_migrations",
                    pending=pending,
                    elapsed_s=round(now - start, 1),
                    timeout_s=config.migrations_wait_timeout,
                )
                last_report = now
            time.sleep(min(POLL_INTERVAL, max(deadline - now, 0.0)))


def read_plan(conn: psycopg.Connection[Any], config: Config, files: MigrationSet) -> Plan:
    # The pre files by default: post files are applied after the rollout these pods are part
    # of, so waiting for them would hold the rollout up for good (--phase all waits for them).
    return make_plan(
        files,
        history.read_history(conn, config.history_table),
        config.allow_out_of_order,
        config.tolerate_future,
        config.ready_phase,
    )


def ready(plan: Plan, waited: float) -> str:
    warn_future(plan.future)
    summary = f"every migration of this image is applied (waited {waited:.1f}s)"
    summary += deferred_note(plan)  # the post files, left for after the rollout
    log.info(
        "migrations_ready",
        applied=len(plan.applied),
        deferred=[m.version for m in plan.deferred],
        waited_s=round(waited, 3),
        summary=summary,
    )
    return summary


def run(config: Config, files: MigrationSet) -> str:
    return wait_until_applied(config, files)
