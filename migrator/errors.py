"""The runner's errors: each carries the exit code and the one-line message the user reads.

Only entrypoint.py turns them into log lines and exit codes.

    >>> error = ConfigError("DB_PORT must be a number from 1 to 65535, got 'abc'")
    >>> error.exit_code, error.event, error.message
    (78, 'invalid_configuration', "DB_PORT must be a number from 1 to 65535, got 'abc'")
"""

from __future__ import annotations

EX_OK = 0
EX_SOFTWARE = 1
EX_USAGE = 64
EX_DATAERR = 65
EX_UNAVAILABLE = 69
EX_TEMPFAIL = 75
EX_NOPERM = 77
EX_CONFIG = 78
EX_INTERRUPTED = 130
EX_TERMINATED = 143


class MigratorError(Exception):
    """Base class: a failure the user can act on, with its exit code."""

    exit_code = EX_SOFTWARE
    event = "failed"

    def __init__(self, message: str, **fields: object) -> None:
        super().__init__(message)
        self.message = message
        self.fields = fields


class UsageError(MigratorError):
    exit_code = EX_USAGE
    event = "bad_command_line"


class ConfigError(MigratorError):
    exit_code = EX_CONFIG
    event = "invalid_configuration"


class DatabaseMissingError(ConfigError):
    """DB_NAME names no database on the server (and nothing here creates it)."""


class MigrationFilesError(MigratorError):
    """A file in migrations/ cannot be used (bad name, duplicate, unreadable, not UTF-8)."""

    exit_code = EX_DATAERR
    event = "invalid_migration_files"


class HistoryMismatchError(MigratorError):
    """schema_migrations does not match the files (drift, missing file, out of order)."""

    exit_code = EX_DATAERR
    event = "history_mismatch"


class MigrationFailedError(MigratorError):
    exit_code = EX_DATAERR
    event = "migration_failed"


class HazardsFoundError(MigratorError):
    """The lint found a rewrite or full scan under a blocking lock that no file waives."""

    exit_code = EX_DATAERR
    event = "hazards_found"


class MemoryLimitError(MigratorError):
    """A pending file cannot be applied under the container's memory limit (cgroup)."""

    exit_code = EX_DATAERR
    event = "memory_limit_too_low"


class UnreachableError(MigratorError):
    exit_code = EX_UNAVAILABLE
    event = "database_unreachable"


class ConnectionLostError(UnreachableError):
    """The server went away during the run (stopped, crashed, backend terminated)."""

    event = "connection_lost"


class LockLostError(UnreachableError):
    """The migration lock's session ended while this runner was migrating."""

    event = "lock_lost"


class LockTimeoutError(MigratorError):
    exit_code = EX_TEMPFAIL
    event = "lock_timeout"


class WaitTimeoutError(MigratorError):
    """`wait`: the image's files were not all applied before the deadline (safe to retry)."""

    exit_code = EX_TEMPFAIL
    event = "wait_timeout"


class PermissionDeniedError(MigratorError):
    exit_code = EX_NOPERM
    event = "permission_denied"


class AuthenticationError(PermissionDeniedError):
    """The server refused a login (wrong password, no such role, no pg_hba entry)."""


class Interrupted(KeyboardInterrupt):
    """SIGINT/SIGTERM. A KeyboardInterrupt so that psycopg cancels the running statement."""

    def __init__(self, signal_name: str, exit_code: int) -> None:
        super().__init__(signal_name)
        self.signal_name = signal_name
        self.exit_code = exit_code
