"""Configuration: flags over environment over defaults, read once into a frozen Config.

>>> config = load_config(["--dry-run"], {"DB_PASSWORD": "s3cret"}, interactive=False)
>>> config.dry_run, config.dbname
(True, 'auth_service')
"""

from __future__ import annotations

import argparse
import getpass
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from psycopg.conninfo import conninfo_to_dict

from migrator.errors import ConfigError, UsageError

DEFAULT_HOST = "localhost"
DEFAULT_PORT = 5432
DEFAULT_DBNAME = "auth_service"
DEFAULT_USER = "auth_service"
DEFAULT_APP_USER = "auth_service_app"
DEFAULT_SSLMODE = "prefer"
DEFAULT_MIGRATIONS_DIR = "./migrations"
DEFAULT_WAIT_TIMEOUT = 60.0
DEFAULT_MIGRATION_LOCK_TIMEOUT = 600.0
DEFAULT_DDL_LOCK_TIMEOUT = 5.0
DEFAULT_DDL_LOCK_RETRIES = 5
DEFAULT_STATEMENT_TIMEOUT = 0.0
DEFAULT_PROGRESS_INTERVAL = 5.0
DEFAULT_TERMINATION_LOG = "/dev/termination-log"
DEFAULT_APPLICATION_NAME = "auth-service-migrator"
LOG_FORMATS = ("json", "console")
LOG_LEVELS = ("debug", "info", "warning", "error")
SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
COMMANDS = ("migrate", "status")
TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off", ""})
DURATION_UNITS = {"ms": 0.001, "s": 1.0, "min": 60.0, "m": 60.0, "h": 3600.0}
DURATION_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|min|m|h)?\s*$")

ERR_NOT_A_PORT = "{name} must be a port number from 1 to 65535, got {value!r}"
ERR_NOT_A_DURATION = "{name} must be a duration like 30, 30s, 500ms or 2min, got {value!r}"
ERR_NOT_A_COUNT = "{name} must be a whole number >= 0, got {value!r}"
ERR_NOT_A_BOOLEAN = "{name} must be true or false, got {value!r}"
ERR_NOT_ONE_OF = "{name} must be one of {choices}, got {value!r}"
ERR_PASSWORD_FILE = "{name} points to {path}, which {problem}"
ERR_BOTH_PASSWORD_AND_FILE = "set {name} or {name}_FILE, not both"
URL_SCHEMES = ("postgresql://", "postgres://")
URL_SCHEME_RE = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*)://")
ERR_URL_SCHEME = "{name} must start with postgresql:// or postgres://, not {scheme}://"
ERR_BAD_URL = "DATABASE_URL is not a valid PostgreSQL URL or connection string"
ERR_NO_PASSWORD = (
    "no password for {user}: set DB_PASSWORD or DB_PASSWORD_FILE "
    "(no terminal is attached to prompt for it)"
)
ERR_ADMIN_WITHOUT_PASSWORD = (
    "DB_ADMIN_USER is set but neither DB_ADMIN_PASSWORD nor DB_ADMIN_PASSWORD_FILE"
)
ERR_INIT_ONLY_WITHOUT_ADMIN = "--init-only needs the superuser: set DB_ADMIN_USER and its password"


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
    migrations_dir: Path = Path(DEFAULT_MIGRATIONS_DIR)
    dry_run: bool = False
    allow_out_of_order: bool = False
    single_transaction: bool = False  # all pending files in one transaction (Flyway's group)
    init_only: bool = False
    status_json: bool = False
    wait_timeout: float = DEFAULT_WAIT_TIMEOUT
    migration_lock_timeout: float = DEFAULT_MIGRATION_LOCK_TIMEOUT
    ddl_lock_timeout: float = DEFAULT_DDL_LOCK_TIMEOUT
    ddl_lock_retries: int = DEFAULT_DDL_LOCK_RETRIES
    statement_timeout: float = DEFAULT_STATEMENT_TIMEOUT
    progress_interval: float = DEFAULT_PROGRESS_INTERVAL
    log_format: str = "json"
    log_level: str = "info"
    termination_log: Path = Path(DEFAULT_TERMINATION_LOG)
    application_name: str = DEFAULT_APPLICATION_NAME

    @property
    def bootstrap_enabled(self) -> bool:
        return self.admin_user is not None

    @property
    def secrets(self) -> tuple[str, ...]:
        """Values that must never be printed."""
        found = (self.password, self.admin_password, self.app_password)
        return tuple(value for value in found if value)

    def connect_kwargs(self, *, admin: bool = False, dbname: str | None = None) -> dict[str, Any]:
        """Keyword arguments for psycopg.connect, as the migration user or the superuser.

        >>> Config(password="x").connect_kwargs()["user"]
        'auth_service'
        """
        return {
            "host": (admin and self.admin_host) or self.host,
            "port": (admin and self.admin_port) or self.port,
            "dbname": dbname or self.dbname,
            "user": self.admin_user if admin else self.user,
            "password": self.admin_password if admin else self.password,
            "sslmode": self.sslmode,
            "application_name": self.application_name,
        }


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="entrypoint.py",
        description="Wait for PostgreSQL, bootstrap it, apply pending migrations exactly once.",
    )
    parser.add_argument("command", nargs="?", choices=COMMANDS, default="migrate")
    parser.add_argument("--host")
    parser.add_argument("--port")
    parser.add_argument("--database", dest="dbname")
    parser.add_argument("--user")
    parser.add_argument("--url", help="postgresql:// URL instead of the DB_* parts")
    parser.add_argument("--migrations-dir")
    parser.add_argument("--dry-run", action="store_true", default=None)
    parser.add_argument("--allow-out-of-order", action="store_true", default=None)
    parser.add_argument(
        "--single-transaction",
        action="store_true",
        default=None,
        help="apply all pending files in one transaction: all or nothing",
    )
    parser.add_argument("--init-only", action="store_true", default=False)
    parser.add_argument("--json", dest="status_json", action="store_true", default=False)
    parser.add_argument("--log-format")
    parser.add_argument("--log-level")
    return parser


