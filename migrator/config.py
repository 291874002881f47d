"""Configuration: flags over environment over defaults, read once into a frozen Config.

>>> config = load_config(["--dry-run"], {"DB_PASSWORD": "s3cret"}, interactive=False)
>>> config.dry_run, config.dbname
(True, 'auth_service')
"""

from __future__ import annotations

import argparse
import difflib
import getpass
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

from migrator import commands
from migrator.apply.throttle import (
    DEFAULT_CHECK_INTERVAL,
    DEFAULT_MAX_LOCK_WAITERS,
    DEFAULT_MAX_REPLICA_LAG,
    ThrottleSettings,
)
from migrator.cli.arguments import build_parser, check_command_flags, steps
from migrator.database.conninfo import (
    CHANNEL_BINDINGS,
    DEFAULT_SSLMODE,
    SECRET_PARAMETERS,
    SSLMODES,
    TLS_FILE_SETTINGS,
    URL_FIELDS,
    VERIFIED_SSLMODE,
    WRITABLE_SESSION,
    parse_url,
    tls_file,
)
from migrator.errors import ConfigError
from migrator.files.migration import ALL, PRE, RUN_PHASES
from migrator.history.name import DEFAULT_TABLE, LOCK_SUFFIX, TableName
from migrator.version import NAME, VERSION, revision

DEFAULT_HOST = "localhost"
DEFAULT_PORT = 5432
DEFAULT_DBNAME = "auth_service"
# NAMEDATALEN - 1 in every stock build: the server cuts a longer database or role name, the
# startup packet's too, so two settings that differ past it would name one object.
MAX_NAME_BYTES = 63
DEFAULT_USER = "auth_service"
DEFAULT_APP_USER = "auth_service_app"

DEFAULT_MIGRATIONS_DIR = "./migrations"
# MIGRATIONS_TABLE: ``name`` (in schema public) or ``schema.name``. Lower-case ASCII letters,
# digits and underscores only, so the name means the same quoted or not (SEED.md's queries
# write it unquoted, psql folds case) and needs no escaping in a log line or a manifest.
TABLE_NAME_PART = re.compile(r"[a-z_][a-z0-9_]*")
# The lock's view is the table's name plus LOCK_SUFFIX: it must fit in a name too.
MAX_TABLE_NAME_BYTES = MAX_NAME_BYTES - len(LOCK_SUFFIX)
# Schemas PostgreSQL keeps for itself (CREATE SCHEMA pg_x is refused; pg_temp is per session).
SYSTEM_SCHEMA_PREFIX = "pg_"
SYSTEM_SCHEMAS = frozenset({"information_schema"})
DEFAULT_WAIT_TIMEOUT = 60.0
DEFAULT_MIGRATION_LOCK_TIMEOUT = 600.0
DEFAULT_DDL_LOCK_TIMEOUT = 5.0
DEFAULT_DDL_LOCK_RETRIES = 5
DEFAULT_STATEMENT_TIMEOUT = 0.0
DEFAULT_PROGRESS_INTERVAL = 5.0
# Batched data migrations (-- migrate:batch): each batch aims at this long a statement, from a
# first size of BATCH_SIZE rows (or the header's size=), never above BATCH_MAX_SIZE rows.
DEFAULT_BATCH_TARGET_DURATION = 0.15
DEFAULT_BATCH_SIZE = 1000
DEFAULT_BATCH_MAX_SIZE = 50000
DEFAULT_TERMINATION_LOG = "/dev/termination-log"
DEFAULT_APPLICATION_NAME = NAME  # how the runner's sessions show in pg_stat_activity
# An older image on a database a newer release migrated: "warn" lets it run (rollbacks).
FUTURE_MIGRATIONS_MODES = ("warn", "fail")
DEFAULT_FUTURE_MIGRATIONS = "warn"
# When bootstrap sets role passwords: every run (the Secret is the truth) or on creation only.
ROLE_PASSWORDS_MODES = ("always", "on-create")
DEFAULT_ROLE_PASSWORDS = "always"
# `wait`: how long to wait for every file of the image to be applied by someone else.
DEFAULT_MIGRATIONS_WAIT_TIMEOUT = 600.0
# `lint`: a table this big (estimated rows on the target) is not UPDATEd or DELETEd from in one
# statement: about a second of row locks and a burst of WAL the replicas replay (docs/lint.md).
DEFAULT_LINT_BATCH_ROWS = 100_000
# `cleanup`: how long one run may delete before it stops between two batches (a CronJob's
# activeDeadlineSeconds must be above it, with the connection's wait).
DEFAULT_CLEANUP_TIME_BUDGET = 300.0
# The cleanup role is named after the owner: 000 creates it, 004 grants it the cleanup alone.
CLEANUP_ROLE_SUFFIX = "_cleanup"
STATS_ROLE_SUFFIX = "_stats"
LOG_FORMATS = ("json", "console")
LOG_LEVELS = ("debug", "info", "warning", "error")
DEFAULT_LOG_FORMAT = "json"  # on a terminal: console
DEFAULT_LOG_LEVEL = "info"
# Passwords that are somebody's example, refused wherever they come from (compared lowercased).
PLACEHOLDER_PASSWORDS = frozenset(
    {
        "replace-me", "replace_me", "replaceme", "change-me", "change_me", "changeme",
        "changeit", "password", "passwd", "password1", "password123", "secret", "postgres",
        "example", "admin", "root", "test", "default", "todo", "xxx", "<password>",
        "your-password", "yourpassword", "mysecretpassword", "123456", "12345678", "qwerty",
    }
)  # fmt: skip
# Passwords that bootstrap sets on a role must be at least this long.
MIN_ROLE_PASSWORD_LENGTH = 16
TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off", ""})
DURATION_UNITS = {"ms": 0.001, "s": 1.0, "min": 60.0, "m": 60.0, "h": 3600.0}
DURATION_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|min|m|h)?\s*$")
# Sizes as postgresql.conf writes them (a kB is 1024 bytes), any case; a bare number is bytes.
SIZE_UNITS = {"": 1, "b": 1, "kb": 2**10, "mb": 2**20, "gb": 2**30, "tb": 2**40}
SIZE_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$", re.IGNORECASE)
OFF_WORDS = frozenset({"off", "0"})

