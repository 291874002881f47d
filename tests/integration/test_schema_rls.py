"""Row level security, as the runtime role: user A's request context shows and
changes only A's rows; no context shows nothing; the owner-bypass pitfall."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from psycopg import errors

from tests.integration import schema_fixtures
from tests.integration.schema_fixtures import SchemaDatabase, set_context, sha256

schema_db = schema_fixtures.schema_db

# The per-user tables the service reads on behalf of a user, and the change the
# runtime role may make to one row of each (002: revocation only; codes change
# through redeem_auth_code() alone, and no credential is deleted by the runtime role).
SECRET_TABLES = {
    "user_sessions": "UPDATE user_sessions SET revoked_at = now() WHERE id = %s",
    "tokens": "UPDATE tokens SET revoked_at = now() WHERE id = %s",
    "refresh_tokens": "UPDATE refresh_tokens SET revoked_at = now() WHERE id = %s",
    "api_keys": "UPDATE api_keys SET revoked_at = now() WHERE id = %s",
    "auth_codes": None,
}


@dataclass
class Tenant:
    user_id: uuid.UUID
    rows: dict[str, uuid.UUID]


def seed_tenant(db: SchemaDatabase, client_id: str) -> Tenant:
    user_id = db.create_user()
    tag = uuid.uuid4().hex
    later = datetime.now(UTC) + timedelta(hours=1)
    rows: dict[str, uuid.UUID] = {}
    with db.owner() as conn:
        rows["user_sessions"] = conn.execute(
            "INSERT INTO user_sessions (session_hash, user_id, ip_address, user_agent) "
            "VALUES (%s, %s, '192.0.2.1', 'test') RETURNING id",
            (sha256("session" + tag), user_id),
        ).fetchone()[0]
        rows["tokens"] = conn.execute(
            "INSERT INTO tokens (token_hash, token_prefix, client_id, user_id, expires_at) "
            "VALUES (%s, 'at_x', %s, %s, %s) RETURNING id",
            (sha256("token" + tag), client_id, user_id, later),
        ).fetchone()[0]
        rows["refresh_tokens"] = conn.execute(
            "INSERT INTO refresh_tokens (token_hash, client_id, user_id, expires_at) "
            "VALUES (%s, %s, %s, %s) RETURNING id",
            (sha256("refresh" + tag), client_id, user_id, later),
        ).fetchone()[0]
        rows["api_keys"] = conn.execute(
            "INSERT INTO api_keys (user_id, name, key_prefix, key_hash) "
            "VALUES (%s, 'ci', 'ak_test', %s) RETURNING id",
            (user_id, sha256("apikey" + tag)),
        ).fetchone()[0]
        rows["auth_codes"] = conn.execute(
            "INSERT INTO auth_codes (code_hash, client_id, user_id, redirect_uri, scopes, "
            "code_challenge, code_challenge_method) "
            "VALUES (%s, %s, %s, 'https://app.example.com/callback', '{openid}', %s, 'S256') "
            "RETURNING id",
            (sha256("code" + tag), client_id, user_id, "a" * 43),
        ).fetchone()[0]
    return Tenant(user_id, rows)


@pytest.fixture(scope="module")
def tenants(schema_db: SchemaDatabase) -> tuple[Tenant, Tenant]:
    client_id = schema_db.create_client()
    return seed_tenant(schema_db, client_id), seed_tenant(schema_db, client_id)


@pytest.mark.parametrize("table", [*SECRET_TABLES, "users", "security_events"])
def test_user_context_reads_only_its_own_rows(
    schema_db: SchemaDatabase, tenants: tuple[Tenant, Tenant], table: str
) -> None:
    a, b = tenants
    column = "id" if table == "users" else "user_id"
    with schema_db.app(user_id=a.user_id) as conn:
        owners = {row[0] for row in conn.execute(f"SELECT {column} FROM {table}")}
        by_id = conn.execute(f"SELECT count(*) FROM {table} WHERE {column} = %s", (b.user_id,))
        assert by_id.fetchone() == (0,)
    assert owners == {a.user_id}


@pytest.mark.parametrize("table", SECRET_TABLES)
def test_user_context_cannot_update_or_delete_another_users_rows(
    schema_db: SchemaDatabase, tenants: tuple[Tenant, Tenant], table: str
) -> None:
    a, b = tenants
    with schema_db.app(user_id=a.user_id) as conn:
        update = SECRET_TABLES[table]
        if update is not None:
            assert conn.execute(update, (b.rows[table],)).rowcount == 0
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute(f"DELETE FROM {table} WHERE id = %s", (b.rows[table],))
        # Nor move a row of its own to the other user (row level security, and since
        # 002 the column privileges too).
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute(
                f"UPDATE {table} SET user_id = %s WHERE id = %s", (b.user_id, a.rows[table])
            )
    with schema_db.owner() as conn:
        row = conn.execute(f"SELECT user_id FROM {table} WHERE id = %s", (b.rows[table],))
        assert row.fetchone() == (b.user_id,)


def test_user_context_cannot_create_rows_for_another_user(
    schema_db: SchemaDatabase, tenants: tuple[Tenant, Tenant]
) -> None:
    a, b = tenants
    with schema_db.app(user_id=a.user_id) as conn:
        with pytest.raises(errors.InsufficientPrivilege, match="row-level security"):
            conn.execute(
                "INSERT INTO user_sessions (session_hash, user_id) VALUES (%s, %s)",
                (sha256(uuid.uuid4().hex), b.user_id),
            )
        with pytest.raises(errors.InsufficientPrivilege, match="row-level security"):
            conn.execute(
                "INSERT INTO security_events (event_type, user_id) VALUES ('forged', %s)",
                (b.user_id,),
            )
        # Its own rows it can create.
        conn.execute(
            "INSERT INTO user_sessions (session_hash, user_id) VALUES (%s, %s)",
            (sha256(uuid.uuid4().hex), a.user_id),
        )


@pytest.mark.parametrize("table", [*SECRET_TABLES, "users", "security_events", "group_members"])
def test_no_context_sees_and_changes_nothing(
    schema_db: SchemaDatabase, tenants: tuple[Tenant, Tenant], table: str
) -> None:
    a, _ = tenants
    with schema_db.app() as conn:
        assert conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,)
        update = SECRET_TABLES.get(table)
        if update is not None:
            assert conn.execute(update, (a.rows[table],)).rowcount == 0
        set_context(conn, "")  # an empty setting is no context either
        assert conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,)


def test_context_set_local_ends_with_the_transaction(
    schema_db: SchemaDatabase, tenants: tuple[Tenant, Tenant]
) -> None:
    a, _ = tenants
    with schema_db.app() as conn:
        with conn.transaction():
            conn.execute("SELECT set_config('app.current_user_id', %s, true)", (str(a.user_id),))
            assert conn.execute("SELECT count(*) FROM user_sessions").fetchone()[0] >= 1
        assert conn.execute("SELECT count(*) FROM user_sessions").fetchone() == (0,)


def test_a_malformed_context_fails_closed(schema_db: SchemaDatabase) -> None:
    with schema_db.app() as conn:
        set_context(conn, "not-a-uuid' OR true --")
        with pytest.raises(errors.InvalidTextRepresentation):
            conn.execute("SELECT * FROM tokens")


def test_runtime_role_cannot_switch_row_level_security_off(
    schema_db: SchemaDatabase, tenants: tuple[Tenant, Tenant]
) -> None:
    a, _ = tenants
    with schema_db.app(user_id=a.user_id) as conn:
        conn.execute("SET row_security = off")
        with pytest.raises(errors.InsufficientPrivilege, match="row-level security"):
            conn.execute("SELECT * FROM tokens")


def test_owner_bypass_pitfall(schema_db: SchemaDatabase, tenants: tuple[Tenant, Tenant]) -> None:
    """Table owners bypass row level security: the schema owner (DB_USER) sees every
    user's rows without any context. That is why the application connects as the
    separate runtime role, which owns nothing and cannot become the owner."""
    a, b = tenants
    with schema_db.owner() as conn:
        seen = {row[0] for row in conn.execute("SELECT user_id FROM tokens")}
        assert {a.user_id, b.user_id} <= seen
        # Not forced on the owner: definer functions and data migrations run as the owner.
        forced = conn.execute(
            "SELECT bool_or(relforcerowsecurity) FROM pg_class "
            "WHERE relnamespace = 'public'::regnamespace AND relkind = 'r'"
        ).fetchone()
        assert forced == (False,)
    with schema_db.app() as conn:
        assert conn.execute(
            "SELECT current_user, pg_has_role(current_user, %s, 'USAGE'), "
            "pg_has_role(current_user, %s, 'MEMBER')",
            (schema_fixtures.OWNER_ROLE, schema_fixtures.OWNER_ROLE),
        ).fetchone() == (schema_fixtures.APP_ROLE, False, False)
        rolbypass = conn.execute(
            "SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user"
        ).fetchone()
        assert rolbypass == (False, False)
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute(f"SET ROLE {schema_fixtures.OWNER_ROLE}")
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("ALTER TABLE tokens OWNER TO auth_service_app")


def test_client_credentials_tokens_belong_to_the_client_context(schema_db: SchemaDatabase) -> None:
    client_a = schema_db.create_client(grant_types=["client_credentials"], redirect_uris=[])
    client_b = schema_db.create_client(grant_types=["client_credentials"], redirect_uris=[])
    later = datetime.now(UTC) + timedelta(hours=1)
    with schema_db.app(client_id=client_a) as conn:
        conn.execute(
            "INSERT INTO tokens (token_hash, client_id, expires_at) VALUES (%s, %s, %s)",
            (sha256(uuid.uuid4().hex), client_a, later),
        )
        with pytest.raises(errors.InsufficientPrivilege, match="row-level security"):
            conn.execute(
                "INSERT INTO tokens (token_hash, client_id, expires_at) VALUES (%s, %s, %s)",
                (sha256(uuid.uuid4().hex), client_b, later),
            )
        assert conn.execute("SELECT client_id FROM tokens").fetchall() == [(client_a,)]
    with schema_db.app(client_id=client_b) as conn:
        assert conn.execute("SELECT count(*) FROM tokens").fetchone() == (0,)


def test_cross_user_operations_go_through_narrow_functions(
    schema_db: SchemaDatabase, tenants: tuple[Tenant, Tenant]
) -> None:
    """Without any context, the service can still log a user in and introspect a
    token, but only through functions that return what that operation needs."""
    a, _ = tenants
    with schema_db.owner() as conn:
        email, token_hash = conn.execute(
            "SELECT u.email::text, t.token_hash FROM users u JOIN tokens t ON t.user_id = u.id "
            "WHERE u.id = %s",
            (a.user_id,),
        ).fetchone()
    with schema_db.app() as conn:
        login = conn.execute(
            "SELECT user_id, status FROM find_user_for_login(%s)", (email.upper(),)
        ).fetchall()
        assert login == [(a.user_id, "active")]
        active = conn.execute(
            "SELECT active, user_id FROM introspect_token(%s)", (token_hash,)
        ).fetchone()
        assert active == (True, a.user_id)
        assert conn.execute(
            "SELECT active, user_id FROM introspect_token(%s)", (sha256("unknown"),)
        ).fetchone() == (False, None)
        # Admin search needs a permission the anonymous context does not have.
        with pytest.raises(errors.InsufficientPrivilege, match="users:read"):
            conn.execute("SELECT * FROM search_users('example')")
    # Functions reserved to the owner are not executable by the runtime role either.
    with schema_db.app() as conn, pytest.raises(errors.InsufficientPrivilege):
        conn.execute("SELECT log_security_event('forged', %s)", (a.user_id,))


def test_group_membership_needs_the_manage_permission(
    schema_db: SchemaDatabase, tenants: tuple[Tenant, Tenant]
) -> None:
    a, b = tenants
    with schema_db.owner() as conn:
        admins = conn.execute(
            "INSERT INTO groups (name, permissions) VALUES (%s, '{groups:manage,users:read}') "
            "RETURNING id",
            (f"admins-{uuid.uuid4().hex[:6]}",),
        ).fetchone()[0]
    with schema_db.app(user_id=a.user_id) as conn:
        # Neither directly nor through the function can a user add itself.
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute(
                "INSERT INTO group_members (group_id, user_id) VALUES (%s, %s)", (admins, a.user_id)
            )
        with pytest.raises(errors.InsufficientPrivilege, match="groups:manage"):
            conn.execute("SELECT add_group_member(%s, %s)", (admins, a.user_id))
    with schema_db.owner() as conn:
        conn.execute(
            "INSERT INTO group_members (group_id, user_id) VALUES (%s, %s)", (admins, b.user_id)
        )
    with schema_db.app(user_id=b.user_id) as conn:
        conn.execute("SELECT add_group_member(%s, %s)", (admins, a.user_id))
        found = conn.execute("SELECT id FROM search_users(%s)", ("@example.com",))
        assert a.user_id in {row[0] for row in found}
        assert conn.execute(
            "SELECT remove_group_member(%s, %s)", (admins, a.user_id)
        ).fetchone() == (True,)
    with schema_db.owner() as conn:
        events = conn.execute(
            "SELECT event_type FROM security_events WHERE user_id = %s "
            "AND event_type LIKE 'group_member%%' ORDER BY id",
            (a.user_id,),
        ).fetchall()
    assert events == [("group_member_added",), ("group_member_removed",)]


def test_runtime_role_cannot_write_lockout_columns_or_protected_tables(
    schema_db: SchemaDatabase, tenants: tuple[Tenant, Tenant]
) -> None:
    a, _ = tenants
    with schema_db.app(user_id=a.user_id) as conn:
        conn.execute("UPDATE users SET display_name = 'Renamed' WHERE id = %s", (a.user_id,))
        for statement in (
            "UPDATE users SET failed_login_attempts = 0",
            "UPDATE users SET locked_until = NULL",
            "UPDATE users SET password_changed_at = now() - interval '1 year'",
            "DELETE FROM users",
            "UPDATE security_settings SET max_failed_logins = 1000",
            "INSERT INTO password_history (user_id, password_hash) VALUES "
            f"('{a.user_id}', '{schema_fixtures.BCRYPT_HASH}')",
            "SELECT * FROM rate_limits",
            "DELETE FROM schema_migrations",
        ):
            with pytest.raises(errors.InsufficientPrivilege):
                conn.execute(statement)


def test_context_user_helpers_are_what_policies_use(schema_db: SchemaDatabase) -> None:
    user_id = uuid.uuid4()
    with schema_db.app(user_id=user_id, client_id="client-xyz") as conn:
        assert conn.execute("SELECT app_current_user_id(), app_current_client_id()").fetchone() == (
            user_id,
            "client-xyz",
        )
