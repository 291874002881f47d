"""The runner's own statements around a file: its transaction's start (BEGIN and the
timeouts), the reset that gives the next file a new connection's session state, and, behind a
pooler, what each transaction carries instead of a session setting; and the session the files
run on (``FileSession``), a new login once a file changed the defaults a login reads.

>>> session = SessionStatements(5000, 0, pooled=True, server_version=150000,
...                             application_name="'auth-service-migrator'")
>>> session.begin  # doctest: +NORMALIZE_WHITESPACE
('BEGIN', "SET LOCAL lock_timeout = '5000ms'", "SET LOCAL statement_timeout = '0ms'",
 "SET LOCAL client_connection_check_interval = '1s'")
>>> session.reset[-1]  # behind a pooler: no session setting to put back
'UNLISTEN *'
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import psycopg
from psycopg import pq
from psycopg.sql import Literal

from migrator.apply.transport import Envelope, run_script
from migrator.config import Config
from migrator.database.connect import CLIENT_CHECK_MIN_VERSION
from migrator.files.sql import Statement, may_run_in_transaction_block
from migrator.logs import get_logger

log = get_logger("apply")

TIMEOUTS = ("lock_timeout", "statement_timeout")
POOLED_CLIENT_CHECK = "SET LOCAL client_connection_check_interval = '1s'"
CLIENT_CHECK_INTERVAL = "SET client_connection_check_interval = '1s'"
# Each file starts from the session state of a new connection, as with one ``psql -f`` per
# file: what a file set (SET, set_config(..., false), SET ROLE, SET SESSION AUTHORIZATION,
# temporary tables, WITH HOLD cursors, LISTEN) is undone before its history row, in the same
# round trip.  Not DISCARD ALL: it cannot run in a transaction block, and it would also drop
# what the runner keeps (psycopg's prepared statements, any advisory lock of the session).
SESSION_RESET = (
    "RESET SESSION AUTHORIZATION",
    "RESET ROLE",
    "RESET ALL",
    "DISCARD TEMP",
    "DISCARD SEQUENCES",
    "CLOSE ALL",
    "UNLISTEN *",
)
# The database and role defaults a new login gets (ALTER DATABASE / ALTER ROLE ... SET): the
# rows of pg_db_role_setting that apply to this database and the session's login role.
# PostgreSQL applies them at login only, and RESET (ALL) returns to what the login read: after
# a file that changed them, also from dynamic SQL, a new connection differs from this session.
# One small row, read in the file's own round trip after the reset and, in a transaction,
# before COMMIT: the file's own change is seen. The database's and the login role's oids are
# read once, at the start (looking them up each time, through pg_roles, doubled the cost).
LOGIN_DEFAULTS = (
    "SELECT string_agg(s.setdatabase || ' ' || s.setrole || ' ' || s.setconfig::text, ';' "
    "ORDER BY s.setdatabase, s.setrole) FROM pg_db_role_setting s "
    "WHERE s.setdatabase IN (0, {database}) AND s.setrole IN (0, {role})"
)
# At the start, in one round trip: the oids, and what the login read (session_user is the
# login role: nothing ran on the session yet that could change it).
THIS_LOGIN = (
    "SELECT (SELECT oid FROM pg_database WHERE datname = current_database()), "
    "(SELECT oid FROM pg_roles WHERE rolname = session_user)"
)
RENEWED_REASON = (
    "the file changed the database or role defaults a new connection logs in with "
    "(pg_db_role_setting): the next file runs on a new connection, as under psql -f"
)
POOLED_NOT_RENEWED = (
    "the file changed the database or role defaults a new connection logs in with "
    "(pg_db_role_setting), but behind a pooler a new connection gets a pooled server session "
    "that keeps the defaults it logged in with: the next files, like the application's "
    "sessions, see them only once the pooler opens new server sessions; set them in 000, or "
    "apply through a direct connection"
)


@dataclass(frozen=True)
class SessionStatements:
    """The same for every file of a run: built once, from the settings and the connection."""

    lock_timeout_ms: int  # DDL_LOCK_TIMEOUT
    statement_timeout_ms: int  # STATEMENT_TIMEOUT
    # Behind a pooler no session setting is made: a transaction carries each instead.
    pooled: bool
    server_version: int
    application_name: str  # an SQL literal, quoted by the connection
    # Statements that put back what a caller pinned on its session (bootstrap's search_path
    # and role): the reset after each file would otherwise undo them.
    after_reset: tuple[str, ...] = ()

    @classmethod
    def of(
        cls,
        conn: psycopg.Connection[Any],
        config: Config,
        pooled: bool,
        after_reset: tuple[str, ...] = (),
    ) -> SessionStatements:
        """The statements for files run on ``conn`` with ``config``'s settings."""
        return cls(
            lock_timeout_ms=round(config.ddl_lock_timeout * 1000),
            statement_timeout_ms=round(config.statement_timeout * 1000),
            pooled=pooled,
            server_version=conn.info.server_version,
            application_name=Literal(config.application_name).as_string(conn),
            after_reset=after_reset,
        )

    def timeouts(self, command: str) -> tuple[str, ...]:
        """``SET`` or ``SET LOCAL`` of the two timeouts every statement of a file runs under."""
        return self.restore(frozenset(TIMEOUTS), command)

    def restore(self, names: frozenset[str], command: str) -> tuple[str, ...]:
        """``SET`` or ``SET LOCAL`` of the runner's settings among ``names``: after a file's
        statement that put them back to the session's default (``settings_reset``: RESET ALL,
        RESET lock_timeout, SET ... TO DEFAULT), which would leave its next DDL waiting for a
        lock without a limit, queueing the application behind it.

        >>> session = SessionStatements(5000, 0, False, 150000, "''")
        >>> session.restore(frozenset(["lock_timeout"]), "SET")
        ("SET lock_timeout = '5000ms'",)
        """
        values = {
            "lock_timeout": f"'{self.lock_timeout_ms}ms'",
            "statement_timeout": f"'{self.statement_timeout_ms}ms'",
        }
        if self.server_version >= CLIENT_CHECK_MIN_VERSION:
            values["client_connection_check_interval"] = "'1s'"
        chosen = (name for name in values if name in names)
        return tuple(f"{command} {name} = {values[name]}" for name in chosen)

    @cached_property
    def begin(self) -> tuple[str, ...]:
        return ("BEGIN", *self.timeouts("SET LOCAL"), *self.pooled_check)

    @cached_property
    def pooled_check(self) -> tuple[str, ...]:
        """Behind a pooler the session setting is not made: a transaction carries it instead.

        A pooler keeps a vanished client's server session running its statement to the end;
        with the check the backend notices within a second (PostgreSQL 14+).
        """
        if self.pooled and self.server_version >= CLIENT_CHECK_MIN_VERSION:
            return (POOLED_CLIENT_CHECK,)
        return ()

    @cached_property
    def reset(self) -> tuple[str, ...]:
        """What gives the next file a new connection's session state, then puts back the
        runner's own session settings (which RESET ALL undid). Behind a pooler the runner
        keeps no session setting: the reset alone leaves the pooled server session clean."""
        if self.pooled:
            return SESSION_RESET
        own: tuple[str, ...] = (f"SET application_name = {self.application_name}",)
        if self.server_version >= CLIENT_CHECK_MIN_VERSION:
            own += (CLIENT_CHECK_INTERVAL,)
        return (*SESSION_RESET, *own, *self.after_reset)

    def statement_envelope(self, statement: Statement) -> Envelope:
        """Behind a pooler, SET LOCAL timeouts in the statement's own (implicit) transaction.

        A statement PostgreSQL refuses in a transaction block (CREATE INDEX CONCURRENTLY,
        VACUUM) runs with the server's defaults there: a session SET could reach another
        server session than the statement, and stay on it for the pool's next client.
        """
        if self.pooled and may_run_in_transaction_block(statement):
            return Envelope(before=(*self.timeouts("SET LOCAL"), *self.pooled_check))
        return Envelope()


