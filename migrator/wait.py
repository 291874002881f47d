"""Waiting for PostgreSQL: retry what can pass by itself, fail at once on what cannot.

>>> conn = wait_for_connection(config.connect_kwargs(), timeout=60)
"""

from __future__ import annotations

import re
import time
from typing import Any

import psycopg
import tenacity

from migrator.errors import ConfigError, MigratorError, PermissionDeniedError, UnreachableError
from migrator.logs import get_logger

log = get_logger("wait")

# A server that becomes ready is noticed within about 0.25 s: the backoff is capped below it.
FIRST_RETRY_DELAY = 0.05
MAX_RETRY_DELAY = 0.2
RETRY_JITTER = 0.05
MAX_CONNECT_TIMEOUT = 5  # seconds per attempt, for hosts that drop packets

TRANSIENT_SQLSTATES = frozenset({"57P03", "53300", "57P01", "08006", "08001"})
AUTH_SQLSTATES = frozenset({"28P01", "28000"})
# An established session ended by the server: shutdown, crash, pg_terminate_backend.
SESSION_ENDED_SQLSTATES = frozenset({"57P01", "57P02", "57P05"})
CONNECTION_EXCEPTION_CLASS = "08"
MISSING_DATABASE_SQLSTATE = "3D000"
# libpq reports connection failures as text only (no SQLSTATE), so these are matched too.
TRANSIENT_MESSAGES = re.compile(
    r"connection refused|connection reset|timeout expired|timed out|"
    r"could not translate host name|failed to resolve host|name or service not known|"
    r"temporary failure in name resolution|no route to host|network is unreachable|"
    r"the database system is (starting up|shutting down|in recovery mode|not yet accepting)|"
    r"too many clients|remaining connection slots are reserved|"
    r"server closed the connection unexpectedly|no such file or directory",
    re.IGNORECASE,
)
AUTH_MESSAGES = re.compile(
    r"password authentication failed|authentication failed|no pg_hba\.conf entry|"
    r"no password supplied|role \".*\" does not exist|pg_hba\.conf rejects",
    re.IGNORECASE,
)
MISSING_DATABASE_MESSAGE = re.compile(r"database \".*\" does not exist", re.IGNORECASE)
TLS_MESSAGES = re.compile(r"\bssl\b|certificate|\btls\b", re.IGNORECASE)

ERR_UNREACHABLE = "PostgreSQL at {host}:{port} was not reachable within {timeout:g}s: {reason}"
ERR_AUTH = "authentication failed for user {user} on {host}:{port}: {reason}"
ERR_NO_DATABASE = (
    "database {dbname} does not exist on {host}:{port}: create it, or set DB_ADMIN_USER "
    "and DB_ADMIN_PASSWORD so that the bootstrap phase creates it"
)
ERR_TLS = "TLS connection to {host}:{port} failed (DB_SSLMODE={sslmode}): {reason}"
ERR_CONNECT = "cannot connect to {host}:{port}: {reason}"

# A backend whose client died (kill -9, a lost node) otherwise runs its statement to the end,
# holding its locks and possibly finishing a CREATE INDEX CONCURRENTLY the next runner is
# repairing. With this setting (PostgreSQL 14+) the server checks the socket every second.
CLIENT_CHECK_INTERVAL = "SET client_connection_check_interval = '1s'"
CLIENT_CHECK_MIN_VERSION = 140000


def reason_of(error: psycopg.Error) -> str:
    """The server's or libpq's own words, on one line, without psycopg's prefix."""
    text = " ".join(str(error).split())
    return text.removeprefix("connection failed: ")


def is_transient(error: BaseException) -> bool:
    """True for failures that can pass by themselves (server starting, network not up yet)."""
    if not isinstance(error, psycopg.OperationalError):
        return False
    if error.sqlstate:
        return error.sqlstate in TRANSIENT_SQLSTATES
    text = str(error)
    if AUTH_MESSAGES.search(text) or MISSING_DATABASE_MESSAGE.search(text):
        return False
    return bool(TRANSIENT_MESSAGES.search(text))


