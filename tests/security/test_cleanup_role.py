"""The cleanup role removes expired rows and can do nothing else, whatever SQL it sends.

It connects with the password bootstrap set from CLEANUP_DB_PASSWORD to the shipped schema and
attacks: reading or writing any table directly, the older cleanup functions, 004's functions
on a table they do not cover or with hostile arguments, DDL. Live rows of another user survive
every call; the runtime role may call none of 004's functions. Its full privilege list is
audited by test_privilege_audit.py (docs/runtime-privileges.md, "Cleanup role").
"""

from __future__ import annotations

import secrets

import psycopg
import pytest

from tests.integration import schema_fixtures
from tests.integration.schema_fixtures import SchemaDatabase, sha256

schema_db = schema_fixtures.schema_db

DENIED = "42501"
REFUSED = "22023"


def sqlstate_of(conn: psycopg.Connection, statement: str) -> str:
    try:
        conn.execute(statement)
    except psycopg.Error as error:
        return error.sqlstate or "no sqlstate"
    return "ok"


@pytest.fixture
def live_token(schema_db: SchemaDatabase) -> str:
    """A live token of some user (expiring in an hour), returned by its id."""
    client_id, user_id = schema_db.create_client(), schema_db.create_user()
    with schema_db.owner() as conn:
        row = conn.execute(
            "INSERT INTO tokens (token_hash, client_id, user_id, expires_at) "
            "VALUES (%s, %s, %s, now() + interval '1 hour') RETURNING id::text",
            (sha256(secrets.token_hex()), client_id, user_id),
        ).fetchone()
    assert row is not None
    return str(row[0])


@pytest.mark.parametrize(
    "statement",
    [
        "SELECT * FROM tokens",
        "DELETE FROM tokens",
        "DELETE FROM security_events",
        "UPDATE tokens SET revoked_at = NULL",
        "INSERT INTO security_events (event_type) VALUES ('forged')",
        "TRUNCATE rate_limits",
        "SELECT * FROM security_settings",
        "UPDATE security_settings SET security_event_retention = '30 days'",
        "SELECT * FROM schema_migrations",
        "DELETE FROM schema_migrations",
        "BEGIN; LOCK TABLE public.schema_migrations_lock IN SHARE UPDATE EXCLUSIVE MODE",
        "SELECT cleanup_expired_data()",
        "CALL cleanup_expired_data_all()",
        "SELECT introspect_token(sha256('x'))",
        "SELECT create_user('a@example.com', 'A', NULL)",
        "CREATE TABLE planted (id int)",
        "CREATE TEMPORARY TABLE planted (id int)",
        "CREATE FUNCTION public.planted() RETURNS int LANGUAGE sql AS 'SELECT 1'",
        "ALTER FUNCTION cleanup_expired_pages(text, bigint, bigint) SECURITY INVOKER",
        "SET ROLE auth_service",
    ],
)
def test_the_cleanup_role_can_do_nothing_but_the_cleanup(schema_db, statement):
    with schema_db.cleanup() as conn:
        outcome = sqlstate_of(conn, statement)
    assert outcome == DENIED, f"{statement}: {outcome}"


def test_what_postgresql_answers_with_a_warning_changes_nothing(schema_db):
    with schema_db.cleanup() as conn:
        notices: list[str] = []
        conn.add_notice_handler(lambda diag: notices.append(diag.message_primary or ""))
        conn.execute("ANALYZE users")  # skipped: not its table
        conn.execute("GRANT EXECUTE ON FUNCTION cleanup_expired_pages(text, bigint, bigint) "
                     "TO PUBLIC")  # fmt: skip
    assert any("skipping" in notice for notice in notices), notices
    assert any("no privileges were granted" in notice for notice in notices), notices
    with schema_db.superuser() as conn:
        granted = conn.execute(
            "SELECT has_function_privilege(%s, 'cleanup_expired_pages(text, bigint, bigint)', "
            "'EXECUTE')",
            (schema_fixtures.APP_ROLE,),
        ).fetchone()
    assert granted == (False,)


@pytest.mark.parametrize(
    "call",
    [
        "SELECT cleanup_expired_pages('users', 0, 10)",
        "SELECT cleanup_expired_pages('api_keys', 0, 10)",
        "SELECT cleanup_expired_pages('schema_migrations', 0, 10)",
        "SELECT cleanup_expired_pages('tokens; DROP TABLE users; --', 0, 10)",
        "SELECT cleanup_expired_pages('public.tokens', 0, 10)",
        "SELECT cleanup_expired_pages(NULL, 0, 10)",
        "SELECT cleanup_expired_pages('tokens', -1, 10)",
        "SELECT cleanup_expired_pages('tokens', 10, 10)",
        "SELECT cleanup_expired_pages('tokens', 0, 4294967296)",
        "SELECT cleanup_expired_pages('tokens', NULL, NULL)",
        "SELECT cleanup_analyze('users', now())",
        "SELECT cleanup_analyze(NULL, now())",
    ],
)
def test_the_cleanup_functions_refuse_what_they_do_not_cover(schema_db, call):
    with schema_db.cleanup() as conn:
        assert sqlstate_of(conn, call) == REFUSED


def test_no_call_removes_a_live_row(schema_db, live_token):
    with schema_db.cleanup() as conn:
        for table in ("auth_codes", "tokens", "refresh_tokens", "user_sessions", "rate_limits",
                      "security_events"):  # fmt: skip
            conn.execute("SELECT cleanup_expired_pages(%s, 0, 4294967295)", (table,))
        conn.execute("SELECT cleanup_analyze('tokens', '-infinity')")
        tables = conn.execute("SELECT table_name FROM cleanup_expired_tables()").fetchall()
    assert len(tables) == 6
    with schema_db.owner() as conn:
        assert (
            conn.execute("SELECT count(*) FROM tokens WHERE id = %s", (live_token,)).fetchone()[0]
            == 1
        )


def test_the_runtime_role_may_call_none_of_the_cleanup_role_functions(schema_db):
    with schema_db.app() as conn:
        for call in ("SELECT cleanup_expired_tables()",
                     "SELECT cleanup_expired_pages('tokens', 0, 10)",
                     "SELECT cleanup_analyze('tokens', now())"):  # fmt: skip
            assert sqlstate_of(conn, call) == DENIED, call
        # Nor may it delete credentials itself (002): the cleanup gave it no DELETE.
        assert sqlstate_of(conn, "DELETE FROM tokens") == DENIED
