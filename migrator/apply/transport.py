"""The round trip: a file's text (or some of its statements) sent with the runner's own
statements before and after it, in one simple-protocol query; which statement failed is
told by counting the results that came back.

>>> Envelope(before=("BEGIN",), after=("COMMIT",)).wrap("SELECT 1")
'BEGIN;\\nSELECT 1\\n;\\nCOMMIT;\\n'

Sent on an open connection, that text gives one result per statement::

    run_script(conn, Envelope(before=("BEGIN",), after=("COMMIT",)).wrap("SELECT 1"))
    # [<PGresult [COMMAND_OK] ...>, <PGresult [TUPLES_OK] ...>, <PGresult [COMMAND_OK] ...>]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg import generators, pq

from migrator.files.migration import Migration
from migrator.files.sql import Statement


class StatementFailed(Exception):
    """The server rejected statement ``index`` of what was sent (a file in its envelope)."""

    def __init__(
        self,
        error: psycopg.Error,
        index: int,
        envelope: Envelope | None = None,
        migration: Migration | None = None,
        part: Part | None = None,
    ) -> None:
        super().__init__(str(error))
        self.error = error
        self.index = index
        self.envelope = envelope or Envelope()
        self.migration = migration  # set when the failure came from a file's round trip
        self.part = part  # the statements that round trip carried; None: the whole file


def run_script(conn: psycopg.Connection[Any], text: str) -> list[pq.abc.PGresult]:
    """Send ``text`` (one or many statements) in one round trip, the simple query protocol.

    Counting the results that came back before the error tells which statement failed,
    even when the server gives no error position.
    """
    conn.pgconn.send_query(text.encode(conn.info.encoding))
    results: list[pq.abc.PGresult] = conn.wait(generators.execute(conn.pgconn))
    for index, result in enumerate(results):
        if result.status == pq.ExecStatus.FATAL_ERROR:
            raise StatementFailed(pg_errors.error_from_result(result, conn.info.encoding), index)
    return results


class PreparedQueryLost(Exception):
    """A prepared catalog query of the round trip was gone: send it again with them as text."""


@dataclass(frozen=True)
class Envelope:
    """Statements sent before and after a file's text, in the same round trip."""

    before: tuple[str, ...] = ()
    after: tuple[str, ...] = ()
    # What is sent in place of a statement prepared on the session (``EXECUTE name``); one
    # statement each, so results are counted and found by the statements' own texts.
    executes: Mapping[str, str] = field(default_factory=dict)

    @property
    def head(self) -> str:
        return self._joined(self.before)

    def wrap(self, text: str) -> str:
        # The newline ends a trailing line comment; the lone ";" ends a last statement
        # written without one (an empty statement sends no result, so counting holds).
        return self.head + text + "\n;\n" + self._joined(self.after)

    def _joined(self, statements: Sequence[str]) -> str:
        return "".join(f"{self.executes.get(s, s)};\n" for s in statements)


@dataclass(frozen=True)
class Part:
    """Some statements of a file sent in one round trip, joined; knows where each came from."""

    statements: Sequence[Statement]

    @property
    def text(self) -> str:
        return ";\n".join(statement.text for statement in self.statements)

    def locate(self, offset: int) -> tuple[Statement, int] | None:
        """The statement at ``offset`` of ``text`` and the same place as a file offset."""
        start = 0
        for statement in self.statements:
            end = start + len(statement.text)
            if offset <= end:
                return statement, statement.offset + max(offset - start, 0)
            start = end + 2  # ";\n"
        return None


def index_after(count: int, envelope: Envelope, statement: str) -> int | None:
    """Where ``statement`` of the envelope's tail counts among the results of the round trip
    that carried ``count`` statements of the file."""
    if statement not in envelope.after:
        return None
    return len(envelope.before) + count + envelope.after.index(statement)
