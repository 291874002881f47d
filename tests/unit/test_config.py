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

from migrator.apply.throttle import ThrottleSettings
from migrator.cli.arguments import build_parser
from migrator.config import Config, load_config
from migrator.errors import EX_CONFIG, EX_USAGE, ConfigError, UsageError
from migrator.version import VERSION

PASSWORD = "pw-Unit-7f3a-9b41e0"
ADMIN_PASSWORD = "admin-Unit-91c2-44d7"
APP_PASSWORD = "app-Unit-5d0e-a3f2c8"


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


# --- names the server would cut ----------------------------------------------------------------

ADMIN = {"DB_ADMIN_USER": "postgres", "DB_ADMIN_PASSWORD": ADMIN_PASSWORD}


@pytest.mark.parametrize(
    ("argv", "environ", "setting"),
    [
        ((), {"DB_NAME": "n" * 64}, "DB_NAME"),
        (("--database", "n" * 64), {"DB_NAME": "auth"}, "--database"),
        ((), {"DB_USER": "n" * 64}, "DB_USER"),
        (("--user", "n" * 64), {}, "--user"),
        ((), {"DATABASE_URL": f"postgresql://{'n' * 64}@db/auth"}, "DATABASE_URL"),
        ((), {"DATABASE_URL": f"postgresql://owner@db/{'n' * 64}"}, "DATABASE_URL"),
        (("--url", f"postgresql://owner@db/{'n' * 64}"), {}, "--url"),
        ((), {"APP_DB_USER": "n" * 64}, "APP_DB_USER"),
        ((), {**ADMIN, "DB_ADMIN_USER": "n" * 64}, "DB_ADMIN_USER"),
    ],
)
def test_a_name_over_63_bytes_is_refused_naming_its_setting(
    argv: tuple[str, ...], environ: dict[str, str], setting: str
) -> None:
    """PostgreSQL keeps 63 bytes of a name, at creation and at login: a longer one would mean
    another database or role than the one configured, silently."""
    assert config_error(*argv, **environ).message == (
        f"{setting} is 64 bytes long; PostgreSQL keeps only the first 63 bytes of a name, so it "
        f"would silently mean {'n' * 63!r}: choose a name of at most 63 bytes"
    )


def test_names_of_63_bytes_are_kept_whole() -> None:
    config = load(DB_NAME="d" * 63, DB_USER="o" * 63, APP_DB_USER="a" * 63)
    assert (config.dbname, config.user, config.app_user) == ("d" * 63, "o" * 63, "a" * 63)


def test_bytes_not_characters_are_counted_and_the_cut_keeps_whole_characters() -> None:
    assert load(DB_NAME="ü" * 31 + "x").dbname == "ü" * 31 + "x"  # 63 bytes
    assert config_error(DB_NAME="ü" * 32).message.startswith(
        f"DB_NAME is 64 bytes long; PostgreSQL keeps only the first 63 bytes of a name, so it "
        f"would silently mean {'ü' * 31!r}:"
    )


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


@pytest.mark.parametrize(("value", "expected"), [("", True), ("false", False), ("on", True)])
def test_analyze_after_migrate_defaults_to_true(value: str, expected: bool) -> None:
    assert load(ANALYZE_AFTER_MIGRATE=value).analyze_after_migrate is expected
    assert load().analyze_after_migrate is True


@pytest.mark.parametrize(
    "variable", ["DRY_RUN", "ALLOW_OUT_OF_ORDER", "SINGLE_TRANSACTION", "ANALYZE_AFTER_MIGRATE"]
)
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


# --- TLS settings -------------------------------------------------------------------------------


TLS_VARIABLES = [
    ("sslrootcert", "DB_SSLROOTCERT", "PGSSLROOTCERT"),
    ("sslcert", "DB_SSLCERT", "PGSSLCERT"),
    ("sslkey", "DB_SSLKEY", "PGSSLKEY"),
    ("sslcrl", "DB_SSLCRL", "PGSSLCRL"),
]


@pytest.mark.parametrize(("parameter", "ours", "libpq"), TLS_VARIABLES)
def test_certificate_files_from_variables_reach_every_connection(
    tmp_path: Path, parameter: str, ours: str, libpq: str
) -> None:
    mine, theirs = tmp_path / "mine.pem", tmp_path / "theirs.pem"
    mine.write_text("x")
    theirs.write_text("x")
    assert getattr(load(**{libpq: str(theirs)}), parameter) == str(theirs)
    config = load(**{ours: str(mine), libpq: str(theirs)}, DB_ADMIN_USER="postgres",
                  DB_ADMIN_PASSWORD=ADMIN_PASSWORD)  # fmt: skip
    assert getattr(config, parameter) == str(mine), f"{ours} wins over {libpq}"
    for kwargs in (config.connect_kwargs(), config.connect_kwargs(admin=True, dbname="postgres")):
        assert kwargs[parameter] == str(mine)


def test_unset_certificate_settings_are_left_to_libpq() -> None:
    kwargs = load().connect_kwargs()
    assert not {"sslrootcert", "sslcert", "sslkey", "sslcrl", "channel_binding"} & set(kwargs)


@pytest.mark.parametrize(("parameter", "ours", "libpq"), TLS_VARIABLES)
def test_a_missing_certificate_file_names_the_variable(
    tmp_path: Path, parameter: str, ours: str, libpq: str
) -> None:
    missing = tmp_path / "missing.pem"
    for name in (ours, libpq):
        error = config_error(**{name: str(missing)})
        assert name in error.message and str(missing) in error.message
    assert "is not a file" in config_error(**{ours: str(tmp_path)}).message


def test_sslrootcert_system_needs_no_file() -> None:
    assert load(DB_SSLROOTCERT="system").connect_kwargs()["sslrootcert"] == "system"


def test_channel_binding_from_variables_and_checked() -> None:
    assert load(DB_CHANNEL_BINDING="require").connect_kwargs()["channel_binding"] == "require"
    assert load(PGCHANNELBINDING="disable").channel_binding == "disable"
    error = config_error(DB_CHANNEL_BINDING="always")
    assert "DB_CHANNEL_BINDING" in error.message and "require" in error.message


def test_url_tls_parameters_and_other_libpq_parameters_are_kept(tmp_path: Path) -> None:
    ca = tmp_path / "ca.crt"
    ca.write_text("x")
    url = (
        f"postgresql://owner:{PASSWORD}@db.example/accounts?sslmode=verify-full&sslrootcert={ca}"
        "&channel_binding=require&target_session_attrs=read-write&keepalives_idle=30"
        "&options=-c%20search_path%3Dapp&application_name=deploy-7&sslpassword=KeyPass-42"
    )
    config = load_config([], {"DATABASE_URL": url, "DB_SSLROOTCERT": "ignored"}, interactive=False)
    kwargs = config.connect_kwargs()
    assert (kwargs["sslmode"], kwargs["sslrootcert"], kwargs["channel_binding"]) == (
        "verify-full",
        str(ca),
        "require",
    )
    assert kwargs["target_session_attrs"] == "read-write"
    assert kwargs["keepalives_idle"] == "30"
    assert kwargs["options"] == "-c search_path=app"
    assert kwargs["application_name"] == "deploy-7"
    assert config.connect_kwargs(admin=True)["target_session_attrs"] == "read-write"
    assert "KeyPass-42" in config.secrets, "the key's passphrase is redacted like a password"
    assert "KeyPass-42" not in repr(config)


