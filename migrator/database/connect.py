"""Waiting for PostgreSQL: retry what can pass by itself, fail at once on what cannot.

For example, the first connection of a run::

    conn = wait_for_connection(config.connect_kwargs(), timeout=60)
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
import tenacity

from migrator.database.conninfo import DEFAULT_SSLMODE, VERIFIED_SSLMODE, WRITABLE_SESSION
from migrator.errors import (
    AuthenticationError,
    ConfigError,
    DatabaseMissingError,
    MigratorError,
    UnreachableError,
)
from migrator.logs import get_logger

log = get_logger("wait")

# A server that becomes ready is noticed within about 0.25 s: the backoff is capped below it.
FIRST_RETRY_DELAY = 0.05
MAX_RETRY_DELAY = 0.2
RETRY_JITTER = 0.05


def capped_backoff(first: float, longest: float, jitter: float) -> tenacity.wait.wait_base:
    """Exponential waits from ``first``, never longer than ``longest`` jitter included.

    The jitter is added after the cap, not absorbed by it (as wait_exponential_jitter's
    is): replicas that started together still spread out once their waits reach the cap.

    >>> wait = capped_backoff(0.05, 0.2, 0.05)
    >>> state = tenacity.RetryCallState(None, None, (), {})
    >>> state.attempt_number = 10
    >>> 0.15 <= wait(state) <= 0.2
    True
    """
    return tenacity.wait_exponential(multiplier=first, max=longest - jitter) + tenacity.wait_random(
        0, jitter
    )


CONNECT_RETRY_WAIT = capped_backoff(FIRST_RETRY_DELAY, MAX_RETRY_DELAY, RETRY_JITTER)
AHEAD_THREAD_NAME = "connect-ahead"
MAX_CONNECT_TIMEOUT = 5  # seconds per attempt, for hosts that drop packets
REPORT_INTERVAL = 10.0  # seconds between two database_not_ready lines

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
# libpq's words for a server that takes no writes (target_session_attrs=read-write): retried
# like the rest, since a failover promotes a standby within seconds, and explained at the end.
READ_ONLY_MESSAGES = re.compile(
    r"session is read-only|server is in hot standby mode", re.IGNORECASE
)
AUTH_MESSAGES = re.compile(
    r"password authentication failed|authentication failed|no pg_hba\.conf entry|"
    r"no password supplied|role \".*\" does not exist|pg_hba\.conf rejects|"
    # The server refused the client's certificate (pg_hba.conf clientcert / cert method).
    r"requires a valid client certificate|certificate authentication failed",
    re.IGNORECASE,
)
# PgBouncer's own refusals (it sends them as 08P01, whatever the cause): each passes by itself
# once the pool has room or the server is back, so they are retried like a server starting up.
POOLER_MESSAGES = re.compile(
    r"no more connections allowed|query_wait_timeout|server_login_retry|"
    r"server login has been failing|pgbouncer cannot connect to server|"
    r"client_login_timeout|pooler is shutting down|database .* is paused",
    re.IGNORECASE,
)
MISSING_DATABASE_MESSAGE = re.compile(r"database \".*\" does not exist", re.IGNORECASE)
TLS_MESSAGES = re.compile(r"\bssl\b|certificate|\btls\b", re.IGNORECASE)
# TLS failures that no retry can fix. They win over a transient failure in the same message:
# libpq tries every address of a name (localhost: ::1 refused, then 127.0.0.1 bad certificate).
TLS_FAILURES = re.compile(
    r"certificate|does not support SSL|private key|channel binding|sslmode value",
    re.IGNORECASE,
)
# What to check, by what libpq said; the first match adds its hint to the error.
TLS_HINTS = (
    (
        re.compile(r"does not match host name", re.IGNORECASE),
        "DB_HOST must be a name the server's certificate lists (its subject alternative names)",
    ),
    (
        re.compile(r"certificate verify failed|unable to get local issuer", re.IGNORECASE),
        "the server's certificate is not signed by the CA in DB_SSLROOTCERT (sslrootcert)",
    ),
    (
        re.compile(r"root certificate file .* does not exist", re.IGNORECASE),
        "set DB_SSLROOTCERT to the CA that signed the server's certificate",
    ),
)

ERR_UNREACHABLE = "PostgreSQL at {host}:{port} was not reachable within {timeout:g}s: {reason}"
ERR_AUTH = "authentication failed for user {user} on {host}:{port}: {reason}"
ERR_NO_DATABASE = (
    "database {dbname} does not exist on {host}:{port}: create it, or set DB_ADMIN_USER "
    "and DB_ADMIN_PASSWORD so that the bootstrap phase creates it"
)
ERR_READ_ONLY = (
    "PostgreSQL at {host}:{port} took no writes within {timeout:g}s ({reason}); point DB_HOST "
    "at the primary, or list every node (DB_HOST=db-1,db-2) and the runner takes the one that "
    "accepts writes"
)
ERR_TLS = "TLS connection to {host}:{port} failed (DB_SSLMODE={sslmode}): {reason}"
ERR_TLS_HINT = "{message}; {hint}"
ERR_CONNECT = "cannot connect to {host}:{port}: {reason}"
TLS_NOT_VERIFIED_HINT = (
    "the server's identity is not checked, so a machine in the middle can pose as the "
    "server: use DB_SSLMODE=verify-full with DB_SSLROOTCERT outside local development"
)
ERR_POOLER = (
    "the connection pooler at {host}:{port} refused the runner ({reason}): its pool is "
    "exhausted or it cannot reach PostgreSQL; raise its pool size or max_client_conn, or retry"
)

# Session settings of a direct connection, in the round trip that tells a pooler apart.
# application_name travels here rather than as a startup parameter: PgBouncer hands the
# server's last value to the pool's next client that sends none.
# client_connection_check_interval: a backend whose client died (kill -9, a lost node)
# otherwise runs its statement to the end, holding its locks and possibly finishing a CREATE
# INDEX CONCURRENTLY the next runner is repairing; with it (PostgreSQL 14+) the server checks
# the socket every second. Behind a pooler neither is set: it would stay on the pool's server
# for its next client (the pooler's own disconnect of a dead client ends that backend anyway).
# Every name is qualified: this runs before bootstrap pins the superuser's session, with the
# search path the database sets, and the database's owner can ALTER DATABASE ... SET
# search_path = public, pg_catalog over a public.pg_backend_pid() of its own.
# The last column says whether the session takes writes, asked of the server itself: libpq's
# target_session_attrs=read-write trusts the login's reported in_hot_standby, which PgBouncer
# replays from its cache, stale after its server was promoted (measured with 1.18).
SESSION_SETUP = """
SELECT pg_catalog.pg_backend_pid() OPERATOR(pg_catalog.<>) %(client_pid)s,
  CASE WHEN pg_catalog.pg_backend_pid() OPERATOR(pg_catalog.=) %(client_pid)s THEN
    pg_catalog.set_config('application_name', %(application_name)s, false) END,
  CASE WHEN pg_catalog.pg_backend_pid() OPERATOR(pg_catalog.=) %(client_pid)s
    AND %(check_interval)s THEN
    pg_catalog.set_config('client_connection_check_interval', '1s', false) END,
  CASE WHEN pg_catalog.pg_is_in_recovery() THEN 'a hot standby: in recovery'
    WHEN pg_catalog.current_setting('transaction_read_only') OPERATOR(pg_catalog.=) 'on'
    THEN 'default_transaction_read_only is on' END
