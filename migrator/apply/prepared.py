"""The catalog queries every file's round trip repeats, prepared once per session.

Planning a query on pg_class and pg_locks costs the server more than a small file's own work
(measured on PostgreSQL 15: the lock report, the newest oid and the lock check took 0.9 ms of
server time per file as text, 0.3 ms prepared, against 0.3 ms for a ``CREATE TABLE``). Behind a
pooler nothing is prepared: the next transaction may run on another server session.
For example, on an open connection (``LOCKS_HELD`` is the applier's lock report)::

    queries = PreparedQueries(conn, enabled=not pooled)
    queries.prepare([LOCKS_HELD], migration.sql)  # one round trip, the first time only
    queries.executes[LOCKS_HELD]  # 'EXECUTE migrator_3f9a0c1b_0'
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import psycopg

# A file that deallocates prepared statements (DEALLOCATE ALL, DISCARD ALL or PLANS, also in a
# DO block's dynamic SQL) would take the runner's with it: the queries go as text from then on.
DEALLOCATES = re.compile(r"\b(?:DEALLOCATE|DISCARD)\b", re.IGNORECASE)
NAME_PREFIX = "migrator_"
UNDEFINED_PREPARED_STATEMENT = "26000"


@dataclass
class PreparedQueries:
    """Which of the runner's queries are prepared on ``conn``, under which names."""

    conn: psycopg.Connection[Any]
    enabled: bool = True  # False behind a pooler, or once a file deallocated them
    # The query's text -> "EXECUTE name", for Envelope to send in its place.
    executes: dict[str, str] = field(default_factory=dict)
    # A random part: a second Applier on the same session, or a file's own PREPARE, cannot
    # collide with the names.
    _prefix: str = field(default_factory=lambda: f"{NAME_PREFIX}{secrets.token_hex(4)}_")

    def prepare(self, queries: Iterable[str], file_text: str) -> None:
        """Prepare those of ``queries`` not prepared yet, in one round trip, for the file
        ``file_text``; from a file that may deallocate them on, they go as text."""
        if self.enabled and DEALLOCATES.search(file_text):
            self.give_up()
        if not self.enabled:
            return
        missing = [query for query in dict.fromkeys(queries) if query not in self.executes]
        if not missing:
            return
        named = {
            query: f"{self._prefix}{len(self.executes) + n}" for n, query in enumerate(missing)
        }
        self.conn.execute(";\n".join(f"PREPARE {name} AS {query}" for query, name in named.items()))
        self.executes.update((query, f"EXECUTE {name}") for query, name in named.items())

    def lost(self, error: psycopg.Error) -> bool:
        """True when ``error`` says one of the runner's prepared statements is gone (a function
        the file called ran DEALLOCATE): from then on the queries go as text."""
        if error.sqlstate != UNDEFINED_PREPARED_STATEMENT or not self.executes:
            return False
        if self._prefix not in str(error.diag.message_primary or ""):
            return False
        self.give_up()
        return True

    def give_up(self) -> None:
        self.enabled = False
        self.executes.clear()