@pytest.mark.parametrize(
    ("url", "parameter"),
    [
        ("postgresql://owner:{pw}@db/x?sslmode=require&sslrootcrt=ca.pem", "sslrootcrt"),
        ("postgresql://owner:{pw}@db/x?nonsense=1", "nonsense"),
        ("host=db user=owner password={pw} ssl_root_cert=ca.pem", "ssl_root_cert"),
    ],
)
def test_unknown_url_parameters_are_named_and_refused(url: str, parameter: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config([], {"DATABASE_URL": url.format(pw=PASSWORD)}, interactive=False)
    assert caught.value.exit_code == EX_CONFIG
    assert parameter in caught.value.message and "DATABASE_URL" in caught.value.message
    assert PASSWORD not in caught.value.message


def test_verified_only_with_verify_full() -> None:
    assert load(DB_SSLMODE="verify-full").tls_verified is True
    for mode in ("disable", "allow", "prefer", "require", "verify-ca"):
        assert load(DB_SSLMODE=mode).tls_verified is False


# --- password values ----------------------------------------------------------------------------


BAD_PASSWORDS = [
    ("   ", "only whitespace"),
    ("\t \t", "only whitespace"),
    ("a\x00LongSecret-123456", "NUL byte"),
    ("first-line-long-enough\nsecond", "line break"),
    ("long-enough-password\rmore", "carriage return"),
    ("replace-me", "placeholder"),
    ("CHANGEME", "placeholder"),
    ("Password", "placeholder"),
    (" secret ", "placeholder"),
    ("postgres", "placeholder"),
]


@pytest.mark.parametrize("variable", ["DB_PASSWORD", "DB_ADMIN_PASSWORD", "APP_DB_PASSWORD"])
@pytest.mark.parametrize(("value", "problem"), BAD_PASSWORDS)
def test_bad_password_values_are_refused_naming_the_variable(
    variable: str, value: str, problem: str
) -> None:
    environ = {"DB_ADMIN_USER": "postgres", "DB_ADMIN_PASSWORD": ADMIN_PASSWORD, variable: value}
    error = config_error(**environ)
    assert error.message.startswith(variable + " "), error.message
    assert problem.split()[-1] in error.message or problem in error.message
    assert value.strip() not in error.message.replace(variable, "") or not value.strip()


@pytest.mark.parametrize(("value", "problem"), BAD_PASSWORDS)
def test_bad_password_files_are_refused_naming_the_file_variable(
    tmp_path: Path, value: str, problem: str
) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(value.encode() + b"\n")
    error = config_error(DB_PASSWORD="", DB_PASSWORD_FILE=str(secret))
    assert error.message.startswith("DB_PASSWORD_FILE "), error.message


def test_a_nul_byte_file_no_longer_sets_a_truncated_password(tmp_path: Path) -> None:
    """Before: libpq stopped at the NUL and the role's password became "a"."""
    secret = tmp_path / "secret"
    secret.write_bytes(b"a\x00LongSecret-0123456789\n")
    error = config_error(DB_PASSWORD="", DB_PASSWORD_FILE=str(secret))
    assert "NUL" in error.message and "LongSecret" not in error.message


@pytest.mark.parametrize("content", [b"", b"\n", b"\r\n"])
def test_an_empty_password_file_is_refused(tmp_path: Path, content: bytes) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(content)
    error = config_error(DB_PASSWORD="", DB_PASSWORD_FILE=str(secret))
    assert error.message.startswith("DB_PASSWORD_FILE is empty")


def test_only_one_final_newline_is_stripped(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(b"two-newlines-password\n\n")
    assert "line break" in config_error(DB_PASSWORD="", DB_PASSWORD_FILE=str(secret)).message


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"PGPASSWORD": "changeme"}, "PGPASSWORD"),
        ({"DATABASE_URL": "postgresql://owner:replace-me@db/x"}, "DATABASE_URL"),
    ],
)
def test_placeholders_from_other_sources_are_refused(environ: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config([], environ, interactive=False)
    assert named in caught.value.message and "placeholder" in caught.value.message


def test_a_typed_placeholder_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("getpass.getpass", lambda prompt: "password")
    with pytest.raises(ConfigError) as caught:
        load_config(["--user", "alice"], {}, interactive=True)
    assert "alice" in caught.value.message and "placeholder" in caught.value.message


@pytest.mark.parametrize(
    ("variable", "role"), [("DB_PASSWORD", "auth_service"), ("APP_DB_PASSWORD", "auth_service_app")]
)
def test_passwords_bootstrap_sets_are_at_least_16_characters(variable: str, role: str) -> None:
    short = "Sh0rt-but-ok-15"  # 15 characters
    environ = {"DB_ADMIN_USER": "postgres", "DB_ADMIN_PASSWORD": "x1", variable: short}
    error = config_error(**environ)
    assert error.message.startswith(variable + " ") and "16" in error.message
    assert role in error.message and short not in error.message
    environ[variable] = short + "!"
    assert load(**environ).bootstrap_enabled


def test_short_passwords_are_fine_when_bootstrap_does_not_set_them(tmp_path: Path) -> None:
    """Without DB_ADMIN_USER the runner only logs in: the password is the server's business."""
    assert load(DB_PASSWORD="short-pw").password == "short-pw"
    secret = tmp_path / "app"
    secret.write_text("short-app\n")
    error = config_error(DB_ADMIN_USER="postgres", DB_ADMIN_PASSWORD="x1",
                         APP_DB_PASSWORD_FILE=str(secret))  # fmt: skip
    assert error.message.startswith("APP_DB_PASSWORD_FILE ")


def test_maintenance_commands_and_their_flags() -> None:
    baseline = load("baseline", "--version", "002_x", "--verify")
    assert (baseline.command, baseline.target_version, baseline.verify) == (
        "baseline",
        "002_x",
        True,
    )
    rollback = load("rollback", "--steps", "2", "--dry-run")
    assert (rollback.command, rollback.rollback_steps, rollback.dry_run) == ("rollback", 2, True)
    assert load("rollback", "--to", "001").target_version == "001"
    assert load("adopt").command == "adopt"


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (("baseline",), "baseline needs --version"),
        (("rollback",), "one of --to V or --steps N"),
        (("rollback", "--to", "1", "--steps", "1"), "one of --to V or --steps N"),
        (("rollback", "--steps", "-1"), "--steps must be a whole number >= 1"),
        (("migrate", "--to", "1"), "--to belongs to the rollback command"),
        (("status", "--version", "1"), "--version belongs to the baseline command"),
    ],
)
def test_maintenance_command_usage_errors(argv: tuple[str, ...], expected: str) -> None:
    with pytest.raises(UsageError) as caught:
        load(*argv)
    assert caught.value.exit_code == 64
    assert expected in caught.value.message


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


