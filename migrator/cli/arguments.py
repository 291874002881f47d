"""The command line: the parser, its help (flags, variables, exit codes), and which flags
belong to which command. Values are checked where the configuration reads them.

>>> build_parser().parse_args(["status", "--json"]).status_json
True
"""

from __future__ import annotations

import argparse
from typing import NoReturn

from migrator import commands
from migrator.errors import UsageError

# The commands that need a flag, and the flags only they take: (flag, dest, required by).
COMMAND_FLAGS = (
    ("--version", "baseline_version", "baseline"),
    ("--to", "rollback_to", "rollback"),
    ("--steps", "rollback_steps", "rollback"),
    ("--verify", "verify", "baseline"),
)
ERR_FLAG_FOR_OTHER_COMMAND = "{flag} belongs to the {command} command"
ERR_BASELINE_WITHOUT_VERSION = "baseline needs --version V: the newest file the database has"
ERR_ROLLBACK_TARGET = "rollback needs one of --to V or --steps N"
ERR_STEPS = "--steps must be a whole number >= 1, got {value!r}"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="entrypoint.py",
        description="Wait for PostgreSQL, bootstrap it, apply pending migrations exactly once.",
        epilog=HELP_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", nargs="?", choices=commands.NAMES, default="migrate")
    parser.add_argument("--host")
    parser.add_argument("--port")
    parser.add_argument("--database", dest="dbname")
    parser.add_argument("--user")
    parser.add_argument("--url", help="postgresql:// URL instead of the DB_* parts")
    parser.add_argument("--migrations-dir")
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("--allow-out-of-order", action="store_true")
    parser.add_argument(
        "--single-transaction",
        action="store_true",
        help="apply all pending files in one transaction: all or nothing",
    )
    parser.add_argument("--init-only", action="store_true")
    parser.add_argument("--phase")
    parser.add_argument("--json", dest="status_json", action="store_true")
    parser.add_argument(
        "--version",
        dest="baseline_version",
        help="baseline: the newest version to record; alone (no value): print the version and "
        "the source revision, then exit",
    )
    parser.add_argument("--to", dest="rollback_to", help="rollback: the version to return to")
    parser.add_argument("--steps", dest="rollback_steps", help="rollback: how many files")
    parser.add_argument("--verify", action="store_true", default=None, help="baseline: compare")
    parser.add_argument("--log-format")
    parser.add_argument("--log-level")
    parser.add_argument("--shadow-url", help="lint: a scratch database to use (it is changed)")
    parser.add_argument("--timeout", dest="migrations_wait_timeout")
    describe_flags(parser)
    return parser


