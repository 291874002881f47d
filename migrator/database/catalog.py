"""The cluster's catalog, as the runner asks it: which databases and roles exist.

For example, on a connection to the maintenance database::

    database_exists(admin, "auth_service"), role_exists(admin, "auth_service")  # (True, True)
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from migrator.errors import ConfigError
from migrator.history.name import TableName

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