# --- cases mutation testing found unasserted (scripts/mutation.sh) ------------------------------


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_prompt_names_the_user_and_is_asked_once(monkeypatch: pytest.MonkeyPatch) -> None:
    prompts: list[str] = []
    monkeypatch.setattr("getpass.getpass", lambda prompt: prompts.append(prompt) or "typed-pw-1")
    monkeypatch.setattr(sys, "stdin", _Terminal())  # interactive unset: the terminal decides
    config = load_config(["--user", "alice"], {})
    assert (config.password, prompts) == ("typed-pw-1", ["Password for alice: "])


def test_no_prompt_without_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("getpass.getpass", lambda prompt: pytest.fail("prompted"))
    monkeypatch.setattr(sys, "stdin", io.StringIO())
    with pytest.raises(ConfigError) as caught:
        load_config(["--user", "alice"], {})
    assert caught.value.message == (
        "no password for alice: set DB_PASSWORD or DB_PASSWORD_FILE "
        "(no terminal is attached to prompt for it)"
    )


def test_an_empty_answer_to_the_prompt_is_no_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("getpass.getpass", lambda prompt: "")
    with pytest.raises(ConfigError) as caught:
        load_config([], {}, interactive=True)
    assert caught.value.message.startswith("no password for auth_service: ")


def test_a_typed_placeholder_is_refused_naming_the_prompt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("getpass.getpass", lambda prompt: "changeme")
    with pytest.raises(ConfigError) as caught:
        load_config(["--user", "alice"], {}, interactive=True)
    assert caught.value.message == (
        "the password typed for alice is a placeholder from an example, not a password: "
        "generate one, e.g. openssl rand -base64 24"
    )


@pytest.mark.parametrize("sslmode", ["disable", "allow", "prefer", "require", "verify-ca"])
def test_every_libpq_sslmode_is_accepted(sslmode: str) -> None:
    config = load(DB_SSLMODE=sslmode)
    assert (config.sslmode, config.tls_verified) == (sslmode, False)
    assert config.connect_kwargs()["sslmode"] == sslmode


def test_only_verify_full_counts_as_verified() -> None:
    assert load(DB_SSLMODE="verify-full").tls_verified is True


@pytest.mark.parametrize("level", ["debug", "info", "warning", "error"])
def test_every_log_level_is_accepted(level: str) -> None:
    assert load(LOG_LEVEL=level).log_level == level
    assert load("--log-level", level.upper()).log_level == level


def test_unknown_log_level_message_lists_the_choices() -> None:
    assert config_error(LOG_LEVEL="verbose").message == (
        "LOG_LEVEL must be one of debug, info, warning, error, got 'verbose'"
    )
    assert config_error("--log-level", "loud").message == (
        "--log-level must be one of debug, info, warning, error, got 'loud'"
    )


@pytest.mark.parametrize(("value", "seconds"), [("30 s", 30.0), ("250 ms", 0.25), ("1.5h", 5400.0)])
def test_a_unit_may_follow_a_space(value: str, seconds: float) -> None:
    assert load(DDL_LOCK_TIMEOUT=value).ddl_lock_timeout == pytest.approx(seconds)


@pytest.mark.parametrize("value", ["s", "ms", ".5", "5.", "5x"])
def test_a_duration_needs_digits_and_a_known_unit(value: str) -> None:
    assert config_error(PROGRESS_INTERVAL=value).message == (
        f"PROGRESS_INTERVAL must be a duration like 30, 30s, 500ms or 2min, got {value!r}"
    )


def test_the_termination_log_defaults_to_kubernetes_path() -> None:
    assert load().termination_log == Path("/dev/termination-log")
    assert load(TERMINATION_LOG="msg").termination_log == Path("msg")


def test_a_password_file_keeps_a_trailing_space(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("pw-ending-in-space \n")
    config = load_config([], {"DB_PASSWORD_FILE": str(secret)}, interactive=False)
    assert config.password == "pw-ending-in-space "


def usage_error(*argv: str) -> str:
    with pytest.raises(UsageError) as caught:
        load(*argv)
    assert caught.value.exit_code == EX_USAGE
    return caught.value.message


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--bogus"], "unrecognized arguments: --bogus (see --help)"),
        (["status", "--to", "1"], "--to belongs to the rollback command"),
        (["migrate", "--version", "1"], "--version belongs to the baseline command"),
        (["status", "--steps", "1"], "--steps belongs to the rollback command"),
        (["adopt", "--verify"], "--verify belongs to the baseline command"),
        (["baseline"], "baseline needs --version V: the newest file the database has"),
        (["rollback"], "rollback needs one of --to V or --steps N"),
        (["rollback", "--to", "1", "--steps", "1"], "rollback needs one of --to V or --steps N"),
        (["rollback", "--steps", "0"], "--steps must be a whole number >= 1, got '0'"),
        (["rollback", "--steps", "two"], "--steps must be a whole number >= 1, got 'two'"),
    ],
)
def test_command_line_mistakes_are_named_exactly(argv: list[str], message: str) -> None:
    assert usage_error(*argv) == message


