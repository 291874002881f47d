"""The runtime role attacks the database's own invariants with plain SQL, and loses.

A database migrated with the shipped migrations (000, 001, 002) through the runner;
every attack connects as the runtime role (auth_service_app), the role a compromised
application holds, and sends the SQL an attacker would. Each is refused by the database
(the SQLSTATE the test names) and the row it aimed at is unchanged; the legitimate path
next to it still works and is audited. The last test starts the runner again: the next
start succeeds after every attack.

What a compromised application CAN do is shown too (it sets app.current_user_id itself,
so it can act as any user): the audit row then names the impersonated actor and the
runtime role.
"""

from __future__ import annotations

import base64
import hashlib
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg import errors
from psycopg.types.json import Jsonb

from tests.integration import schema_fixtures
from tests.integration.schema_fixtures import (
    APP_ROLE,
    BCRYPT_HASH,
    SchemaDatabase,
    bcrypt_hash,
    run_entrypoint,
    runner_env,
    sha256,
)

schema_db = schema_fixtures.schema_db

REDIRECT = "https://app.example.com/callback"
VERIFIER = "dBjftJeZ4CVP-mJ92K27uhbUJU1p1r_wW1gFWFOEjXk"
FAR_FUTURE = datetime(2099, 1, 1, tzinfo=UTC)
ADMIN_PERMISSIONS = ["groups:manage", "clients:manage", "users:manage", "users:read"]


def s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


@dataclass
class World:
    client_id: str
    admin: uuid.UUID  # holds ADMIN_PERMISSIONS through a group
    admin_group: uuid.UUID


@pytest.fixture(scope="module")
def world(schema_db: SchemaDatabase) -> World:
    client_id = schema_db.create_client()
    admin = schema_db.create_user()
    with schema_db.owner() as conn:  # the first admin is the owner's to appoint
        group = conn.execute(
            "INSERT INTO groups (name, permissions) VALUES (%s, %s) RETURNING id",
            (f"admins-{uuid.uuid4().hex[:6]}", ADMIN_PERMISSIONS),
        ).fetchone()[0]
        conn.execute(
            "INSERT INTO group_members (group_id, user_id) VALUES (%s, %s)", (group, admin)
        )
    return World(client_id, admin, group)


def snapshot(db: SchemaDatabase, table: str, where: str, *params: Any) -> Any:
    """The row(s) as the owner sees them, to prove an attack changed nothing."""
    with db.owner() as conn:
        return conn.execute(
            f"SELECT jsonb_agg(to_jsonb(t) ORDER BY to_jsonb(t)::text) FROM {table} t WHERE {where}",
            params,
        ).fetchone()[0]


def refused(
    conn: psycopg.Connection[Any], statement: str, params: Any = None, error: type = errors.InsufficientPrivilege,
    match: str | None = None,
) -> None:  # fmt: skip
    with pytest.raises(error, match=match):
        conn.execute(statement, params)


def new_code(db: SchemaDatabase, client_id: str, user_id: uuid.UUID) -> tuple[str, uuid.UUID]:
    code = "code_" + uuid.uuid4().hex
    with db.app(user_id=user_id) as conn:
        code_id = conn.execute(
            "INSERT INTO auth_codes (code_hash, client_id, user_id, redirect_uri, scopes, "
            "code_challenge, code_challenge_method) VALUES (%s, %s, %s, %s, '{openid}', %s, 'S256') "
            "RETURNING id",
            (sha256(code), client_id, user_id, REDIRECT, s256(VERIFIER)),
        ).fetchone()[0]
    return code, code_id


def redeem(conn: psycopg.Connection[Any], code: str, client_id: str) -> Any:
    return conn.execute(
        "SELECT status, family_id FROM redeem_auth_code(%s, %s, %s, %s)",
        (sha256(code), client_id, REDIRECT, VERIFIER),
    ).fetchone()


def new_refresh_token(
    db: SchemaDatabase, client_id: str, user_id: uuid.UUID, family: uuid.UUID | None = None
) -> tuple[str, uuid.UUID, uuid.UUID]:
    """A refresh token and an access token of its family; (secret, family, access token id)."""
    secret = "rt_" + uuid.uuid4().hex
    with db.app(user_id=user_id) as conn:
        family = conn.execute(
            "INSERT INTO refresh_tokens (token_hash, client_id, user_id, family_id, expires_at) "
            "VALUES (%s, %s, %s, coalesce(%s, gen_random_uuid()), now() + interval '30 days') "
            "RETURNING family_id",
            (sha256(secret), client_id, user_id, family),
        ).fetchone()[0]
        token_id = conn.execute(
            "INSERT INTO tokens (token_hash, client_id, user_id, family_id, expires_at) "
            "VALUES (%s, %s, %s, %s, now() + interval '1 hour') RETURNING id",
            (sha256("at" + secret), client_id, user_id, family),
        ).fetchone()[0]
    return secret, family, token_id


def rotate(conn: psycopg.Connection[Any], presented: str, client_id: str, expires: Any) -> Any:
    new = "rt_" + uuid.uuid4().hex
    row = conn.execute(
        "SELECT status, refresh_token_id FROM rotate_refresh_token(%s, %s, %s, 'rt_n', %s)",
        (sha256(presented), client_id, sha256(new), expires),
    ).fetchone()
    return row[0], row[1], new


