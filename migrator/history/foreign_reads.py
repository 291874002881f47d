"""Reading other tools' history tables from the database; migrator.history.foreign decides what the
tables and their rows mean. For example, on a database dbmate migrated::

    tool = find_foreign_history(conn)  # dbmate's Tool, or None
    read_foreign_history(conn, tool).applied.keys()  # dict_keys(['20240101120000'])
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from migrator.history.foreign import (
    ADOPTED_BY,
    SCHEMA,
    TOOLS,
    ForeignHistory,
    Tool,
    foreign_history_error,
    tool_in,
)
from migrator.history.name import TableName

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


TABLE_EXISTS = "SELECT to_regclass(%s) IS NOT NULL"
ADOPTED_ROWS = "SELECT EXISTS (SELECT FROM {table} WHERE applied_by = %s)"


def refuse_foreign_history(conn: psycopg.Connection[Any], history: TableName) -> None:
    """Exit 78 before anything is applied on a database another tool migrated.

    Another tool's table is looked for under its own name, whatever MIGRATIONS_TABLE says
    (``history``), and refused until it is adopted: a table that adopt left under its name
    (MIGRATIONS_TABLE elsewhere, e.g. golang-migrate's, which the history's own files alter)
    is known by the rows adopted from it into ``history``.
    """
    tool = find_foreign_history(conn)
    if tool is not None and not adopted_into(conn, tool, history):
        raise foreign_history_error(tool)


def adopted_into(conn: psycopg.Connection[Any], tool: Tool, history: TableName) -> bool:
    """Whether ``history`` holds rows adopted from ``tool``, whose table is beside it."""
    if in_place_of(tool, history):
        return False  # the tool's table stands where the history goes: it is not adopted
    row = conn.execute(TABLE_EXISTS, (history.regclass,)).fetchone()
    if not (row and row[0]):
        return False
    query = sql.SQL(ADOPTED_ROWS).format(table=history.identifier)
    found = conn.execute(query, (ADOPTED_BY.format(tool=tool.name),)).fetchone()
    return bool(found and found[0])


def in_place_of(tool: Tool, history: TableName) -> bool:
    """Whether ``tool``'s table has the name of the runner's history table (then it must be
    renamed before the runner can create its own).

    >>> from migrator.history.foreign import TOOLS
    >>> in_place_of(TOOLS[0], TableName()), in_place_of(TOOLS[0], TableName("public", "h"))
    (True, False)
    """
    return (SCHEMA, tool.table) == (history.schema, history.name)