ERR_NOT_A_PORT = "{name} must be a port number from 1 to 65535, got {value!r}"
ERR_NOT_A_DURATION = "{name} must be a duration like 30, 30s, 500ms or 2min, got {value!r}"
ERR_NOT_POSITIVE = "{name} must be above 0, got {value:g}s"
ERR_NOT_A_COUNT = "{name} must be a whole number >= 0, got {value!r}"
ERR_NOT_A_SIZE = "{name} must be a size like 64MB, 512kB or 1GB (off: no limit), got {value!r}"
ERR_NOT_ROWS = "{name} must be a whole number of rows, 1 or more, got {value}"
ERR_SIZE_ABOVE_MAX = "BATCH_SIZE ({size}) must not be above BATCH_MAX_SIZE ({max_size})"
ERR_NOT_A_BOOLEAN = "{name} must be true or false, got {value!r}"
ERR_NOT_ONE_OF = "{name} must be one of {choices}, got {value!r}"
ERR_PASSWORD_FILE = "{name} points to {path}, which {problem}"
ERR_BOTH_PASSWORD_AND_FILE = "set {name} or {name}_FILE, not both"
ERR_PASSWORD_EMPTY = "{name} is empty: set the password (a file's single final newline is ignored)"
ERR_PASSWORD_BLANK = "{name} holds only whitespace: set a real password"
ERR_PASSWORD_CONTROL = (
    "{name} contains a {what} inside the password: libpq would cut it there or send it "
    "as is; write the password on one line (a file's single final newline is ignored)"
)
ERR_PASSWORD_PLACEHOLDER = (
    "{name} is a placeholder from an example, not a password: generate one, e.g. "
    "openssl rand -base64 24"
)
ERR_PASSWORD_TOO_SHORT = (
    "{name} is shorter than {minimum} characters: bootstrap sets it on role {role}; "
    "generate one, e.g. openssl rand -base64 24"
)
ERR_NO_PASSWORD = (
    "no password for {user}: set DB_PASSWORD or DB_PASSWORD_FILE "
    "(no terminal is attached to prompt for it)"
)
ERR_NAME_TOO_LONG = (
    "{name} is {length} bytes long; PostgreSQL keeps only the first {limit} bytes of a name, so "
    "it would silently mean {cut!r}: choose a name of at most {limit} bytes"
)
ERR_TABLE_NOT_A_NAME = (
    "MIGRATIONS_TABLE must be name or schema.name, each part lower-case letters, digits and "
    "underscores, not starting with a digit (e.g. schema_migrations, migrator.history); "
    "got {value!r}"
)
ERR_TABLE_TOO_LONG = (
    "MIGRATIONS_TABLE: the table name {name!r} is {length} bytes long; at most {limit}, so that "
    "the lock's view {name}{suffix} stays within PostgreSQL's {max}-byte names"
)
ERR_TABLE_SYSTEM_SCHEMA = (
    "MIGRATIONS_TABLE names schema {schema!r}, which PostgreSQL keeps for itself (pg_*, "
    "information_schema): choose a schema of the database's owner"
)
ERR_ADMIN_WITHOUT_PASSWORD = (
    "DB_ADMIN_USER is set but neither DB_ADMIN_PASSWORD nor DB_ADMIN_PASSWORD_FILE"
)
ERR_INIT_ONLY_WITHOUT_ADMIN = "--init-only needs the superuser: set DB_ADMIN_USER and its password"