def introspect(conn: psycopg.Connection[Any], secret: str) -> bool:
    return bool(
        conn.execute(
            "SELECT active FROM introspect_token(%s)", (sha256("at" + secret),)
        ).fetchone()[0]
    )


def events(db: SchemaDatabase, event_type: str, **where: Any) -> list[dict[str, Any]]:
    clauses = "".join(f" AND {column} = %s" for column in where)
    with db.owner() as conn:
        rows = conn.execute(
            "SELECT to_jsonb(e) FROM security_events e WHERE event_type = %s"
            + clauses
            + " ORDER BY id",
            (event_type, *where.values()),
        ).fetchall()
    return [row[0] for row in rows]


# --- authorization codes ---------------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        "used_at = NULL",
        "scopes = '{openid,admin}'",
        "redirect_uri = 'https://evil.example.com/cb'",
        "code_challenge = NULL, code_challenge_method = NULL",
        "expires_at = now() + interval '5 minutes'",
        "family_id = NULL",
    ],
)
def test_a_redeemed_code_cannot_be_unused_or_altered(
    schema_db: SchemaDatabase, world: World, change: str
) -> None:
    user = schema_db.create_user()
    code, code_id = new_code(schema_db, world.client_id, user)
    with schema_db.app() as conn:
        assert redeem(conn, code, world.client_id)[0] == "ok"
    before = snapshot(schema_db, "auth_codes", "id = %s", code_id)
    with schema_db.app(user_id=user) as conn:
        refused(
            conn,
            f"UPDATE auth_codes SET {change} WHERE id = %s",
            (code_id,),
            match="permission denied",
        )
    assert snapshot(schema_db, "auth_codes", "id = %s", code_id) == before
    with schema_db.app() as conn:  # still single use: a replay is detected
        assert redeem(conn, code, world.client_id)[0] == "reused"


def test_a_code_cannot_be_moved_to_another_client_or_user(
    schema_db: SchemaDatabase, world: World
) -> None:
    user = schema_db.create_user()
    other_client = schema_db.create_client()
    _code, code_id = new_code(schema_db, world.client_id, user)
    before = snapshot(schema_db, "auth_codes", "id = %s", code_id)
    with schema_db.app(user_id=user) as conn:
        refused(conn, "UPDATE auth_codes SET client_id = %s WHERE id = %s", (other_client, code_id))
        refused(conn, "UPDATE auth_codes SET user_id = %s WHERE id = %s", (world.admin, code_id))
        # Deleting it (to insert it again, unused) is refused too.
        refused(conn, "DELETE FROM auth_codes WHERE id = %s", (code_id,))
    assert snapshot(schema_db, "auth_codes", "id = %s", code_id) == before


def test_not_even_the_owner_unuses_a_code(schema_db: SchemaDatabase, world: World) -> None:
    user = schema_db.create_user()
    code, code_id = new_code(schema_db, world.client_id, user)
    with schema_db.app() as conn:
        assert redeem(conn, code, world.client_id)[0] == "ok"
    with schema_db.owner() as conn:
        refused(
            conn, "UPDATE auth_codes SET used_at = NULL WHERE id = %s", (code_id,), match="final"
        )


def test_a_code_from_2099_does_not_live_for_decades(
    schema_db: SchemaDatabase, world: World
) -> None:
    user = schema_db.create_user()
    with schema_db.app(user_id=user) as conn:
        insert = (
            "INSERT INTO auth_codes (code_hash, client_id, user_id, redirect_uri, code_challenge, "
            "code_challenge_method, created_at, expires_at, used_at, family_id) "
            "VALUES (%s, %s, %s, %s, %s, 'S256', %s, {}, %s, %s) RETURNING id"
        )
        # created_at in 2099 with a 5-minute lifetime from then: the server's clock wins.
        with pytest.raises(errors.CheckViolation) as info:
            conn.execute(
                insert.format("%s"),
                (sha256(uuid.uuid4().hex), world.client_id, user, REDIRECT, s256(VERIFIER),
                 FAR_FUTURE, FAR_FUTURE + timedelta(minutes=5), None, None),
            )  # fmt: skip
        assert info.value.diag.constraint_name == "auth_codes_short_lived"
        # created_at in 2099, pre-redeemed into someone's family: all server-set.
        code_id = conn.execute(
            insert.format("DEFAULT"),
            (sha256(uuid.uuid4().hex), world.client_id, user, REDIRECT, s256(VERIFIER),
             FAR_FUTURE, FAR_FUTURE, uuid.uuid4()),
        ).fetchone()[0]  # fmt: skip
    with schema_db.owner() as conn:
        created, lifetime, used, family = conn.execute(
            "SELECT created_at, expires_at - now(), used_at, family_id FROM auth_codes WHERE id = %s",
            (code_id,),
        ).fetchone()
    assert created < datetime.now(UTC) + timedelta(seconds=5)
    assert lifetime <= timedelta(minutes=10)
    assert (used, family) == (None, None)


# --- refresh tokens, access tokens, families -----------------------------------------------