@dataclass
class FileSession:
    """The connection the files run on, each file starting from the session a new connection
    would get at that moment: after a file that changed the database or role defaults of this
    login (LOGIN_DEFAULTS read in its round trip), the next file runs on a new login.

    Not set_config of the new values: RESET and RESET ALL in a later file would go back to the
    old login's values, a setting's source would differ, and a login applies superuser-only
    settings that a session could not set. A new login gets exactly what psql -f gets. The
    migration lock lives on its own connection and is checked by pid: a new work connection
    keeps it. For example, after each file's reset::

        files = FileSession(conn, reopen=partial(connect, kwargs, 30))
        files.settle("002_path", session.reset)  # the reset, then a new login if needed
        files.conn  # the connection for the next file
    """

    conn: psycopg.Connection[Any]
    # Opens a new login like ``conn``'s; None: the defaults are not followed (bootstrap's 000
    # is the only file of its session).
    reopen: Callable[[], psycopg.Connection[Any]] | None
    # Behind a pooler a new login gets a pooled server session with old defaults: warn instead.
    pooled: bool = False
    # LOGIN_DEFAULTS for this database and login role.
    query: str = field(default="", init=False)
    # What the login read (its rows of pg_db_role_setting), and what the last file left.
    login_defaults: bytes | None = field(default=None, init=False)
    _seen: bytes | None = field(default=None, init=False)
    _opened: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        if not self.following:
            return
        row = self.conn.execute(THIS_LOGIN).fetchone()
        assert row is not None  # one row, whatever the catalog holds
        self.query = LOGIN_DEFAULTS.format(database=int(row[0]), role=int(row[1]))
        # Raw bytes, as observe() reads them from a round trip's results.
        self.login_defaults = self._seen = run_script(self.conn, self.query)[0].get_value(0, 0)

    @property
    def following(self) -> bool:
        return self.reopen is not None

    @property
    def closing(self) -> tuple[str, ...]:
        """What a file's round trip sends after the session reset."""
        return (self.query,) if self.following else ()

    def observe(self, results: Sequence[pq.abc.PGresult], after: Sequence[str]) -> None:
        """Take LOGIN_DEFAULTS' value from the results of a round trip that ended with
        ``after`` (counted from the end: the file's own statements are not counted)."""
        if self.following and self.query in after:
            self._seen = results[after.index(self.query) - len(after)].get_value(0, 0)

    def follow(self, version: str) -> bool:
        """After file ``version``: a new login when it changed the defaults; True then."""
        if self.reopen is None or self._seen == self.login_defaults:
            return False
        self.login_defaults = self._seen
        if self.pooled:
            log.warning("session_not_renewed", version=version, reason=POOLED_NOT_RENEWED)
            return False
        renewed = self.reopen()
        self.conn.close()  # its prepared statements and session go with it
        self.conn, self._opened = renewed, True
        log.info("session_renewed", version=version, reason=RENEWED_REASON)
        return True

    def settle(self, version: str, reset: Sequence[str]) -> bool:
        """After file ``version``, in a round trip of its own: ``reset``, then follow the
        defaults; True when the next file runs on a new login."""
        after = (*reset, *self.closing)
        self.observe(run_script(self.conn, Envelope(after=after).wrap("")), after)
        return self.follow(version)

    def close(self) -> None:
        """Close the connection if it is one of ours (a renewal's); the caller closes its own."""
        if self._opened:
            self.conn.close()