"""
# Raised as libpq words it, so that it is retried and explained like libpq's own refusal.
ERR_SESSION_READ_ONLY = (
    'connection to server at "{host}", port {port} failed: session is read-only ({why})'
)
CLIENT_CHECK_MIN_VERSION = 140000


def reason_of(error: psycopg.Error) -> str:
    """The server's or libpq's own words, on one line, without psycopg's prefix."""
    text = " ".join(str(error).split())
    return text.removeprefix("connection failed: ")


def is_transient(error: BaseException) -> bool:
    """True for failures that can pass by themselves (server starting, network not up yet)."""
    if not isinstance(error, psycopg.OperationalError):
        return False
    if pooler_refused(error):
        return True
    if error.sqlstate:
        return error.sqlstate in TRANSIENT_SQLSTATES
    text = str(error)
    if AUTH_MESSAGES.search(text) or MISSING_DATABASE_MESSAGE.search(text):
        return False
    if TLS_FAILURES.search(text):
        return False
    return bool(TRANSIENT_MESSAGES.search(text) or READ_ONLY_MESSAGES.search(text))


def pooler_refused(error: BaseException) -> bool:
    """True when a connection pooler (PgBouncer's words) refused or dropped us, not PostgreSQL."""
    return isinstance(error, psycopg.Error) and bool(POOLER_MESSAGES.search(str(error)))


