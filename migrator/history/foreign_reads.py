"""Reading other tools' history tables from the database; migrator.history.foreign decides what the
tables and their rows mean. For example, on a database dbmate migrated::

    tool = find_foreign_history(conn)  # dbmate's Tool, or None
    read_foreign_history(conn, tool).applied.keys()  # dict_keys(['20240101120000'])
"""

from __future__ import annotations

from typing import Any

import psycopg

from migrator.history.foreign import (
    SCHEMA,
    TOOLS,
    ForeignHistory,
    Tool,
    foreign_history_error,
    tool_in,
)

# Columns of every candidate table in one query (only run when a run has work to do).
TABLE_COLUMNS = """
SELECT c.relname, array_agg(a.attname::text ORDER BY a.attnum)
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
WHERE n.nspname = %s AND c.relname = ANY(%s) AND c.relkind IN ('r', 'p')
GROUP BY c.relname
"""


def find_foreign_history(conn: psycopg.Connection[Any]) -> Tool | None:
    """The other tool whose history this database holds, or None."""
    tables = sorted({tool.table for tool in TOOLS})
    return tool_in(conn.execute(TABLE_COLUMNS, (SCHEMA, tables)).fetchall())


def read_foreign_history(conn: psycopg.Connection[Any], tool: Tool) -> ForeignHistory:
    """What ``tool`` recorded as applied, from its table's rows."""
    return tool.history(tool, conn.execute(tool.select()).fetchall())


def refuse_foreign_history(conn: psycopg.Connection[Any]) -> None:
    """Exit 78 before anything is applied on a database another tool migrated."""
    tool = find_foreign_history(conn)
    if tool is not None:
        raise foreign_history_error(tool)
