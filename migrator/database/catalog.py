"""The cluster's catalog, as the runner asks it: which databases and roles exist.

For example, on a connection to the maintenance database::

    database_exists(admin, "auth_service"), role_exists(admin, "auth_service")  # (True, True)
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

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


def role_exists(conn: psycopg.Connection[Any], role: str) -> bool:
    return conn.execute(ROLE_EXISTS, (role,)).fetchone() is not None