def behind_pooler(conn: psycopg.Connection[Any]) -> bool:
    """True when ``conn`` goes through a pooler: the backend pid libpq was told is not the server's.

    PgBouncer, PgCat and Supavisor answer the startup with a process id of their own (they
    route cancel requests themselves); PostgreSQL and Pgpool-II give the backend's.
    """
    row = conn.execute("SELECT pg_catalog.pg_backend_pid()").fetchone()
    return row is not None and row[0] != conn.info.backend_pid


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
        return AuthenticationError(
            ERR_AUTH.format(user=kwargs["user"], **where), user=kwargs["user"]
        )
    if state == MISSING_DATABASE_SQLSTATE or MISSING_DATABASE_MESSAGE.search(text):
        return DatabaseMissingError(ERR_NO_DATABASE.format(dbname=kwargs["dbname"], **where))
    if TLS_MESSAGES.search(text):
        return ConfigError(
            tls_message(text, ERR_TLS.format(sslmode=kwargs.get("sslmode"), **where))
        )
    return UnreachableError(ERR_CONNECT.format(**where))


def tls_message(text: str, message: str) -> str:
    """The TLS error with what to check, when libpq's words say which setting is wrong."""
    for pattern, hint in TLS_HINTS:
        if pattern.search(text):
            return ERR_TLS_HINT.format(message=message, hint=hint)
    return message


def with_connect_timeout(kwargs: dict[str, Any], seconds: int) -> dict[str, Any]:
    """``kwargs`` with libpq's connect_timeout: ``seconds``, or the URL's own when shorter.

    >>> with_connect_timeout({"connect_timeout": "2"}, 5)["connect_timeout"]
    2
    """
    configured = str(kwargs.get("connect_timeout") or "")
    if configured.isdigit() and int(configured) > 0:
        seconds = min(seconds, int(configured))
    return {**kwargs, "connect_timeout": seconds}


def report_tls(conn: psycopg.Connection[Any], sslmode: str) -> None:
    """Warn, once per run, that the server's identity was not verified (below verify-full).

    Called on the run's first connection only: every later one uses the same settings.
    """
    if sslmode == VERIFIED_SSLMODE:
        return
    log.warning(
        "tls_not_verified",
        sslmode=sslmode,
        tls_in_use=bool(conn.pgconn.ssl_in_use),
        hint=TLS_NOT_VERIFIED_HINT,
    )


class _RetryLog:
    """Log the first failed attempt, then one line per REPORT_INTERVAL, not one per attempt.

    Attempts come every 0.2 s: a minute's wait would otherwise write about 300 lines.
    """

    def __init__(self) -> None:
        self.last: float | None = None

    def __call__(self, retry_state: tenacity.RetryCallState) -> None:
        now = time.monotonic()
        if self.last is not None and now - self.last < REPORT_INTERVAL:
            return
        self.last = now
        error = retry_state.outcome.exception() if retry_state.outcome else None
        log.info(
            "database_not_ready",
            attempt=retry_state.attempt_number,
            reason=reason_of(error) if isinstance(error, psycopg.Error) else repr(error),
            elapsed_s=round(retry_state.seconds_since_start or 0.0, 3),
        )


def wait_for_connection(
    kwargs: dict[str, Any], timeout: float, *, first: bool = True
) -> psycopg.Connection[Any]:
    """A phase's first connection: wait for the server, then log that it is ready.

    ``first`` marks the run's first connection, the one that reports an unverified TLS
    connection; the owner's phase after bootstrap passes False.
    """
    conn = connect(kwargs, timeout)
    log.info(
        "database_ready",
        host=kwargs["host"],
        port=kwargs["port"],
        dbname=kwargs["dbname"],
        user=kwargs["user"],
        tls=bool(conn.pgconn.ssl_in_use),
    )
    if first:
        report_tls(conn, kwargs.get("sslmode") or DEFAULT_SSLMODE)
    return conn


