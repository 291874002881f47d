"""The checkpoints of batched data migrations: one row per batch file in progress, in the table
``<history>_batch`` (public.schema_migrations_batch by default), written in each batch's own
transaction; the row goes in the transaction that records the file in the history.

For example, on the owner's connection, inside a batch's transaction::

    ensure_checkpoint_table(conn, config.history_table)
    read_checkpoint(conn, config.history_table, "004_backfill")  # Checkpoint(checkpoint='5000', ..)
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import pq, sql

from migrator.database.catalog import CREATED_MEANWHILE, check_history_schema
from migrator.errors import MigrationFilesError, PermissionDeniedError
from migrator.files.migration import Migration
from migrator.history.name import TableName
from migrator.history.table import keep_writes_to_owner, table_exists

# Like the history, only its owner may write it: a role that could move a checkpoint could
# have rows skipped or done twice. Created with its revoke in one round trip (one implicit
# transaction), which also mends a table whose privileges were widened since.
CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS {table} (
    version    text PRIMARY KEY,
    checksum   text NOT NULL,
    checkpoint text,
    rows_done  bigint NOT NULL DEFAULT 0,
    batches    bigint NOT NULL DEFAULT 0,
    started_at timestamptz,
    updated_at timestamptz
)"""
SELECT_ROW = (
    "SELECT version, checksum, checkpoint, rows_done, batches, started_at, updated_at "
    "FROM {table} WHERE version = {version}"
)
SELECT_ROWS = (
    "SELECT version, checksum, checkpoint, rows_done, batches, started_at, updated_at FROM {table}"
)
# The batch's upper bound becomes the checkpoint, in the batch's own transaction.
UPSERT = (
    "INSERT INTO {table} AS c (version, checksum, checkpoint, rows_done, batches, started_at, "
    "updated_at) VALUES ({version}, {checksum}, {checkpoint}, {rows}, 1, now(), now()) "
    "ON CONFLICT (version) DO UPDATE SET checkpoint = EXCLUDED.checkpoint, "
    "rows_done = c.rows_done + EXCLUDED.rows_done, batches = c.batches + 1, updated_at = now()"
)
DELETE_ROW = "DELETE FROM {table} WHERE version = {version}"
# Who owns the table, and whether the runner's role is (or is a member of) that owner: a table
# another role planted under the name before the first backfill would let it move checkpoints.
OWNER = (
    "SELECT c.relowner::pg_catalog.regrole::text, pg_catalog.pg_has_role(c.relowner, 'USAGE') "
    "FROM pg_catalog.pg_class c WHERE c.oid = pg_catalog.to_regclass(%s)"
)
ERR_NOT_OWNED = (
    "{table} is owned by {owner}, not by {user}: that role could move the checkpoints of "
    "batched data migrations (rows skipped or done twice); drop it, or ALTER TABLE {table} "
    "OWNER TO {user}, as a superuser"
)
ERR_CHANGED = (
    "{file} changed since its backfill started (checkpoint at {checkpoint} after {batches} "
    "batch(es), recorded in {table}): restore the file as it was to resume, or, to start over "
    "from the first key with the new text, DELETE FROM {table} WHERE version = '{version}'"
)


@dataclass(frozen=True)
class Checkpoint:
    """One row of the checkpoint table: where a batch file's walk stands."""

    version: str
    checksum: str
    checkpoint: str | None  # the last key done, as text; None: no batch yet
    rows_done: int
    batches: int
    started_at: datetime | None
    updated_at: datetime | None

    def as_status(self) -> dict[str, Any]:
        """What ``status --json`` shows of a backfill in progress."""
        return {
            "checkpoint": self.checkpoint,
            "rows_done": self.rows_done,
            "batches": self.batches,
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "updated_at": self.updated_at.isoformat() if self.updated_at else None,
        }


def ensure_checkpoint_table(conn: psycopg.Connection[Any], history: TableName) -> None:
    """Create ``<history>_batch`` if missing (in the history's schema, with the same checks of
    who owns it), leaving only SELECT to other roles; once, even when another session creates
    it at that moment. One that another role owns is refused (PermissionDeniedError, 77)."""
    table = history.batch
    check_history_schema(conn, table)
    create = sql.SQL(CREATE_TABLE).format(table=table.identifier).as_string(conn)
    try:
        conn.execute((create + ";" + keep_writes_to_owner(conn, table)).encode(conn.info.encoding))
    except CREATED_MEANWHILE:
        if conn.info.transaction_status != pq.TransactionStatus.IDLE or not table_exists(
            conn, table
        ):
            raise
    row = conn.execute(OWNER, (table.regclass,)).fetchone()
    if row is not None and not row[1]:
        message = ERR_NOT_OWNED.format(table=table, owner=row[0], user=conn.info.user)
        raise PermissionDeniedError(message, table=str(table), owner=row[0])


def read_checkpoint(
    conn: psycopg.Connection[Any], history: TableName, version: str
) -> Checkpoint | None:
    """The checkpoint of ``version``, None when it has none (or there is no table yet)."""
    table = history.batch
    if not table_exists(conn, table):
        return None
    query = sql.SQL(SELECT_ROW).format(table=table.identifier, version=sql.Literal(version))
    row = conn.execute(query).fetchone()
    return Checkpoint(*row) if row else None


def read_checkpoints(conn: psycopg.Connection[Any], history: TableName) -> dict[str, Checkpoint]:
    """Every checkpoint by version, for ``status``; none without the table."""
    table = history.batch
    if not table_exists(conn, table):
        return {}
    rows = conn.execute(sql.SQL(SELECT_ROWS).format(table=table.identifier)).fetchall()
    return {row[0]: Checkpoint(*row) for row in rows}


def refuse_changed(migration: Migration, found: Checkpoint | None, history: TableName) -> None:
    """A checkpoint written for another text of the file: its keys may mean other work, so the
    walk is not resumed (exit 65, saying how to start over)."""
    if found is None or found.checksum == migration.checksum:
        return
    message = ERR_CHANGED.format(
        file=migration.path,
        checkpoint=found.checkpoint,
        batches=found.batches,
        table=history.batch,
        version=migration.version.replace("'", "''"),
    )
    raise MigrationFilesError(message, file=str(migration.path))


def upsert(
    conn: psycopg.Connection[Any],
    history: TableName,
    migration: Migration,
    checkpoint: str,
    rows: int,
) -> str:
    """The statement that moves ``migration``'s checkpoint to ``checkpoint`` after ``rows`` more
    rows: plain text, sent in the batch's transaction."""
    return (
        sql.SQL(UPSERT)
        .format(
            table=history.batch.identifier,
            version=sql.Literal(migration.version),
            checksum=sql.Literal(migration.checksum),
            checkpoint=sql.Literal(checkpoint),
            rows=sql.Literal(int(rows)),
        )
        .as_string(conn)
    )


def delete(conn: psycopg.Connection[Any], history: TableName, migration: Migration) -> str:
    """The statement that drops ``migration``'s checkpoint, sent with its history row."""
    query = sql.SQL(DELETE_ROW).format(
        table=history.batch.identifier, version=sql.Literal(migration.version)
    )
    return query.as_string(conn)