def test_a_family_revoked_by_reuse_detection_stays_revoked(
    schema_db: SchemaDatabase, world: World
) -> None:
    user = schema_db.create_user()
    first, family, _access_id = new_refresh_token(schema_db, world.client_id, user)
    later = datetime.now(UTC) + timedelta(days=30)
    with schema_db.app() as conn:
        status, _, second = rotate(conn, first, world.client_id, later)
        assert status == "rotated"
        assert rotate(conn, first, world.client_id, later)[0] == "reuse_detected"
    before = snapshot(schema_db, "refresh_tokens", "family_id = %s", family)
    before_access = snapshot(schema_db, "tokens", "family_id = %s", family)
    with schema_db.app(user_id=user) as conn:
        for table in ("refresh_tokens", "tokens"):
            refused(
                conn,
                f"UPDATE {table} SET revoked_at = NULL WHERE family_id = %s",
                (family,),
                match="final",
            )
            refused(conn, f"UPDATE {table} SET revoked_reason = 'oops' WHERE family_id = %s", (family,),
                    match="final")  # fmt: skip
            refused(conn, f"DELETE FROM {table} WHERE family_id = %s", (family,))
        refused(
            conn, "UPDATE refresh_tokens SET replaced_by = NULL WHERE family_id = %s", (family,)
        )
    assert snapshot(schema_db, "refresh_tokens", "family_id = %s", family) == before
    assert snapshot(schema_db, "tokens", "family_id = %s", family) == before_access
    with schema_db.app() as conn:
        assert rotate(conn, second, world.client_id, later)[0] == "revoked"
        assert introspect(conn, first) is False
    # Not the owner either: revocation is final for everyone.
    with schema_db.owner() as conn:
        refused(
            conn,
            "UPDATE refresh_tokens SET revoked_at = NULL WHERE family_id = %s",
            (family,),
            match="final",
        )


@pytest.mark.parametrize("table", ["refresh_tokens", "tokens"])
def test_expiry_cannot_be_extended(schema_db: SchemaDatabase, world: World, table: str) -> None:
    user = schema_db.create_user()
    _secret, family, _ = new_refresh_token(schema_db, world.client_id, user)
    before = snapshot(schema_db, table, "family_id = %s", family)
    with schema_db.app(user_id=user) as conn:
        refused(conn, f"UPDATE {table} SET expires_at = expires_at + interval '10 years' "
                "WHERE family_id = %s", (family,), match="permission denied")  # fmt: skip
        refused(
            conn, f"UPDATE {table} SET created_at = %s WHERE family_id = %s", (FAR_FUTURE, family)
        )
    assert snapshot(schema_db, table, "family_id = %s", family) == before


@pytest.mark.parametrize(
    ("table", "lifetime"),
    [("refresh_tokens", "interval '10 years'"), ("tokens", "interval '2 days'")],
)
def test_lifetimes_are_capped_at_insert(
    schema_db: SchemaDatabase, world: World, table: str, lifetime: str
) -> None:
    user = schema_db.create_user()
    token_hash = sha256(uuid.uuid4().hex)
    with schema_db.app(user_id=user) as conn, pytest.raises(errors.CheckViolation) as info:
        conn.execute(
            f"INSERT INTO {table} (token_hash, client_id, user_id, created_at, expires_at) "
            f"VALUES (%s, %s, %s, %s, now() + {lifetime})",
            (token_hash, world.client_id, user, FAR_FUTURE),
        )
    assert info.value.diag.constraint_name == f"{table}_lifetime_capped"
    assert snapshot(schema_db, table, "token_hash = %s", token_hash) is None


def test_rotation_caps_the_new_tokens_expiry(schema_db: SchemaDatabase, world: World) -> None:
    user = schema_db.create_user()
    secret, _, _ = new_refresh_token(schema_db, world.client_id, user)
    with schema_db.app() as conn:
        status, new_id, _ = rotate(conn, secret, world.client_id, FAR_FUTURE)
        cap = conn.execute("SELECT max_refresh_token_lifetime FROM security_settings").fetchone()[0]
        # Nor can the application raise the cap.
        refused(conn, "UPDATE security_settings SET max_refresh_token_lifetime = '100 years'")
    assert status == "rotated"
    with schema_db.owner() as conn:
        expires = conn.execute(
            "SELECT expires_at FROM refresh_tokens WHERE id = %s", (new_id,)
        ).fetchone()[0]
    assert expires <= datetime.now(UTC) + cap


