"""Fresh planner statistics after a release: ANALYZE what a transactional file rewrote or filled.

A column whose type changed has no statistics until autovacuum analyzes its table, and a table
filled by a data migration is planned from stale counts. PostgreSQL says, inside the file's
transaction, what the file did: each relation's row counts (the counters behind
``pg_stat_xact_user_tables``, live for the current transaction) and whether its storage was
replaced (``relfilenode`` changed).
Two statements travel in the file's round trip (no extra one); the ANALYZE runs afterwards,
outside the file's transaction, once its history row is committed. For example::

    before, after = envelope_statements(config, migration.sql)  # ((), ()) if nothing to measure
    stale = stale_relations(results, after)  # from the file's round trip
    refresh(conn, config, "042_backfill", stale)  # statistics_refreshed, one per relation
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import pq, sql

from migrator.config import Config
from migrator.database.connect import session_lost
from migrator.logs import get_logger

log = get_logger("statistics")

# A relation is analyzed when the file changed (inserted, updated or deleted) more rows than
# ANALYZE_ROWS, or more than ANALYZE_SHARE of the rows it had before the file (pg_class.reltuples)
# and more than ANALYZE_MIN_ROWS: below that the planner's estimates from the table's size hold,
# and autovacuum (50 rows + 10%) catches up within a minute.
ANALYZE_ROWS = 5_000
ANALYZE_SHARE = 0.1
ANALYZE_MIN_ROWS = 1_000
# User relations with storage and statistics (tables, materialized views); temporary ones are
# gone after the file.
ANALYZED_KINDS = "c.relkind IN ('r', 'm') AND c.relpersistence <> 't' AND c.oid >= 16384"
# Locks a file takes on what it writes or rewrites (ROW EXCLUSIVE and stronger).
WRITE_LOCKS = (
    "'RowExclusiveLock', 'ShareUpdateExclusiveLock', 'ShareLock', 'ShareRowExclusiveLock', "
    "'ExclusiveLock', 'AccessExclusiveLock'"
)

# At BEGIN: the newest oid or relfilenode in pg_class (index lookups, no scan). A relation's
# new storage (relfilenode) and a new relation's oid both come from the server's oid counter,
# so after BEGIN they are above it: a relation at or below it existed before the file, and one
# whose relfilenode is now above it was rewritten. (After the cluster's oid counter wraps
# around, past 4 billion, a rewrite may be missed; autovacuum still analyzes.)
REMEMBER_STORAGE = (
    "SELECT set_config('migrator.storage_before', (SELECT greatest(max(oid), (SELECT "
    "max((SELECT max(relfilenode) FROM pg_class WHERE reltablespace = t.oid)) FROM "
    "(SELECT 0::oid AS oid UNION ALL SELECT oid FROM pg_tablespace) t)) FROM pg_class)::text, "
    "true)"
)
# Before COMMIT: of the relations the file wrote to (its backend's locks, so no scan of every
# table), those it rewrote or whose rows it changed past the thresholds, from the live
# counters of its own transaction; their names are the names after the file. A file's RESET
# ALL resets the remembered value: then rewrites are not told, row counts still are.
STALE_RELATIONS = (
    "SELECT json_agg(json_build_array(nspname, relname, rewritten, changed) "
    "ORDER BY nspname, relname)::text FROM (SELECT n.nspname, c.relname, "
    "c.oid <= nullif(current_setting('migrator.storage_before', true), '')::oid "
    "AND c.relfilenode > nullif(current_setting('migrator.storage_before', true), '')::oid "
    "AS rewritten, "
    "pg_stat_get_xact_tuples_inserted(c.oid) + pg_stat_get_xact_tuples_updated(c.oid) "
    "+ pg_stat_get_xact_tuples_deleted(c.oid) AS changed, "
    "greatest(c.reltuples, 0) AS reltuples "
    "FROM (SELECT DISTINCT relation FROM pg_locks WHERE pid = pg_backend_pid() "
    f"AND locktype = 'relation' AND granted AND mode IN ({WRITE_LOCKS})) l "
    "JOIN pg_class c ON c.oid = l.relation JOIN pg_namespace n ON n.oid = c.relnamespace "
    f"WHERE {ANALYZED_KINDS}) measured "
    f"WHERE rewritten OR changed > {ANALYZE_ROWS} "
    f"OR (changed > {ANALYZE_MIN_ROWS} AND changed > {ANALYZE_SHARE} * reltuples)"
)

# A word that can stand for a statement that changes rows or storage (the first match ends the
# search: a data file says INSERT at once). Conservative: a comment mentioning one also counts.
ROW_CHANGING_WORDS = re.compile(
    r"\b(?:insert|update|delete|copy|merge|alter|cluster|refresh|truncate|vacuum|do|call|"
    r"select|execute|perform)\b",
    re.IGNORECASE,
)

REWRITTEN = "rewritten"
ROWS_CHANGED = "rows changed"
NOT_REFRESHED = "statistics_not_refreshed"
AUTOVACUUM_WILL = "the file is applied; autovacuum analyzes the relation later"


@dataclass(frozen=True)
class StaleRelation:
    """A relation the file rewrote or whose rows it changed past the thresholds."""

    schema: str
    name: str
    rewritten: bool
    rows_changed: int

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def reason(self) -> str:
        return REWRITTEN if self.rewritten else ROWS_CHANGED


def envelope_statements(
    config: Config, text: str = "INSERT"
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(after BEGIN, before COMMIT): the statements a transactional file's round trip carries;
    none for a file whose ``text`` has no word that can change rows or rewrite a table.

    >>> envelope_statements(Config(analyze_after_migrate=False))
    ((), ())
    >>> envelope_statements(Config(), "CREATE TABLE t (id bigint PRIMARY KEY);")
    ((), ())
    """
    if not config.analyze_after_migrate or not may_change_rows(text):
        return (), ()
    return (REMEMBER_STORAGE,), (STALE_RELATIONS,)