# Every variable the runner reads. One that starts like them but is not here is a typo
# (DB_SSL_MODE, MIGRATION_DIR, DB_HOTS): ignored, it would leave the default in place, so it
# is reported (unknown_setting) with the closest known name.
KNOWN_VARIABLES = frozenset(
    {
        "DATABASE_URL", "DB_HOST", "DB_PORT", "DB_NAME", "DB_USER", "DB_PASSWORD",
        "DB_PASSWORD_FILE", "DB_ADMIN_USER", "DB_ADMIN_PASSWORD", "DB_ADMIN_PASSWORD_FILE",
        "DB_ADMIN_HOST", "DB_ADMIN_PORT", "APP_DB_USER", "APP_DB_PASSWORD",
        "APP_DB_PASSWORD_FILE", "ROLE_PASSWORDS", "DB_SSLMODE", "DB_SSLROOTCERT", "DB_SSLCERT",
        "DB_SSLKEY", "DB_SSLCRL", "DB_CHANNEL_BINDING", "MIGRATIONS_DIR", "MIGRATIONS_TABLE",
        "DRY_RUN",
        "ALLOW_OUT_OF_ORDER", "SINGLE_TRANSACTION", "FUTURE_MIGRATIONS", "DB_WAIT_TIMEOUT",
        "MIGRATION_LOCK_TIMEOUT", "DDL_LOCK_TIMEOUT", "DDL_LOCK_RETRIES", "STATEMENT_TIMEOUT",
        "PROGRESS_INTERVAL", "MIGRATIONS_WAIT_TIMEOUT", "LINT_SHADOW_URL", "LINT_MIN_ROWS",
        "LINT_BATCH_ROWS", "LINT_BEFORE_APPLY", "ANALYZE_AFTER_MIGRATE", "LOG_FORMAT", "LOG_LEVEL",
        "TERMINATION_LOG", "MIGRATOR_REVISION", "MIGRATE_PHASE",
        "CLEANUP_TIME_BUDGET", "CLEANUP_DB_PASSWORD", "CLEANUP_DB_PASSWORD_FILE",
        "BATCH_CHECK_INTERVAL", "BATCH_MAX_REPLICA_LAG", "BATCH_MAX_LOCK_WAITERS",
        "BATCH_PAUSE_ON_AUTOVACUUM", "BATCH_TARGET_DURATION", "BATCH_SIZE", "BATCH_MAX_SIZE",
    }
)  # fmt: skip
RUNNER_PREFIXES = (
    "DB_", "APP_DB_", "MIGRATION", "DDL_", "LINT_", "LOG_", "ROLE_PASSWORD", "CLEANUP_",
    "BATCH_",
)  # fmt: skip
UNKNOWN_SIMILARITY = 0.6  # difflib's ratio from which a known name counts as meant


def unknown_settings(environ: Mapping[str, str]) -> tuple[tuple[str, str | None], ...]:
    """(variable, the known name it most resembles) for each variable with one of the
    runner's prefixes that the runner does not read.

    >>> unknown_settings({"DB_SSL_MODE": "verify-full", "MIGRATION_DIR": "/m", "DB_HOST": "db"})
    (('DB_SSL_MODE', 'DB_SSLMODE'), ('MIGRATION_DIR', 'MIGRATIONS_DIR'))
    """
    found = []
    for name in sorted(environ):
        if name.startswith(RUNNER_PREFIXES) and name not in KNOWN_VARIABLES:
            close = difflib.get_close_matches(name, KNOWN_VARIABLES, 1, UNKNOWN_SIMILARITY)
            found.append((name, close[0] if close else None))
    return tuple(found)


@dataclass(frozen=True)
class BatchSettings:
    """How a batched data migration sizes its batches (migrator/apply/batch.py)."""

    target_duration: float = DEFAULT_BATCH_TARGET_DURATION  # BATCH_TARGET_DURATION, seconds
    size: int = DEFAULT_BATCH_SIZE  # BATCH_SIZE: the first batch's rows without size=
    max_size: int = DEFAULT_BATCH_MAX_SIZE  # BATCH_MAX_SIZE