def test_each_command_takes_its_own_flags() -> None:
    assert load("rollback", "--steps", "2").rollback_steps == 2
    assert load("rollback", "--to", "003_c").target_version == "003_c"
    config = load("baseline", "--version", "002_b", "--verify")
    assert (config.command, config.target_version, config.verify) == ("baseline", "002_b", True)
    assert load("status", "--json").status_json is True
    assert load().verify is False


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"DB_PORT": "0"}, "DB_PORT must be a port number from 1 to 65535, got '0'"),
        ({"DB_PORT": "65536"}, "DB_PORT must be a port number from 1 to 65535, got '65536'"),
        ({"DRY_RUN": "maybe"}, "DRY_RUN must be true or false, got 'maybe'"),
        ({"DDL_LOCK_RETRIES": "-1"}, "DDL_LOCK_RETRIES must be a whole number >= 0, got '-1'"),
        (
            {"DB_SSLMODE": "sometimes"},
            "DB_SSLMODE must be one of disable, allow, prefer, require, verify-ca, verify-full, "
            "got 'sometimes'",
        ),
        (
            {"PGCHANNELBINDING": "always"},
            "PGCHANNELBINDING must be one of disable, prefer, require, got 'always'",
        ),
        (
            {"DATABASE_URL": "mysql://u:p@h/db"},
            "DATABASE_URL must start with postgresql:// or postgres://, not mysql://",
        ),
        (
            {"DATABASE_URL": "postgresql://h/db?sslmod=require"},
            "DATABASE_URL has the parameter sslmod, which libpq does not know: remove it or fix "
            "its spelling (the parameters are listed in PostgreSQL's libpq documentation)",
        ),
        (
            {"DATABASE_URL": "host=h port=5432 = x"},
            "DATABASE_URL is not a valid PostgreSQL URL or connection string",
        ),
        ({"DB_PASSWORD": "   "}, "DB_PASSWORD holds only whitespace: set a real password"),
        (
            {"DB_PASSWORD": "a\rb"},
            "DB_PASSWORD contains a carriage return inside the password: libpq would cut it "
            "there or send it as is; write the password on one line (a file's single final "
            "newline is ignored)",
        ),
        (
            {"DB_PASSWORD": " Changeme "},
            "DB_PASSWORD is a placeholder from an example, not a password: generate one, e.g. "
            "openssl rand -base64 24",
        ),
        (
            {"DB_ADMIN_USER": "postgres"},
            "DB_ADMIN_USER is set but neither DB_ADMIN_PASSWORD nor DB_ADMIN_PASSWORD_FILE",
        ),
        (
            {"FUTURE_MIGRATIONS": "Refuse"},
            "FUTURE_MIGRATIONS must be one of warn, fail, got 'refuse'",
        ),
        (
            {"ROLE_PASSWORDS": "never"},
            "ROLE_PASSWORDS must be one of always, on-create, got 'never'",
        ),
        (
            {"MIGRATIONS_WAIT_TIMEOUT": "soon"},
            "MIGRATIONS_WAIT_TIMEOUT must be a duration like 30, 30s, 500ms or 2min, got 'soon'",
        ),
        (
            {"LINT_SHADOW_URL": "mysql://u:p@h/db"},
            "LINT_SHADOW_URL must start with postgresql:// or postgres://, not mysql://",
        ),
    ],
)
def test_configuration_mistakes_are_named_exactly(environ: dict[str, str], message: str) -> None:
    environ.setdefault("DB_PASSWORD", PASSWORD)
    with pytest.raises(ConfigError) as caught:
        load_config([], environ, interactive=False)
    assert caught.value.message == message


def test_rollout_settings_from_their_defaults_variables_and_flag() -> None:
    config = load()
    assert (config.future_migrations, config.tolerate_future) == ("warn", True)
    assert config.role_passwords == "always"
    assert config.migrations_wait_timeout == 600
    assert config.version == VERSION
    config = load(
        FUTURE_MIGRATIONS="FAIL",
        ROLE_PASSWORDS="On-Create",
        MIGRATIONS_WAIT_TIMEOUT="90s",
        MIGRATOR_REVISION="0123abc",
    )
    assert (config.future_migrations, config.tolerate_future) == ("fail", False)
    assert config.role_passwords == "on-create"
    assert (config.migrations_wait_timeout, config.revision) == (90, "0123abc")
    # The flag wins (even over a variable it makes unused); an empty one is unset.
    assert (
        load("wait", "--timeout", "2min", MIGRATIONS_WAIT_TIMEOUT="x").migrations_wait_timeout
        == 120
    )
    assert load("wait", "--timeout", "", MIGRATIONS_WAIT_TIMEOUT="45").migrations_wait_timeout == 45
    assert load("wait", "--timeout", "0").migrations_wait_timeout == 0


def test_cleanup_settings_from_their_defaults_and_variables(tmp_path: Path) -> None:
    config = load("cleanup")
    assert config.command == "cleanup"
    assert config.cleanup_time_budget == 300
    assert config.cleanup_password is None
    assert config.cleanup_role == "auth_service_cleanup"
    assert load("cleanup", CLEANUP_TIME_BUDGET="90s").cleanup_time_budget == 90
    assert load(CLEANUP_TIME_BUDGET="2min").cleanup_time_budget == 120
    assert load(DB_USER="owner_x").cleanup_role == "owner_x_cleanup"
    secret = "cleanup-Unit-3c1f-8e20aa"
    config = load(CLEANUP_DB_PASSWORD=secret)
    assert config.cleanup_password == secret and secret in config.secrets
    assert secret not in repr(config)
    (tmp_path / "cleanup").write_text(secret + "\n")
    assert load(CLEANUP_DB_PASSWORD_FILE=str(tmp_path / "cleanup")).cleanup_password == secret


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"CLEANUP_TIME_BUDGET": "0"}, "CLEANUP_TIME_BUDGET must be above 0, got 0s"),
        ({"CLEANUP_TIME_BUDGET": "0ms"}, "CLEANUP_TIME_BUDGET must be above 0, got 0s"),
        (
            {"CLEANUP_TIME_BUDGET": "soon"},
            "CLEANUP_TIME_BUDGET must be a duration like 30, 30s, 500ms or 2min, got 'soon'",
        ),
        (
            {"CLEANUP_DB_PASSWORD": "changeme"},
            "CLEANUP_DB_PASSWORD is a placeholder from an example, not a password: generate "
            "one, e.g. openssl rand -base64 24",
        ),
        (
            {
                "DB_ADMIN_USER": "postgres",
                "DB_ADMIN_PASSWORD": ADMIN_PASSWORD,
                "CLEANUP_DB_PASSWORD": "short-one",
            },
            "CLEANUP_DB_PASSWORD is shorter than 16 characters: bootstrap sets it on role "
            "auth_service_cleanup; generate one, e.g. openssl rand -base64 24",
        ),
    ],
)
def test_cleanup_mistakes_are_named_exactly(environ: dict[str, str], message: str) -> None:
    assert config_error("cleanup", **environ).message == message


def test_a_short_cleanup_password_is_fine_when_bootstrap_does_not_set_it() -> None:
    assert load("cleanup", CLEANUP_DB_PASSWORD="short-one").cleanup_password == "short-one"


def test_a_cleanup_variable_typo_is_reported_with_the_closest_name() -> None:
    assert load(CLEANUP_TIME_BUGDET="5min").unknown_settings == (
        ("CLEANUP_TIME_BUGDET", "CLEANUP_TIME_BUDGET"),
    )


# --- the throttle of batched data migrations ---------------------------------------------------


