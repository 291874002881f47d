"""Bad input, through the runner as users run it: the documented exit code, one error line, no change.

Every case runs entrypoint.py against a real database and then looks at that database:
nothing from the valid files was applied, and the history table was not even created
(or, when it already existed, has no new row).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import Database, MigrationsFolder, RunResult

VALID = {
    "001_create_accounts.sql": "CREATE TABLE accounts (id bigint PRIMARY KEY);",
    "003_create_sessions.sql": "CREATE TABLE sessions (id bigint PRIMARY KEY);",
}


def one_error(result: RunResult, event: str, exit_code: int, *mentions: str) -> str:
    """Exactly one error event, on one line, naming what the user has to fix."""
    assert result.returncode == exit_code, result
    errors = [e for e in result.events if e["level"] in ("error", "critical")]
    assert [e["event"] for e in errors] == [event], result
    (error,) = errors
    message = error["error"]
    assert "\n" not in message, message
    assert error["exit_code"] == exit_code
    for text in mentions:
        assert text in message, f"{text!r} not in {message!r}"
    assert "Traceback" not in result.stdout + result.stderr, result
    assert result.events[-1] is error, "the error is the last word"
    if result.termination_message:
        assert result.termination_message == message + "\n"
    return message


def assert_untouched(database: Database) -> None:
    assert database.scalar("SELECT to_regclass('public.schema_migrations')") is None
    assert database.scalar("SELECT to_regclass('public.accounts')") is None
    assert database.scalar("SELECT to_regclass('public.sessions')") is None


def migrate(run_runner, database: Database, migrations: MigrationsFolder, *args: str, **env: str):
    return run_runner(*args, env=database.env(MIGRATIONS_DIR=str(migrations.path), **env))


# --- migration files (exit 65) ------------------------------------------------------------------


def test_duplicate_version_numbers(database, run_runner, migrations):
    migrations.add(VALID).write("01_also_first.sql", "CREATE TABLE other (id int);")
    result = migrate(run_runner, database, migrations)
    one_error(result, "invalid_migration_files", 65, "001_create_accounts.sql", "01_also_first.sql")
    assert result.termination_message, "the runner got far enough to write it"
    assert_untouched(database)
    assert database.scalar("SELECT to_regclass('public.other')") is None


@pytest.mark.parametrize(
    "name", ["002-add-tokens.sql", "V2__add_tokens.sql", "002_.sql", "tokens.sql"]
)
def test_file_name_that_does_not_match(database, run_runner, migrations, name):
    migrations.add(VALID).write(name, "CREATE TABLE tokens (id int);")
    result = migrate(run_runner, database, migrations)
    one_error(result, "invalid_migration_files", 65, name, "<number>_<name>.sql")
    assert result.termination_message
    assert_untouched(database)
    assert database.scalar("SELECT to_regclass('public.tokens')") is None


def test_non_utf8_file(database, run_runner, migrations):
    migrations.add(VALID).write(
        "002_latin1_comment.sql", b"-- tokens\nCREATE TABLE tokens (id int); -- caf\xe9\n"
    )
    result = migrate(run_runner, database, migrations)
    one_error(result, "invalid_migration_files", 65, "002_latin1_comment.sql", "line 2", "UTF-8")
    assert result.termination_message
    assert_untouched(database)
    assert database.scalar("SELECT to_regclass('public.tokens')") is None


def _folder_named_like_a_file(path: Path) -> None:
    path.mkdir()


def _dangling_symlink(path: Path) -> None:
    path.symlink_to(path.parent / "deleted-target.sql")


def _no_read_permission(path: Path) -> None:
    path.write_text("CREATE TABLE tokens (id int);")
    path.chmod(0)


UNREADABLE = [_folder_named_like_a_file, _dangling_symlink]
if os.geteuid() != 0:
    # chmod 000 does not stop root (CI may run as root): there the other two cases cover it.
    UNREADABLE.append(_no_read_permission)


@pytest.mark.parametrize("make_unreadable", UNREADABLE, ids=lambda f: f.__name__.strip("_"))
def test_unreadable_file(database, run_runner, migrations, make_unreadable):
    migrations.add(VALID)
    path = migrations.path / "002_add_tokens.sql"
    make_unreadable(path)
    try:
        result = migrate(run_runner, database, migrations)
    finally:
        if path.is_file() and not path.is_symlink():
            path.chmod(0o644)
    one_error(result, "invalid_migration_files", 65, "002_add_tokens.sql", "cannot be read")
    assert result.termination_message
    assert_untouched(database)


def test_bad_file_added_after_a_good_run_adds_no_row(database, run_runner, migrations):
    migrations.write("001_create_accounts.sql", VALID["001_create_accounts.sql"])
    assert migrate(run_runner, database, migrations).returncode == 0
    before = database.query("SELECT version, checksum, applied_at FROM schema_migrations")

    migrations.write("003_create_sessions.sql", VALID["003_create_sessions.sql"])
    migrations.write("3_sessions_again.sql", "CREATE TABLE sessions_again (id int);")
    result = migrate(run_runner, database, migrations)

    one_error(result, "invalid_migration_files", 65, "003_create_sessions.sql", "3_sessions_again")
    assert database.query("SELECT version, checksum, applied_at FROM schema_migrations") == before
    assert database.scalar("SELECT to_regclass('public.sessions')") is None
    assert database.scalar("SELECT to_regclass('public.sessions_again')") is None


def test_dry_run_rejects_bad_files_too(database, run_runner, migrations):
    migrations.add(VALID).write("02_x.sql", b"SELECT '\xff';")
    result = migrate(run_runner, database, migrations, "--dry-run")
    one_error(result, "invalid_migration_files", 65, "02_x.sql")
    assert_untouched(database)


# --- configuration (exit 78) --------------------------------------------------------------------


def test_missing_migrations_folder(database, run_runner, tmp_path):
    missing = tmp_path / "not-there"
    result = run_runner(env=database.env(MIGRATIONS_DIR=str(missing)))
    one_error(result, "invalid_configuration", 78, "MIGRATIONS_DIR", str(missing))
    assert result.termination_message, "the runner got far enough to write it"
    assert_untouched(database)


def test_missing_migrations_folder_given_as_a_flag(database, run_runner, tmp_path):
    missing = tmp_path / "not-there"
    result = run_runner("--migrations-dir", str(missing), env=database.env())
    one_error(result, "invalid_configuration", 78, str(missing))
    assert_untouched(database)


@pytest.mark.parametrize("port", ["abc", "0", "70000", pytest.param("²", id="superscript-2")])
def test_invalid_port(database, run_runner, migrations, port):
    migrations.add(VALID)
    result = migrate(run_runner, database, migrations, DB_PORT=port)
    one_error(result, "invalid_configuration", 78, "DB_PORT", repr(port))
    assert_untouched(database)


def test_invalid_port_flag(database, run_runner, migrations):
    migrations.add(VALID)
    result = migrate(run_runner, database, migrations, "--port", "http")
    one_error(result, "invalid_configuration", 78, "--port", "'http'")
    assert_untouched(database)


def test_unknown_log_format(database, run_runner, migrations):
    migrations.add(VALID)
    result = migrate(run_runner, database, migrations, LOG_FORMAT="yaml")
    one_error(result, "invalid_configuration", 78, "LOG_FORMAT", "'yaml'")
    assert_untouched(database)


def test_password_file_that_does_not_exist(database, run_runner, migrations, tmp_path):
    migrations.add(VALID)
    missing = tmp_path / "secrets" / "db-password"
    env = database.env(MIGRATIONS_DIR=str(migrations.path), DB_PASSWORD_FILE=str(missing))
    del env["DB_PASSWORD"]
    result = run_runner(env=env)
    one_error(result, "invalid_configuration", 78, "DB_PASSWORD_FILE", str(missing))
    assert_untouched(database)


def test_password_and_password_file_both_set(database, run_runner, migrations, tmp_path):
    migrations.add(VALID)
    secret = tmp_path / "db-password"
    secret.write_text(database.server.password + "\n")
    result = migrate(run_runner, database, migrations, DB_PASSWORD_FILE=str(secret))
    one_error(result, "invalid_configuration", 78, "DB_PASSWORD_FILE")
    assert_untouched(database)


def test_invalid_duration(database, run_runner, migrations):
    migrations.add(VALID)
    result = migrate(run_runner, database, migrations, MIGRATION_LOCK_TIMEOUT="ten minutes")
    one_error(result, "invalid_configuration", 78, "MIGRATION_LOCK_TIMEOUT")
    assert_untouched(database)


def test_no_password_without_a_terminal(database, run_runner, migrations):
    migrations.add(VALID)
    env = database.env(MIGRATIONS_DIR=str(migrations.path))
    del env["DB_PASSWORD"]
    result = run_runner(env=env)
    one_error(result, "invalid_configuration", 78, "DB_PASSWORD")
    assert_untouched(database)


# --- command line (exit 64) ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "mentioned"),
    [(["--bogus"], "--bogus"), (["migrat"], "migrat"), (["--port"], "--port")],
)
def test_bad_command_line(database, run_runner, migrations, args, mentioned):
    migrations.add(VALID)
    result = migrate(run_runner, database, migrations, *args)
    one_error(result, "bad_command_line", 64, mentioned)
    assert_untouched(database)


def test_a_working_password_file_for_contrast(database, run_runner, migrations, tmp_path):
    """The same folder and database do migrate when the input is right."""
    migrations.add(VALID)
    secret = tmp_path / "db-password"
    secret.write_text(database.server.password + "\n")
    env = database.env(MIGRATIONS_DIR=str(migrations.path), DB_PASSWORD_FILE=str(secret))
    del env["DB_PASSWORD"]
    result = run_runner(env=env)
    assert result.returncode == 0, result
    assert database.query("SELECT version FROM schema_migrations ORDER BY version") == [
        ("001_create_accounts",),
        ("003_create_sessions",),
    ]


# --- a folder that holds no migration (exit 65) -------------------------------------------------


@pytest.mark.parametrize(
    ("others", "holds"), [((), "it is empty"), (("README.md",), "it holds README.md")]
)
@pytest.mark.parametrize("command", ["migrate", "status", "wait"])
def test_a_folder_without_migrations_fails_every_command(
    database, run_runner, migrations, others, holds, command
):
    """A mistyped mount (Docker creates the folder empty) must not start the app on an empty
    schema: migrate said "applied 0 migration(s)" and wait and the health check saw nothing
    pending."""
    for name in others:
        migrations.write(name, "notes")
    result = migrate(run_runner, database, migrations, command)
    one_error(result, "invalid_migration_files", 65, "MIGRATIONS_DIR", str(migrations.path), holds)
    assert_untouched(database)


def test_bootstrap_without_its_000_on_a_new_database_creates_nothing(
    unborn_database, run_runner, migrations
):
    migrations.add(VALID)
    env = unborn_database.env(MIGRATIONS_DIR=str(migrations.path), DB_ADMIN_USER="postgres",
                              DB_ADMIN_PASSWORD=unborn_database.server.password)  # fmt: skip
    result = run_runner(env=env)
    one_error(result, "invalid_migration_files", 65, unborn_database.name, "000_")
    exists = "SELECT count(*) FROM pg_database WHERE datname = %s"
    with Database(unborn_database.server, "postgres").connect() as admin:
        assert admin.execute(exists, (unborn_database.name,)).fetchone() == (0,)


def test_a_login_refused_without_admin_credentials_says_the_role_may_not_exist(
    database, run_runner, migrations
):
    """A fresh server and no DB_ADMIN_USER: "password authentication failed" alone sent
    people looking for a wrong password when the role simply did not exist yet."""
    migrations.add(VALID)
    env = database.env(MIGRATIONS_DIR=str(migrations.path), DB_USER="no_such_owner_9f3",
                       DB_PASSWORD="a-password-Long-enough-7c1e")  # fmt: skip
    result = run_runner(env=env)
    one_error(result, "permission_denied", 77, "no_such_owner_9f3", "may not exist yet",
              "DB_ADMIN_USER and DB_ADMIN_PASSWORD")  # fmt: skip
    assert_untouched(database)


def test_a_non_transactional_file_failing_midway_says_what_stayed_applied(
    database, run_runner, migrations
):
    migrations.write("001_t.sql", "CREATE TABLE t (x int);")
    migrations.write(
        "002_partly.sql",
        "-- migrate:no-transaction\n"
        "CREATE INDEX CONCURRENTLY t_x ON t (x);\n"
        "CREATE TABLE u (id int);\n"
        "SELECT 1 / 0;\n",
    )
    result = migrate(run_runner, database, migrations)
    message = one_error(result, "migration_failed", 65, "002_partly.sql:4:", "22012",
                        "first 2 statement(s) (up to line 3) stayed applied",
                        "re-runnable (IF NOT EXISTS")  # fmt: skip
    assert result.events_named("migration_failed")[0]["applied_statements"] == 2, message
    assert database.scalar("SELECT to_regclass('u') IS NOT NULL")
    assert database.query("SELECT version FROM schema_migrations ORDER BY 1") == [("001_t",)]