@dataclass(frozen=True)
class Config:
    """Everything a run needs, read once. Passwords are excluded from repr."""

    command: str = "migrate"
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    dbname: str = DEFAULT_DBNAME
    user: str = DEFAULT_USER
    password: str | None = field(default=None, repr=False)
    admin_user: str | None = None
    admin_password: str | None = field(default=None, repr=False)
    # The bootstrap's server when it differs from DB_HOST (migrations through a pooler,
    # bootstrap directly): None means DB_HOST / DB_PORT.
    admin_host: str | None = None
    admin_port: int | None = None
    app_user: str = DEFAULT_APP_USER
    app_password: str | None = field(default=None, repr=False)
    sslmode: str = DEFAULT_SSLMODE
    sslrootcert: str | None = None
    sslcert: str | None = None
    sslkey: str | None = None
    sslcrl: str | None = None
    channel_binding: str | None = None
    # DATABASE_URL's other libpq parameters (target_session_attrs, options, sslpassword, ...).
    libpq_options: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    migrations_dir: Path = Path(DEFAULT_MIGRATIONS_DIR)
    # The history table (MIGRATIONS_TABLE); the migration lock's view follows it (``.lock``).
    history_table: TableName = DEFAULT_TABLE
    dry_run: bool = False
    allow_out_of_order: bool = False
    single_transaction: bool = False  # all pending files in one transaction (Flyway's group)
    init_only: bool = False
    # --phase / MIGRATE_PHASE: pre, post or all; None when not set, each command's default.
    phase: str | None = None
    status_json: bool = False
    target_version: str | None = None  # baseline --version V, rollback --to V
    rollback_steps: int | None = None  # rollback --steps N
    verify: bool = False  # baseline --verify
    wait_timeout: float = DEFAULT_WAIT_TIMEOUT
    migration_lock_timeout: float = DEFAULT_MIGRATION_LOCK_TIMEOUT
    ddl_lock_timeout: float = DEFAULT_DDL_LOCK_TIMEOUT
    ddl_lock_retries: int = DEFAULT_DDL_LOCK_RETRIES
    statement_timeout: float = DEFAULT_STATEMENT_TIMEOUT
    progress_interval: float = DEFAULT_PROGRESS_INTERVAL
    log_format: str = DEFAULT_LOG_FORMAT
    log_level: str = DEFAULT_LOG_LEVEL
    termination_log: Path = Path(DEFAULT_TERMINATION_LOG)
    application_name: str = DEFAULT_APPLICATION_NAME
    # Variables that look like the runner's but are not (a typo): reported, never used.
    unknown_settings: tuple[tuple[str, str | None], ...] = ()
    # The hazard lint (migrator/lint/linter.py): a scratch database instead of one created by the
    # admin, the rows below which a table's hazards pass (None: 10,000 with a target, else 0),
    # the rows from which an UPDATE or DELETE of a whole table asks for the batched form, and
    # whether migrate lints before applying.
    shadow_url: str | None = field(default=None, repr=False)
    lint_min_rows: int | None = None
    lint_batch_rows: int = DEFAULT_LINT_BATCH_ROWS
    lint_before_apply: bool = False
    # ANALYZE what a transactional file rewrote or filled, after it (migrator/apply/statistics.py).
    analyze_after_migrate: bool = True
    future_migrations: str = DEFAULT_FUTURE_MIGRATIONS
    role_passwords: str = DEFAULT_ROLE_PASSWORDS
    migrations_wait_timeout: float = DEFAULT_MIGRATIONS_WAIT_TIMEOUT
    # `cleanup`: the run's time budget; the cleanup role's password, which bootstrap sets.
    cleanup_time_budget: float = DEFAULT_CLEANUP_TIME_BUDGET
    cleanup_password: str | None = field(default=None, repr=False)
    batch: BatchSettings = field(default_factory=BatchSettings)
    # Batched data migrations pause between batches while the database is busy (BATCH_*).
    throttle: ThrottleSettings = field(default_factory=ThrottleSettings)
    version: str = VERSION
    revision: str = "unknown"

    @property
    def tolerate_future(self) -> bool:
        """Versions a newer release applied are a warning, not an error (FUTURE_MIGRATIONS)."""
        return self.future_migrations != "fail"

    @property
    def run_phase(self) -> str:
        """The files a run applies (migrate, lint, rollback, status): all unless set."""
        return self.phase or ALL

    @property
    def ready_phase(self) -> str:
        """The files that must be applied for the application to be ready (wait,
        healthcheck.py): the pre files unless set, so that post files left for after the
        rollout do not hold the rollout up."""
        return self.phase or PRE

    @property
    def bootstrap_enabled(self) -> bool:
        return self.admin_user is not None

    @property
    def cleanup_role(self) -> str:
        """The role that may run the expiry cleanup and nothing else: the owner's name with
        ``_cleanup`` (000 creates it, 004 grants it the cleanup functions).

        >>> Config(user="auth_service").cleanup_role
        'auth_service_cleanup'
        """
        return self.user + CLEANUP_ROLE_SUFFIX

    @property
    def stats_role(self) -> str:
        """The role the throttle's statistics functions run as (000 creates it, NOLOGIN, a
        member of pg_read_all_stats alone): the owner's name with ``_stats``.

        >>> Config(user="auth_service").stats_role
        'auth_service_stats'
        """
        return self.user + STATS_ROLE_SUFFIX

    @property
    def secrets(self) -> tuple[str, ...]:
        """Values that must never be printed."""
        found = (
            self.password,
            self.admin_password,
            self.app_password,
            self.cleanup_password,
            self.shadow_password,
        )
        options = tuple(value for key, value in self.libpq_options if key in SECRET_PARAMETERS)
        return tuple(value for value in (*found, *options) if value)

    @property
    def tls_verified(self) -> bool:
        """True when libpq checks both the server's CA and its host name."""
        return self.sslmode == VERIFIED_SSLMODE

    @property
    def shadow_password(self) -> str | None:
        return parse_url(self.shadow_url, "LINT_SHADOW_URL").get("password")

    def connect_kwargs(
        self, *, admin: bool = False, dbname: str | None = None, read_only: bool = False
    ) -> dict[str, Any]:
        """Keyword arguments for psycopg.connect, as the migration user or the superuser.

        A command that writes (and is not ``read_only``) asks for a server that takes writes,
        unless DATABASE_URL says otherwise: a hot standby behind DB_HOST (a replica, or the
        old primary while a failover settles) is then waited for like a server that is
        starting, and of several hosts in DB_HOST the primary is taken.

        >>> Config(password="x").connect_kwargs()["user"]
        'auth_service'
        """
        writes = not read_only and self.command not in commands.READ_ONLY
        tls = {
            "sslrootcert": self.sslrootcert,
            "sslcert": self.sslcert,
            "sslkey": self.sslkey,
            "sslcrl": self.sslcrl,
            "channel_binding": self.channel_binding,
        }
        return {
            **(WRITABLE_SESSION if writes else {}),
            **dict(self.libpq_options),
            "host": (admin and self.admin_host) or self.host,
            "port": (admin and self.admin_port) or self.port,
            "dbname": dbname or self.dbname,
            "user": self.admin_user if admin else self.user,
            "password": self.admin_password if admin else self.password,
            "sslmode": self.sslmode,
            **{key: value for key, value in tls.items() if value},
            "application_name": self.application_name,
        }