def test_throttle_settings_from_their_defaults_and_variables() -> None:
    assert load().throttle == ThrottleSettings(
        check_interval=1.0,
        max_replica_lag=64 * 2**20,
        max_lock_waiters=0,
        pause_on_autovacuum=True,
    )
    config = load(
        BATCH_CHECK_INTERVAL="250ms",
        BATCH_MAX_REPLICA_LAG="1GB",
        BATCH_MAX_LOCK_WAITERS="3",
        BATCH_PAUSE_ON_AUTOVACUUM="false",
    )
    assert config.throttle == ThrottleSettings(0.25, 2**30, 3, False)
    assert config.unknown_settings == ()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("16MB", 16 * 2**20),
        ("16mb", 16 * 2**20),
        ("512 kB", 512 * 2**10),
        ("1.5GB", 3 * 2**29),
        ("2TB", 2 * 2**40),
        ("1048576", 2**20),
        ("100B", 100),
        (" 8MB ", 8 * 2**20),
        ("off", 0),
        ("OFF", 0),
        ("0", 0),
        ("", 64 * 2**20),
    ],
)
def test_replica_lag_is_a_size_as_postgresql_writes_it(value: str, expected: int) -> None:
    assert load(BATCH_MAX_REPLICA_LAG=value).throttle.max_replica_lag == expected


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        (
            {"BATCH_MAX_REPLICA_LAG": "lots"},
            "BATCH_MAX_REPLICA_LAG must be a size like 64MB, 512kB or 1GB (off: no limit), "
            "got 'lots'",
        ),
        (
            {"BATCH_MAX_REPLICA_LAG": "64MiB"},
            "BATCH_MAX_REPLICA_LAG must be a size like 64MB, 512kB or 1GB (off: no limit), "
            "got '64MiB'",
        ),
        (
            {"BATCH_MAX_REPLICA_LAG": "-1MB"},
            "BATCH_MAX_REPLICA_LAG must be a size like 64MB, 512kB or 1GB (off: no limit), "
            "got '-1MB'",
        ),
        ({"BATCH_CHECK_INTERVAL": "0"}, "BATCH_CHECK_INTERVAL must be above 0, got 0s"),
        (
            {"BATCH_CHECK_INTERVAL": "often"},
            "BATCH_CHECK_INTERVAL must be a duration like 30, 30s, 500ms or 2min, got 'often'",
        ),
        (
            {"BATCH_MAX_LOCK_WAITERS": "-1"},
            "BATCH_MAX_LOCK_WAITERS must be a whole number >= 0, got '-1'",
        ),
        (
            {"BATCH_MAX_LOCK_WAITERS": "some"},
            "BATCH_MAX_LOCK_WAITERS must be a whole number >= 0, got 'some'",
        ),
        (
            {"BATCH_PAUSE_ON_AUTOVACUUM": "sometimes"},
            "BATCH_PAUSE_ON_AUTOVACUUM must be true or false, got 'sometimes'",
        ),
    ],
)
def test_throttle_mistakes_are_named_exactly(environ: dict[str, str], message: str) -> None:
    assert config_error(**environ).message == message


def test_a_batch_variable_typo_is_reported_with_the_closest_name() -> None:
    assert load(BATCH_MAX_REPLICA_LAGS="1GB").unknown_settings == (
        ("BATCH_MAX_REPLICA_LAGS", "BATCH_MAX_REPLICA_LAG"),
    )


def test_the_timeout_and_shadow_url_flags_are_named_in_their_errors() -> None:
    assert config_error("wait", "--timeout", "later", MIGRATIONS_WAIT_TIMEOUT="5").message == (
        "--timeout must be a duration like 30, 30s, 500ms or 2min, got 'later'"
    )
    assert (
        config_error(
            "lint", "--shadow-url", "mysql://u:p@h/db", LINT_SHADOW_URL="postgresql://h/db"
        ).message
        == "--shadow-url must start with postgresql:// or postgres://, not mysql://"
    )


def test_lint_min_rows_zero_is_a_value_and_empty_is_unset() -> None:
    assert load(LINT_MIN_ROWS="0").lint_min_rows == 0
    assert load(LINT_MIN_ROWS="").lint_min_rows is None
    assert load(LINT_MIN_ROWS=" 7 ").lint_min_rows == 7
    assert load(LINT_SHADOW_URL="").shadow_url is None


def test_the_url_flag_is_named_in_its_errors() -> None:
    assert config_error("--url", "http://h/db").message == (
        "--url must start with postgresql:// or postgres://, not http://"
    )
    assert config_error("--url", "postgresql://h:0/db").message == (
        "--url must be a port number from 1 to 65535, got '0'"
    )
    assert config_error("--url", "postgresql://h/db?sslmode=often").message.startswith(
        "--url must be one of disable, allow"
    )


