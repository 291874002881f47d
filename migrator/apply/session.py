"""The runner's own statements around a file: its transaction's start (BEGIN and the
timeouts), the reset that gives the next file a new connection's session state, and, behind a
pooler, what each transaction carries instead of a session setting.

>>> session = SessionStatements(5000, 0, pooled=True, server_version=150000,
...                             application_name="'auth-service-migrator'")
>>> session.begin  # doctest: +NORMALIZE_WHITESPACE
('BEGIN', "SET LOCAL lock_timeout = '5000ms'", "SET LOCAL statement_timeout = '0ms'",
 "SET LOCAL client_connection_check_interval = '1s'")
>>> session.reset[-1]  # behind a pooler: no session setting to put back
'UNLISTEN *'
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from migrator.apply.transport import Envelope
from migrator.database.connect import CLIENT_CHECK_MIN_VERSION
from migrator.files.sql import Statement, may_run_in_transaction_block

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

    def timeouts(self, command: str) -> tuple[str, str]:
        """``SET`` or ``SET LOCAL`` of the two timeouts every statement of a file runs under."""
        return (
            f"{command} lock_timeout = '{self.lock_timeout_ms}ms'",
            f"{command} statement_timeout = '{self.statement_timeout_ms}ms'",
        )

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