def load_config(
    argv: Sequence[str],
    environ: Mapping[str, str],
    *,
    interactive: bool | None = None,
) -> Config:
    """Build the Config from the command line and the environment, or raise ConfigError."""
    args = build_parser().parse_args(list(argv))
    check_command_flags(args)
    if interactive is None:
        interactive = sys.stdin.isatty()
    reader = _Settings(environ)
    url_name = "--url" if args.url else "DATABASE_URL"
    url_parts = parse_url(args.url or environ.get("DATABASE_URL"), url_name)
    user = _name(
        ("--user", args.user),
        (url_name, url_parts.get("user")),
        ("DB_USER", reader.text("DB_USER", DEFAULT_USER)),
    )
    admin_user = reader.optional_text("DB_ADMIN_USER")
    if admin_user:
        _name(("DB_ADMIN_USER", admin_user))
    admin_password = reader.secret("DB_ADMIN_PASSWORD")
    if admin_user and admin_password is None:
        raise ConfigError(ERR_ADMIN_WITHOUT_PASSWORD)
    if args.init_only and not admin_user:
        raise ConfigError(ERR_INIT_ONLY_WITHOUT_ADMIN)
    log_format = _first_set(
        ("--log-format", args.log_format), ("LOG_FORMAT", environ.get("LOG_FORMAT"))
    )
    log_level = _first_set(("--log-level", args.log_level), ("LOG_LEVEL", environ.get("LOG_LEVEL")))
    port_source = _first_set(
        ("--port", args.port),
        (url_name, url_parts.get("port")),
        ("DB_PORT", reader.text("DB_PORT", str(DEFAULT_PORT))),
    )
    sslmode_source = _first_set(
        (url_name, url_parts.get("sslmode")),
        ("DB_SSLMODE", environ.get("DB_SSLMODE")),
        ("PGSSLMODE", environ.get("PGSSLMODE", DEFAULT_SSLMODE)),
    )
    tls_files = {
        parameter: tls_file(parameter, *_first_set((url_name, url_parts.get(parameter)),
                                                     (ours, environ.get(ours)),
                                                     (libpq, environ.get(libpq))))
        for parameter, ours, libpq in TLS_FILE_SETTINGS
    }  # fmt: skip
    channel_binding = _first_set(
        (url_name, url_parts.get("channel_binding")),
        ("DB_CHANNEL_BINDING", environ.get("DB_CHANNEL_BINDING")),
        ("PGCHANNELBINDING", environ.get("PGCHANNELBINDING")),
    )
    password = _owner_password(url_parts, url_name, reader, environ, user, interactive)
    config = Config(
        command=args.command,
        host=args.host or url_parts.get("host") or reader.text("DB_HOST", DEFAULT_HOST),
        port=_port(*port_source),
        dbname=_name(
            ("--database", args.dbname),
            (url_name, url_parts.get("dbname")),
            ("DB_NAME", reader.text("DB_NAME", DEFAULT_DBNAME)),
        ),
        user=user,
        password=password[1] if password else None,
        admin_user=admin_user,
        admin_password=admin_password,
        admin_host=reader.optional_text("DB_ADMIN_HOST"),
        admin_port=_port("DB_ADMIN_PORT", environ["DB_ADMIN_PORT"])
        if environ.get("DB_ADMIN_PORT")
        else None,
        app_user=_name(("APP_DB_USER", reader.text("APP_DB_USER", DEFAULT_APP_USER))),
        app_password=reader.secret("APP_DB_PASSWORD"),
        sslmode=_one_of(*sslmode_source, SSLMODES),
        sslrootcert=tls_files["sslrootcert"],
        sslcert=tls_files["sslcert"],
        sslkey=tls_files["sslkey"],
        sslcrl=tls_files["sslcrl"],
        channel_binding=_one_of(*channel_binding, CHANNEL_BINDINGS) if channel_binding[1] else None,
        libpq_options=tuple(
            sorted((key, value) for key, value in url_parts.items() if key not in URL_FIELDS)
        ),
        migrations_dir=Path(
            args.migrations_dir or reader.text("MIGRATIONS_DIR", DEFAULT_MIGRATIONS_DIR)
        ),
        history_table=table_name(environ.get("MIGRATIONS_TABLE", "")),
        dry_run=args.dry_run or reader.boolean("DRY_RUN"),
        allow_out_of_order=args.allow_out_of_order or reader.boolean("ALLOW_OUT_OF_ORDER"),
        single_transaction=args.single_transaction or reader.boolean("SINGLE_TRANSACTION"),
        init_only=args.init_only,
        phase=_phase(args, reader),
        status_json=args.status_json,
        target_version=args.baseline_version or args.rollback_to,
        rollback_steps=steps(args.rollback_steps),
        verify=bool(args.verify),
        wait_timeout=reader.duration("DB_WAIT_TIMEOUT", DEFAULT_WAIT_TIMEOUT),
        migration_lock_timeout=reader.duration(
            "MIGRATION_LOCK_TIMEOUT", DEFAULT_MIGRATION_LOCK_TIMEOUT
        ),
        ddl_lock_timeout=reader.duration("DDL_LOCK_TIMEOUT", DEFAULT_DDL_LOCK_TIMEOUT),
        ddl_lock_retries=reader.count("DDL_LOCK_RETRIES", DEFAULT_DDL_LOCK_RETRIES),
        statement_timeout=reader.duration("STATEMENT_TIMEOUT", DEFAULT_STATEMENT_TIMEOUT),
        progress_interval=reader.duration("PROGRESS_INTERVAL", DEFAULT_PROGRESS_INTERVAL),
        analyze_after_migrate=reader.boolean("ANALYZE_AFTER_MIGRATE", default=True),
        # The defaults are not lower-cased: they are written as they must be.
        log_format=_one_of(
            log_format[0], log_format[1].lower() or _default_log_format(), LOG_FORMATS
        ),
        log_level=_one_of(log_level[0], log_level[1].lower() or DEFAULT_LOG_LEVEL, LOG_LEVELS),
        termination_log=Path(reader.text("TERMINATION_LOG", DEFAULT_TERMINATION_LOG)),
        application_name=url_parts.get("application_name") or DEFAULT_APPLICATION_NAME,
        unknown_settings=unknown_settings(environ),
        **_lint_settings(args, reader),
        **_rollout_settings(args, reader),
        **_cleanup_settings(reader),
        batch=_batch_settings(reader),
        throttle=_throttle_settings(reader),
    )
    if password is None:
        raise ConfigError(ERR_NO_PASSWORD.format(user=config.user))
    if admin_user:
        _check_role_password(password[0], config.password, config.user)
        app_name = (
            "APP_DB_PASSWORD_FILE" if environ.get("APP_DB_PASSWORD_FILE") else "APP_DB_PASSWORD"
        )
        _check_role_password(app_name, config.app_password, config.app_user)
        cleanup_name = (
            "CLEANUP_DB_PASSWORD_FILE"
            if environ.get("CLEANUP_DB_PASSWORD_FILE")
            else "CLEANUP_DB_PASSWORD"
        )
        _check_role_password(cleanup_name, config.cleanup_password, config.cleanup_role)
    return config