def test_sessions_and_api_keys_stay_revoked_and_bounded(schema_db: SchemaDatabase) -> None:
    user = schema_db.create_user()
    with schema_db.app(user_id=user) as conn:
        session = conn.execute(
            "INSERT INTO user_sessions (session_hash, user_id) VALUES (%s, %s) RETURNING id",
            (sha256(uuid.uuid4().hex), user),
        ).fetchone()[0]
        key = conn.execute(
            "INSERT INTO api_keys (user_id, name, key_prefix, key_hash, scopes) "
            "VALUES (%s, 'ci', 'ak_ci', %s, '{read}') RETURNING id",
            (user, sha256(uuid.uuid4().hex)),
        ).fetchone()[0]
        with pytest.raises(errors.CheckViolation, match=r"max_session_lifetime|more than"):
            conn.execute(
                "INSERT INTO user_sessions (session_hash, user_id, expires_at, idle_timeout) "
                "VALUES (%s, %s, now() + interval '1 year', '1 year')",
                (sha256(uuid.uuid4().hex), user),
            )
        refused(
            conn,
            "UPDATE user_sessions SET expires_at = expires_at + interval '1 year' WHERE id = %s",
            (session,),
        )
        refused(conn, "UPDATE user_sessions SET idle_timeout = '1 year' WHERE id = %s", (session,))
        refused(conn, "UPDATE api_keys SET scopes = '{admin}' WHERE id = %s", (key,))
        # Revoking is allowed (logout, key revocation) ...
        conn.execute("UPDATE user_sessions SET revoked_at = now() WHERE id = %s", (session,))
        conn.execute("UPDATE api_keys SET revoked_at = now() WHERE id = %s", (key,))
        before = (
            snapshot(schema_db, "user_sessions", "id = %s", session),
            snapshot(schema_db, "api_keys", "id = %s", key),
        )
        # ... un-revoking is not, nor deleting to insert again.
        refused(
            conn,
            "UPDATE user_sessions SET revoked_at = NULL WHERE id = %s",
            (session,),
            match="final",
        )
        refused(conn, "UPDATE api_keys SET revoked_at = NULL WHERE id = %s", (key,), match="final")
        refused(conn, "DELETE FROM user_sessions WHERE id = %s", (session,))
        refused(conn, "DELETE FROM api_keys WHERE id = %s", (key,))
    after = (
        snapshot(schema_db, "user_sessions", "id = %s", session),
        snapshot(schema_db, "api_keys", "id = %s", key),
    )
    assert after == before


# --- groups and clients: functions with a permission check and an audit row -----------------


def test_group_permissions_are_not_writable(schema_db: SchemaDatabase, world: World) -> None:
    user = schema_db.create_user()
    before = snapshot(schema_db, "groups", "id = %s", world.admin_group)
    with schema_db.app(user_id=user) as conn:
        refused(conn, "UPDATE groups SET permissions = '{groups:manage}'")
        refused(conn, "INSERT INTO groups (name, permissions) VALUES ('mine', '{groups:manage}')")
        refused(conn, "DELETE FROM groups WHERE id = %s", (world.admin_group,))
        refused(
            conn,
            "INSERT INTO group_members (group_id, user_id) VALUES (%s, %s)",
            (world.admin_group, user),
        )
        refused(
            conn,
            "SELECT add_group_member(%s, %s)",
            (world.admin_group, user),
            match="groups:manage",
        )
        refused(conn, "SELECT create_group('mine', '', '{groups:manage}')", match="groups:manage")
        refused(
            conn,
            "SELECT update_group(%s, p_permissions => '{}')",
            (world.admin_group,),
            match="groups:manage",
        )
        refused(conn, "SELECT delete_group(%s)", (world.admin_group,), match="groups:manage")
    assert snapshot(schema_db, "groups", "id = %s", world.admin_group) == before
    assert snapshot(schema_db, "group_members", "user_id = %s", user) is None


def test_a_group_manager_cannot_hand_out_what_it_does_not_hold(
    schema_db: SchemaDatabase, world: World
) -> None:
    manager = schema_db.create_user()
    with schema_db.app(user_id=world.admin) as conn:
        managers = conn.execute(
            "SELECT create_group(%s, '', '{groups:manage}')", (f"m-{uuid.uuid4().hex[:6]}",)
        ).fetchone()[0]
        conn.execute("SELECT add_group_member(%s, %s)", (managers, manager))
    with schema_db.app(user_id=manager) as conn:
        refused(
            conn,
            "SELECT add_group_member(%s, %s)",
            (world.admin_group, manager),
            match="does not hold",
        )
        refused(conn, "SELECT create_group('x', '', '{clients:manage}')", match="does not hold")
        refused(conn, "SELECT update_group(%s, p_permissions => '{groups:manage,users:manage}')", (managers,),
                match="does not hold")  # fmt: skip
    assert (
        snapshot(
            schema_db, "group_members", "user_id = %s AND group_id = %s", manager, world.admin_group
        )
        is None
    )


