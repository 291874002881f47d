"""TLS to PostgreSQL: verify-full works, a wrong CA or host name fails at once, weaker modes warn.

A real PostgreSQL speaks TLS with a certificate signed by a CA the test makes with the
``openssl`` command (only localhost in its subject alternative names). The runner is run as
users run it: the owner's sessions, the superuser's (bootstrap) and healthcheck.py's.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import (
    Database,
    PgServer,
    ServerTls,
    fresh_database,
    make_certificates,
    remember_secret,
    running_server,
)
from tests.integration.test_bootstrap import BOOTSTRAP_SQL

CLIENT_CERT_DATABASE = "tls_client_cert"
# The only name in the server's certificate: 127.0.0.1 reaches the same server but is not in it.
CERT_HOST = "localhost"
HOST_NOT_IN_CERT = "127.0.0.1"
FILES = {"001_things.sql": "CREATE TABLE things (id int PRIMARY KEY);"}


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_certificates(tmp_path_factory.mktemp("tls"), [f"DNS:{CERT_HOST}"])


@pytest.fixture(scope="module")
def tls_server(certs: Path) -> Iterator[PgServer]:
    tls = ServerTls(certs / "server.crt", certs / "server.key", certs / "ca.crt")
    # One database demands a client certificate signed by the CA, on top of the password.
    client_cert = (
        f"hostssl {CLIENT_CERT_DATABASE} all 127.0.0.1/32 scram-sha-256 clientcert=verify-full"
    )
    try:
        yield from running_server(tls=tls, hba_lines=[client_cert])
    except RuntimeError as error:  # no PostgreSQL built with OpenSSL on this machine
        pytest.fail(str(error), pytrace=False)


@pytest.fixture
def tls_database(tls_server: PgServer) -> Iterator[Database]:
    yield from fresh_database(tls_server)


@pytest.fixture
def tls_env(tls_database: Database, certs: Path, migrations):
    """verify-full against the right CA, by the certificate's host name."""
    migrations.add(FILES)
    return tls_database.env(
        DB_HOST=CERT_HOST,
        DB_SSLMODE="verify-full",
        DB_SSLROOTCERT=str(certs / "ca.crt"),
        MIGRATIONS_DIR=str(migrations.path),
        DB_WAIT_TIMEOUT="30",
    )


def one_tls_error(result, exit_code: int = 78) -> str:
    """The run failed at once with one error line, and no traceback."""
    assert result.returncode == exit_code, result
    errors = [e for e in result.events if e["level"] == "error"]
    assert len(errors) == 1, result
    assert "Traceback" not in result.stdout + result.stderr
    message: str = errors[0]["error"]
    assert "\n" not in message
    assert message in result.termination_message
    return message


def warnings_of(result) -> list[dict[str, Any]]:
    return result.events_named("tls_not_verified")


# --- verify-full works --------------------------------------------------------------------


def test_verify_full_with_the_right_ca_migrates_without_a_warning(
    tls_env, tls_database, run_runner, run_healthcheck
):
    result = run_runner(env=tls_env)
    assert result.returncode == 0, result
    assert not warnings_of(result)
    assert [e["tls"] for e in result.events_named("database_ready")] == [True]
    assert tls_database.query("SELECT version FROM schema_migrations") == [("001_things",)]
    health = run_healthcheck(env=tls_env)
    assert health.returncode == 0, health
    # The server saw the runner's sessions encrypted.
    in_use = tls_database.scalar(
        "SELECT bool_and(ssl) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) "
        "WHERE datname = current_database() AND pid = pg_backend_pid()"
    )
    assert in_use is True


