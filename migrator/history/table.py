"""The history table (MIGRATIONS_TABLE, public.schema_migrations unless set): create it, read
it, record a migration. Every function takes the table's name (a TableName the configuration
built); none reads the setting itself.

For example, on the owner's connection::

    ensure_history_table(conn, table)
    read_history(conn, table)["001_initial_production_schema"].checksum  # 'bcfa8f0f...'
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import pq, sql

from migrator.database.catalog import (
    CREATED_MEANWHILE,
    check_history_schema,
    no_schema,
    revoke_from_others,
)
from migrator.errors import ConfigError, HistoryMismatchError, PermissionDeniedError
from migrator.files.migration import Migration
from migrator.history.foreign_reads import refuse_foreign_history
from migrator.history.name import TableName

# The one statement that creates the history table, whichever command comes first (migrate,
# bootstrap, baseline, adopt, the lint's scratch database). The owner's default privileges
# (000 grants the runtime role INSERT, UPDATE, DELETE on new tables) must not reach it: a role
# that writes the history can have a pending file skipped or a release blocked. So, in the
# same round trip (one implicit transaction), every privilege but SELECT of a role other than
# the owner is revoked (create_table); it also mends a table an older release created.
CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS {table} (
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
# Without its key column a table is not a history at all (MIGRATIONS_TABLE names another
# table): a setting to correct (78), not a history to restore (65).
KEY_COLUMN = "version"
# Tables, ordinary or partitioned; a view, a sequence or a foreign table is not a history.
TABLE_KINDS = ("r", "p")
ERR_CANNOT_CREATE = (
    "user {user} cannot create objects in schema {schema} of database {dbname}: run once with "
    "DB_ADMIN_USER and DB_ADMIN_PASSWORD (bootstrap), or GRANT CREATE ON SCHEMA {schema} TO {user}"
)
ERR_ALTERED = (
    "{table} lacks the column(s) {missing}: it was altered by hand; restore it "
    "(see README, History table) before migrating"
)
ERR_NOT_A_HISTORY = (
    "MIGRATIONS_TABLE names {table}, which is {what}, not a migration history: "
    "choose another MIGRATIONS_TABLE (or unset it for public.schema_migrations)"
)
KIND_NAMES = {"v": "a view", "m": "a materialized view", "S": "a sequence", "f": "a foreign table"}
# (the relation's kind or NULL, whether its schema exists), in the read's one round trip.
TABLE_EXISTS = (
    "SELECT (SELECT c.relkind::text FROM pg_class c WHERE c.oid = to_regclass(%s)), "
    "EXISTS (SELECT FROM pg_namespace WHERE nspname = %s)"
)
CAN_CREATE_IN = "SELECT has_schema_privilege(%s, 'CREATE')"
SELECT_ROWS = (
    "SELECT version, description, checksum, applied_at, execution_ms, applied_by FROM {table}"
)
INSERT_ROW = (
    "INSERT INTO {table} (version, description, checksum, execution_ms) "
    "VALUES ({version}, {description}, {checksum}, {execution_ms})"
)
# Inside the migration's transaction now() is when it began: the server measures the file's
# time itself, so the row can travel in the same round trip as the file.
MEASURED_BY_SERVER = "(extract(epoch FROM clock_timestamp() - now()) * 1000)::integer"
UPSERT_ROW = (
    "INSERT INTO {table} AS h (version, description, checksum, execution_ms, applied_by) "
    "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (version) DO UPDATE SET "
    "description = EXCLUDED.description, checksum = EXCLUDED.checksum, applied_at = now(), "
    "execution_ms = EXCLUDED.execution_ms, applied_by = EXCLUDED.applied_by "
    # An unchanged script leaves its row alone: a re-run on every start is not news.
    "WHERE h.checksum IS DISTINCT FROM EXCLUDED.checksum"
)


def _on(statement: str, table: TableName) -> sql.Composed:
    """``statement`` with ``{table}`` replaced by the quoted qualified name."""
    return sql.SQL(statement).format(table=table.identifier)


@dataclass(frozen=True)
class AppliedMigration:
    """One row of schema_migrations."""

    version: str
    description: str | None
    checksum: str | None
    applied_at: datetime
    execution_ms: int | None
    applied_by: str | None


def history_table_exists(conn: psycopg.Connection[Any], table: TableName) -> bool:
    """Whether the history table is there; ConfigError (78) when MIGRATIONS_TABLE names a schema
    that does not exist or a relation that is not a table."""
    return table_exists(conn, table, setting=True)


def table_exists(conn: psycopg.Connection[Any], table: TableName, *, setting: bool = False) -> bool:
    """Whether ``table`` exists; with ``setting`` (it is MIGRATIONS_TABLE), a missing schema or a
    relation that is not a table is refused (78), in the same query."""
    row = conn.execute(TABLE_EXISTS, (table.regclass, table.schema)).fetchone()
    kind, schema_exists = row if row else (None, False)
    if setting and not schema_exists:
        raise no_schema(conn, table)
    if setting and kind is not None and kind not in TABLE_KINDS:
        what = KIND_NAMES.get(kind, f"a relation of kind {kind!r}")
        raise ConfigError(ERR_NOT_A_HISTORY.format(table=table, what=what), table=str(table))
    return kind is not None


def ensure_history_table(conn: psycopg.Connection[Any], table: TableName) -> None:
    """Create the table if missing, once, even when another session creates it at that moment;
    unless another tool's history is there and not adopted: it must be adopted first.

    The migration lock serialises runners; a creation outside it (a hand-run script, an old
    runner) can still race CREATE TABLE IF NOT EXISTS into a unique violation on pg_type, or
    into "relation/type already exists" when the other session committed between the check and
    the insert: each means the table is there once the other session is done.
    """
    refuse_foreign_history(conn, table)
    check_history_schema(conn, table)
    try:
        create_table(conn, table)
    except CREATED_MEANWHILE:
        in_transaction = conn.info.transaction_status != pq.TransactionStatus.IDLE
        if in_transaction or not history_table_exists(conn, table):
            raise


def ensure_schema(conn: psycopg.Connection[Any], table: TableName) -> None:
    """In a scratch database (lint, baseline --verify), make the history's schema, which the
    bootstrap script or a superuser made on the target; the scratch database is the owner's."""
    if table.schema != "public":
        schema = sql.Identifier(table.schema)
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(schema))