def session_lost(error: psycopg.Error, conn: psycopg.Connection[Any]) -> bool:
    """True when ``error`` means the session is gone (not that a statement failed)."""
    state = error.sqlstate
    if state in SESSION_ENDED_SQLSTATES or (state or "").startswith(CONNECTION_EXCEPTION_CLASS):
        return True
    return conn.closed or conn.broken


def permanent_error(error: psycopg.Error, kwargs: dict[str, Any]) -> MigratorError:
    """Turn a connection failure that will not pass by itself into the user's error."""
    text, state = str(error), error.sqlstate
    where = {"host": kwargs["host"], "port": kwargs["port"], "reason": reason_of(error)}
    if state in AUTH_SQLSTATES or AUTH_MESSAGES.search(text):
        return PermissionDeniedError(ERR_AUTH.format(user=kwargs["user"], **where))
    if state == MISSING_DATABASE_SQLSTATE or MISSING_DATABASE_MESSAGE.search(text):
        return ConfigError(ERR_NO_DATABASE.format(dbname=kwargs["dbname"], **where))
    if TLS_MESSAGES.search(text):
        return ConfigError(ERR_TLS.format(sslmode=kwargs.get("sslmode"), **where))
    return UnreachableError(ERR_CONNECT.format(**where))


def _log_retry(retry_state: tenacity.RetryCallState) -> None:
    error = retry_state.outcome.exception() if retry_state.outcome else None
    log.info(
        "database_not_ready",
        attempt=retry_state.attempt_number,
        reason=reason_of(error) if isinstance(error, psycopg.Error) else repr(error),
        elapsed_s=round(retry_state.seconds_since_start or 0.0, 3),
    )


def wait_for_connection(kwargs: dict[str, Any], timeout: float) -> psycopg.Connection[Any]:
    """The run's first connection: wait for the server, then log that it is ready."""
    conn = connect(kwargs, timeout)
    log.info(
        "database_ready",
        host=kwargs["host"],
        port=kwargs["port"],
        dbname=kwargs["dbname"],
        user=kwargs["user"],
    )
    return conn


def connect(kwargs: dict[str, Any], timeout: float) -> psycopg.Connection[Any]:
    """Connect, retrying transient failures with capped, jittered backoff until ``timeout``.

    Later connections of a run go through here too: a server that was up a moment ago can
    still refuse one (53300, all slots taken), and that passes by itself as well.
    """
    deadline = time.monotonic() + timeout

    def attempt() -> psycopg.Connection[Any]:
        remaining = max(1, min(MAX_CONNECT_TIMEOUT, round(deadline - time.monotonic())))
        return _open(kwargs, remaining)

    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception(is_transient),
        wait=tenacity.wait_exponential_jitter(
            initial=FIRST_RETRY_DELAY, max=MAX_RETRY_DELAY, jitter=RETRY_JITTER
        ),
        stop=tenacity.stop_after_delay(timeout),
        before_sleep=_log_retry,
        reraise=True,
    )
    try:
        return retrying(attempt)
    except psycopg.OperationalError as error:
        if is_transient(error):
            raise UnreachableError(
                ERR_UNREACHABLE.format(
                    host=kwargs["host"],
                    port=kwargs["port"],
                    timeout=timeout,
                    reason=reason_of(error),
                )
            ) from None
        raise permanent_error(error, kwargs) from None


def _open(kwargs: dict[str, Any], connect_timeout: int) -> psycopg.Connection[Any]:
    conn = psycopg.connect(**kwargs, autocommit=True, connect_timeout=connect_timeout)
    if conn.info.server_version >= CLIENT_CHECK_MIN_VERSION:
        conn.execute(CLIENT_CHECK_INTERVAL)
    return conn
