"""The cluster's catalog, as the runner asks it: which databases and roles exist.

For example, on a connection to the maintenance database::

    database_exists(admin, "auth_service"), role_exists(admin, "auth_service")  # (True, True)
"""

from __future__ import annotations

from typing import Any

import psycopg

# Where the admin connects to create, drop or look for a database.
MAINTENANCE_DATABASE = "postgres"

# What CREATE ... (IF NOT EXISTS) raises when another session creates the same object at that
# moment: a unique violation on pg_type or pg_class, or "already exists" once it committed.
CREATED_MEANWHILE = (
    psycopg.errors.UniqueViolation,
    psycopg.errors.DuplicateTable,
    psycopg.errors.DuplicateObject,
)
DATABASE_EXISTS = "SELECT 1 FROM pg_catalog.pg_database WHERE datname = %s"
ROLE_EXISTS = "SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = %s"


def database_exists(conn: psycopg.Connection[Any], dbname: str) -> bool:
    return conn.execute(DATABASE_EXISTS, (dbname,)).fetchone() is not None


def role_exists(conn: psycopg.Connection[Any], role: str) -> bool:
    return conn.execute(ROLE_EXISTS, (role,)).fetchone() is not None