def _owner_password(
    url_parts: Mapping[str, str],
    url_name: str,
    reader: _Settings,
    environ: Mapping[str, str],
    user: str,
    interactive: bool,
) -> tuple[str, str] | None:
    """(where it came from, the password) of DB_USER, from the first source that has one."""
    if url_parts.get("password"):
        return f"the password in {url_name}", check_password(
            f"the password in {url_name}", url_parts["password"]
        )
    from_variable = reader.secret("DB_PASSWORD")
    if from_variable:
        name = "DB_PASSWORD_FILE" if environ.get("DB_PASSWORD_FILE") else "DB_PASSWORD"
        return name, from_variable
    if environ.get("PGPASSWORD"):
        return "PGPASSWORD", check_password("PGPASSWORD", environ["PGPASSWORD"])
    typed = _prompt(user, interactive)
    if typed:
        name = f"the password typed for {user}"
        return name, check_password(name, typed)
    return None


def check_password(name: str, value: str) -> str:
    """Refuse an empty, blank, multi-line or placeholder password, naming ``name`` only.

    >>> check_password("DB_PASSWORD", "changeme")
    Traceback (most recent call last):
    migrator.errors.ConfigError: DB_PASSWORD is a placeholder from an example, ...
    """
    if value == "":
        raise ConfigError(ERR_PASSWORD_EMPTY.format(name=name))
    if value.strip() == "":
        raise ConfigError(ERR_PASSWORD_BLANK.format(name=name))
    for character, what in (("\0", "NUL byte"), ("\n", "line break"), ("\r", "carriage return")):
        if character in value:
            raise ConfigError(ERR_PASSWORD_CONTROL.format(name=name, what=what))
    if value.strip().lower() in PLACEHOLDER_PASSWORDS:
        raise ConfigError(ERR_PASSWORD_PLACEHOLDER.format(name=name))
    return value


def _check_role_password(name: str, value: str | None, role: str) -> None:
    """Bootstrap sets this password on ``role``: it must be long enough to resist guessing."""
    if value is not None and len(value) < MIN_ROLE_PASSWORD_LENGTH:
        raise ConfigError(
            ERR_PASSWORD_TOO_SHORT.format(name=name, minimum=MIN_ROLE_PASSWORD_LENGTH, role=role)
        )


# The settings of one concern, read by one function of (flags, variables) each, unpacked into
# Config by load_config.
class _LintSettings(TypedDict):
    shadow_url: str | None
    lint_min_rows: int | None
    lint_batch_rows: int
    lint_before_apply: bool


def _lint_settings(args: argparse.Namespace, reader: _Settings) -> _LintSettings:
    """The hazard lint's settings: the shadow database, its row threshold, lint before apply."""
    shadow_name, shadow_url = _first_set(
        ("--shadow-url", args.shadow_url),
        ("LINT_SHADOW_URL", reader.environ.get("LINT_SHADOW_URL")),
    )
    parse_url(shadow_url, shadow_name)  # a bad URL fails here, without echoing it
    return _LintSettings(
        shadow_url=shadow_url or None,
        lint_min_rows=reader.optional_count("LINT_MIN_ROWS"),
        lint_batch_rows=reader.count("LINT_BATCH_ROWS", DEFAULT_LINT_BATCH_ROWS),
        lint_before_apply=reader.boolean("LINT_BEFORE_APPLY"),
    )


class _RolloutSettings(TypedDict):
    future_migrations: str
    role_passwords: str
    migrations_wait_timeout: float
    revision: str


class _CleanupSettings(TypedDict):
    cleanup_time_budget: float
    cleanup_password: str | None


def _cleanup_settings(reader: _Settings) -> _CleanupSettings:
    """The `cleanup` command's time budget and the cleanup role's password (for bootstrap)."""
    budget = reader.duration("CLEANUP_TIME_BUDGET", DEFAULT_CLEANUP_TIME_BUDGET)
    if budget <= 0:  # a run that may not delete anything could only fail
        raise ConfigError(ERR_NOT_POSITIVE.format(name="CLEANUP_TIME_BUDGET", value=budget))
    return _CleanupSettings(
        cleanup_time_budget=budget,
        cleanup_password=reader.secret("CLEANUP_DB_PASSWORD"),
    )