def create_table(conn: psycopg.Connection[Any], table: TableName) -> None:
    """Create the history table if missing; only its owner may write it, in one round trip."""
    create = _on(CREATE_TABLE, table).as_string(conn)
    conn.execute(create + ";" + keep_writes_to_owner(conn, table))


def keep_writes_to_owner(conn: psycopg.Connection[Any], relation: TableName) -> str:
    """The statement that leaves only SELECT to roles other than the owner of ``relation``.

    A history table created over the owner's login gets the owner's default privileges (000
    grants the runtime role INSERT, UPDATE, DELETE on new tables): a role that writes the
    history can have a pending file skipped or a release blocked.
    """
    return revoke_from_others(conn, relation.regclass, kept=("SELECT",))


def read_history(conn: psycopg.Connection[Any], table: TableName) -> dict[str, AppliedMigration]:
    """Rows by version; an absent table reads as an empty history."""
    if not history_table_exists(conn, table):
        return {}
    try:
        return select_history(conn, table)
    except psycopg.errors.UndefinedColumn:
        check_columns(conn, table)  # only now: the common read pays no catalog query for it
        raise


def read_own_history(
    conn: psycopg.Connection[Any], table: TableName
) -> dict[str, AppliedMigration]:
    """The history, for a report; an empty one next to another tool's is refused (exit 78)."""
    recorded = read_history(conn, table)
    if not recorded:  # another tool's history must be adopted, not reported as all pending
        refuse_foreign_history(conn, table)
    return recorded


def check_columns(conn: psycopg.Connection[Any], table: TableName) -> None:
    """Refuse another tool's schema_migrations (exit 78), a table that is no history at all
    (78), or a history altered by hand (exit 65), naming every column it lacks."""
    refuse_foreign_history(conn, table)
    present = {row[0] for row in conn.execute(COLUMNS, (table.schema, table.name))}
    if KEY_COLUMN not in present:
        what = f"a table without a {KEY_COLUMN} column"
        raise ConfigError(ERR_NOT_A_HISTORY.format(table=table, what=what), table=str(table))
    missing = [name for name in EXPECTED_COLUMNS if name not in present]
    if missing:
        message = ERR_ALTERED.format(table=table, missing=", ".join(missing))
        raise HistoryMismatchError(message, missing=missing)


def select_history(conn: psycopg.Connection[Any], table: TableName) -> dict[str, AppliedMigration]:
    """Rows by version in one query; raises psycopg.errors.UndefinedTable without the table."""
    rows = conn.execute(_on(SELECT_ROWS, table)).fetchall()
    return {row[0]: AppliedMigration(*row) for row in rows}