def load_config(
    argv: Sequence[str],
    environ: Mapping[str, str],
    *,
    interactive: bool | None = None,
) -> Config:
    """Build the Config from the command line and the environment, or raise ConfigError."""
    args = build_parser().parse_args(list(argv))
    if interactive is None:
        interactive = sys.stdin.isatty()
    reader = _Settings(environ)
    url_parts = _parse_url(
        args.url or environ.get("DATABASE_URL"), "--url" if args.url else "DATABASE_URL"
    )
    user = args.user or url_parts.get("user") or reader.text("DB_USER", DEFAULT_USER)
    admin_user = reader.optional_text("DB_ADMIN_USER")
    admin_password = reader.secret("DB_ADMIN_PASSWORD")
    if admin_user and admin_password is None:
        raise ConfigError(ERR_ADMIN_WITHOUT_PASSWORD)
    if args.init_only and not admin_user:
        raise ConfigError(ERR_INIT_ONLY_WITHOUT_ADMIN)
    log_format = args.log_format or environ.get("LOG_FORMAT") or _default_log_format()
    url_name = "--url" if args.url else "DATABASE_URL"
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
    config = Config(
        command=args.command,
        host=args.host or url_parts.get("host") or reader.text("DB_HOST", DEFAULT_HOST),
        port=_port(*port_source),
        dbname=args.dbname or url_parts.get("dbname") or reader.text("DB_NAME", DEFAULT_DBNAME),
        user=user,
        password=url_parts.get("password")
        or reader.secret("DB_PASSWORD")
        or environ.get("PGPASSWORD")
        or _prompt(user, interactive),
        admin_user=admin_user,
        admin_password=admin_password,
        admin_host=reader.optional_text("DB_ADMIN_HOST"),
        admin_port=_port("DB_ADMIN_PORT", environ["DB_ADMIN_PORT"])
        if environ.get("DB_ADMIN_PORT")
        else None,
        app_user=reader.text("APP_DB_USER", DEFAULT_APP_USER),
        app_password=reader.secret("APP_DB_PASSWORD"),
        sslmode=_one_of(*sslmode_source, SSLMODES),
        migrations_dir=Path(
            args.migrations_dir or reader.text("MIGRATIONS_DIR", DEFAULT_MIGRATIONS_DIR)
        ),
        dry_run=args.dry_run or reader.boolean("DRY_RUN"),
        allow_out_of_order=args.allow_out_of_order or reader.boolean("ALLOW_OUT_OF_ORDER"),
        single_transaction=args.single_transaction or reader.boolean("SINGLE_TRANSACTION"),
        init_only=args.init_only,
        status_json=args.status_json,
        wait_timeout=reader.duration("DB_WAIT_TIMEOUT", DEFAULT_WAIT_TIMEOUT),
        migration_lock_timeout=reader.duration(
            "MIGRATION_LOCK_TIMEOUT", DEFAULT_MIGRATION_LOCK_TIMEOUT
        ),
        ddl_lock_timeout=reader.duration("DDL_LOCK_TIMEOUT", DEFAULT_DDL_LOCK_TIMEOUT),
        ddl_lock_retries=reader.count("DDL_LOCK_RETRIES", DEFAULT_DDL_LOCK_RETRIES),
        statement_timeout=reader.duration("STATEMENT_TIMEOUT", DEFAULT_STATEMENT_TIMEOUT),
        progress_interval=reader.duration("PROGRESS_INTERVAL", DEFAULT_PROGRESS_INTERVAL),
        log_format=_one_of(
            "--log-format" if args.log_format else "LOG_FORMAT", log_format.lower(), LOG_FORMATS
        ),
        log_level=_one_of(
            "--log-level" if args.log_level else "LOG_LEVEL",
            (args.log_level or reader.text("LOG_LEVEL", "info")).lower(),
            LOG_LEVELS,
        ),
        termination_log=Path(reader.text("TERMINATION_LOG", DEFAULT_TERMINATION_LOG)),
    )
    if config.password is None:
        raise ConfigError(ERR_NO_PASSWORD.format(user=config.user))
    return config


def _default_log_format() -> str:
    return "console" if sys.stdout.isatty() else "json"


def _prompt(user: str, interactive: bool) -> str | None:
    if not interactive:
        return None
    return getpass.getpass(f"Password for {user}: ") or None


def _parse_url(url: str | None, name: str) -> dict[str, str]:
    if not url:
        return {}
    scheme = URL_SCHEME_RE.match(url)
    if scheme and not url.startswith(URL_SCHEMES):  # libpq's own error would quote the URL
        raise ConfigError(ERR_URL_SCHEME.format(name=name, scheme=scheme["scheme"]))
    try:
        return {key: str(value) for key, value in conninfo_to_dict(url).items()}
    except Exception:
        # The exception text would quote the URL, password included.
        raise ConfigError(ERR_BAD_URL) from None


def _first_set(*candidates: tuple[str, str | None]) -> tuple[str, str]:
    """(setting name, value) of the first candidate that is set, so errors name its source."""
    for name, value in candidates:
        if value:
            return name, value
    return candidates[-1][0], ""


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

    def boolean(self, name: str) -> bool:
        value = self.environ.get(name, "").strip().lower()
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

    def count(self, name: str, default: int) -> int:
        value = self.environ.get(name)
        if value is None or value == "":
            return default
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
            return value or None
        return _read_secret_file(f"{name}_FILE", Path(path))


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
    return content.rstrip("\r\n")
