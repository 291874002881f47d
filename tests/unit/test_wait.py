"""Unit tests for migrator.wait's classification of PgBouncer's refusals: transient, said so."""

from __future__ import annotations

import psycopg
import pytest

from migrator.wait import is_transient, pooler_refused

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
