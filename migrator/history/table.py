"""The history table, public.schema_migrations: create it, read it, record a migration.

For example, on the owner's connection::

    ensure_history_table(conn)
    read_history(conn)["001_initial_production_schema"].checksum  # 'bcfa8f0f...'
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import pq, sql

from migrator.database.catalog import CREATED_MEANWHILE, revoke_from_others
from migrator.errors import HistoryMismatchError, PermissionDeniedError
from migrator.files.migration import Migration
from migrator.history.foreign_reads import refuse_foreign_history

HISTORY_SCHEMA = "public"
HISTORY_TABLE = "schema_migrations"
QUALIFIED_NAME = f"{HISTORY_SCHEMA}.{HISTORY_TABLE}"

# The one statement that creates the history table, whichever command comes first (migrate,
# bootstrap, baseline, adopt, the lint's scratch database). The owner's default privileges
# (000 grants the runtime role INSERT, UPDATE, DELETE on new tables) must not reach it: a role
# that writes the history can have a pending file skipped or a release blocked. So, in the
# same round trip (one implicit transaction), every privilege but SELECT of a role other than
# the owner is revoked (create_table); it also mends a table an older release created.
CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS public.schema_migrations (
    version      text PRIMARY KEY,
    description  text,
    checksum     text,
    applied_at   timestamptz NOT NULL DEFAULT now(),
    execution_ms integer,
    applied_by   text DEFAULT current_user
);
"""
COLUMNS = (
    "SELECT column_name FROM information_schema.columns WHERE table_schema = %s AND table_name = %s"
)
EXPECTED_COLUMNS = (
    "version",
    "description",
    "checksum",
    "applied_at",
    "execution_ms",
    "applied_by",
)
ERR_CANNOT_CREATE = (
    "user {user} cannot create objects in schema public of database {dbname}: run once with "
    "DB_ADMIN_USER and DB_ADMIN_PASSWORD (bootstrap), or GRANT CREATE ON SCHEMA public TO {user}"
)
ERR_ALTERED = (
    "{table} lacks the column(s) {missing}: it was altered by hand; restore it "
    "(see README, History table) before migrating"
)
TABLE_EXISTS = "SELECT to_regclass(%s) IS NOT NULL"
CAN_CREATE_IN_PUBLIC = "SELECT has_schema_privilege('public', 'CREATE')"
SELECT_ROWS = sql.SQL(
    "SELECT version, description, checksum, applied_at, execution_ms, applied_by FROM {table}"
).format(table=sql.Identifier(HISTORY_SCHEMA, HISTORY_TABLE))
INSERT_ROW = (
    f"INSERT INTO {QUALIFIED_NAME} (version, description, checksum, execution_ms) "
    "VALUES ({version}, {description}, {checksum}, {execution_ms})"
)
# Inside the migration's transaction now() is when it began: the server measures the file's
# time itself, so the row can travel in the same round trip as the file.
MEASURED_BY_SERVER = "(extract(epoch FROM clock_timestamp() - now()) * 1000)::integer"
UPSERT_ROW = sql.SQL(
    "INSERT INTO {table} AS h (version, description, checksum, execution_ms, applied_by) "
    "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (version) DO UPDATE SET "
    "description = EXCLUDED.description, checksum = EXCLUDED.checksum, applied_at = now(), "
    "execution_ms = EXCLUDED.execution_ms, applied_by = EXCLUDED.applied_by "
    # An unchanged script leaves its row alone: a re-run on every start is not news.
    "WHERE h.checksum IS DISTINCT FROM EXCLUDED.checksum"
).format(table=sql.Identifier(HISTORY_SCHEMA, HISTORY_TABLE))


@dataclass(frozen=True)
class AppliedMigration:
    """One row of schema_migrations."""

    version: str
    description: str | None
    checksum: str | None
    applied_at: datetime
    execution_ms: int | None
    applied_by: str | None


def history_table_exists(conn: psycopg.Connection[Any]) -> bool:
    return table_exists(conn, QUALIFIED_NAME)


def table_exists(conn: psycopg.Connection[Any], qualified_name: str) -> bool:
    row = conn.execute(TABLE_EXISTS, (qualified_name,)).fetchone()
    return bool(row and row[0])


def ensure_history_table(conn: psycopg.Connection[Any]) -> None:
    """Create the table if missing, once, even when another session creates it at that moment;
    unless another tool's history is there: it must be adopted first.

    The migration lock serialises runners; a creation outside it (a hand-run script, an old
    runner) can still race CREATE TABLE IF NOT EXISTS into a unique violation on pg_type, or
    into "relation/type already exists" when the other session committed between the check and
    the insert: each means the table is there once the other session is done.
    """
    refuse_foreign_history(conn)
    try:
        create_table(conn)
    except CREATED_MEANWHILE:
        in_transaction = conn.info.transaction_status != pq.TransactionStatus.IDLE
        if in_transaction or not history_table_exists(conn):
            raise


def create_table(conn: psycopg.Connection[Any]) -> None:
    """Create the history table if missing; only its owner may write it, in one round trip."""
    conn.execute(CREATE_TABLE + ";" + keep_writes_to_owner(conn, QUALIFIED_NAME))