def test_group_writes_through_functions_are_audited_with_their_actor(
    schema_db: SchemaDatabase, world: World
) -> None:
    member = schema_db.create_user()
    with schema_db.app(user_id=world.admin) as conn:
        group = conn.execute(
            "SELECT create_group(%s, 'readers', '{users:read}')", (f"r-{uuid.uuid4().hex[:6]}",)
        ).fetchone()[0]
        conn.execute("SELECT add_group_member(%s, %s)", (group, member))
        assert conn.execute(
            "SELECT update_group(%s, p_permissions => '{}')", (group,)
        ).fetchone() == (True,)
        assert conn.execute("SELECT delete_group(%s)", (group,)).fetchone() == (True,)
    kinds = [
        "group_created",
        "group_member_added",
        "group_permissions_changed",
        "group_member_removed",
        "group_deleted",
    ]
    for kind in kinds:
        found = [e for e in events(schema_db, kind) if e["details"].get("group_id") == str(group)]
        assert len(found) == 1, kind
        assert (found[0]["actor_user_id"], found[0]["db_role"]) == (str(world.admin), APP_ROLE), (
            kind
        )


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE oauth_clients SET redirect_uris = redirect_uris || '{https://evil.example.com/cb}' WHERE client_id = %s",
        "UPDATE oauth_clients SET require_pkce = false WHERE client_id = %s",
        "UPDATE oauth_clients SET allow_plain_pkce = true WHERE client_id = %s",
        "UPDATE oauth_clients SET disabled_at = NULL WHERE client_id = %s",
        "DELETE FROM oauth_clients WHERE client_id = %s",
        "SELECT update_oauth_client(%s, '{\"require_pkce\": false}')",
        "SELECT delete_oauth_client(%s)",
        "SELECT disable_oauth_client(%s)",
    ],
)
def test_client_security_settings_are_not_writable_without_permission(
    schema_db: SchemaDatabase, world: World, statement: str
) -> None:
    user = schema_db.create_user()
    before = snapshot(schema_db, "oauth_clients", "client_id = %s", world.client_id)
    with schema_db.app(user_id=user) as conn:
        refused(conn, statement, (world.client_id,))
        refused(conn, "INSERT INTO oauth_clients (client_id, client_name, redirect_uris, client_secret_hash) "
                "VALUES ('evil-client-1', 'evil', '{https://evil.example.com/cb}', %s)", (sha256("x"),))  # fmt: skip
    assert snapshot(schema_db, "oauth_clients", "client_id = %s", world.client_id) == before


def test_client_changes_and_deletion_through_functions_are_audited(
    schema_db: SchemaDatabase, world: World
) -> None:
    user = schema_db.create_user()
    with schema_db.app(user_id=world.admin) as conn:
        client = conn.execute(
            "SELECT create_oauth_client(%s)",
            (Jsonb({"client_id": f"fn-client-{uuid.uuid4().hex[:8]}", "client_name": "Fn",
                    "client_secret_hash": "\\x" + sha256("s").hex(), "redirect_uris": [REDIRECT],
                    "scopes": ["openid"]}),),
        ).fetchone()[0]  # fmt: skip
        changed = conn.execute(
            "SELECT update_oauth_client(%s, %s)",
            (client, Jsonb({"redirect_uris": [REDIRECT, "https://app.example.com/cb2"]})),
        ).fetchone()
        refused(conn, "SELECT update_oauth_client(%s, '{\"created_at\": \"2000-01-01\"}')", (client,),
                errors.InvalidParameterValue, match="read-only")  # fmt: skip
    assert changed == (True,)
    _secret, _, _ = new_refresh_token(schema_db, client, user)
    with schema_db.app(user_id=world.admin) as conn:
        assert conn.execute("SELECT delete_oauth_client(%s)", (client,)).fetchone() == (True,)
    assert snapshot(schema_db, "refresh_tokens", "client_id = %s", client) is None  # cascaded
    for kind in (
        "client_registered",
        "client_updated",
        "client_security_settings_changed",
        "client_deleted",
    ):
        found = events(schema_db, kind, client_id=client)
        assert len(found) == 1, kind
        assert (found[0]["actor_user_id"], found[0]["db_role"]) == (str(world.admin), APP_ROLE), (
            kind
        )


def test_dynamic_registration_grants_only_what_a_self_registered_client_may_hold(
    schema_db: SchemaDatabase,
) -> None:
    """RFC 7591: anyone may register a client, but the server decides its id and its PKCE."""
    public_client = {"client_name": "CLI", "redirect_uris": [REDIRECT],
                     "token_endpoint_auth_method": "none", "scopes": ["openid", "email"]}  # fmt: skip
    with schema_db.app() as conn:  # no acting user: registration is anonymous
        client = conn.execute(
            "SELECT register_oauth_client(%s)", (Jsonb(public_client),)
        ).fetchone()[0]
        for extra, match in [
            ({"client_id": "chosen-by-me"}, "cannot set"),
            ({"require_pkce": False}, "cannot set"),
            ({"allow_plain_pkce": True}, "cannot set"),
            ({"disabled_at": None}, "cannot set"),
            ({"grant_types": ["client_credentials"]}, "grants only"),
            ({"scopes": ["openid", "groups:manage"]}, "scopes"),
        ]:
            refused(conn, "SELECT register_oauth_client(%s)", (Jsonb(public_client | extra),),
                    match=match)  # fmt: skip
    row = snapshot(schema_db, "oauth_clients", "client_id = %s", client)[0]
    assert client.startswith("dyn-")
    assert (row["require_pkce"], row["allow_plain_pkce"], row["scopes"]) == (
        True,
        False,
        ["openid", "email"],
    )
    assert len(events(schema_db, "client_registered", client_id=client)) == 1


# --- the audit log ----------------------------------------------------------------------------


