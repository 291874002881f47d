"""Unit tests for migrator.config: flags over environment over defaults, and every way to get it wrong.

Each variable of the design's configuration table is read from its default, from the
environment, and (where it has one) from its flag, which wins. Invalid values raise a
ConfigError (exit 78) whose one-line message names the setting and never echoes a secret.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

from migrator.config import Config, load_config
from migrator.errors import EX_CONFIG, EX_USAGE, ConfigError, UsageError

PASSWORD = "pw-Unit-7f3a"
ADMIN_PASSWORD = "admin-Unit-91c2"
APP_PASSWORD = "app-Unit-5d0e"


def load(*argv: str, **environ: str) -> Config:
    """load_config with a password present unless the test says otherwise."""
    environ.setdefault("DB_PASSWORD", PASSWORD)
    return load_config(list(argv), environ, interactive=False)


def config_error(*argv: str, **environ: str) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load(*argv, **environ)
    error = caught.value
    assert error.exit_code == EX_CONFIG == 78
    assert "\n" not in error.message, "the user reads one line"
    return error


# --- defaults, environment, flags ---------------------------------------------------------------


def test_defaults_are_the_documented_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdout", io.StringIO())  # not a terminal: JSON logs
    config = load()
    assert config.command == "migrate"
    assert (config.host, config.port, config.dbname, config.user) == (
        "localhost",
        5432,
        "auth_service",
        "auth_service",
    )
    assert config.password == PASSWORD
    assert config.admin_user is None
    assert config.admin_password is None
    assert config.bootstrap_enabled is False
    assert config.sslmode == "prefer"
    assert config.migrations_dir == Path("./migrations")
    assert config.dry_run is False
    assert config.allow_out_of_order is False
    assert config.init_only is False
    assert config.wait_timeout == 60
    assert config.migration_lock_timeout == 600
    assert config.ddl_lock_timeout == 5
    assert config.ddl_lock_retries == 5
    assert config.statement_timeout == 0
    assert config.log_format == "json"
    assert config.log_level == "info"


def test_log_format_defaults_to_console_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stdout", Terminal())
    assert load().log_format == "console"
    assert load(LOG_FORMAT="json").log_format == "json"


# (variable, flag, attribute, value from the environment, value on the command line, expected
# from the environment, expected from the flag)
WITH_FLAGS = [
    ("DB_HOST", "--host", "host", "db.internal", "flag.internal", "db.internal", "flag.internal"),
    ("DB_PORT", "--port", "port", "6543", "7654", 6543, 7654),
    ("DB_NAME", "--database", "dbname", "env_db", "flag_db", "env_db", "flag_db"),
    ("DB_USER", "--user", "user", "env_user", "flag_user", "env_user", "flag_user"),
    (
        "MIGRATIONS_DIR",
        "--migrations-dir",
        "migrations_dir",
        "/env/migrations",
        "/flag/migrations",
        Path("/env/migrations"),
        Path("/flag/migrations"),
    ),
    ("LOG_FORMAT", "--log-format", "log_format", "console", "json", "console", "json"),
    ("LOG_LEVEL", "--log-level", "log_level", "debug", "warning", "debug", "warning"),
]


@pytest.mark.parametrize(
    ("variable", "flag", "attribute", "env_value", "flag_value", "from_env", "from_flag"),
    WITH_FLAGS,
    ids=[row[0] for row in WITH_FLAGS],
)
def test_environment_over_default_and_flag_over_environment(
    variable: str,
    flag: str,
    attribute: str,
    env_value: str,
    flag_value: str,
    from_env: object,
    from_flag: object,
) -> None:
    assert getattr(load(**{variable: env_value}), attribute) == from_env
    assert getattr(load(flag, flag_value, **{variable: env_value}), attribute) == from_flag
    assert getattr(load(flag, flag_value), attribute) == from_flag


@pytest.mark.parametrize(
    ("variable", "flag", "attribute"),
    [
        ("DRY_RUN", "--dry-run", "dry_run"),
        ("ALLOW_OUT_OF_ORDER", "--allow-out-of-order", "allow_out_of_order"),
        ("SINGLE_TRANSACTION", "--single-transaction", "single_transaction"),
    ],
)
def test_boolean_switches_from_environment_and_flag(
    variable: str, flag: str, attribute: str
) -> None:
    assert getattr(load(), attribute) is False
    assert getattr(load(**{variable: "true"}), attribute) is True
    assert getattr(load(flag), attribute) is True
    assert getattr(load(flag, **{variable: "false"}), attribute) is True


@pytest.mark.parametrize(
    ("variable", "attribute", "value", "expected"),
    [
        ("DB_SSLMODE", "sslmode", "require", "require"),
        ("DB_SSLMODE", "sslmode", "verify-full", "verify-full"),
        ("DB_WAIT_TIMEOUT", "wait_timeout", "5", 5.0),
        ("MIGRATION_LOCK_TIMEOUT", "migration_lock_timeout", "90s", 90.0),
        ("DDL_LOCK_TIMEOUT", "ddl_lock_timeout", "250ms", 0.25),
        ("DDL_LOCK_RETRIES", "ddl_lock_retries", "0", 0),
        ("DDL_LOCK_RETRIES", "ddl_lock_retries", "12", 12),
        ("STATEMENT_TIMEOUT", "statement_timeout", "2min", 120.0),
        ("APP_DB_USER", "app_user", "reader", "reader"),
    ],
)
def test_environment_only_settings(
    variable: str, attribute: str, value: str, expected: object
) -> None:
    assert getattr(load(**{variable: value}), attribute) == expected


def test_pgsslmode_is_honoured_when_db_sslmode_is_unset() -> None:
    assert load(PGSSLMODE="require").sslmode == "require"
    assert load(PGSSLMODE="require", DB_SSLMODE="disable").sslmode == "disable"


def test_pgpassword_is_honoured_as_a_last_resort() -> None:
    config = load_config([], {"PGPASSWORD": PASSWORD}, interactive=False)
    assert config.password == PASSWORD
    config = load_config([], {"PGPASSWORD": "other", "DB_PASSWORD": PASSWORD}, interactive=False)
    assert config.password == PASSWORD


def test_empty_variables_mean_the_default() -> None:
    config = load(DB_HOST="", DB_PORT="", DB_WAIT_TIMEOUT="", DDL_LOCK_RETRIES="", DRY_RUN="")
    assert (config.host, config.port, config.wait_timeout) == ("localhost", 5432, 60)
    assert (config.ddl_lock_retries, config.dry_run) == (5, False)


def test_status_command_and_json_flag() -> None:
    config = load("status", "--json")
    assert (config.command, config.status_json) == ("status", True)


def test_admin_credentials_enable_bootstrap_and_connect_as_the_superuser() -> None:
    config = load(DB_ADMIN_USER="postgres", DB_ADMIN_PASSWORD=ADMIN_PASSWORD)
    assert config.bootstrap_enabled is True
    admin = config.connect_kwargs(admin=True, dbname="postgres")
    assert (admin["user"], admin["password"], admin["dbname"]) == (
        "postgres",
        ADMIN_PASSWORD,
        "postgres",
    )
    owner = config.connect_kwargs()
    assert (owner["user"], owner["password"], owner["dbname"]) == (
        "auth_service",
        PASSWORD,
        "auth_service",
    )


def test_init_only_needs_the_superuser() -> None:
    error = config_error("--init-only")
    assert "DB_ADMIN_USER" in error.message
    config = load("--init-only", DB_ADMIN_USER="postgres", DB_ADMIN_PASSWORD=ADMIN_PASSWORD)
    assert config.init_only is True


def test_admin_user_without_admin_password_is_refused() -> None:
    error = config_error(DB_ADMIN_USER="postgres")
    assert "DB_ADMIN_PASSWORD" in error.message


# --- DATABASE_URL / --url -----------------------------------------------------------------------


def test_database_url_gives_every_part() -> None:
    config = load_config(
        [],
        {"DATABASE_URL": f"postgresql://owner:{PASSWORD}@db.example:6432/accounts?sslmode=require"},
        interactive=False,
    )
    assert (config.user, config.password, config.host, config.port) == (
        "owner",
        PASSWORD,
        "db.example",
        6432,
    )
    assert (config.dbname, config.sslmode) == ("accounts", "require")


def test_url_password_is_percent_decoded() -> None:
    config = load_config(
        [], {"DATABASE_URL": "postgres://owner:p%3Aw%40rd@db/accounts"}, interactive=False
    )
    assert config.password == "p:w@rd"


def test_url_replaces_the_db_parts_and_flags_still_win() -> None:
    environ = {
        "DATABASE_URL": "postgresql://owner:secret-url@url-host:6000/url_db",
        "DB_HOST": "env-host",
        "DB_PORT": "7000",
        "DB_NAME": "env_db",
        "DB_USER": "env_user",
    }
    config = load_config([], environ, interactive=False)
    assert (config.host, config.port, config.dbname, config.user) == (
        "url-host",
        6000,
        "url_db",
        "owner",
    )
    config = load_config(
        ["--host", "flag-host", "--port", "8000", "--database", "flag_db"],
        environ,
        interactive=False,
    )
    assert (config.host, config.port, config.dbname) == ("flag-host", 8000, "flag_db")


def test_url_flag_wins_over_database_url() -> None:
    config = load_config(
        ["--url", "postgresql://flag:pw-flag@flag-host/flag_db"],
        {"DATABASE_URL": "postgresql://env:pw-env@env-host/env_db"},
        interactive=False,
    )
    assert (config.user, config.password, config.host, config.dbname) == (
        "flag",
        "pw-flag",
        "flag-host",
        "flag_db",
    )


def test_libpq_connection_string_is_accepted() -> None:
    config = load_config(
        [],
        {"DATABASE_URL": f"host=db port=6001 dbname=accounts user=owner password={PASSWORD}"},
        interactive=False,
    )
    assert (config.host, config.port, config.dbname, config.user) == (
        "db",
        6001,
        "accounts",
        "owner",
    )
    assert config.password == PASSWORD


def test_invalid_url_is_refused_without_echoing_it() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(
            [],
            {"DATABASE_URL": f"postgresql://owner:{PASSWORD}@db/x?nonsense=1"},
            interactive=False,
        )
    assert caught.value.exit_code == EX_CONFIG
    assert "DATABASE_URL" in caught.value.message
    assert PASSWORD not in caught.value.message
    assert PASSWORD not in repr(caught.value)


def test_invalid_port_inside_the_url_names_database_url() -> None:
    """The user set DATABASE_URL, not DB_PORT: the message must point at what they wrote."""
    with pytest.raises(ConfigError) as caught:
        load_config(
            [], {"DATABASE_URL": f"postgresql://owner:{PASSWORD}@db:70000/x"}, interactive=False
        )
    assert "DATABASE_URL" in caught.value.message
    assert PASSWORD not in caught.value.message


# --- password files -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "attribute"),
    [
        ("DB_PASSWORD", "password"),
        ("DB_ADMIN_PASSWORD", "admin_password"),
        ("APP_DB_PASSWORD", "app_password"),
    ],
)
def test_password_file_is_read_and_its_trailing_newline_stripped(
    tmp_path: Path, variable: str, attribute: str
) -> None:
    secret = tmp_path / "secret"
    secret.write_text("pa ss\tword-from-file\n")
    environ = {
        "DB_PASSWORD": PASSWORD,
        "DB_ADMIN_USER": "postgres",
        "DB_ADMIN_PASSWORD": ADMIN_PASSWORD,
    }
    environ.pop(variable, None)  # the file replaces the plain variable
    environ[f"{variable}_FILE"] = str(secret)
    config = load_config([], environ, interactive=False)
    assert getattr(config, attribute) == "pa ss\tword-from-file"


def test_password_file_with_crlf_ending(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(b"windows-pw\r\n")
    config = load_config([], {"DB_PASSWORD_FILE": str(secret)}, interactive=False)
    assert config.password == "windows-pw"


def test_password_and_password_file_together_are_refused(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("from-file\n")
    error = config_error(DB_PASSWORD=PASSWORD, DB_PASSWORD_FILE=str(secret))
    assert "DB_PASSWORD" in error.message
    assert "DB_PASSWORD_FILE" in error.message
    assert PASSWORD not in error.message
    assert "from-file" not in error.message


def test_missing_password_file_names_the_variable_and_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-secret"
    with pytest.raises(ConfigError) as caught:
        load_config([], {"DB_PASSWORD_FILE": str(missing)}, interactive=False)
    assert caught.value.exit_code == 78
    assert "DB_PASSWORD_FILE" in caught.value.message
    assert str(missing) in caught.value.message


def test_missing_admin_password_file_names_its_variable(tmp_path: Path) -> None:
    missing = tmp_path / "admin-secret"
    error = config_error(DB_ADMIN_USER="postgres", DB_ADMIN_PASSWORD_FILE=str(missing))
    assert "DB_ADMIN_PASSWORD_FILE" in error.message
    assert str(missing) in error.message


def test_password_file_that_is_a_folder_is_refused(tmp_path: Path) -> None:
    error = config_error(DB_PASSWORD="", DB_PASSWORD_FILE=str(tmp_path))
    assert "DB_PASSWORD_FILE" in error.message
    assert str(tmp_path) in error.message


# --- durations, counts, booleans ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("30", 30.0),
        ("30s", 30.0),
        ("500ms", 0.5),
        ("2min", 120.0),
        ("2m", 120.0),
        ("1h", 3600.0),
        ("1.5", 1.5),
        (" 45s ", 45.0),
        ("0", 0.0),
    ],
)
def test_durations(value: str, seconds: float) -> None:
    assert load(DB_WAIT_TIMEOUT=value).wait_timeout == pytest.approx(seconds)


@pytest.mark.parametrize(
    "variable",
    [
        "DB_WAIT_TIMEOUT",
        "MIGRATION_LOCK_TIMEOUT",
        "DDL_LOCK_TIMEOUT",
        "STATEMENT_TIMEOUT",
    ],
)
@pytest.mark.parametrize("value", ["soon", "-5", "30 years", "5 s s", "1e3"])
def test_invalid_duration_names_the_variable(variable: str, value: str) -> None:
    error = config_error(**{variable: value})
    assert variable in error.message
    assert repr(value) in error.message


@pytest.mark.parametrize("value", ["-1", "many", "2.5"])
def test_invalid_retry_count_names_the_variable(value: str) -> None:
    error = config_error(DDL_LOCK_RETRIES=value)
    assert "DDL_LOCK_RETRIES" in error.message


@pytest.mark.parametrize("value", ["true", "TRUE", "1", "yes", "on", "On"])
def test_true_words(value: str) -> None:
    assert load(DRY_RUN=value).dry_run is True


@pytest.mark.parametrize("value", ["false", "FALSE", "0", "no", "off", ""])
def test_false_words(value: str) -> None:
    assert load(DRY_RUN=value).dry_run is False


@pytest.mark.parametrize("variable", ["DRY_RUN", "ALLOW_OUT_OF_ORDER", "SINGLE_TRANSACTION"])
def test_invalid_boolean_names_the_variable(variable: str) -> None:
    error = config_error(**{variable: "maybe"})
    assert variable in error.message
    assert "maybe" in error.message


# --- ports, log format, level, TLS mode ---------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    ["abc", "0", "70000", "65536", "-1", "54 32", "5432x", pytest.param("²", id="superscript-2")],
)
def test_invalid_port_from_the_environment_names_db_port(value: str) -> None:
    error = config_error(DB_PORT=value)
    assert "DB_PORT" in error.message
    assert repr(value) in error.message


@pytest.mark.parametrize("value", ["abc", "0", "70000"])
def test_invalid_port_flag_names_the_flag(value: str) -> None:
    error = config_error("--port", value, DB_PORT="5432")
    assert "--port" in error.message
    assert repr(value) in error.message


@pytest.mark.parametrize("value", ["1", "65535"])
def test_port_bounds_are_accepted(value: str) -> None:
    assert load(DB_PORT=value).port == int(value)


def test_unknown_log_format_names_log_format() -> None:
    error = config_error(LOG_FORMAT="xml")
    assert "LOG_FORMAT" in error.message
    assert "'xml'" in error.message
    assert "json" in error.message  # says what would be accepted


def test_unknown_log_format_flag_names_the_flag() -> None:
    error = config_error("--log-format", "xml")
    assert "--log-format" in error.message


def test_log_format_and_level_are_case_insensitive() -> None:
    config = load(LOG_FORMAT="JSON", LOG_LEVEL="WARNING")
    assert (config.log_format, config.log_level) == ("json", "warning")


def test_unknown_log_level_names_log_level() -> None:
    error = config_error(LOG_LEVEL="verbose")
    assert "LOG_LEVEL" in error.message


def test_unknown_sslmode_names_db_sslmode() -> None:
    error = config_error(DB_SSLMODE="sometimes")
    assert "DB_SSLMODE" in error.message


# --- the command line ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "mentioned"),
    [
        (["--bogus"], "--bogus"),
        (["migrat"], "migrat"),
        (["--port"], "--port"),
        (["migrate", "status"], "status"),
    ],
)
def test_bad_command_line_is_a_usage_error(argv: list[str], mentioned: str) -> None:
    with pytest.raises(UsageError) as caught:
        load(*argv)
    assert caught.value.exit_code == EX_USAGE == 64
    assert mentioned in caught.value.message
    assert "\n" not in caught.value.message


# --- passwords: required, prompted, never shown -------------------------------------------------


def test_no_password_and_no_terminal_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config([], {}, interactive=False)
    assert caught.value.exit_code == 78
    assert "DB_PASSWORD" in caught.value.message
    assert "DB_PASSWORD_FILE" in caught.value.message


def test_empty_password_file_counts_as_no_password(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("\n")
    with pytest.raises(ConfigError) as caught:
        load_config([], {"DB_PASSWORD_FILE": str(secret)}, interactive=False)
    assert "DB_PASSWORD" in caught.value.message


def test_password_is_prompted_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    prompts: list[str] = []

    def answer(prompt: str) -> str:
        prompts.append(prompt)
        return "typed-pw"

    monkeypatch.setattr("getpass.getpass", answer)
    config = load_config(["--user", "alice"], {}, interactive=True)
    assert config.password == "typed-pw"
    assert len(prompts) == 1
    assert "alice" in prompts[0]


def test_secrets_are_not_in_repr_and_are_listed(tmp_path: Path) -> None:
    config = load(
        DB_ADMIN_USER="postgres",
        DB_ADMIN_PASSWORD=ADMIN_PASSWORD,
        APP_DB_PASSWORD=APP_PASSWORD,
    )
    for text in (repr(config), str(config)):
        for secret in (PASSWORD, ADMIN_PASSWORD, APP_PASSWORD):
            assert secret not in text
    assert set(config.secrets) == {PASSWORD, ADMIN_PASSWORD, APP_PASSWORD}


def test_url_password_is_a_secret_and_not_in_repr() -> None:
    config = load_config(
        [], {"DATABASE_URL": f"postgresql://owner:{PASSWORD}@db/accounts"}, interactive=False
    )
    assert PASSWORD not in repr(config)
    assert config.secrets == (PASSWORD,)


def test_secrets_leave_out_what_is_unset() -> None:
    assert load().secrets == (PASSWORD,)


# --- the bootstrap's own server (migrations through a pooler, bootstrap direct) ----------------


def test_admin_host_and_port_apply_to_the_bootstrap_connection_only() -> None:
    config = load(DB_HOST="pgbouncer", DB_PORT="6432", DB_ADMIN_USER="postgres",
                  DB_ADMIN_PASSWORD=ADMIN_PASSWORD, DB_ADMIN_HOST="db", DB_ADMIN_PORT="5432")  # fmt: skip
    admin = config.connect_kwargs(admin=True, dbname="postgres")
    assert (admin["host"], admin["port"], admin["user"]) == ("db", 5432, "postgres")
    owner = config.connect_kwargs()
    assert (owner["host"], owner["port"]) == ("pgbouncer", 6432)


def test_admin_host_and_port_default_to_db_host_and_port() -> None:
    config = load(DB_HOST="db", DB_PORT="5433", DB_ADMIN_USER="postgres",
                  DB_ADMIN_PASSWORD=ADMIN_PASSWORD)  # fmt: skip
    admin = config.connect_kwargs(admin=True)
    assert (admin["host"], admin["port"]) == ("db", 5433)


def test_a_bad_admin_port_names_its_variable() -> None:
    error = config_error(DB_ADMIN_PORT="6432x")
    assert error.message.startswith("DB_ADMIN_PORT must be a port number")
