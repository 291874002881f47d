"""Each constraint rejects what it must; audit triggers record sensitive changes."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from psycopg import errors

from tests.integration import schema_fixtures
from tests.integration.schema_fixtures import (
    ARGON2ID_HASH,
    BCRYPT_HASH,
    SCRYPT_HASH,
    SchemaDatabase,
    bcrypt_hash,
    sha256,
)

schema_db = schema_fixtures.schema_db

S256_CHALLENGE = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"  # RFC 7636 appendix B


def new_email() -> str:
    return f"user-{uuid.uuid4().hex[:10]}@example.com"


@pytest.mark.parametrize(
    "bad_hash",
    [
        "correct horse battery staple",  # plaintext
        "5f4dcc3b5aa765d61d8327deb882cf99",  # unsalted md5
        "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8",  # sha256 hex
        "$argon2i$v=19$m=65536,t=3,p=4$c29tZXNhbHQ$" + "A" * 43,  # argon2i, not argon2id
        "$2b$12$short",
        "$1$saltsalt$hashhashhashhashhashha",  # md5-crypt
        "",
    ],
)
def test_password_hash_rejects_anything_but_a_modern_hash(
    schema_db: SchemaDatabase, bad_hash: str
) -> None:
    with schema_db.app() as conn, pytest.raises(errors.CheckViolation, match="password_hash"):
        conn.execute("SELECT create_user(%s, %s)", (new_email(), bad_hash))


@pytest.mark.parametrize("good_hash", [ARGON2ID_HASH, BCRYPT_HASH, SCRYPT_HASH, None])
def test_password_hash_accepts_argon2id_bcrypt_scrypt_or_none(
    schema_db: SchemaDatabase, good_hash: str | None
) -> None:
    with schema_db.app() as conn:
        user_id = conn.execute("SELECT create_user(%s, %s)", (new_email(), good_hash)).fetchone()[0]
    with schema_db.owner() as conn:
        changed = conn.execute(
            "SELECT password_changed_at IS NOT NULL FROM users WHERE id = %s", (user_id,)
        ).fetchone()
    assert changed == (good_hash is not None,)


def test_email_is_unique_whatever_its_case_until_soft_deleted(schema_db: SchemaDatabase) -> None:
    email = new_email()
    with schema_db.app() as conn:
        first = conn.execute("SELECT create_user(%s, %s)", (email, BCRYPT_HASH)).fetchone()[0]
        with pytest.raises(errors.UniqueViolation, match="users_email_active_key"):
            conn.execute("SELECT create_user(%s, %s)", (email.upper(), BCRYPT_HASH))
        with pytest.raises(errors.CheckViolation, match="users_email_format"):
            conn.execute("SELECT create_user('not-an-email', %s)", (BCRYPT_HASH,))
    with schema_db.app(user_id=first) as conn:
        conn.execute("UPDATE users SET deleted_at = now() WHERE id = %s", (first,))
    with schema_db.app() as conn:
        conn.execute("SELECT create_user(%s, %s)", (email.title(), BCRYPT_HASH))
        assert conn.execute(
            "SELECT count(*) FROM find_user_for_login(%s)", (email,)
        ).fetchone() == (1,)


def test_password_change_policy(schema_db: SchemaDatabase) -> None:
    """password_changed_at moves on change; a hash from the last N is refused; the
    history is kept to N and the change is audited."""
    user_id = schema_db.create_user(password_hash=bcrypt_hash(0))
    with schema_db.owner() as conn:
        depth = conn.execute("SELECT password_history_depth FROM security_settings").fetchone()[0]
        conn.execute("UPDATE users SET password_changed_at = now() - interval '90 days'")
    with schema_db.app(user_id=user_id) as conn:
        for n in range(1, depth + 3):
            conn.execute(
                "UPDATE users SET password_hash = %s WHERE id = %s", (bcrypt_hash(n), user_id)
            )
        current = depth + 2
        for reused in (current - 1, current - depth):
            with pytest.raises(errors.CheckViolation, match="used recently"):
                conn.execute(
                    "UPDATE users SET password_hash = %s WHERE id = %s",
                    (bcrypt_hash(reused), user_id),
                )
        # Older than the last N: the database cannot tell, and accepts it.
        conn.execute(
            "UPDATE users SET password_hash = %s WHERE id = %s",
            (bcrypt_hash(current - depth - 1), user_id),
        )
        history = conn.execute("SELECT count(*) FROM password_history").fetchone()
        recent = conn.execute(
            "SELECT password_changed_at > now() - interval '1 minute' FROM users"
        ).fetchone()
        events = conn.execute(
            "SELECT count(*) FROM security_events WHERE event_type = 'password_changed'"
        ).fetchone()
    assert history == (depth,)
    assert recent == (True,)
    assert events == (depth + 3,)


def insert_code(conn: Any, client_id: str, user_id: uuid.UUID, **overrides: Any) -> None:
    values: dict[str, Any] = {
        "code_hash": sha256(uuid.uuid4().hex),
        "client_id": client_id,
        "user_id": user_id,
        "redirect_uri": "https://app.example.com/callback",
        "scopes": ["openid"],
        "code_challenge": S256_CHALLENGE,
        "code_challenge_method": "S256",
    }
    values.update(overrides)
    conn.execute(
        f"INSERT INTO auth_codes ({', '.join(values)}) VALUES ({', '.join(['%s'] * len(values))})",
        tuple(values.values()),
    )


@pytest.mark.parametrize(
    ("overrides", "constraint"),
    [
        ({"code_challenge_method": "S512"}, "auth_codes_code_challenge_method_valid"),
        ({"code_challenge_method": "s256"}, "auth_codes_code_challenge_method_valid"),
        ({"code_challenge_method": "plain"}, "auth_codes_pkce_method_allowed"),
        ({"code_challenge": None, "code_challenge_method": None}, "auth_codes_pkce_required"),
        ({"code_challenge_method": None}, "auth_codes_pkce_pair"),
        ({"code_challenge": "too-short"}, "auth_codes_code_challenge_format"),
        (
            {"redirect_uri": "https://evil.example.com/callback"},
            "auth_codes_redirect_uri_registered",
        ),
        (
            {"redirect_uri": "https://app.example.com/callback/x"},
            "auth_codes_redirect_uri_registered",
        ),
        ({"scopes": ["admin"]}, "auth_codes_scopes_allowed"),
        ({"expires_at": datetime.now(UTC) + timedelta(hours=1)}, "auth_codes_short_lived"),
        ({"code_hash": b"plaintext-code"}, "auth_codes_code_hash_check"),
    ],
)
def test_auth_code_constraints(
    schema_db: SchemaDatabase, overrides: dict[str, Any], constraint: str
) -> None:
    client_id = schema_db.create_client()
    user_id = schema_db.create_user()
    with schema_db.app(user_id=user_id) as conn:
        with pytest.raises(errors.CheckViolation) as info:
            insert_code(conn, client_id, user_id, **overrides)
        assert info.value.diag.constraint_name == constraint
        insert_code(conn, client_id, user_id)  # the same code, well-formed, is accepted


def test_plain_pkce_only_behind_the_client_setting(schema_db: SchemaDatabase) -> None:
    client_id = schema_db.create_client(allow_plain_pkce=True)
    user_id = schema_db.create_user()
    with schema_db.app(user_id=user_id) as conn:
        insert_code(
            conn, client_id, user_id, code_challenge="v" * 43, code_challenge_method="plain"
        )


@pytest.mark.parametrize(
    ("overrides", "constraint"),
    [
        ({"grant_types": ["implicit"]}, "oauth_clients_grant_types_valid"),
        ({"grant_types": ["password"]}, "oauth_clients_grant_types_valid"),
        ({"response_types": ["token"]}, "oauth_clients_response_types_valid"),
        ({"redirect_uris": ["http://app.example.com/cb"]}, "oauth_clients_redirect_uris_valid"),
        (
            {"redirect_uris": ["https://app.example.com/cb#frag"]},
            "oauth_clients_redirect_uris_valid",
        ),
        ({"redirect_uris": ["https://*.example.com/cb"]}, "oauth_clients_redirect_uris_valid"),
        ({"redirect_uris": []}, "oauth_clients_code_flow_has_redirect"),
        ({"token_endpoint_auth_method": "client_secret_jwt"}, "oauth_clients_auth_method_valid"),
        ({"client_secret_hash": None}, "oauth_clients_secret_matches_method"),
        ({"token_endpoint_auth_method": "none"}, "oauth_clients_secret_matches_method"),
        (
            {
                "token_endpoint_auth_method": "none",
                "client_secret_hash": None,
                "require_pkce": False,
            },
            "oauth_clients_secret_matches_method",
        ),
        ({"client_secret_hash": b"plaintext-secret"}, "oauth_clients_client_secret_hash_check"),
    ],
)
def test_client_registration_constraints(
    schema_db: SchemaDatabase, overrides: dict[str, Any], constraint: str
) -> None:
    with pytest.raises(errors.CheckViolation) as info:
        schema_db.create_client(**overrides)
    assert info.value.diag.constraint_name == constraint


@pytest.mark.parametrize(
    "redirect_uris",
    [
        ["https://app.example.com/callback?x=1"],
        ["http://127.0.0.1:8123/callback", "http://[::1]/cb"],
        ["com.example.app:/oauth2redirect"],
    ],
)
def test_client_redirect_uris_accepted(schema_db: SchemaDatabase, redirect_uris: list[str]) -> None:
    schema_db.create_client(redirect_uris=redirect_uris)


def test_public_client_uses_pkce_and_no_secret(schema_db: SchemaDatabase) -> None:
    schema_db.create_client(token_endpoint_auth_method="none", client_secret_hash=None)


@pytest.mark.parametrize(
    ("table", "statement"),
    [
        ("tokens", "INSERT INTO tokens (token_hash, client_id, user_id, expires_at) "),
        (
            "refresh_tokens",
            "INSERT INTO refresh_tokens (token_hash, client_id, user_id, expires_at) ",
        ),
    ],
)
def test_tokens_are_stored_as_sha256_only(
    schema_db: SchemaDatabase, table: str, statement: str
) -> None:
    client_id = schema_db.create_client()
    user_id = schema_db.create_user()
    later = datetime.now(UTC) + timedelta(hours=1)
    with schema_db.app(user_id=user_id) as conn:
        with pytest.raises(errors.CheckViolation, match="token_hash"):
            conn.execute(
                statement + "VALUES (%s, %s, %s, %s)",
                (b"eyJhbGciOiJSUzI1NiJ9.plaintext.token", client_id, user_id, later),
            )
        with pytest.raises(errors.CheckViolation, match="expiry"):
            conn.execute(
                statement + "VALUES (%s, %s, %s, now() - interval '1 second')",
                (sha256(uuid.uuid4().hex), client_id, user_id),
            )
        with pytest.raises(errors.CheckViolation, match="token_prefix"):
            conn.execute(
                f"INSERT INTO {table} (token_hash, token_prefix, client_id, user_id, expires_at) "
                "VALUES (%s, %s, %s, %s, %s)",
                (
                    sha256(uuid.uuid4().hex),
                    "the-whole-secret-token-" * 2,
                    client_id,
                    user_id,
                    later,
                ),
            )


def test_api_keys_are_stored_as_sha256_only(schema_db: SchemaDatabase) -> None:
    user_id = schema_db.create_user()
    with schema_db.app(user_id=user_id) as conn:
        with pytest.raises(errors.CheckViolation, match="key_hash"):
            conn.execute(
                "INSERT INTO api_keys (user_id, name, key_prefix, key_hash) VALUES (%s, 'k', 'ak_1', %s)",
                (user_id, b"ak_1_plaintextsecret"),
            )
        with pytest.raises(errors.CheckViolation, match="key_prefix"):
            conn.execute(
                "INSERT INTO api_keys (user_id, name, key_prefix, key_hash) VALUES (%s, 'k', %s, %s)",
                (user_id, "ak_1_plaintextsecret_whole", sha256("k")),
            )


def test_audit_log_is_append_only(schema_db: SchemaDatabase) -> None:
    user_id = schema_db.create_user()
    with schema_db.app(user_id=user_id) as conn:
        event_id = conn.execute(
            "INSERT INTO security_events (event_type, user_id, details) "
            "VALUES ('mfa_enrolled', %s, '{\"method\": \"totp\"}') RETURNING id",
            (user_id,),
        ).fetchone()[0]
        assert conn.execute(
            "SELECT event_type, actor_user_id, db_role FROM security_events WHERE id = %s",
            (event_id,),
        ).fetchone() == ("mfa_enrolled", user_id, schema_fixtures.APP_ROLE)
        for statement in (
            "UPDATE security_events SET details = '{}' WHERE id = %s",
            "DELETE FROM security_events WHERE id = %s",
        ):
            with pytest.raises(errors.InsufficientPrivilege):
                conn.execute(statement, (event_id,))
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("TRUNCATE security_events")
    # Not even the owner changes history (only cleanup deletes, past retention).
    with schema_db.owner() as conn:
        for statement in (
            "UPDATE security_events SET details = '{}' WHERE id = %s",
            "DELETE FROM security_events WHERE id = %s",
        ):
            with pytest.raises(errors.InsufficientPrivilege, match="append-only"):
                conn.execute(statement, (event_id,))
        with pytest.raises(errors.InsufficientPrivilege, match="append-only"):
            conn.execute("TRUNCATE security_events")


def test_sensitive_changes_are_audited(schema_db: SchemaDatabase) -> None:
    client_id = schema_db.create_client()
    user_id = schema_db.create_user()
    with schema_db.owner() as conn:
        conn.execute(
            "UPDATE oauth_clients SET client_secret_hash = %s, client_secret_prefix = 'cs_new' "
            "WHERE client_id = %s",
            (sha256("rotated"), client_id),
        )
        group_id = conn.execute(
            "INSERT INTO groups (name) VALUES (%s) RETURNING id", (f"g-{uuid.uuid4().hex[:6]}",)
        ).fetchone()[0]
        conn.execute(
            "INSERT INTO group_members (group_id, user_id) VALUES (%s, %s)", (group_id, user_id)
        )
        conn.execute("UPDATE group_members SET role = 'manager' WHERE user_id = %s", (user_id,))
        conn.execute("UPDATE groups SET permissions = '{users:read}' WHERE id = %s", (group_id,))
        conn.execute("UPDATE users SET status = 'suspended' WHERE id = %s", (user_id,))
        client_events = conn.execute(
            "SELECT event_type, details ->> 'new_prefix' FROM security_events WHERE client_id = %s "
            "ORDER BY id",
            (client_id,),
        ).fetchall()
        user_events = conn.execute(
            "SELECT event_type FROM security_events WHERE user_id = %s ORDER BY id", (user_id,)
        ).fetchall()
        group_events = conn.execute(
            "SELECT count(*) FROM security_events WHERE event_type = 'group_permissions_changed' "
            "AND details ->> 'group_id' = %s",
            (str(group_id),),
        ).fetchone()
    assert client_events == [("client_registered", None), ("client_secret_rotated", "cs_new")]
    assert [row[0] for row in user_events] == [
        "user_created",
        "group_member_added",
        "group_member_changed",
        "user_status_changed",
    ]
    assert group_events == (1,)
