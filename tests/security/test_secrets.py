"""Password values, as the real runner reads them: bad ones stop the run before the database.

Each case gives the runner bootstrap credentials for a database that does not exist yet; a
refused password must exit 78 naming the variable (never the value), with nothing created.
"""

from __future__ import annotations

import secrets

import psycopg
import pytest

from tests.integration.test_bootstrap import BOOTSTRAP_SQL

OWNER = "secrets_owner"


@pytest.fixture
def bootstrap_env(unborn_database, pg_server, migrations):
    migrations.add({"000_init_database.sql": BOOTSTRAP_SQL})
    return unborn_database.env(
        DB_USER=OWNER,
        DB_PASSWORD="",
        DB_ADMIN_USER="postgres",
        DB_ADMIN_PASSWORD=pg_server.password,
        MIGRATIONS_DIR=str(migrations.path),
    )


def refused(result, variable: str, value: str, unborn_database) -> str:
    assert result.returncode == 78, result
    (error,) = result.events_named("invalid_configuration")
    message: str = error["error"]
    assert message.startswith(variable + " "), message
    for text in (result.stdout, result.stderr, result.termination_message):
        assert value not in text, "the refused password was echoed"
    assert not result.events_named("database_ready"), "refused before touching the database"
    with psycopg.connect(**unborn_database.server.conninfo()) as conn:
        row = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (unborn_database.name,))
        assert row.fetchone() is None, "nothing created"
    return message


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"a\x00LongSecret-0123456789\n", "NUL byte"),  # libpq would have set "a"
        (b"first-half-of-it\nsecond-half-of-it\n", "line break"),
        (b"   \n", "only whitespace"),
        (b"\n", "is empty"),
        (b"Replace-Me\n", "placeholder"),
    ],
)
def test_a_bad_password_file_is_refused(
    bootstrap_env, unborn_database, run_runner, tmp_path, content, problem
):
    secret = tmp_path / "db_password.txt"
    secret.write_bytes(content)
    secret.chmod(0o600)
    env = {**bootstrap_env, "DB_PASSWORD_FILE": str(secret)}
    message = refused(run_runner(env=env), "DB_PASSWORD_FILE", "LongSecret", unborn_database)
    assert problem in message


def test_a_placeholder_for_the_runtime_role_is_refused(bootstrap_env, unborn_database, run_runner):
    env = {**bootstrap_env, "DB_PASSWORD": secrets.token_urlsafe(18), "APP_DB_PASSWORD": "changeme"}
    message = refused(run_runner(env=env), "APP_DB_PASSWORD", "changeme", unborn_database)
    assert "placeholder" in message


def test_a_short_password_bootstrap_would_set_is_refused(
    bootstrap_env, unborn_database, run_runner
):
    short = "Short-Pw-" + secrets.token_hex(3)  # 15 characters
    env = {**bootstrap_env, "DB_PASSWORD": short}
    message = refused(run_runner(env=env), "DB_PASSWORD", short, unborn_database)
    assert "16 characters" in message and OWNER in message


def test_a_good_password_file_still_works(bootstrap_env, unborn_database, run_runner, tmp_path):
    secret = tmp_path / "db_password.txt"
    secret.write_text(secrets.token_urlsafe(18) + "\n")
    secret.chmod(0o600)
    result = run_runner(env={**bootstrap_env, "DB_PASSWORD_FILE": str(secret)})
    assert result.returncode == 0, result
    owner = unborn_database.scalar("SELECT rolname FROM pg_roles WHERE rolname = %s", OWNER)
    assert owner == OWNER