def keep_writes_to_owner(conn: psycopg.Connection[Any], relation: str) -> str:
    """The statement that leaves only SELECT to roles other than the owner of ``relation``.

    A history table created over the owner's login gets the owner's default privileges (000
    grants the runtime role INSERT, UPDATE, DELETE on new tables): a role that writes the
    history can have a pending file skipped or a release blocked.
    """
    return revoke_from_others(conn, relation, kept=("SELECT",))


def read_history(conn: psycopg.Connection[Any]) -> dict[str, AppliedMigration]:
    """Rows by version; an absent table reads as an empty history."""
    if not history_table_exists(conn):
        return {}
    try:
        return select_history(conn)
    except psycopg.errors.UndefinedColumn:
        check_columns(conn)  # only now: the common read pays no catalog query for it
        raise


def read_own_history(conn: psycopg.Connection[Any]) -> dict[str, AppliedMigration]:
    """The history, for a report; an empty one next to another tool's is refused (exit 78)."""
    recorded = read_history(conn)
    if not recorded:  # another tool's history must be adopted, not reported as all pending
        refuse_foreign_history(conn)
    return recorded


def check_columns(conn: psycopg.Connection[Any]) -> None:
    """Refuse another tool's schema_migrations (exit 78), or one altered by hand (exit 65),
    naming every column it lacks."""
    refuse_foreign_history(conn)
    present = {row[0] for row in conn.execute(COLUMNS, (HISTORY_SCHEMA, HISTORY_TABLE))}
    missing = [name for name in EXPECTED_COLUMNS if name not in present]
    if missing:
        message = ERR_ALTERED.format(table=QUALIFIED_NAME, missing=", ".join(missing))
        raise HistoryMismatchError(message, missing=missing)


def select_history(conn: psycopg.Connection[Any]) -> dict[str, AppliedMigration]:
    """Rows by version in one query; raises psycopg.errors.UndefinedTable without the table."""
    return {row[0]: AppliedMigration(*row) for row in conn.execute(SELECT_ROWS).fetchall()}


def insert_row(
    conn: psycopg.Connection[Any], migration: Migration, execution_ms: int | None = None
) -> str:
    """The INSERT that records ``migration``; without ``execution_ms`` the server measures it.

    Plain text with values quoted by libpq, so it can be sent with the file's own text.
    For example, on an open connection::

        insert_row(conn, migration)
        # "INSERT INTO public.schema_migrations (...) VALUES ('002_add_feature', 'add feature', ..."
    """
    quote = pq.Escaping(conn.pgconn).escape_literal
    encoding = conn.info.encoding

    def literal(value: str) -> str:
        return quote(value.encode(encoding)).decode(encoding)

    return INSERT_ROW.format(
        version=literal(migration.version),
        description=literal(migration.description),
        checksum=literal(migration.checksum),
        execution_ms=MEASURED_BY_SERVER if execution_ms is None else int(execution_ms),
    )


def record(conn: psycopg.Connection[Any], migration: Migration, execution_ms: int) -> None:
    conn.execute(insert_row(conn, migration, execution_ms).encode(conn.info.encoding))


def record_repeatable(
    conn: psycopg.Connection[Any], migration: Migration, execution_ms: int, applied_by: str
) -> None:
    """The bootstrap script reruns every start: a changed checksum updates its row."""
    conn.execute(
        UPSERT_ROW,
        (migration.version, migration.description, migration.checksum, execution_ms, applied_by),
    )


DELETE_ROW = sql.SQL("DELETE FROM {table} WHERE version = %s").format(
    table=sql.Identifier(HISTORY_SCHEMA, HISTORY_TABLE)
)
INSERT_TAKEN_OVER = sql.SQL(
    "INSERT INTO {table} (version, description, checksum, applied_at, applied_by) "
    "VALUES (%s, %s, %s, coalesce(%s, now()), %s)"
).format(table=sql.Identifier(HISTORY_SCHEMA, HISTORY_TABLE))


def forget(conn: psycopg.Connection[Any], version: str) -> None:
    """Rolled back: the row goes, in the down part's transaction."""
    conn.execute(DELETE_ROW, (version,))


def record_taken_over(
    conn: psycopg.Connection[Any],
    rows: list[tuple[str, str, str, datetime | None, str]],
) -> None:
    """Rows (version, description, checksum, applied_at, applied_by) that ``adopt`` or
    ``baseline`` write for files applied by other means."""
    with conn.cursor() as cursor:
        cursor.executemany(INSERT_TAKEN_OVER, rows)


def record_again(conn: psycopg.Connection[Any], migration: Migration, execution_ms: int) -> None:
    """A repeatable migration applied again: its row takes the new checksum."""
    record_repeatable(conn, migration, execution_ms, conn.info.user)


def check_can_create(conn: psycopg.Connection[Any], user: str, dbname: str) -> None:
    """Without bootstrap, say what to do when the migration user cannot own objects."""
    row = conn.execute(CAN_CREATE_IN_PUBLIC).fetchone()
    if not (row and row[0]) and not history_table_exists(conn):
        raise PermissionDeniedError(ERR_CANNOT_CREATE.format(user=user, dbname=dbname))