def test_bootstrap_as_the_superuser_with_verify_full(
    tls_server, certs, migrations, run_runner, tmp_path
):
    """The superuser's sessions (maintenance database, then the new one) verify too."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    owner = f"tls_owner_{uuid.uuid4().hex[:8]}"
    migrations.add({"000_init_database.sql": BOOTSTRAP_SQL, **FILES})
    env = Database(tls_server, name).env(
        DB_HOST=CERT_HOST,
        DB_SSLMODE="verify-full",
        DB_SSLROOTCERT=str(certs / "ca.crt"),
        DB_USER=owner,
        DB_PASSWORD=remember_secret(secrets.token_urlsafe(18)),
        DB_ADMIN_USER="postgres",
        DB_ADMIN_PASSWORD=tls_server.password,
        MIGRATIONS_DIR=str(migrations.path),
    )
    try:
        result = run_runner(env=env)
        assert result.returncode == 0, result
        assert result.events_named("database_created")
        assert not warnings_of(result)
        assert all(e["tls"] for e in result.events_named("database_ready"))
        assert Database(tls_server, name).scalar("SELECT count(*) FROM schema_migrations") == 2
    finally:
        with tls_server_connection(tls_server) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'DROP ROLE IF EXISTS "{owner}"')


def tls_server_connection(server: PgServer) -> psycopg.Connection[Any]:
    return psycopg.connect(**server.conninfo(), autocommit=True)


def test_database_url_with_sslrootcert(tls_database, certs, migrations, run_runner):
    migrations.add(FILES)
    server = tls_database.server
    url = (
        f"postgresql://postgres:{server.password}@{CERT_HOST}:{server.port}/{tls_database.name}"
        f"?sslmode=verify-full&sslrootcert={certs / 'ca.crt'}&target_session_attrs=read-write"
    )
    env = {"DATABASE_URL": url, "MIGRATIONS_DIR": str(migrations.path), "DB_WAIT_TIMEOUT": "30"}
    result = run_runner(env=env)
    assert result.returncode == 0, result
    assert not warnings_of(result)
    assert tls_database.scalar("SELECT count(*) FROM schema_migrations") == 1


def test_client_certificate_from_variables(tls_server, certs, migrations, run_runner):
    """A database whose pg_hba.conf line demands a client certificate: without one the server
    refuses (77), with DB_SSLCERT/DB_SSLKEY the run succeeds."""
    with tls_server_connection(tls_server) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{CLIENT_CERT_DATABASE}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{CLIENT_CERT_DATABASE}"')
    migrations.add(FILES)
    env = Database(tls_server, CLIENT_CERT_DATABASE).env(
        DB_HOST=CERT_HOST,
        DB_SSLMODE="verify-full",
        DB_SSLROOTCERT=str(certs / "ca.crt"),
        MIGRATIONS_DIR=str(migrations.path),
    )
    try:
        refused = run_runner(env=env)
        assert refused.returncode == 77, refused.events[-1]["error"]
        result = run_runner(
            env={
                **env,
                "DB_SSLCERT": str(certs / "client.crt"),
                "DB_SSLKEY": str(certs / "client.key"),
            }
        )
        assert result.returncode == 0, result
    finally:
        with tls_server_connection(tls_server) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{CLIENT_CERT_DATABASE}" WITH (FORCE)')


# --- a wrong CA or host name fails at once, with one line -----------------------------------


def test_a_wrong_ca_fails_at_once_with_one_line(tls_env, certs, run_runner):
    env = {**tls_env, "DB_SSLROOTCERT": str(certs / "other-ca.crt")}
    result = run_runner(env=env)
    message = one_tls_error(result)
    assert "certificate verify failed" in message
    assert "DB_SSLROOTCERT" in message
    assert not result.events_named("database_not_ready"), "a TLS failure is not retried"


def test_a_host_name_not_in_the_certificate_fails(tls_env, run_runner):
    result = run_runner(env={**tls_env, "DB_HOST": HOST_NOT_IN_CERT})
    message = one_tls_error(result)
    assert "does not match host name" in message
    assert "DB_HOST" in message


def test_the_superuser_session_fails_the_same_way(tls_env, tls_server, certs, run_runner):
    env = {
        **tls_env,
        "DB_SSLROOTCERT": str(certs / "other-ca.crt"),
        "DB_ADMIN_USER": "postgres",
        "DB_ADMIN_PASSWORD": tls_server.password,
    }
    message = one_tls_error(run_runner(env=env))
    assert "certificate verify failed" in message
    wrong_host = {**env, "DB_SSLROOTCERT": str(certs / "ca.crt"), "DB_HOST": HOST_NOT_IN_CERT}
    assert "does not match host name" in one_tls_error(run_runner(env=wrong_host))


def test_healthcheck_reports_a_wrong_ca_in_one_line(tls_env, certs, run_healthcheck):
    result = run_healthcheck(env={**tls_env, "DB_SSLROOTCERT": str(certs / "other-ca.crt")})
    assert result.returncode == 1, result
    (line,) = result.stdout.splitlines()
    assert "certificate verify failed" in line


# --- weaker modes warn once per run -------------------------------------------------------


def test_require_warns_once_with_tls_in_use(tls_env, tls_server, run_runner):
    env = {**tls_env, "DB_SSLMODE": "require", "DB_HOST": HOST_NOT_IN_CERT}
    env.pop("DB_SSLROOTCERT")
    # With bootstrap: two phases, three connections at least; still one warning.
    env |= {"DB_ADMIN_USER": "postgres", "DB_ADMIN_PASSWORD": tls_server.password}
    result = run_runner(env=env)
    assert result.returncode == 0, result
    (warning,) = warnings_of(result)
    assert (warning["sslmode"], warning["tls_in_use"], warning["level"]) == (
        "require",
        True,
        "warning",
    )


def test_verify_ca_warns_because_the_host_name_is_not_checked(tls_env, run_runner):
    env = {**tls_env, "DB_SSLMODE": "verify-ca", "DB_HOST": HOST_NOT_IN_CERT}
    result = run_runner(env=env)
    assert result.returncode == 0, result
    (warning,) = warnings_of(result)
    assert (warning["sslmode"], warning["tls_in_use"]) == ("verify-ca", True)


@pytest.mark.parametrize("mode", ["disable", "prefer"])
def test_without_tls_the_warning_says_so(database, migrations, run_runner, mode):
    """The session server has no TLS: prefer falls back to plain text, disable never tries."""
    migrations.add(FILES)
    result = run_runner(env=database.env(DB_SSLMODE=mode, MIGRATIONS_DIR=str(migrations.path)))
    assert result.returncode == 0, result
    (warning,) = warnings_of(result)
    assert (warning["sslmode"], warning["tls_in_use"]) == (mode, False)


# --- configuration errors -----------------------------------------------------------------


def test_an_unknown_url_parameter_is_refused_with_78(tls_database, migrations, run_runner):
    server = tls_database.server
    url = (
        f"postgresql://postgres:{server.password}@{CERT_HOST}:{server.port}/{tls_database.name}"
        "?sslmode=verify-full&sslrootcrt=ca.crt"
    )
    result = run_runner(env={"DATABASE_URL": url, "MIGRATIONS_DIR": str(migrations.path)})
    assert result.returncode == 78, result
    (error,) = result.events_named("invalid_configuration")
    assert "sslrootcrt" in error["error"] and "DATABASE_URL" in error["error"]


def test_a_missing_ca_file_names_the_variable(tls_env, tmp_path, run_runner):
    missing = tmp_path / "no-such-ca.crt"
    result = run_runner(env={**tls_env, "DB_SSLROOTCERT": str(missing)})
    assert result.returncode == 78, result
    (error,) = result.events_named("invalid_configuration")
    assert "DB_SSLROOTCERT" in error["error"] and str(missing) in error["error"]