def test_both_a_password_and_its_file_are_refused_exactly(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("from-file-pw\n")
    error = config_error(DB_PASSWORD=PASSWORD, DB_PASSWORD_FILE=str(secret))
    assert error.message == "set DB_PASSWORD or DB_PASSWORD_FILE, not both"


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "does not exist"),
        (b"\xff\xfe not utf-8", "cannot be read (UnicodeDecodeError)"),
        ("folder", "cannot be read (IsADirectoryError)"),
    ],
)
def test_password_file_problems_are_named_exactly(
    tmp_path: Path, content: bytes | str | None, problem: str
) -> None:
    path = tmp_path / "secret"
    if content == "folder":
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    error = config_error(DB_PASSWORD="", DB_PASSWORD_FILE=str(path))
    assert error.message == f"DB_PASSWORD_FILE points to {path}, which {problem}"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            b"\n",
            "DB_PASSWORD_FILE is empty: set the password (a file's single final newline is ignored)",
        ),
        (b"a\0b\n", "DB_PASSWORD_FILE contains a NUL byte inside the password"),
        (b"a\nb\n", "DB_PASSWORD_FILE contains a line break inside the password"),
    ],
)
def test_password_file_contents_are_checked(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "secret"
    path.write_bytes(content)
    assert config_error(DB_PASSWORD="", DB_PASSWORD_FILE=str(path)).message.startswith(message)


def test_role_passwords_bootstrap_sets_need_16_characters(tmp_path: Path) -> None:
    admin = {"DB_ADMIN_USER": "postgres", "DB_ADMIN_PASSWORD": ADMIN_PASSWORD}
    fifteen, sixteen = "p" * 13 + "-1", "p" * 14 + "-1"
    assert len(fifteen) == 15
    config = load(**admin, DB_PASSWORD=sixteen, APP_DB_PASSWORD=sixteen)
    assert (config.password, config.app_password) == (sixteen, sixteen)
    assert config_error(**admin, DB_PASSWORD=fifteen).message == (
        "DB_PASSWORD is shorter than 16 characters: bootstrap sets it on role auth_service; "
        "generate one, e.g. openssl rand -base64 24"
    )
    app_file = tmp_path / "app"
    app_file.write_text(fifteen)
    assert config_error(**admin, APP_DB_USER="app", APP_DB_PASSWORD_FILE=str(app_file)).message == (
        "APP_DB_PASSWORD_FILE is shorter than 16 characters: bootstrap sets it on role app; "
        "generate one, e.g. openssl rand -base64 24"
    )
    assert config_error(**admin, APP_DB_PASSWORD=fifteen).message.startswith(
        "APP_DB_PASSWORD is shorter than 16 characters: bootstrap sets it on role auth_service_app"
    )


def test_connect_kwargs_as_owner_and_as_superuser() -> None:
    config = load(
        DB_ADMIN_USER="postgres",
        DB_ADMIN_PASSWORD=ADMIN_PASSWORD,
        DB_HOST="db",
        DB_PORT="6432",
        DB_NAME="accounts",
        DB_SSLMODE="require",
        DB_CHANNEL_BINDING="require",
    )
    assert config.connect_kwargs() == {
        "target_session_attrs": "read-write",
        "host": "db",
        "port": 6432,
        "dbname": "accounts",
        "user": "auth_service",
        "password": PASSWORD,
        "sslmode": "require",
        "channel_binding": "require",
        "application_name": "auth-service-migrator",
    }
    admin = config.connect_kwargs(admin=True, dbname="postgres")
    assert (admin["user"], admin["password"], admin["dbname"]) == (
        "postgres",
        ADMIN_PASSWORD,
        "postgres",
    )
    assert config.secrets == (PASSWORD, ADMIN_PASSWORD)


@pytest.mark.parametrize(
    ("argv", "writes"),
    [
        ((), True),
        (("--dry-run",), True),
        (("lint",), True),
        (("adopt",), True),
        (("baseline", "--version", "1"), True),
        (("rollback", "--steps", "1"), True),
        (("status",), False),
        (("wait",), False),
    ],
)
def test_commands_that_write_ask_for_a_server_that_takes_writes(
    argv: tuple[str, ...], writes: bool
) -> None:
    """A hot standby behind DB_HOST is then waited for (a failover), and of several hosts in
    DB_HOST the primary is taken; status and wait read, any server will do."""
    config = load(*argv)
    expected = "read-write" if writes else None
    assert config.connect_kwargs().get("target_session_attrs") == expected
    assert config.connect_kwargs(admin=True).get("target_session_attrs") == expected
    # The health check reads only, whatever the command line says.
    assert "target_session_attrs" not in config.connect_kwargs(read_only=True)


def test_the_urls_target_session_attrs_wins() -> None:
    url = "postgresql://owner@db/accounts?target_session_attrs=any"
    config = load(DATABASE_URL=url)
    assert config.connect_kwargs()["target_session_attrs"] == "any"
    assert config.connect_kwargs(admin=True)["target_session_attrs"] == "any"


def test_url_options_and_their_secrets() -> None:
    url = (
        f"postgresql://owner:{PASSWORD}@db/accounts?application_name=deploy"
        "&sslpassword=key-pass-123&target_session_attrs=read-write"
    )
    config = load_config([], {"DATABASE_URL": url}, interactive=False)
    assert config.libpq_options == (
        ("sslpassword", "key-pass-123"),
        ("target_session_attrs", "read-write"),
    )
    assert config.application_name == "deploy"
    assert config.secrets == (PASSWORD, "key-pass-123")
    kwargs = config.connect_kwargs()
    assert (kwargs["target_session_attrs"], kwargs["application_name"]) == ("read-write", "deploy")


def test_pgpassword_is_the_last_source_before_the_prompt() -> None:
    assert (
        load_config([], {"PGPASSWORD": "pg-pass-123"}, interactive=False).password == "pg-pass-123"
    )
    config = load_config(
        [], {"PGPASSWORD": "pg-pass-123", "DB_PASSWORD": PASSWORD}, interactive=False
    )
    assert config.password == PASSWORD


@pytest.mark.parametrize("parameter", ["sslcert", "sslkey", "sslcrl"])
def test_only_sslrootcert_may_be_system(parameter: str) -> None:
    variable = f"DB_{parameter.upper()}"
    assert config_error(**{variable: "system"}).message == (
        f"{variable} points to system, which does not exist"
    )


def test_a_certificate_path_that_is_a_folder_is_not_a_file(tmp_path: Path) -> None:
    assert config_error(DB_SSLROOTCERT=str(tmp_path)).message == (
        f"DB_SSLROOTCERT points to {tmp_path}, which is not a file"
    )


@pytest.mark.parametrize("word", ["1", "true", "YES", " on "])
def test_boolean_settings_from_the_environment(word: str) -> None:
    config = load(DRY_RUN=word, ALLOW_OUT_OF_ORDER=word, SINGLE_TRANSACTION=word)
    assert (config.dry_run, config.allow_out_of_order, config.single_transaction) == (True,) * 3


def test_count_allows_surrounding_spaces() -> None:
    assert load(DDL_LOCK_RETRIES=" 3 ").ddl_lock_retries == 3
    assert load(DDL_LOCK_RETRIES="").ddl_lock_retries == 5


def test_an_unreadable_password_file_says_permission_denied(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # root reads through chmod 000: the refusal the kernel gives other users is raised here.
    path = tmp_path / "secret"
    path.write_text("pw-unreadable-123\n")

    def refuse(self: Path, encoding: str | None = None) -> str:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_text", refuse)
    assert config_error(DB_PASSWORD="", DB_PASSWORD_FILE=str(path)).message == (
        f"DB_PASSWORD_FILE points to {path}, which cannot be read (permission denied)"
    )


def test_every_password_source_is_named_in_its_errors(tmp_path: Path) -> None:
    admin = {"DB_ADMIN_USER": "postgres", "DB_ADMIN_PASSWORD": ADMIN_PASSWORD}
    short = "short-pw-1"
    url = f"postgresql://owner:{short}@db/accounts"
    assert config_error(**admin, DATABASE_URL=url).message.startswith(
        "the password in DATABASE_URL is shorter than 16 characters: bootstrap sets it on role owner"
    )
    assert config_error("--url", url, **admin).message.startswith(
        "the password in --url is shorter than 16 characters"
    )
    with pytest.raises(ConfigError) as caught:
        load_config([], {**admin, "PGPASSWORD": short}, interactive=False)
    assert caught.value.message.startswith("PGPASSWORD is shorter than 16 characters")
    with pytest.raises(ConfigError) as caught:
        load_config([], {"PGPASSWORD": "secret"}, interactive=False)
    assert caught.value.message.startswith("PGPASSWORD is a placeholder from an example")
    secret = tmp_path / "secret"
    secret.write_text(short)
    with pytest.raises(ConfigError) as caught:
        load_config([], {**admin, "DB_PASSWORD_FILE": str(secret)}, interactive=False)
    assert caught.value.message.startswith("DB_PASSWORD_FILE is shorter than 16 characters")
    url_placeholder = "postgresql://owner:changeme@db/accounts"
    assert config_error(DATABASE_URL=url_placeholder).message.startswith(
        "the password in DATABASE_URL is a placeholder from an example"
    )


def test_log_format_errors_name_their_source() -> None:
    assert config_error("--log-format", "xml").message == (
        "--log-format must be one of json, console, got 'xml'"
    )
    assert config_error(LOG_FORMAT="XML").message == (
        "LOG_FORMAT must be one of json, console, got 'xml'"
    )
    assert load("--log-format", "Console").log_format == "console"


def test_folder_users_and_flags_from_their_sources() -> None:
    config = load(
        "--init-only",
        MIGRATIONS_DIR="/srv/m",
        APP_DB_USER="app",
        DB_ADMIN_USER="postgres",
        DB_ADMIN_PASSWORD=ADMIN_PASSWORD,
        DB_PASSWORD="owner-pass-1234567",
    )
    assert (config.migrations_dir, config.app_user, config.init_only) == (
        Path("/srv/m"),
        "app",
        True,
    )
    assert load("--migrations-dir", "here", MIGRATIONS_DIR="/srv/m").migrations_dir == Path("here")
    assert load("--port", "6543", DB_PORT="7000").port == 6543
    assert config_error("--port", "x").message == (
        "--port must be a port number from 1 to 65535, got 'x'"
    )


def help_by_option(text: str) -> dict[str, str]:
    """``--flag METAVAR`` -> its help sentence, from argparse's options section."""
    helps: dict[str, str] = {}
    option = ""
    for line in text.split("options:\n", 1)[1].splitlines():
        if line.startswith("  -"):
            option, _, rest = line.strip().partition("  ")
            helps[option] = rest.strip()
        elif line.strip():
            helps[option] = line.strip()
    return helps


def test_help_names_the_program_its_commands_and_what_each_flag_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # one line per flag, whatever the terminal
    text = build_parser().format_help()
    assert text.startswith("usage: entrypoint.py [-h] [--host HOST] [--port PORT]")
    lines = text.splitlines()
    assert "Wait for PostgreSQL, bootstrap it, apply pending migrations exactly once." in lines
    assert "  {migrate,status,wait,lint,adopt,baseline,rollback,cleanup}" in lines
    helps = help_by_option(text.split("\nenvironment variables")[0])
    assert helps["-h, --help"] == "show this help message and exit"
    assert helps["--url URL"] == "postgresql:// URL instead of the DB_* parts"
    assert helps["--single-transaction"] == (
        "apply all pending files in one transaction: all or nothing"
    )
    assert helps["--version BASELINE_VERSION"] == (
        "baseline: the newest version to record; alone (no value): print the version and the "
        "source revision, then exit"
    )
    assert helps["--to ROLLBACK_TO"] == "rollback: the version to return to"
    assert helps["--steps ROLLBACK_STEPS"] == "rollback: how many files"
    assert helps["--verify"] == "baseline: compare"
    for option in (
        "--host HOST",
        "--database DBNAME",
        "--migrations-dir MIGRATIONS_DIR",
        "--dry-run",
        "--allow-out-of-order",
        "--init-only",
        "--json",
        "--log-format LOG_FORMAT",
        "--log-level LOG_LEVEL",
    ):
        assert helps.get(option), f"{option} has no description"
    assert helps["--shadow-url SHADOW_URL"] == "lint: a scratch database to use (it is changed)"
    assert helps["--timeout MIGRATIONS_WAIT_TIMEOUT"] == (
        "wait: give up after this long, exit 75 (MIGRATIONS_WAIT_TIMEOUT, default 600s)"
    )
    # The variables and exit codes after the flags, laid out line by line as written.
    epilog = text.split("\nenvironment variables (flags win over them):\n")[1].splitlines()
    assert epilog[0] == "  DB_HOST DB_PORT DB_NAME DB_USER   connection (or DATABASE_URL / --url)"
    assert "  LOG_FORMAT LOG_LEVEL TERMINATION_LOG (/dev/termination-log)" in epilog
    assert "  CLEANUP_TIME_BUDGET (300s)        how long one cleanup run may delete" in epilog
    assert (
        "  BATCH_PAUSE_ON_AUTOVACUUM (true)  when a batched data migration pauses between batches"
    ) in epilog
    assert (
        "  CLEANUP_DB_PASSWORD(_FILE)        password bootstrap sets on <DB_USER>_cleanup, "
        "the cleanup role"
    ) in epilog
    assert epilog[-1] == (
        "  130 / 143 interrupted / terminated   137 killed (e.g. out of memory: not the "
        "runner's choice)"
    )


def test_flags_default_to_off() -> None:
    config = load()
    assert (config.status_json, config.init_only, config.single_transaction) == (False,) * 3
    assert config.progress_interval == 5


def test_sslmode_and_channel_binding_errors_name_their_variable() -> None:
    assert config_error(PGSSLMODE="often").message.startswith("PGSSLMODE must be one of disable")
    assert config_error(DB_CHANNEL_BINDING="always").message == (
        "DB_CHANNEL_BINDING must be one of disable, prefer, require, got 'always'"
    )


def test_rollback_of_one_step() -> None:
    assert load("rollback", "--steps", "1").rollback_steps == 1


def test_every_variable_the_runner_reads_is_known() -> None:
    """KNOWN_VARIABLES is what unknown_setting compares with: a variable read but not listed
    would be reported as a typo."""
    import re

    from migrator import config, version

    code = "\n".join(
        line
        for module in (config, version)
        for line in Path(module.__file__ or "").read_text().splitlines()
        if not line.lstrip().startswith(">>>")  # the examples name typos on purpose
    )
    names = set(re.findall(r'"([A-Z][A-Z0-9_]*[A-Z0-9])"', code))
    prefixes = config.RUNNER_PREFIXES
    read = {name for name in names if name.startswith(prefixes) and name not in prefixes}
    read |= {ours for _, ours, _ in config.TLS_FILE_SETTINGS} | {
        "DATABASE_URL",
        "MIGRATOR_REVISION",
    }
    secrets = {f"{name}_FILE" for name in ("DB_PASSWORD", "DB_ADMIN_PASSWORD", "APP_DB_PASSWORD")}
    missing = (read | secrets) - config.KNOWN_VARIABLES
    assert not missing, sorted(missing)
    assert len(read) > 30, sorted(read)  # the scan found the variables


def test_a_mistyped_variable_is_reported_with_the_name_meant() -> None:
    environ = {"DB_PASSWORD": PASSWORD, "DB_SSL_MODE": "verify-full", "DB_HOTS": "db",
               "MIGRATION_DIR": "/m", "DB_POOL_SIZE": "5", "HOME": "/root"}  # fmt: skip
    config = load_config([], environ, interactive=False)
    assert config.sslmode == "prefer"  # the typo is not a setting
    assert config.unknown_settings == (
        ("DB_HOTS", "DB_HOST"),
        ("DB_POOL_SIZE", None),
        ("DB_SSL_MODE", "DB_SSLMODE"),
        ("MIGRATION_DIR", "MIGRATIONS_DIR"),
    )


# --- phases -------------------------------------------------------------------------------------


def test_the_phase_is_unset_by_default_and_each_command_has_its_own() -> None:
    config = load()
    assert config.phase is None
    assert (config.run_phase, config.ready_phase) == ("all", "pre")


@pytest.mark.parametrize("value", ["pre", "post", "all", "POST", " pre "])
def test_the_phase_from_the_flag_or_migrate_phase(value: str) -> None:
    assert load("--phase", value).phase == value.strip().lower()
    config = load(MIGRATE_PHASE=value)
    assert (config.phase, config.run_phase, config.ready_phase) == (value.strip().lower(),) * 3


def test_the_flag_wins_over_migrate_phase() -> None:
    assert load("--phase", "post", MIGRATE_PHASE="pre").phase == "post"
    assert load(MIGRATE_PHASE="").phase is None


def test_a_bad_phase_is_one_line_naming_its_source() -> None:
    assert config_error("--phase", "later").message == (
        "--phase must be one of pre, post, all, got 'later'"
    )
    assert config_error(MIGRATE_PHASE="both").message == (
        "MIGRATE_PHASE must be one of pre, post, all, got 'both'"
    )


def test_a_misspelt_migrate_phase_is_named_with_the_real_one() -> None:
    config = load(MIGRATION_PHASE="post")
    assert config.unknown_settings == (("MIGRATION_PHASE", "MIGRATE_PHASE"),)
    assert config.phase is None


# --- MIGRATIONS_TABLE ---------------------------------------------------------------------------


def test_migrations_table_defaults_to_public_schema_migrations_and_its_lock() -> None:
    for environ in ({}, {"MIGRATIONS_TABLE": ""}):  # compose passes ${VAR:-} as ""
        table = load(**environ).history_table
        assert (table.schema, table.name) == ("public", "schema_migrations")
        assert str(table.lock) == "public.schema_migrations_lock"
    assert Config().history_table == load().history_table


@pytest.mark.parametrize(
    ("value", "schema", "name"),
    [
        ("migrator_history", "public", "migrator_history"),  # a bare name is in public
        ("migrator.history", "migrator", "history"),
        ("_x1.t_2", "_x1", "t_2"),
        ("public.schema_migrations", "public", "schema_migrations"),
    ],
)
def test_migrations_table_is_a_name_or_schema_dot_name(value: str, schema: str, name: str) -> None:
    table = load(MIGRATIONS_TABLE=value).history_table
    assert (table.schema, table.name) == (schema, name)
    # The lock's view follows the table, in its schema: two histories, two locks.
    assert (table.lock.schema, table.lock.name) == (schema, name + "_lock")
    assert table.regclass == f'"{schema}"."{name}"'
    assert "MIGRATIONS_TABLE" not in dict(load(MIGRATIONS_TABLE=value).unknown_settings)


@pytest.mark.parametrize(
    "value",
    [
        "Schema_Migrations",  # psql would fold it, a quoted name would not: one meaning only
        "a.b.c",
        ".history",
        "migrator.",
        "1history",
        "my-history",
        "my history",
        " history",
        'migrator."history"',
        "history;DROP TABLE users",
        "migrator.hïstory",
    ],
)
def test_migrations_table_that_is_not_a_plain_name_is_refused(value: str) -> None:
    error = config_error(MIGRATIONS_TABLE=value)
    assert error.message.startswith("MIGRATIONS_TABLE must be name or schema.name"), error
    assert repr(value) in error.message


@pytest.mark.parametrize("schema", ["pg_catalog", "pg_temp", "pg_toast", "information_schema"])
def test_migrations_table_in_a_system_schema_is_refused(schema: str) -> None:
    error = config_error(MIGRATIONS_TABLE=f"{schema}.history")
    assert error.message.startswith(f"MIGRATIONS_TABLE names schema '{schema}'"), error
    # "pg" alone, or a schema that only contains pg_, is the user's.
    assert load(MIGRATIONS_TABLE=f"my{schema}.history").history_table.schema == f"my{schema}"


def test_migrations_table_name_leaves_room_for_the_lock_suffix() -> None:
    longest = "h" * 58  # 63 bytes with "_lock"
    assert load(MIGRATIONS_TABLE=longest).history_table.lock.name == longest + "_lock"
    error = config_error(MIGRATIONS_TABLE=longest + "h")
    assert error.message.startswith("MIGRATIONS_TABLE: the table name 'hhh"), error
    assert "59 bytes long; at most 58, so that the lock's view " in error.message
    assert f"{longest}h_lock stays within PostgreSQL's 63-byte names" in error.message


def test_migrations_table_schema_of_63_bytes_is_kept_and_of_64_refused() -> None:
    assert load(MIGRATIONS_TABLE="s" * 63 + ".h").history_table.schema == "s" * 63
    error = config_error(MIGRATIONS_TABLE="s" * 64 + ".h")
    assert error.message.startswith("MIGRATIONS_TABLE's schema is 64 bytes long"), error
    assert f"first 63 bytes of a name, so it would silently mean {'s' * 63!r}" in error.message


def test_batch_settings_from_their_defaults_and_variables() -> None:
    batch = load().batch
    assert (batch.target_duration, batch.size, batch.max_size) == (0.15, 1000, 50000)
    batch = load(BATCH_TARGET_DURATION="300ms", BATCH_SIZE="20", BATCH_MAX_SIZE="400").batch
    assert (batch.target_duration, batch.size, batch.max_size) == (0.3, 20, 400)
    # Unset, the first size stays within a lower maximum.
    assert load(BATCH_MAX_SIZE="200").batch.size == 200
    assert load(BATCH_SIZE="50000").batch.size == 50000
    assert load(BATCH_SZE="5").unknown_settings == (("BATCH_SZE", "BATCH_SIZE"),)


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"BATCH_TARGET_DURATION": "0"}, "BATCH_TARGET_DURATION must be above 0, got 0s"),
        ({"BATCH_TARGET_DURATION": "fast"}, "BATCH_TARGET_DURATION must be a duration like"),
        ({"BATCH_SIZE": "0"}, "BATCH_SIZE must be a whole number of rows, 1 or more, got 0"),
        ({"BATCH_MAX_SIZE": "0"}, "BATCH_MAX_SIZE must be a whole number of rows, 1 or more"),
        ({"BATCH_SIZE": "-1"}, "BATCH_SIZE must be a whole number >= 0, got '-1'"),
        (
            {"BATCH_SIZE": "600", "BATCH_MAX_SIZE": "500"},
            "BATCH_SIZE (600) must not be above BATCH_MAX_SIZE (500)",
        ),
        ({"BATCH_SIZE": "50001"}, "BATCH_SIZE (50001) must not be above BATCH_MAX_SIZE (50000)"),
    ],
)
def test_batch_settings_refused(environ: dict[str, str], message: str) -> None:
    assert message in config_error(**environ).message