def test_audit_rows_get_the_servers_role_actor_and_time(schema_db: SchemaDatabase) -> None:
    user = schema_db.create_user()
    with schema_db.app(user_id=user) as conn:
        event = conn.execute(
            "INSERT INTO security_events (event_type, user_id, db_role, actor_user_id, occurred_at) "
            "VALUES ('mfa_enrolled', %s, 'postgres', %s, %s) RETURNING id",
            (user, uuid.uuid4(), datetime(2000, 1, 1, tzinfo=UTC)),
        ).fetchone()[0]
        before = snapshot(schema_db, "security_events", "id = %s", event)
        refused(
            conn,
            "UPDATE security_events SET details = '{\"forged\": true}' WHERE id = %s",
            (event,),
        )
        conn.execute(
            "SET app.audit_purge = 'on'"
        )  # the retention purge's switch is no way in either
        refused(conn, "DELETE FROM security_events WHERE id = %s", (event,))
        refused(conn, "TRUNCATE security_events")
    (row,) = before
    assert row["db_role"] == APP_ROLE
    assert row["actor_user_id"] == str(user)
    assert abs(datetime.fromisoformat(row["occurred_at"]) - datetime.now(UTC)) < timedelta(
        minutes=1
    )
    assert snapshot(schema_db, "security_events", "id = %s", event) == before


def test_the_runtime_role_cannot_choose_audit_ids(schema_db: SchemaDatabase) -> None:
    """OVERRIDING SYSTEM VALUE needs only INSERT: with it and the sequence readable, the
    runtime role inserted the next ids ahead of the server and every audited write (a
    registration, a login) then failed on a duplicate key."""
    user = schema_db.create_user()
    with schema_db.app(user_id=user) as conn:
        for statement in (
            "INSERT INTO security_events (id, event_type) OVERRIDING SYSTEM VALUE "
            "VALUES (9223372036854775000, 'squat')",
            "INSERT INTO password_history (id, user_id, password_hash) OVERRIDING SYSTEM VALUE "
            f"VALUES (9223372036854775000, '{user}', '{BCRYPT_HASH}')",
            "SELECT last_value FROM security_events_id_seq",
            "SELECT nextval('security_events_id_seq')",
            "SELECT setval('security_events_id_seq', 1)",
        ):
            with pytest.raises(errors.InsufficientPrivilege):
                conn.execute(statement)
        # What the application does stays possible: an event without an id, a registration.
        conn.execute("INSERT INTO security_events (event_type, user_id) VALUES ('mfa_enrolled', %s)",
                     (user,))  # fmt: skip
        email = f"n{uuid.uuid4().hex[:10]}@example.com"
        new_user = conn.execute("SELECT create_user(%s, %s)", (email, BCRYPT_HASH)).fetchone()
        assert new_user and new_user[0]
    sequences = (
        "SELECT count(*) FROM information_schema.role_usage_grants "
        "WHERE grantee = %s AND object_type = 'SEQUENCE'"
    )
    with schema_db.owner() as conn:
        assert conn.execute(sequences, (APP_ROLE,)).fetchone() == (0,)


def test_the_runtime_role_cannot_run_the_key_based_cleanup(schema_db: SchemaDatabase) -> None:
    """cleanup_expired_data() is SECURITY DEFINER: the application could delete every expired
    row, in batches as large as it asked, and purge the audit log. It does not need it (the
    scheduled cleanup is the cleanup role's, 004): 005 leaves it to the owner, who runs SEED's
    `SELECT cleanup_expired_data();`."""
    with schema_db.app() as conn:
        for call in ("SELECT cleanup_expired_data()", "SELECT cleanup_expired_data(100, 1)",
                     "CALL cleanup_expired_data_all()"):  # fmt: skip
            with pytest.raises(errors.InsufficientPrivilege):
                conn.execute(call)
    with schema_db.owner() as conn:
        assert conn.execute("SELECT cleanup_expired_data() ? 'more'").fetchone() == (True,)


def test_cleanup_refuses_a_batch_of_zero(schema_db: SchemaDatabase) -> None:
    """A batch of 0 deleted nothing and never ended (2^31 empty rounds; for ever through the
    procedure): a caller could keep the server busy until statement_timeout."""
    with schema_db.owner() as conn:
        conn.execute("SET statement_timeout = '10s'")
        for call in ("SELECT cleanup_expired_data(0, 2147483647)",
                     "SELECT cleanup_expired_data(100, 0)", "CALL cleanup_expired_data_all(0)"):  # fmt: skip
            with pytest.raises(errors.InvalidParameterValue):
                conn.execute(call)
        assert conn.execute("SELECT cleanup_expired_data(100, 1) ? 'more'").fetchone() == (True,)


# --- disabled and deleted users, disabled clients ------------------------------------------------


@dataclass
class Credentials:
    user: uuid.UUID
    refresh: str
    session: bytes
    code: str


def issue_everything(db: SchemaDatabase, client_id: str) -> Credentials:
    user = db.create_user()
    refresh, _, _ = new_refresh_token(db, client_id, user)
    session = sha256(uuid.uuid4().hex)
    with db.app(user_id=user) as conn:
        conn.execute(
            "INSERT INTO user_sessions (session_hash, user_id) VALUES (%s, %s)", (session, user)
        )
    code, _ = new_code(db, client_id, user)
    return Credentials(user, refresh, session, code)


def nothing_works(db: SchemaDatabase, client_id: str, creds: Credentials) -> None:
    with db.app() as conn:
        assert introspect(conn, creds.refresh) is False
        assert rotate(conn, creds.refresh, client_id, datetime.now(UTC) + timedelta(days=1))[0] in {
            "revoked",
            "invalid_grant",
        }
        assert conn.execute("SELECT * FROM validate_session(%s)", (creds.session,)).fetchall() == []
        assert redeem(conn, creds.code, client_id)[0] == "invalid_grant"


