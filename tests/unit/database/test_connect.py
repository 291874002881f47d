"""Unit tests for migrator.database.connect's classification of connection failures: TLS cases are
configuration errors with a hint; PgBouncer's refusals are transient, and said so."""

from __future__ import annotations

import psycopg
import pytest
import tenacity

from migrator.apply.retry import (
    LOCK_RETRY_FIRST_DELAY,
    LOCK_RETRY_JITTER,
    LOCK_RETRY_MAX_DELAY,
    LOCK_RETRY_WAIT,
)
from migrator.database.connect import (
    CONNECT_RETRY_WAIT,
    FIRST_RETRY_DELAY,
    MAX_RETRY_DELAY,
    RETRY_JITTER,
    is_transient,
    permanent_error,
    pooler_refused,
    with_connect_timeout,
)
from migrator.errors import EX_CONFIG, EX_NOPERM

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


@pytest.mark.parametrize(
    "message",
    ['connection to server at "10.0.0.5", port 5432 failed: session is read-only',
     'connection to server at "10.0.0.5", port 5432 failed: server is in hot standby mode'],
)  # fmt: skip
def test_a_server_that_takes_no_writes_is_waited_for(message: str) -> None:
    """libpq's words under target_session_attrs: a standby, promoted within seconds by a
    failover, or the old primary while the failover settles."""
    assert is_transient(psycopg.OperationalError(message))


@pytest.mark.parametrize(
    ("policy", "first", "longest", "jitter"),
    [
        (CONNECT_RETRY_WAIT, FIRST_RETRY_DELAY, MAX_RETRY_DELAY, RETRY_JITTER),
        (LOCK_RETRY_WAIT, LOCK_RETRY_FIRST_DELAY, LOCK_RETRY_MAX_DELAY, LOCK_RETRY_JITTER),
    ],
)
def test_backoff_doubles_up_to_its_cap_and_keeps_its_jitter_there(
    policy: tenacity.wait.wait_base, first: float, longest: float, jitter: float
) -> None:
    """Replicas started together must not retry in step once their waits reach the cap."""

    def waits(attempt: int) -> list[float]:
        state = tenacity.RetryCallState(tenacity.Retrying(), None, (), {})
        state.attempt_number = attempt
        return [policy(state) for _ in range(200)]

    assert first <= min(waits(1)) and max(waits(1)) <= first + jitter
    assert 2 * first <= min(waits(2)) and max(waits(2)) <= 2 * first + jitter
    capped = waits(30)
    assert longest - jitter <= min(capped) and max(capped) <= longest
    assert len(set(capped)) > 100  # spread, not one value absorbed by the cap