def _batch_settings(reader: _Settings) -> BatchSettings:
    """BATCH_TARGET_DURATION, BATCH_SIZE and BATCH_MAX_SIZE: each above 0, the size within
    the maximum."""
    target = reader.duration("BATCH_TARGET_DURATION", DEFAULT_BATCH_TARGET_DURATION)
    if target <= 0:  # a batch cannot aim at no time at all
        raise ConfigError(ERR_NOT_POSITIVE.format(name="BATCH_TARGET_DURATION", value=target))
    max_size = reader.count("BATCH_MAX_SIZE", DEFAULT_BATCH_MAX_SIZE)
    if max_size < 1:
        raise ConfigError(ERR_NOT_ROWS.format(name="BATCH_MAX_SIZE", value=max_size))
    # Unset, the first size stays within a lower maximum; set above it, it is a mistake.
    size = reader.count("BATCH_SIZE", min(DEFAULT_BATCH_SIZE, max_size))
    if size < 1:
        raise ConfigError(ERR_NOT_ROWS.format(name="BATCH_SIZE", value=size))
    if size > max_size:
        raise ConfigError(ERR_SIZE_ABOVE_MAX.format(size=size, max_size=max_size))
    return BatchSettings(target_duration=target, size=size, max_size=max_size)


def _throttle_settings(reader: _Settings) -> ThrottleSettings:
    """When a batched data migration pauses between batches (migrator/apply/throttle.py).

    >>> _throttle_settings(_Settings({"BATCH_MAX_REPLICA_LAG": "16MB"})).max_replica_lag
    16777216
    """
    interval = reader.duration("BATCH_CHECK_INTERVAL", DEFAULT_CHECK_INTERVAL)
    if interval <= 0:  # a pause would re-check without ever sleeping
        raise ConfigError(ERR_NOT_POSITIVE.format(name="BATCH_CHECK_INTERVAL", value=interval))
    return ThrottleSettings(
        check_interval=interval,
        max_replica_lag=reader.size("BATCH_MAX_REPLICA_LAG", DEFAULT_MAX_REPLICA_LAG),
        max_lock_waiters=reader.count("BATCH_MAX_LOCK_WAITERS", DEFAULT_MAX_LOCK_WAITERS),
        pause_on_autovacuum=reader.boolean("BATCH_PAUSE_ON_AUTOVACUUM", default=True),
    )


def _rollout_settings(args: argparse.Namespace, reader: _Settings) -> _RolloutSettings:
    """The settings of rollouts and rollbacks: future versions, role passwords, `wait`."""
    timeout_name, timeout = _first_set(
        ("--timeout", args.migrations_wait_timeout),
        ("MIGRATIONS_WAIT_TIMEOUT", reader.environ.get("MIGRATIONS_WAIT_TIMEOUT")),
    )
    return _RolloutSettings(
        future_migrations=_one_of(
            "FUTURE_MIGRATIONS",
            reader.text("FUTURE_MIGRATIONS", DEFAULT_FUTURE_MIGRATIONS).lower(),
            FUTURE_MIGRATIONS_MODES,
        ),
        role_passwords=_one_of(
            "ROLE_PASSWORDS",
            reader.text("ROLE_PASSWORDS", DEFAULT_ROLE_PASSWORDS).lower(),
            ROLE_PASSWORDS_MODES,
        ),
        migrations_wait_timeout=_Settings({timeout_name: timeout}).duration(
            timeout_name, DEFAULT_MIGRATIONS_WAIT_TIMEOUT
        ),
        revision=revision(reader.environ),
    )


def _phase(args: argparse.Namespace, reader: _Settings) -> str | None:
    """--phase or MIGRATE_PHASE (pre, post, all), None when neither is set.

    >>> _phase(argparse.Namespace(phase=None), _Settings({"MIGRATE_PHASE": "POST"}))
    'post'
    """
    name, value = _first_set(
        ("--phase", args.phase), ("MIGRATE_PHASE", reader.environ.get("MIGRATE_PHASE"))
    )
    if not value.strip():
        return None
    return _one_of(name, value.strip().lower(), RUN_PHASES)


def _default_log_format() -> str:
    return "console" if sys.stdout.isatty() else DEFAULT_LOG_FORMAT


def _prompt(user: str, interactive: bool) -> str | None:
    if not interactive:
        return None
    return getpass.getpass(f"Password for {user}: ") or None


def _first_set(*candidates: tuple[str, str | None]) -> tuple[str, str]:
    """(setting name, value) of the first candidate that is set, so errors name its source."""
    for name, value in candidates:
        if value:
            return name, value
    return candidates[-1][0], ""


def _name(*candidates: tuple[str, str | None]) -> str:
    """The first candidate that is set, refused when the server would cut it to another name.

    >>> _name(("--database", None), ("DB_NAME", "auth_service"))
    'auth_service'
    """
    name, value = _first_set(*candidates)
    length = len(value.encode())
    if length > MAX_NAME_BYTES:
        cut = name_prefix(value)
        raise ConfigError(
            ERR_NAME_TOO_LONG.format(name=name, length=length, limit=MAX_NAME_BYTES, cut=cut)
        )
    return value