@pytest.mark.parametrize(
    "change", ["status = 'disabled'", "status = 'suspended'", "deleted_at = now()"]
)
def test_disabling_or_deleting_a_user_ends_everything_at_once(
    schema_db: SchemaDatabase, world: World, change: str
) -> None:
    creds = issue_everything(schema_db, world.client_id)
    with schema_db.app() as conn:
        assert introspect(conn, creds.refresh) is True
    with schema_db.app(user_id=creds.user) as conn:
        conn.execute(f"UPDATE users SET {change} WHERE id = %s", (creds.user,))
    nothing_works(schema_db, world.client_id, creds)
    with schema_db.owner() as conn:
        live = conn.execute(
            "SELECT (SELECT count(*) FROM tokens WHERE user_id = %(u)s AND revoked_at IS NULL) "
            "+ (SELECT count(*) FROM refresh_tokens WHERE user_id = %(u)s AND revoked_at IS NULL) "
            "+ (SELECT count(*) FROM user_sessions WHERE user_id = %(u)s AND revoked_at IS NULL)",
            {"u": creds.user},
        ).fetchone()
    assert live == (0,)
    assert len(events(schema_db, "user_credentials_revoked", user_id=creds.user)) == 1
    # Reviving the account does not revive its credentials, and needs users:manage.
    with schema_db.app(user_id=creds.user) as conn:
        refused(
            conn,
            "UPDATE users SET status = 'active', deleted_at = NULL WHERE id = %s",
            (creds.user,),
        )


def test_credentials_issued_after_disabling_are_refused_at_every_check(
    schema_db: SchemaDatabase, world: World
) -> None:
    """Revocation covers what existed; the checks cover what a compromised application
    issues afterwards."""
    user = schema_db.create_user()
    with schema_db.owner() as conn:
        conn.execute("UPDATE users SET status = 'disabled' WHERE id = %s", (user,))
    refresh, _, _ = new_refresh_token(schema_db, world.client_id, user)
    session = sha256(uuid.uuid4().hex)
    with schema_db.app(user_id=user) as conn:
        conn.execute(
            "INSERT INTO user_sessions (session_hash, user_id) VALUES (%s, %s)", (session, user)
        )
    code, _ = new_code(schema_db, world.client_id, user)
    nothing_works(schema_db, world.client_id, Credentials(user, refresh, session, code))


def test_disabling_a_client_ends_its_tokens(schema_db: SchemaDatabase, world: World) -> None:
    client = schema_db.create_client()
    creds = issue_everything(schema_db, client)
    with schema_db.app(user_id=world.admin) as conn:
        assert conn.execute("SELECT disable_oauth_client(%s)", (client,)).fetchone() == (True,)
    with schema_db.app() as conn:
        assert introspect(conn, creds.refresh) is False
        assert (
            rotate(conn, creds.refresh, client, datetime.now(UTC) + timedelta(days=1))[0]
            == "revoked"
        )
        assert redeem(conn, creds.code, client)[0] == "invalid_grant"
    (event,) = events(schema_db, "client_disabled", client_id=client)
    assert event["details"] == {"tokens": 1, "refresh_tokens": 1}
    assert event["actor_user_id"] == str(world.admin)


def test_a_user_manager_disables_and_reactivates_accounts(
    schema_db: SchemaDatabase, world: World
) -> None:
    user = schema_db.create_user()
    refresh, _, _ = new_refresh_token(schema_db, world.client_id, user)
    with schema_db.app(user_id=user) as conn:
        refused(conn, "SELECT set_user_status(%s, 'active')", (user,), match="users:manage")
    with schema_db.app(user_id=world.admin) as conn:
        assert conn.execute("SELECT set_user_status(%s, 'disabled')", (user,)).fetchone() == (True,)
        assert introspect(conn, refresh) is False
    with schema_db.app(user_id=user) as conn:  # its own row, without users:manage
        refused(
            conn, "UPDATE users SET status = 'active' WHERE id = %s", (user,), match="users:manage"
        )
    with schema_db.app(user_id=world.admin) as conn:
        assert conn.execute("SELECT set_user_status(%s, 'active')", (user,)).fetchone() == (True,)
        assert introspect(conn, refresh) is False  # revoked for good
    changes = events(schema_db, "user_status_changed", user_id=user)
    assert [(e["details"]["new"], e["actor_user_id"]) for e in changes] == [
        ("disabled", str(world.admin)),
        ("active", str(world.admin)),
    ]


# --- beyond the issue's list -----------------------------------------------------------------