# --help: what each flag does (by its destination), then the variables and the exit codes.
FLAG_HELP = {
    "command": "migrate (default): bootstrap when admin credentials are set, then apply what is "
    "pending; status: applied and pending versions; wait: exit 0 once every file of this "
    "image is applied (read only, no lock), 75 after --timeout; lint: what the pending files "
    "lock, rewrite and scan, measured on a scratch database; adopt: take over another tool's "
    "history; baseline --version V: record files up to V; rollback --to V | --steps N: run "
    "down parts; cleanup: delete expired rows in short batches, within CLEANUP_TIME_BUDGET",
    "host": "server host (DB_HOST, default localhost)",
    "port": "server port (DB_PORT, default 5432)",
    "dbname": "database to migrate (DB_NAME, default auth_service)",
    "user": "owner of the schema, runs the migrations (DB_USER, default auth_service)",
    "migrations_dir": "folder of <number>_<name>.sql files (MIGRATIONS_DIR, default ./migrations)",
    "dry_run": "print the plan (bootstrap steps, pending files, checksums, modes), change nothing "
    "(DRY_RUN)",
    "allow_out_of_order": "apply a pending file older than the newest applied one "
    "(ALLOW_OUT_OF_ORDER)",
    "init_only": "bootstrap only (database, roles, 000_*.sql); needs DB_ADMIN_USER",
    "phase": "pre: the files without -- migrate:phase post (before the rollout: the init "
    "container); post: those with it (after the rollout); all: pre, then post (MIGRATE_PHASE; "
    "default all, and pre for wait and healthcheck.py)",
    "status_json": "status: one JSON document on stdout (logs go to stderr)",
    "log_format": "json or console (LOG_FORMAT; default json, console on a terminal)",
    "log_level": "debug, info, warning or error (LOG_LEVEL, default info)",
    "migrations_wait_timeout": "wait: give up after this long, exit 75 (MIGRATIONS_WAIT_TIMEOUT, "
    "default 600s)",
}
HELP_EPILOG = """environment variables (flags win over them):
  DB_HOST DB_PORT DB_NAME DB_USER   connection (or DATABASE_URL / --url)
  DB_PASSWORD(_FILE)                the owner's password (a file: Docker/Kubernetes secrets)
  DB_ADMIN_USER DB_ADMIN_PASSWORD(_FILE)  superuser for bootstrap (unset: no bootstrap)
  DB_ADMIN_HOST DB_ADMIN_PORT       where bootstrap connects (default DB_HOST, DB_PORT)
  APP_DB_USER APP_DB_PASSWORD(_FILE)      the application's role and its password
  ROLE_PASSWORDS                    always (default) | on-create: when bootstrap sets passwords
  DB_SSLMODE DB_SSLROOTCERT DB_SSLCERT DB_SSLKEY DB_SSLCRL DB_CHANNEL_BINDING   TLS
  MIGRATIONS_DIR DRY_RUN ALLOW_OUT_OF_ORDER SINGLE_TRANSACTION
  MIGRATE_PHASE                     pre | post | all (default; pre for wait): which files run
  FUTURE_MIGRATIONS                 warn (default) | fail: versions applied by a newer release
  DB_WAIT_TIMEOUT (60s) MIGRATION_LOCK_TIMEOUT (600s) DDL_LOCK_TIMEOUT (5s)
  DDL_LOCK_RETRIES (5) STATEMENT_TIMEOUT (0: none) PROGRESS_INTERVAL (5s)
  MIGRATIONS_WAIT_TIMEOUT (600s)    the wait command's deadline
  LINT_SHADOW_URL LINT_MIN_ROWS (10000) LINT_BEFORE_APPLY   the hazard lint
  ANALYZE_AFTER_MIGRATE (true)      ANALYZE what a file rewrote or filled
  CLEANUP_TIME_BUDGET (300s)        how long one cleanup run may delete
  CLEANUP_DB_PASSWORD(_FILE)        password bootstrap sets on <DB_USER>_cleanup, the cleanup role
  BATCH_TARGET_DURATION (150ms) BATCH_SIZE (1000) BATCH_MAX_SIZE (50000)   batch sizes
  BATCH_CHECK_INTERVAL (1s) BATCH_MAX_REPLICA_LAG (64MB) BATCH_MAX_LOCK_WAITERS (0)
  BATCH_PAUSE_ON_AUTOVACUUM (true)  when a batched data migration pauses between batches
  LOG_FORMAT LOG_LEVEL TERMINATION_LOG (/dev/termination-log)

exit codes:
  0 success (including nothing to do)   1 internal error (a bug)   64 bad command line
  65 a migration failed, a file is invalid, the history does not match the files,
     or a file cannot fit under the container's memory limit
  69 PostgreSQL not reachable, or the connection lost   75 lock (or wait) timeout: retry
  77 authentication or permission denied   78 invalid configuration
  130 / 143 interrupted / terminated   137 killed (e.g. out of memory: not the runner's choice)
"""


def describe_flags(parser: argparse.ArgumentParser) -> None:
    """Give every flag its description from FLAG_HELP (flags with their own help keep it).

    A flag with neither is a KeyError here: every flag is described.
    """
    for action in parser._actions:
        if action.help is None:
            action.help = FLAG_HELP[action.dest]


def check_command_flags(args: argparse.Namespace) -> None:
    """Each command's own flags: only with it, and the ones it cannot do without."""
    for flag, dest, command in COMMAND_FLAGS:
        if getattr(args, dest) is not None and args.command != command:
            raise UsageError(ERR_FLAG_FOR_OTHER_COMMAND.format(flag=flag, command=command))
    if args.command == "baseline" and not args.baseline_version:
        raise UsageError(ERR_BASELINE_WITHOUT_VERSION)
    if args.command == "rollback" and (args.rollback_to is None) == (args.rollback_steps is None):
        raise UsageError(ERR_ROLLBACK_TARGET)


def steps(value: str | None) -> int | None:
    if value is None:
        return None
    if not value.isdigit() or int(value) < 1:
        raise UsageError(ERR_STEPS.format(value=value))
    return int(value)
