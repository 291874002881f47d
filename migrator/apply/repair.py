"""Repairs before re-running a non-transactional file: an interrupted index build leaves it INVALID.

For example, on an autocommit connection, for a ``CREATE INDEX CONCURRENTLY`` statement::

    drop_invalid_index(conn, concurrent_index(statement.text), "004_add_index")
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from migrator.files.sql import ConcurrentIndex
from migrator.logs import get_logger

log = get_logger("repair")

# The index of that name on that table, only when invalid: a valid one is left to IF NOT EXISTS.
INVALID_INDEX = """
SELECT n.nspname, c.relname
FROM pg_index i
JOIN pg_class c ON c.oid = i.indexrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relname = %s AND i.indrelid = to_regclass(%s) AND NOT i.indisvalid
"""
DROP_INDEX = "DROP INDEX CONCURRENTLY IF EXISTS {index}"


def drop_invalid_index(
    conn: psycopg.Connection[Any], target: ConcurrentIndex, version: str
) -> None:
    """Drop the index ``target`` names when a previous build left it invalid (autocommit)."""
    row = conn.execute(INVALID_INDEX, (target.name, target.table)).fetchone()
    if row is None:
        return
    schema, name = row
    conn.execute(sql.SQL(DROP_INDEX).format(index=sql.Identifier(schema, name)))
    log.warning(
        "invalid_index_dropped",
        version=version,
        index=f"{schema}.{name}",
        reason="left invalid by an interrupted CREATE INDEX CONCURRENTLY; it is built again",
    )