def test_another_users_row_is_out_of_reach(schema_db: SchemaDatabase, world: World) -> None:
    """Past row level security: another user's password, email, verification, status,
    lockout counters; an API key or session for them; their tokens, read."""
    me, victim = schema_db.create_user(), schema_db.create_user()
    new_refresh_token(schema_db, world.client_id, victim)
    before = snapshot(schema_db, "users", "id = %s", victim)
    with schema_db.app(user_id=me) as conn:
        for change in (
            f"password_hash = '{bcrypt_hash(99)}'",
            "email = 'attacker@example.com'",
            "email_verified_at = now()",
            "status = 'active'",
            "deleted_at = now()",
        ):
            assert conn.execute(f"UPDATE users SET {change} WHERE id = %s", (victim,)).rowcount == 0
        refused(
            conn,
            "UPDATE users SET failed_login_attempts = 0, locked_until = NULL WHERE id = %s",
            (victim,),
        )
        refused(conn, "INSERT INTO api_keys (user_id, name, key_prefix, key_hash) VALUES (%s, 'x', 'ak_x', %s)",
                (victim, sha256(uuid.uuid4().hex)), match="row-level security")  # fmt: skip
        refused(conn, "INSERT INTO user_sessions (session_hash, user_id) VALUES (%s, %s)",
                (sha256(uuid.uuid4().hex), victim), match="row-level security")  # fmt: skip
        refused(conn, "INSERT INTO users (id, email, password_hash) VALUES (%s, 'x@example.com', %s)",
                (uuid.uuid4(), BCRYPT_HASH), match="row-level security")  # fmt: skip
        for table in (
            "tokens",
            "refresh_tokens",
            "user_sessions",
            "api_keys",
            "security_events",
            "password_history",
        ):
            assert conn.execute(
                f"SELECT count(*) FROM {table} WHERE user_id = %s", (victim,)
            ).fetchone() == (0,)
    assert snapshot(schema_db, "users", "id = %s", victim) == before


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO rate_limits VALUES ('ip:203.0.113.9', 'login', now(), now() + interval '1 day', 0)",
        "UPDATE rate_limits SET request_count = 0",
        "DELETE FROM rate_limits",
        "SELECT * FROM rate_limits",
        "SET session_replication_role = replica",  # would skip every trigger
        "ALTER TABLE tokens DISABLE TRIGGER tokens_guard",
        "DROP TRIGGER auth_codes_guard ON auth_codes",
        "SELECT revoke_token_family(gen_random_uuid())",
        "SELECT log_security_event('forged', NULL)",
        "SELECT oauth_client_columns('{}', true)",
        "UPDATE security_settings SET max_access_token_lifetime = '10 years'",
        "INSERT INTO password_history (user_id, password_hash) VALUES (gen_random_uuid(), 'x')",
    ],
)
def test_runtime_role_cannot_forge_limits_skip_triggers_or_call_internals(
    schema_db: SchemaDatabase, statement: str
) -> None:
    with schema_db.app(user_id=uuid.uuid4()) as conn:
        refused(conn, statement)


# --- the legitimate path, and what a compromised application can do -----------------------


def test_the_legitimate_flow_still_works(schema_db: SchemaDatabase, world: World) -> None:
    user = schema_db.create_user()
    code, _ = new_code(schema_db, world.client_id, user)
    with schema_db.app() as conn:
        status, family = redeem(conn, code, world.client_id)
    assert status == "ok"
    refresh, _, access = new_refresh_token(schema_db, world.client_id, user, family)
    with schema_db.app() as conn:
        assert introspect(conn, refresh) is True
        status, _, _newer = rotate(
            conn, refresh, world.client_id, datetime.now(UTC) + timedelta(days=30)
        )
        assert status == "rotated"
    with schema_db.app(user_id=user) as conn:  # RFC 7009 revocation, logout
        assert (
            conn.execute(
                "UPDATE tokens SET revoked_at = now(), revoked_reason = 'revoked' WHERE id = %s",
                (access,),
            ).rowcount
            == 1
        )
    with schema_db.app() as conn:
        assert introspect(conn, refresh) is False
    with schema_db.app(user_id=world.admin) as conn:
        conn.execute("SELECT add_group_member(%s, %s)", (world.admin_group, user))
    (added,) = [e for e in events(schema_db, "group_member_added", user_id=user)]
    assert (added["actor_user_id"], added["db_role"]) == (str(world.admin), APP_ROLE)


def test_a_compromised_application_can_act_as_any_user(
    schema_db: SchemaDatabase, world: World
) -> None:
    """The runtime role sets app.current_user_id itself: claiming to be an admin, it gets
    the admin's permissions. The invariants above still hold, and the audit names the
    impersonated admin and the runtime role."""
    intruder = schema_db.create_user()
    with schema_db.app(user_id=intruder) as conn:
        refused(conn, "SELECT add_group_member(%s, %s)", (world.admin_group, intruder))
        conn.execute("SELECT set_config('app.current_user_id', %s, false)", (str(world.admin),))
        conn.execute("SELECT add_group_member(%s, %s)", (world.admin_group, intruder))
    (event,) = events(schema_db, "group_member_added", user_id=intruder)
    assert (event["actor_user_id"], event["db_role"]) == (str(world.admin), APP_ROLE)


def test_the_next_start_succeeds_after_the_attacks(
    schema_db: SchemaDatabase, tmp_path: Any
) -> None:
    result = run_entrypoint(runner_env(schema_db.db), tmp_path)
    assert result.returncode == 0, str(result)
    with schema_db.owner() as conn:
        versions = [
            row[0] for row in conn.execute("SELECT version FROM schema_migrations ORDER BY version")
        ]
    assert "002_security_invariants" in versions