def connect(kwargs: dict[str, Any], timeout: float) -> psycopg.Connection[Any]:
    """Connect, retrying transient failures with capped, jittered backoff until ``timeout``.

    Later connections of a run go through here too: a server that was up a moment ago can
    still refuse one (53300, all slots taken), and that passes by itself as well.
    """
    deadline = time.monotonic() + timeout

    def attempt() -> psycopg.Connection[Any]:
        remaining = max(1, min(MAX_CONNECT_TIMEOUT, round(deadline - time.monotonic())))
        return open_connection(kwargs, remaining)

    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception(is_transient),
        wait=CONNECT_RETRY_WAIT,
        stop=tenacity.stop_after_delay(timeout),
        before_sleep=_RetryLog(),
        reraise=True,
    )
    try:
        return retrying(attempt)
    except psycopg.OperationalError as error:
        if is_transient(error):
            template = ERR_UNREACHABLE
            if pooler_refused(error):
                template = ERR_POOLER
            elif READ_ONLY_MESSAGES.search(str(error)):
                template = ERR_READ_ONLY
            raise UnreachableError(
                template.format(
                    host=kwargs["host"],
                    port=kwargs["port"],
                    timeout=timeout,
                    reason=reason_of(error),
                )
            ) from None
        raise permanent_error(error, kwargs) from None


def open_connection(kwargs: dict[str, Any], connect_timeout: int) -> psycopg.Connection[Any]:
    """One attempt: an autocommit connection that is safe behind a transaction pooler.

    psycopg prepares nothing on the server (``prepare_threshold=None``: PgBouncer before 1.21
    may run the next statement on a server that never saw the PREPARE; the applier prepares
    its own catalog queries only on a direct connection, migrator/apply/prepared.py), and no setting
    is left on a pooled server session. For example::

        conn = open_connection(config.connect_kwargs(), connect_timeout=5)
    """
    startup = {key: value for key, value in kwargs.items() if key != "application_name"}
    writable = WRITABLE_SESSION.items() <= startup.items()
    if writable and "," not in str(startup.get("host", "")):
        # One host: asked of the server below. Several: libpq's check picks the primary.
        del startup["target_session_attrs"]
    conn = psycopg.connect(
        **with_connect_timeout(startup, connect_timeout), autocommit=True, prepare_threshold=None
    )
    try:
        setup = {
            "client_pid": conn.info.backend_pid,
            "application_name": kwargs.get("application_name") or "",
            "check_interval": conn.info.server_version >= CLIENT_CHECK_MIN_VERSION,
        }
        row = conn.execute(SESSION_SETUP, setup).fetchone()
        read_only = row[-1] if row else None
        if writable and read_only:
            where = {"host": conn.info.host, "port": conn.info.port, "why": read_only}
            raise psycopg.OperationalError(ERR_SESSION_READ_ONLY.format(**where))
    except BaseException:
        conn.close()
        raise
    return conn


class ConnectionAhead:
    """A connection that logs in on a thread while the caller does other work.

    The login's round trips and the server's new backend overlap the caller's own work (the
    lock, the lexing, the imports of the apply path). ``drop`` gives it up at once, without
    waiting: a runner that queues for the lock holds one connection, not two. For example::

        with ConnectionAhead(functools.partial(connect, kwargs, 30)) as ahead:
            conn = ahead.take()  # the login from the thread, or a new one if it was dropped
    """

    def __init__(self, opener: Callable[[], psycopg.Connection[Any]]) -> None:
        self._opener = opener
        self._lock = threading.Lock()
        self._dropped = False
        self._result: psycopg.Connection[Any] | BaseException | None = None
        self._thread = threading.Thread(target=self._open, name=AHEAD_THREAD_NAME, daemon=True)
        self._thread.start()

    def _open(self) -> None:
        result: psycopg.Connection[Any] | BaseException
        try:
            result = self._opener()
        except BaseException as error:  # handed to the caller by take()
            result = error
        with self._lock:
            if not self._dropped:
                self._result = result
                return
        if isinstance(result, psycopg.Connection):
            result.close()

    def take(self) -> psycopg.Connection[Any]:
        """The connection; its login's error is raised here, in the caller's thread."""
        with self._lock:
            dropped = self._dropped
        if dropped:
            return self._opener()
        self._thread.join()
        with self._lock:
            result, self._result, self._dropped = self._result, None, True
        if isinstance(result, BaseException):
            raise result
        assert result is not None  # the thread always leaves a result before it ends
        return result

    def drop(self) -> None:
        """Close it, or have the thread close it when its login ends; never waits."""
        with self._lock:
            result, self._result, self._dropped = self._result, None, True
        if isinstance(result, psycopg.Connection):
            result.close()

    def __enter__(self) -> ConnectionAhead:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.drop()
