"""Unit tests for migrator.wait's classification of connection failures: TLS cases are
configuration errors with a hint; PgBouncer's refusals are transient, and said so."""

from __future__ import annotations

import psycopg
import pytest

from migrator.errors import EX_CONFIG, EX_NOPERM
from migrator.wait import is_transient, permanent_error, pooler_refused, with_connect_timeout

KWARGS = {"host": "db", "port": 5432, "user": "owner", "dbname": "auth", "sslmode": "verify-full"}
# libpq tries every address of a name: the first refused, the second with a bad certificate.
TWO_ADDRESSES = (
    'connection failed: connection to server at "::1", port 5432 failed: Connection refused\n'
    "\tIs the server running on that host and accepting TCP/IP connections?\n"
    'connection to server at "127.0.0.1", port 5432 failed: SSL error: certificate verify failed'
)


def error(text: str) -> psycopg.OperationalError:
    return psycopg.OperationalError(text)


def test_a_tls_failure_is_not_retried_even_beside_a_refused_address() -> None:
    assert not is_transient(error(TWO_ADDRESSES))
    assert is_transient(error("connection failed: Connection refused"))


@pytest.mark.parametrize(
    ("text", "hint"),
    [
        (TWO_ADDRESSES, "not signed by the CA in DB_SSLROOTCERT"),
        ('server certificate for "db.internal" does not match host name "db"', "DB_HOST must be"),
        ('root certificate file "/nonexistent/.postgresql/root.crt" does not exist',
         "set DB_SSLROOTCERT"),
    ],
)  # fmt: skip
def test_tls_failures_are_configuration_errors_with_a_hint(text: str, hint: str) -> None:
    failure = permanent_error(error(text), KWARGS)
    assert failure.exit_code == EX_CONFIG
    assert failure.message.startswith("TLS connection to db:5432 failed (DB_SSLMODE=verify-full)")
    assert hint in failure.message and "\n" not in failure.message


def test_a_refused_client_certificate_is_a_permission_error() -> None:
    text = 'connection to server at "127.0.0.1" failed: FATAL: connection requires a valid client certificate'
    assert not is_transient(error(text))
    assert permanent_error(error(text), KWARGS).exit_code == EX_NOPERM


@pytest.mark.parametrize(("configured", "expected"), [(None, 5), ("2", 2), ("30", 5), ("0", 5)])
def test_connect_timeout_keeps_the_shorter_one(configured: str | None, expected: int) -> None:
    kwargs = {"host": "db"} if configured is None else {"host": "db", "connect_timeout": configured}
    assert with_connect_timeout(kwargs, 5)["connect_timeout"] == expected


# PgBouncer 1.18's own words (it sends them as SQLSTATE 08P01).
POOLER_REFUSALS = (
    "FATAL:  no more connections allowed (max_client_conn)",
    "FATAL:  query_wait_timeout",
    "FATAL:  server login has been failing, try again later (server_login_retry)",
    "FATAL:  pgbouncer cannot connect to server",
)


@pytest.mark.parametrize("message", POOLER_REFUSALS)
def test_pooler_refusals_are_transient_and_recognised(message: str) -> None:
    error = psycopg.OperationalError(message)
    assert pooler_refused(error)
    assert is_transient(error)


@pytest.mark.parametrize(
    "message",
    ['FATAL:  password authentication failed for user "auth_service"',
     'FATAL:  database "auth_service" does not exist'],
)  # fmt: skip
def test_postgresql_refusals_are_not_the_poolers(message: str) -> None:
    error = psycopg.OperationalError(message)
    assert not pooler_refused(error)
    assert not is_transient(error)