def table_name(value: str) -> TableName:
    """MIGRATIONS_TABLE as a TableName; unset or empty means schema_migrations in public.

    >>> table_name("migrator.history")
    TableName(schema='migrator', name='history')
    >>> str(table_name(""))
    'public.schema_migrations'
    """
    if value == "":
        return DEFAULT_TABLE
    parts = value.split(".")
    if len(parts) > 2 or not all(TABLE_NAME_PART.fullmatch(part) for part in parts):
        raise ConfigError(ERR_TABLE_NOT_A_NAME.format(value=value))
    table = TableName(*parts) if len(parts) == 2 else TableName(name=parts[0])
    if table.schema.startswith(SYSTEM_SCHEMA_PREFIX) or table.schema in SYSTEM_SCHEMAS:
        raise ConfigError(ERR_TABLE_SYSTEM_SCHEMA.format(schema=table.schema))
    if len(table.schema) > MAX_NAME_BYTES:
        raise ConfigError(
            ERR_NAME_TOO_LONG.format(
                name="MIGRATIONS_TABLE's schema",
                length=len(table.schema),
                limit=MAX_NAME_BYTES,
                cut=name_prefix(table.schema),
            )
        )
    if len(table.name) > MAX_TABLE_NAME_BYTES:
        raise ConfigError(
            ERR_TABLE_TOO_LONG.format(
                name=table.name,
                length=len(table.name),
                limit=MAX_TABLE_NAME_BYTES,
                suffix=LOCK_SUFFIX,
                max=MAX_NAME_BYTES,
            )
        )
    return table


def name_prefix(name: str, limit: int = MAX_NAME_BYTES) -> str:
    """The longest start of ``name`` within ``limit`` bytes, in whole characters, as the server
    cuts a name (pg_mbcliplen): it counts bytes, and 'ü' takes two.

    >>> name_prefix("ü" * 40)
    'üüüüüüüüüüüüüüüüüüüüüüüüüüüüüüü'
    """
    return name.encode()[:limit].decode(errors="ignore")


def _is_ascii_number(value: str) -> bool:
    # str.isdigit() accepts "²", which int() refuses.
    return value.isascii() and value.isdigit()


def _port(name: str, value: str) -> int:
    if not _is_ascii_number(value) or not 1 <= int(value) <= 65535:
        raise ConfigError(ERR_NOT_A_PORT.format(name=name, value=value))
    return int(value)


def _one_of(name: str, value: str, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ConfigError(ERR_NOT_ONE_OF.format(name=name, choices=", ".join(choices), value=value))
    return value


class _Settings:
    """Typed reads of environment variables, each error naming the variable."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ

    def text(self, name: str, default: str) -> str:
        return self.environ.get(name) or default

    def optional_text(self, name: str) -> str | None:
        return self.environ.get(name) or None

    def boolean(self, name: str, default: bool = False) -> bool:
        value = self.environ.get(name, "").strip().lower()
        if not value:
            return default
        if value in TRUE_WORDS:
            return True
        if value in FALSE_WORDS:
            return False
        raise ConfigError(ERR_NOT_A_BOOLEAN.format(name=name, value=value))

    def duration(self, name: str, default: float) -> float:
        value = self.environ.get(name)
        if value is None or value == "":
            return default
        match = DURATION_PATTERN.match(value)
        if not match:
            raise ConfigError(ERR_NOT_A_DURATION.format(name=name, value=value))
        return float(match[1]) * DURATION_UNITS[match[2] or "s"]

    def size(self, name: str, default: int) -> int:
        """Bytes, from 64MB, 512 kB, 1GB or 1048576; off (or 0) is 0."""
        value = self.environ.get(name)
        if value is None or value.strip() == "":
            return default
        if value.strip().lower() in OFF_WORDS:
            return 0
        match = SIZE_PATTERN.match(value)
        if not match or match[2].lower() not in SIZE_UNITS:
            raise ConfigError(ERR_NOT_A_SIZE.format(name=name, value=value))
        return round(float(match[1]) * SIZE_UNITS[match[2].lower()])

    def count(self, name: str, default: int) -> int:
        found = self.optional_count(name)
        return default if found is None else found

    def optional_count(self, name: str) -> int | None:
        value = self.environ.get(name)
        if not value:
            return None
        if not _is_ascii_number(value.strip()):
            raise ConfigError(ERR_NOT_A_COUNT.format(name=name, value=value))
        return int(value)

    def secret(self, name: str) -> str | None:
        """NAME, or the contents of the file NAME_FILE (Docker and Kubernetes secrets)."""
        value = self.environ.get(name)
        path = self.environ.get(f"{name}_FILE")
        if value and path:
            raise ConfigError(ERR_BOTH_PASSWORD_AND_FILE.format(name=name))
        if not path:
            # An empty variable counts as unset (compose passes ${VAR:-} through as "").
            return check_password(name, value) if value else None
        return check_password(f"{name}_FILE", _read_secret_file(f"{name}_FILE", Path(path)))


def _read_secret_file(name: str, path: Path) -> str:
    try:
        content = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            ERR_PASSWORD_FILE.format(name=name, path=path, problem="does not exist")
        ) from None
    except PermissionError:
        raise ConfigError(
            ERR_PASSWORD_FILE.format(
                name=name, path=path, problem="cannot be read (permission denied)"
            )
        ) from None
    except (OSError, UnicodeDecodeError) as error:
        problem = f"cannot be read ({type(error).__name__})"
        raise ConfigError(ERR_PASSWORD_FILE.format(name=name, path=path, problem=problem)) from None
    # One final newline (echo, most editors) is not part of the password; anything else is.
    # read_text has already turned a final \r\n (Windows editors) into \n.
    return content.removesuffix("\n")
