"""The production schema applies through the runner, again as a no-op, and sets up
the roles and privileges that make row level security bind the application."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import errors, sql

from tests.integration import schema_fixtures
from tests.integration.schema_fixtures import (
    ALL_TABLES,
    APP_PASSWORD,
    APP_ROLE,
    OWNER_PASSWORD,
    OWNER_ROLE,
    PER_USER_TABLES,
    SchemaDatabase,
    runner_env,
)

schema_db = schema_fixtures.schema_db

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"

FINGERPRINT_QUERIES = {
    "relations": """
        SELECT c.relname, c.relkind, c.relowner::regrole::text, coalesce(c.relacl::text, ''),
               c.relrowsecurity, c.relforcerowsecurity, coalesce(c.reloptions::text, '')
        FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace ORDER BY 1""",
    "columns_acl": """
        SELECT c.relname, a.attname, a.attacl::text FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
        WHERE c.relnamespace = 'public'::regnamespace AND a.attacl IS NOT NULL ORDER BY 1, 2""",
    "functions": """
        SELECT p.oid::regprocedure::text, p.prosecdef, coalesce(p.proconfig::text, ''),
               coalesce(p.proacl::text, ''), md5(p.prosrc)
        FROM pg_proc p WHERE p.pronamespace = 'public'::regnamespace ORDER BY 1""",
    "policies": "SELECT tablename, policyname, cmd, qual, with_check FROM pg_policies ORDER BY 1, 2",
    "triggers": "SELECT tgrelid::regclass::text, tgname, tgenabled FROM pg_trigger WHERE NOT tgisinternal ORDER BY 1, 2",
    "default_acl": "SELECT defaclrole::regrole::text, defaclobjtype, coalesce(defaclnamespace::regnamespace::text, ''), defaclacl::text FROM pg_default_acl ORDER BY 1, 2, 3",
    "extensions": "SELECT extname, extnamespace::regnamespace::text FROM pg_extension ORDER BY 1",
    "schema": "SELECT nspowner::regrole::text, nspacl::text FROM pg_namespace WHERE nspname = 'public'",
    "database": "SELECT datdba::regrole::text, datacl::text FROM pg_database WHERE datname = current_database()",
    "roles": f"""
        SELECT rolname, rolsuper, rolcreatedb, rolcreaterole, rolcanlogin, rolbypassrls, rolreplication
        FROM pg_roles WHERE rolname IN ('{OWNER_ROLE}', '{APP_ROLE}') ORDER BY 1""",
}


def fingerprint(conn: psycopg.Connection[Any]) -> dict[str, list[tuple[Any, ...]]]:
    return {name: conn.execute(query).fetchall() for name, query in FINGERPRINT_QUERIES.items()}


def test_applies_on_an_empty_database_and_again_as_a_no_op(
    run_runner: Any, unborn_database: Any
) -> None:
    env = runner_env(unborn_database)
    first = run_runner(env=env)
    assert first.returncode == 0, str(first)
    with unborn_database.connect() as conn:
        tables = {
            row[0]
            for row in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            ).fetchall()
        }
        before = fingerprint(conn)
        versions = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
    assert set(ALL_TABLES) <= tables
    assert "001_initial_production_schema" in versions

    second = run_runner(env=env)
    assert second.returncode == 0, str(second)
    with unborn_database.connect() as conn:
        assert fingerprint(conn) == before
        assert conn.execute("SELECT count(*) FROM schema_migrations").fetchone() == (len(versions),)
    # SEED.md's queries work as written.
    with unborn_database.connect(user=OWNER_ROLE, password=OWNER_PASSWORD) as conn:
        conn.execute(
            "SELECT version, applied_at, description FROM schema_migrations ORDER BY version"
        )
        result = conn.execute("SELECT cleanup_expired_data()").fetchone()
    assert result is not None and result[0]["tokens"] == 0


def run_000(conn: psycopg.Connection[Any], owner: str | None, app: str | None) -> None:
    """000 as the runner sends it: one simple-protocol string, in a transaction."""
    with conn.transaction():
        if owner is not None:
            conn.execute(sql.SQL("SET LOCAL migrator.owner_role = {}").format(sql.Literal(owner)))
        if app is not None:
            conn.execute(sql.SQL("SET LOCAL migrator.app_role = {}").format(sql.Literal(app)))
        conn.execute((MIGRATIONS / "000_init_database.sql").read_text())


def test_000_run_again_by_hand_changes_nothing(schema_db: SchemaDatabase) -> None:
    with schema_db.superuser() as conn:
        before = fingerprint(conn)
        run_000(conn, OWNER_ROLE, APP_ROLE)
        run_000(conn, None, None)  # psql by hand: the defaults
        after = fingerprint(conn)
    assert after == before


def test_000_refuses_a_runtime_role_that_would_bypass_row_level_security(
    schema_db: SchemaDatabase,
) -> None:
    with schema_db.superuser() as conn:
        with pytest.raises(errors.InvalidParameterValue, match="must differ"):
            run_000(conn, OWNER_ROLE, OWNER_ROLE)
        conn.execute("DROP ROLE IF EXISTS schema_test_bypass")
        conn.execute("CREATE ROLE schema_test_bypass LOGIN BYPASSRLS")
        try:
            with pytest.raises(errors.InvalidParameterValue, match="BYPASSRLS"):
                run_000(conn, OWNER_ROLE, "schema_test_bypass")
            conn.execute("ALTER ROLE schema_test_bypass NOBYPASSRLS")
            conn.execute(
                sql.SQL("GRANT {} TO schema_test_bypass").format(sql.Identifier(OWNER_ROLE))
            )
            with pytest.raises(errors.InvalidParameterValue, match="member of the owner"):
                run_000(conn, OWNER_ROLE, "schema_test_bypass")
        finally:
            conn.execute("DROP ROLE schema_test_bypass")


def test_roles_have_no_passwords_in_the_files_and_only_the_attributes_they_need(
    schema_db: SchemaDatabase,
) -> None:
    for path in MIGRATIONS.glob("*.sql"):
        # Only the placeholder of a comment, never a literal password.
        assert not re.search(r"(?i)\bPASSWORD\s+'[^<]", path.read_text()), path
    rows = schema_db.db.query(FINGERPRINT_QUERIES["roles"])
    assert rows == [
        (OWNER_ROLE, False, False, False, True, False, False),
        (APP_ROLE, False, False, False, True, False, False),
    ]
    with schema_db.superuser() as conn:
        assert conn.execute(
            "SELECT pg_has_role(%s, %s, 'MEMBER')", (APP_ROLE, OWNER_ROLE)
        ).fetchone() == (False,)
        owned_by_app = conn.execute(
            "SELECT count(*) FROM pg_class WHERE relowner = %s::regrole", (APP_ROLE,)
        ).fetchone()
        assert owned_by_app == (0,)
        owners = conn.execute(
            "SELECT DISTINCT relowner::regrole::text FROM pg_class "
            "WHERE relnamespace = 'public'::regnamespace AND relkind IN ('r', 'i', 'S')"
        ).fetchall()
    assert owners == [(OWNER_ROLE,)]


def test_extensions_are_installed_by_the_bootstrap(schema_db: SchemaDatabase) -> None:
    names = {row[0] for row in schema_db.db.query("SELECT extname FROM pg_extension")}
    assert {"citext", "pg_trgm"} <= names


@pytest.mark.parametrize(
    "statement",
    [
        "CREATE TABLE public.intruder (id int)",
        "CREATE TEMPORARY TABLE intruder (id int)",
        "ALTER TABLE users DISABLE ROW LEVEL SECURITY",
        "ALTER TABLE tokens NO FORCE ROW LEVEL SECURITY",
        "DROP POLICY tokens_self ON tokens",
        "CREATE POLICY everything ON tokens USING (true)",
        f"SET ROLE {OWNER_ROLE}",
        "CREATE SCHEMA intruder",
        "TRUNCATE tokens",
    ],
)
def test_runtime_role_has_no_ddl(schema_db: SchemaDatabase, statement: str) -> None:
    with schema_db.app() as conn, pytest.raises(errors.InsufficientPrivilege):
        conn.execute(statement)


def test_objects_the_owner_creates_later_are_usable_by_the_runtime_role(
    schema_db: SchemaDatabase,
) -> None:
    with schema_db.owner() as conn:
        conn.execute(
            "CREATE TABLE later_feature (id bigint GENERATED BY DEFAULT AS IDENTITY, note text)"
        )
        conn.execute("CREATE SEQUENCE later_seq")
        conn.execute("CREATE FUNCTION later_fn() RETURNS int LANGUAGE sql AS 'SELECT 7'")
    with schema_db.app() as conn:
        conn.execute("INSERT INTO later_feature (note) VALUES ('x')")
        conn.execute("UPDATE later_feature SET note = 'y'")
        assert conn.execute("SELECT note FROM later_feature").fetchall() == [("y",)]
        conn.execute("DELETE FROM later_feature")
        # Its identity took a value without any privilege on the sequence; sequences get
        # none (a role that can advance one takes ids ahead of the server: 003).
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT nextval('later_seq')")
        assert conn.execute("SELECT later_fn()").fetchone() == (7,)
    with schema_db.superuser() as conn:
        conn.execute("DROP ROLE IF EXISTS schema_test_other")
        conn.execute("CREATE ROLE schema_test_other")
        try:
            # Not executable by PUBLIC: another role of the cluster cannot call it.
            assert conn.execute(
                "SELECT has_function_privilege('schema_test_other', 'later_fn()', 'EXECUTE'), "
                "has_function_privilege('schema_test_other', 'cleanup_expired_data(integer, integer)', 'EXECUTE'), "
                "has_schema_privilege('schema_test_other', 'public', 'CREATE')"
            ).fetchone() == (False, False, False)
        finally:
            conn.execute("DROP ROLE schema_test_other")


def test_every_per_user_table_has_row_level_security(schema_db: SchemaDatabase) -> None:
    rows = dict(
        schema_db.db.query(
            "SELECT relname, relrowsecurity FROM pg_class "
            "WHERE relnamespace = 'public'::regnamespace AND relkind = 'r'"
        )
    )
    assert {table: rows[table] for table in PER_USER_TABLES} == dict.fromkeys(PER_USER_TABLES, True)
    policies = {row[0] for row in schema_db.db.query("SELECT DISTINCT tablename FROM pg_policies")}
    assert set(PER_USER_TABLES) <= policies


def test_security_definer_functions_pin_search_path(schema_db: SchemaDatabase) -> None:
    rows = schema_db.db.query(
        "SELECT p.oid::regprocedure::text, coalesce(p.proconfig, '{}') FROM pg_proc p "
        "WHERE p.pronamespace = 'public'::regnamespace AND p.prosecdef"
    )
    assert len(rows) >= 10
    unpinned = [
        name for name, config in rows if not any(c.startswith("search_path=") for c in config)
    ]
    assert unpinned == []


def test_high_churn_tables_have_autovacuum_settings(schema_db: SchemaDatabase) -> None:
    options = dict(
        schema_db.db.query(
            "SELECT relname, reloptions FROM pg_class "
            "WHERE relname IN ('tokens', 'rate_limits', 'user_sessions')"
        )
    )
    for table in ("tokens", "rate_limits", "user_sessions"):
        settings = dict(option.split("=", 1) for option in options[table])
        assert float(settings["autovacuum_vacuum_scale_factor"]) <= 0.02, table
        assert float(settings["autovacuum_analyze_scale_factor"]) <= 0.01, table


def test_runtime_role_can_log_in_with_the_password_from_the_runner(
    schema_db: SchemaDatabase,
) -> None:
    with schema_db.db.connect(user=APP_ROLE, password=APP_PASSWORD) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (APP_ROLE,)
