"""The cluster's catalog, as the runner asks it: which databases and roles exist.

For example, on a connection to the maintenance database::

    database_exists(admin, "auth_service"), role_exists(admin, "auth_service")  # (True, True)
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql

from migrator.errors import ConfigError, MigrationFilesError
from migrator.history.name import TableName

if TYPE_CHECKING:
    from migrator.files.batch import BatchSpec

# Where the admin connects to create, drop or look for a database.
MAINTENANCE_DATABASE = "postgres"

# What CREATE ... (IF NOT EXISTS) raises when another session creates the same object at that
# moment: a unique violation on pg_type or pg_class, or "already exists" once it committed.
CREATED_MEANWHILE = (
    psycopg.errors.UniqueViolation,
    psycopg.errors.DuplicateTable,
    psycopg.errors.DuplicateObject,
)
# Every privilege a role other than the owner holds on a relation, revoked but the ``kept``
# ones; a session that cannot act as the owner changes none.
REVOKE_FROM_OTHERS = """
DO $migrator$
DECLARE
    granted record;
BEGIN
    FOR granted IN
        SELECT a.grantee, a.privilege_type
        FROM pg_catalog.pg_class c, pg_catalog.aclexplode(c.relacl) a
        WHERE c.oid OPERATOR(pg_catalog.=) pg_catalog.to_regclass({relation})
          AND a.grantee OPERATOR(pg_catalog.<>) c.relowner
          AND a.privilege_type OPERATOR(pg_catalog.<>) ALL ({kept}::pg_catalog.text[])
          AND pg_catalog.pg_has_role(c.relowner, 'USAGE')
    LOOP
        EXECUTE pg_catalog.format(
            'REVOKE %s ON %s FROM %s',
            granted.privilege_type,
            pg_catalog.to_regclass({relation}),
            CASE WHEN granted.grantee OPERATOR(pg_catalog.=) 0 THEN 'PUBLIC'
                 ELSE granted.grantee::pg_catalog.regrole::pg_catalog.text END);
    END LOOP;
END
$migrator$"""
# Who owns the history's schema, and whether that is the current user (or a role it is a member
# of) or a superuser: any other owner can drop or rename the history table and its lock view.
SCHEMA_OWNER = """
SELECT n.nspowner::regrole::text, pg_has_role(n.nspowner, 'USAGE') OR r.rolsuper
FROM pg_namespace n JOIN pg_roles r ON r.oid = n.nspowner WHERE n.nspname = %s
"""
ERR_NO_SCHEMA = (
    "MIGRATIONS_TABLE names schema {schema}, which does not exist in database {dbname}: "
    "create it in the bootstrap script (000, owned by DB_USER), or fix MIGRATIONS_TABLE"
)
ERR_SCHEMA_OWNER = (
    "MIGRATIONS_TABLE names schema {schema}, owned by {owner}, who could drop or replace the "
    "history: ALTER SCHEMA {schema} OWNER TO {user} (as a superuser), or choose a schema of "
    "{user}'s"
)
DATABASE_EXISTS = "SELECT 1 FROM pg_catalog.pg_database WHERE datname = %s"
ROLE_EXISTS = "SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = %s"


def database_exists(conn: psycopg.Connection[Any], dbname: str) -> bool:
    return conn.execute(DATABASE_EXISTS, (dbname,)).fetchone() is not None


def revoke_from_others(
    conn: psycopg.Connection[Any], relation: str, kept: tuple[str, ...] = ()
) -> str:
    """The statement that leaves the owner of ``relation`` the only role with privileges on it,
    but for the ``kept`` ones (e.g. SELECT). One statement, so it can join others in a round
    trip and their implicit transaction."""
    return REVOKE_FROM_OTHERS.format(
        relation=sql.Literal(relation).as_string(conn), kept=sql.Literal(list(kept)).as_string(conn)
    )


def check_history_schema(conn: psycopg.Connection[Any], relation: TableName) -> None:
    """Refuse (78) to create the history or its lock view (``relation``) in a schema that does
    not exist, or that a role other than the current user (or one it is a member of) and the
    superusers owns: that role could drop or replace them. Schema public is the bootstrap's
    (000 gives it to the owner): no query on the default path."""
    if relation.schema == "public":
        return
    row = conn.execute(SCHEMA_OWNER, (relation.schema,)).fetchone()
    if row is None:
        raise no_schema(conn, relation)
    owner, trusted = row
    if not trusted:
        message = ERR_SCHEMA_OWNER.format(schema=relation.schema, owner=owner, user=conn.info.user)
        raise ConfigError(message, schema=relation.schema, owner=owner)


def no_schema(conn: psycopg.Connection[Any], relation: TableName) -> ConfigError:
    """MIGRATIONS_TABLE's schema is not in the database (78)."""
    message = ERR_NO_SCHEMA.format(schema=relation.schema, dbname=conn.info.dbname)
    return ConfigError(message, schema=relation.schema)