def insert_row(
    conn: psycopg.Connection[Any],
    table: TableName,
    migration: Migration,
    execution_ms: int | None = None,
) -> str:
    """The INSERT that records ``migration``; without ``execution_ms`` the server measures it.

    Plain text with values quoted by libpq, so it can be sent with the file's own text.
    For example, on an open connection::

        insert_row(conn, table, migration)
        # "INSERT INTO public.schema_migrations (...) VALUES ('002_add_feature', 'add feature', ..."
    """
    quote = pq.Escaping(conn.pgconn).escape_literal
    encoding = conn.info.encoding

    def literal(value: str) -> str:
        return quote(value.encode(encoding)).decode(encoding)

    return INSERT_ROW.format(
        table=table.regclass,
        version=literal(migration.version),
        description=literal(migration.description),
        checksum=literal(migration.checksum),
        execution_ms=MEASURED_BY_SERVER if execution_ms is None else int(execution_ms),
    )


def record(
    conn: psycopg.Connection[Any], table: TableName, migration: Migration, execution_ms: int
) -> None:
    conn.execute(insert_row(conn, table, migration, execution_ms).encode(conn.info.encoding))


def record_repeatable(
    conn: psycopg.Connection[Any],
    table: TableName,
    migration: Migration,
    execution_ms: int,
    applied_by: str,
) -> None:
    """The bootstrap script reruns every start: a changed checksum updates its row."""
    conn.execute(
        _on(UPSERT_ROW, table),
        (migration.version, migration.description, migration.checksum, execution_ms, applied_by),
    )


DELETE_ROW = "DELETE FROM {table} WHERE version = %s"
INSERT_TAKEN_OVER = (
    "INSERT INTO {table} (version, description, checksum, applied_at, applied_by) "
    "VALUES (%s, %s, %s, coalesce(%s, now()), %s)"
)


def forget(conn: psycopg.Connection[Any], table: TableName, version: str) -> None:
    """Rolled back: the row goes, in the down part's transaction."""
    conn.execute(_on(DELETE_ROW, table), (version,))


def record_taken_over(
    conn: psycopg.Connection[Any],
    table: TableName,
    rows: list[tuple[str, str, str, datetime | None, str]],
) -> None:
    """Rows (version, description, checksum, applied_at, applied_by) that ``adopt`` or
    ``baseline`` write for files applied by other means."""
    with conn.cursor() as cursor:
        cursor.executemany(_on(INSERT_TAKEN_OVER, table), rows)


def record_again(
    conn: psycopg.Connection[Any], table: TableName, migration: Migration, execution_ms: int
) -> None:
    """A repeatable migration applied again: its row takes the new checksum."""
    record_repeatable(conn, table, migration, execution_ms, conn.info.user)


def check_can_create(
    conn: psycopg.Connection[Any], table: TableName, user: str, dbname: str
) -> None:
    """Without bootstrap, say what to do when the migration user cannot own objects."""
    if history_table_exists(conn, table):  # also: the schema exists (else 78)
        return
    row = conn.execute(CAN_CREATE_IN, (table.schema,)).fetchone()
    if not (row and row[0]):
        raise PermissionDeniedError(
            ERR_CANNOT_CREATE.format(user=user, schema=table.schema, dbname=dbname)
        )


# Tables shaped as the runner's history (its columns, whatever their order), other than the
# configured one: where a database's history went when MIGRATIONS_TABLE was changed or unset.
SAME_SHAPE = """
SELECT n.nspname, c.relname
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND c.oid IS DISTINCT FROM to_regclass(%s)
  AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%%'
  AND ARRAY(SELECT a.attname::text FROM pg_catalog.pg_attribute a
            WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
            ORDER BY a.attname) = %s::text[]
ORDER BY 1, 2
"""
ERR_HISTORY_ELSEWHERE = (
    "MIGRATIONS_TABLE names {table}, which records nothing, but {other} records {count} of this "
    "folder's files: set MIGRATIONS_TABLE={other} (or rename that table to {table}); a new "
    "history would apply every file again"
)


def refuse_history_elsewhere(
    conn: psycopg.Connection[Any], table: TableName, versions: list[str]
) -> None:
    """With an empty history and files pending: another table of the history's shape that
    records some of ``versions`` means MIGRATIONS_TABLE changed on a migrated database (78).

    A second service's history in the same database records other versions and is left alone;
    a table the owner cannot read is not the owner's history.
    """
    shaped = conn.execute(SAME_SHAPE, (table.regclass, sorted(EXPECTED_COLUMNS))).fetchall()
    for schema, name in shaped:
        other = TableName(schema, name)
        query = sql.SQL("SELECT count(*) FROM {} WHERE version = ANY(%s)").format(other.identifier)
        try:
            with conn.transaction():
                row = conn.execute(query, (versions,)).fetchone()
        except psycopg.errors.InsufficientPrivilege:
            continue
        if row and row[0]:
            message = ERR_HISTORY_ELSEWHERE.format(table=table, other=other, count=row[0])
            raise ConfigError(message, table=str(table), other=str(other))