def may_change_rows(text: str) -> bool:
    """False when no statement of ``text`` can change a table's rows or storage: no DML, no
    ALTER, CLUSTER, REFRESH, TRUNCATE, VACUUM, and no code (DO, CALL, a SELECT or EXECUTE of a
    function) that could. Most schema files of a release (CREATE TABLE, CREATE INDEX on a new
    table, a function's definition) then pay nothing for the measurement.

    >>> may_change_rows("CREATE TABLE t (id bigint);"), may_change_rows("UPDATE t SET x = 1;")
    (False, True)
    """
    return ROW_CHANGING_WORDS.search(text) is not None


def stale_relations(
    results: Sequence[pq.abc.PGresult], after: Sequence[str]
) -> list[StaleRelation]:
    """The relations STALE_RELATIONS found, from the round trip's ``results`` (counted from the
    end: ``after`` is the tail of statements sent after the file)."""
    if STALE_RELATIONS not in after:
        return []
    found = results[list(after).index(STALE_RELATIONS) - len(after)].get_value(0, 0)
    return [
        StaleRelation(schema, name, rewritten, int(changed))
        for schema, name, rewritten, changed in json.loads(found or b"[]")
    ]


def refresh(
    conn: psycopg.Connection[Any], config: Config, version: str, stale: Sequence[StaleRelation]
) -> None:
    """ANALYZE each of ``stale`` in its own short transaction, under the run's DDL lock timeout.

    ANALYZE takes SHARE UPDATE EXCLUSIVE (it blocks neither reads nor writes, but waits behind
    DDL and a running VACUUM): a failure is a warning, the file stays applied.
    """
    for relation in stale:
        start = time.monotonic()
        try:
            _analyze(conn, config, relation)
        except psycopg.Error as error:
            if not error.sqlstate or session_lost(error, conn):
                raise  # the connection, not ANALYZE: the run's usual handling
            log.warning(
                NOT_REFRESHED,
                version=version,
                relation=relation.qualified,
                reason=relation.reason,
                sqlstate=error.sqlstate,
                server_message=error.diag.message_primary,
                outcome=AUTOVACUUM_WILL,
            )
            continue
        log.info(
            "statistics_refreshed",
            version=version,
            relation=relation.qualified,
            reason=relation.reason,
            rows_changed=relation.rows_changed,
            duration_ms=round((time.monotonic() - start) * 1000),
        )


def _analyze(conn: psycopg.Connection[Any], config: Config, relation: StaleRelation) -> None:
    with conn.transaction():
        conn.execute(f"SET LOCAL lock_timeout = '{round(config.ddl_lock_timeout * 1000)}ms'")
        conn.execute(f"SET LOCAL statement_timeout = '{round(config.statement_timeout * 1000)}ms'")
        conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(relation.schema, relation.name)))