def role_exists(conn: psycopg.Connection[Any], role: str) -> bool:
    return conn.execute(ROLE_EXISTS, (role,)).fetchone() is not None


# A batch file's table and key as the walk needs them (migrator/apply/batch.py): the table,
# its kind, the key column (NOT NULL?) and whether a valid, whole (not partial) btree index
# starts with it, so that "key > checkpoint ORDER BY key LIMIT n" reads only the batch.
BATCH_KEY = """
SELECT format('%%I.%%I', n.nspname, c.relname), c.relkind::text, a.attnum IS NOT NULL,
       coalesce(a.attnotnull, false),
       EXISTS (SELECT FROM pg_catalog.pg_index i
               JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
               JOIN pg_catalog.pg_am am ON am.oid = ic.relam
               WHERE i.indrelid = c.oid AND i.indkey[0] = a.attnum AND am.amname = 'btree'
                 AND i.indisvalid AND i.indisready AND i.indpred IS NULL)
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_catalog.pg_attribute a
       ON a.attrelid = c.oid AND a.attname = %s AND a.attnum > 0 AND NOT a.attisdropped
WHERE c.oid = pg_catalog.to_regclass(%s)
"""
ERR_BATCH_KEY = "{path}: line {line}: -- migrate:batch table={table} key={key}: {problem}"
NO_TABLE = "the table does not exist (yet); nothing of the file was run"
NOT_A_TABLE = "{table} is not a table; nothing of the file was run"
NO_KEY = "the table has no column {key}; nothing of the file was run"
NULLABLE_KEY = (
    "the key may be NULL, and a row whose key is NULL is in no batch (BETWEEN never holds for "
    "NULL): walk a NOT NULL column such as the primary key, or SET NOT NULL first; nothing of "
    "the file was run"
)
UNINDEXED_KEY = (
    "no valid btree index of the table starts with {key} (a partial one does not count): every "
    "batch would read the table; CREATE INDEX CONCURRENTLY in an earlier file; nothing of the "
    "file was run"
)


def refuse_unindexed_key(conn: psycopg.Connection[Any], spec: BatchSpec, path: Path) -> str:
    """Refuse (MigrationFilesError, exit 65, one line naming the file's header line) a batch
    whose table does not exist or is no table, whose key is no column of it, may be NULL, or
    is not the first column of a valid whole btree index; returns the table's qualified name,
    quoted, for the walk's statements. Run right before the file's first batch (a pre file of
    the same run may create the table) and by the lint."""
    table_text = ".".join(_quoted(part) for part in spec.table_parts)
    row = conn.execute(BATCH_KEY, (spec.key_name, table_text)).fetchone()
    problem = None
    if row is None:
        problem = NO_TABLE
    else:
        qualified, kind, has_key, not_null, indexed = row
        if kind not in ("r", "p"):
            problem = NOT_A_TABLE.format(table=qualified)
        elif not has_key:
            problem = NO_KEY.format(key=spec.key)
        elif not not_null:
            problem = NULLABLE_KEY
        elif not indexed:
            problem = UNINDEXED_KEY.format(key=spec.key)
    if problem is not None:
        message = ERR_BATCH_KEY.format(
            path=path, line=spec.line, table=spec.table, key=spec.key, problem=problem
        )
        raise MigrationFilesError(message, file=str(path), line=spec.line)
    assert row is not None
    return str(row[0])


def _quoted(part: str) -> str:
    return '"' + part.replace('"', '""') + '"'
