"""Bootstrap as the superuser: create the database, run 000_init_database.sql, set role passwords.

The superuser's sessions are pinned and checked by database.trust first; 000's history row is
written by the owner. For example, only when DB_ADMIN_USER is set::

    owner_conn = bootstrap(config, files.bootstrap)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import sql

from migrator.apply.applier import Applier
from migrator.config import Config
from migrator.database import trust
from migrator.database.catalog import MAINTENANCE_DATABASE, database_exists, role_exists
from migrator.database.connect import connect, wait_for_connection
from migrator.database.lock import advisory_lock, lock_key
from migrator.errors import ConfigError, MigrationFailedError, MigrationFilesError
from migrator.files.migration import Migration
from migrator.history import table as history
from migrator.logs import get_logger

log = get_logger("bootstrap")

PASSWORD_ALGORITHM = b"scram-sha-256"
# 000_init_database.sql reads the role names from these settings (psql users get defaults).
OWNER_ROLE_SETTING = "migrator.owner_role"
APP_ROLE_SETTING = "migrator.app_role"

# ROLE_PASSWORDS=on-create: only a role without a password (just created) gets one.
ROLE_HAS_PASSWORD = "SELECT rolpassword IS NOT NULL FROM pg_catalog.pg_authid WHERE rolname = %s"

ERR_NO_BOOTSTRAP_SCRIPT = (
    "database {dbname} does not exist yet and MIGRATIONS_DIR holds no 000_*.sql bootstrap "
    "script: nothing was created; mount the folder with 000_init_database.sql"
)
# What an unqualified CREATE meets under the pinned path: an object created in pg_catalog
# (42501), or one that is already there (42723 function, 42710 object, 42P07 relation).
PINNED_PATH_SQLSTATES = frozenset({"42723", "42710", "42P07"})
HINT_PINNED_PATH = (
    "; bootstrap runs 000 with search_path = pg_catalog, pg_temp (pinned against objects "
    "other roles planted): qualify what it creates (public.name) and give CREATE EXTENSION "
    "its schema (CREATE EXTENSION pgcrypto SCHEMA public)"
)
ERR_ROLE_MISSING = "{setting} role {role} does not exist after {file}: create it there"
WARN_NOT_SILENCED = (
    "DB_ADMIN_USER is not a superuser and cannot keep the password statements out of the "
    "server's log; they carry SCRAM verifiers only, never the cleartext"
)


def bootstrap(
    config: Config, script: Migration | None, on_create: Callable[[], None] | None = None
) -> psycopg.Connection[Any] | None:
    """Create the database if missing and run the bootstrap script, under the bootstrap lock.

    Every check comes before the first change; the owner's table is written by the owner.
    ``on_create`` is called just before CREATE DATABASE (the caller reads ahead meanwhile).
    Returns the owner's connection that recorded the script, for the migration phase to go on
    with (the caller closes it), or None without a script.
    """
    trust.warn_owner_is_admin(config.user, config.admin_user)
    admin_kwargs = config.connect_kwargs(admin=True, dbname=MAINTENANCE_DATABASE)
    with wait_for_connection(admin_kwargs, config.wait_timeout) as admin:
        trust.pin_admin_session(admin)
        key = lock_key("bootstrap", config.dbname)
        squatters = trust.LockSquatters(config.admin_user)
        with advisory_lock(
            admin, key, config.migration_lock_timeout, name="bootstrap", evict=squatters
        ):
            trust.refuse_privileged_roles(
                admin,
                config.user,
                config.app_user,
                config.admin_user,
                config.cleanup_role,
                config.stats_role,
            )
            if script is None and not database_exists(admin, config.dbname):
                raise MigrationFilesError(ERR_NO_BOOTSTRAP_SCRIPT.format(dbname=config.dbname))
            create_database_if_missing(admin, config.dbname, on_create)
            with connect(config.connect_kwargs(admin=True), config.wait_timeout) as conn:
                trust.pin_admin_session(conn)
                trust.refuse_planted_objects(conn, config.history_table)
                execution_ms = run_bootstrap_script(conn, config, script)
            return record_as_owner(config, script, execution_ms) if script else None


def create_database_if_missing(
    conn: psycopg.Connection[Any], dbname: str, on_create: Callable[[], None] | None = None
) -> None:
    if database_exists(conn, dbname):
        log.info("database_exists", dbname=dbname)
        return
    if on_create:
        on_create()
    # CREATE DATABASE cannot run inside a transaction: the connection is in autocommit.
    conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    log.info("database_created", dbname=dbname)


def run_bootstrap_script(
    conn: psycopg.Connection[Any], config: Config, script: Migration | None
) -> int:
    """Run 000_*.sql with the role names set, then the role checks again and the passwords,
    in its transaction; returns its duration in milliseconds."""
    for setting, value in ((OWNER_ROLE_SETTING, config.user), (APP_ROLE_SETTING, config.app_user)):
        conn.execute("SELECT pg_catalog.set_config(%s, %s, false)", (setting, value))

    def finish(conn: psycopg.Connection[Any], migration: Migration, execution_ms: int) -> None:
        # A 000 that granted a role more than its place is rolled back with the rest.
        trust.refuse_privileged_roles(
            conn,
            config.user,
            config.app_user,
            config.admin_user,
            config.cleanup_role,
            config.stats_role,
        )
        set_role_passwords(conn, config, migration)

    if script is None:
        log.info("bootstrap_script_missing", hint="no 000_*.sql in MIGRATIONS_DIR")
        return 0
    applier = Applier(conn, config, after_reset=trust.ADMIN_SESSION_PIN)
    try:
        execution_ms = applier.apply(script, record=finish)
    except MigrationFailedError as error:
        raise explained_for_pinned_path(error) from None
    log.info("bootstrap_done", version=script.version, dbname=config.dbname)
    return execution_ms


def explained_for_pinned_path(error: MigrationFailedError) -> MigrationFailedError:
    """A 000 written for psql (unqualified names, CREATE EXTENSION without SCHEMA) meets the
    admin session's pinned search_path: say so, since the server's words do not."""
    sqlstate, text = error.fields.get("sqlstate"), str(error.fields.get("server_message", ""))
    if sqlstate not in PINNED_PATH_SQLSTATES and "pg_catalog" not in text:
        return error
    return MigrationFailedError(error.message + HINT_PINNED_PATH, **error.fields)


def set_role_passwords(conn: psycopg.Connection[Any], config: Config, script: Migration) -> None:
    """Send SCRAM verifiers computed by libpq, in a transaction kept out of the server's log:
    neither the cleartext nor the verifier reaches it."""
    with conn.transaction():  # a savepoint inside 000's transaction; its own otherwise
        if not trust.quiet_transaction(conn):
            log.warning("server_log_not_silenced", reason=WARN_NOT_SILENCED)
        for setting, role, password in (
            ("DB_USER", config.user, config.password),
            ("APP_DB_USER", config.app_user, config.app_password),
            ("CLEANUP_DB_PASSWORD", config.cleanup_role, config.cleanup_password),
        ):
            if password is None:
                continue
            if not role_exists(conn, role):
                message = ERR_ROLE_MISSING.format(setting=setting, role=role, file=script.path)
                raise ConfigError(message)
            if config.role_passwords == "on-create" and _has_password(conn, role):
                log.info("role_password_kept", role=role, reason="ROLE_PASSWORDS=on-create")
                continue
            verifier = conn.pgconn.encrypt_password(
                password.encode(), role.encode(), PASSWORD_ALGORITHM
            ).decode()
            alter = sql.SQL("ALTER ROLE {} PASSWORD {}")
            conn.execute(alter.format(sql.Identifier(role), sql.Literal(verifier)))
            log.info("role_password_set", role=role, method="scram-sha-256")


def record_as_owner(
    config: Config, script: Migration, execution_ms: int
) -> psycopg.Connection[Any]:
    """Record 000 in the history table over the owner's own login, never the superuser's.

    A trigger, default or index function the owner attached to its table then runs with the
    owner's rights only. SET ROLE would not do: code running under it can RESET ROLE.
    Returns that connection, open: the migration phase goes on with it.
    """
    conn = wait_for_connection(config.connect_kwargs(), config.wait_timeout, first=False)
    try:
        with conn.transaction():
            history.ensure_history_table(conn, config.history_table)
            history.record_repeatable(
                conn, config.history_table, script, execution_ms, applied_by=config.admin_user or ""
            )
    except BaseException:
        conn.close()
        raise
    return conn


def _has_password(conn: psycopg.Connection[Any], role: str) -> bool:
    row = conn.execute(ROLE_HAS_PASSWORD, (role,)).fetchone()
    return bool(row and row[0])
