"""Bootstrap as the superuser: create the database, run 000_init_database.sql, set role passwords.

>>> bootstrap(config, files.bootstrap)   # only when DB_ADMIN_USER is set
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from migrator import history
from migrator.apply import Applier
from migrator.config import Config
from migrator.errors import ConfigError, PermissionDeniedError
from migrator.lock import advisory_lock, lock_key
from migrator.logs import get_logger
from migrator.migration import Migration
from migrator.wait import connect, wait_for_connection

log = get_logger("bootstrap")

MAINTENANCE_DATABASE = "postgres"
PASSWORD_ALGORITHM = b"scram-sha-256"
# 000_init_database.sql reads the role names from these settings (psql users get defaults).
OWNER_ROLE_SETTING = "migrator.owner_role"
APP_ROLE_SETTING = "migrator.app_role"

DATABASE_EXISTS = "SELECT 1 FROM pg_database WHERE datname = %s"
ROLE_EXISTS = "SELECT 1 FROM pg_roles WHERE rolname = %s"
# ROLE_PASSWORDS=on-create: only a role without a password (just created) gets one.
ROLE_HAS_PASSWORD = "SELECT rolpassword IS NOT NULL FROM pg_catalog.pg_authid WHERE rolname = %s"
CAN_CREATE_IN_PUBLIC = "SELECT has_schema_privilege('public', 'CREATE')"

ERR_ROLE_MISSING = "{setting} role {role} does not exist after {file}: create it there"
ERR_CANNOT_CREATE = (
    "user {user} cannot create objects in schema public of database {dbname}: run once with "
    "DB_ADMIN_USER and DB_ADMIN_PASSWORD (bootstrap), or GRANT CREATE ON SCHEMA public TO {user}"
)


def database_exists(conn: psycopg.Connection[Any], dbname: str) -> bool:
    return conn.execute(DATABASE_EXISTS, (dbname,)).fetchone() is not None


def bootstrap(config: Config, script: Migration | None) -> None:
    """Create the database if missing and run the bootstrap script, under the bootstrap lock."""
    admin_kwargs = config.connect_kwargs(admin=True, dbname=MAINTENANCE_DATABASE)
    with wait_for_connection(admin_kwargs, config.wait_timeout) as admin:
        key = lock_key("bootstrap", config.dbname)
        with advisory_lock(admin, key, config.migration_lock_timeout, name="bootstrap"):
            create_database_if_missing(admin, config.dbname)
            with connect(config.connect_kwargs(admin=True), config.wait_timeout) as conn:
                run_bootstrap_script(conn, config, script)


def create_database_if_missing(conn: psycopg.Connection[Any], dbname: str) -> None:
    if database_exists(conn, dbname):
        log.info("database_exists", dbname=dbname)
        return
    # CREATE DATABASE cannot run inside a transaction: the connection is in autocommit.
    conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    log.info("database_created", dbname=dbname)


def run_bootstrap_script(
    conn: psycopg.Connection[Any], config: Config, script: Migration | None
) -> None:
    """Run 000_*.sql with the role names set, then passwords and history, in its transaction."""
    for setting, value in ((OWNER_ROLE_SETTING, config.user), (APP_ROLE_SETTING, config.app_user)):
        conn.execute("SELECT set_config(%s, %s, false)", (setting, value))

    def finish(conn: psycopg.Connection[Any], migration: Migration, execution_ms: int) -> None:
        set_role_passwords(conn, config, migration)
        create_history_table_as(conn, config.user)
        history.record_repeatable(conn, migration, execution_ms, applied_by=config.admin_user or "")

    if script is None:
        log.info("bootstrap_script_missing", hint="no 000_*.sql in MIGRATIONS_DIR")
        return
    Applier(conn, config).apply(script, record=finish)
    log.info("bootstrap_done", version=script.version, dbname=config.dbname)


def set_role_passwords(conn: psycopg.Connection[Any], config: Config, script: Migration) -> None:
    """Send SCRAM verifiers computed by libpq: the cleartext never reaches the server's log."""
    for setting, role, password in (
        ("DB_USER", config.user, config.password),
        ("APP_DB_USER", config.app_user, config.app_password),
    ):
        if password is None:
            continue
        if conn.execute(ROLE_EXISTS, (role,)).fetchone() is None:
            raise ConfigError(ERR_ROLE_MISSING.format(setting=setting, role=role, file=script.path))
        if config.role_passwords == "on-create" and _has_password(conn, role):
            log.info("role_password_kept", role=role, reason="ROLE_PASSWORDS=on-create")
            continue
        verifier = conn.pgconn.encrypt_password(
            password.encode(), role.encode(), PASSWORD_ALGORITHM
        ).decode()
        conn.execute(
            sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(role), sql.Literal(verifier))
        )
        log.info("role_password_set", role=role, method="scram-sha-256")


def _has_password(conn: psycopg.Connection[Any], role: str) -> bool:
    row = conn.execute(ROLE_HAS_PASSWORD, (role,)).fetchone()
    return bool(row and row[0])


def create_history_table_as(conn: psycopg.Connection[Any], owner: str) -> None:
    """The migration user must own schema_migrations, so create it as that role."""
    conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(owner)))
    history.ensure_history_table(conn)
    conn.execute("RESET ROLE")


def check_can_create(conn: psycopg.Connection[Any], config: Config) -> None:
    """Without bootstrap, say what to do when the migration user cannot own objects."""
    row = conn.execute(CAN_CREATE_IN_PUBLIC).fetchone()
    if not (row and row[0]) and not history.history_table_exists(conn):
        raise PermissionDeniedError(
            ERR_CANNOT_CREATE.format(user=config.user, dbname=config.dbname)
        )
