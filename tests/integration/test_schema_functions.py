"""The security functions, called as the runtime role: refresh-token rotation with
reuse detection, code redemption with PKCE, lockout, rate limits, cleanup."""

from __future__ import annotations

import base64
import hashlib
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.integration import schema_fixtures
from tests.integration.schema_fixtures import SchemaDatabase, sha256

schema_db = schema_fixtures.schema_db
fresh_schema_db = schema_fixtures.fresh_schema_db

LATER = timedelta(days=30)


def s256(verifier: str) -> str:
    return (
        base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    )


def issue_refresh_token(db: SchemaDatabase, client_id: str, user_id: uuid.UUID) -> tuple[str, Any]:
    secret = "rt_" + uuid.uuid4().hex
    with db.app(user_id=user_id) as conn:
        family = conn.execute(
            "INSERT INTO refresh_tokens (token_hash, token_prefix, client_id, user_id, scopes, expires_at) "
            "VALUES (%s, 'rt_x', %s, %s, '{openid}', %s) RETURNING family_id",
            (sha256(secret), client_id, user_id, datetime.now(UTC) + LATER),
        ).fetchone()[0]
        conn.execute(
            "INSERT INTO tokens (token_hash, client_id, user_id, family_id, expires_at) "
            "VALUES (%s, %s, %s, %s, now() + interval '1 hour')",
            (sha256("at" + secret), client_id, user_id, family),
        )
    return secret, family


def rotate(conn: Any, presented: str, client_id: str) -> tuple[Any, ...]:
    new = "rt_" + uuid.uuid4().hex
    row = conn.execute(
        "SELECT status, user_id, family_id, refresh_token_id FROM rotate_refresh_token(%s, %s, %s, 'rt_y', %s)",
        (sha256(presented), client_id, sha256(new), datetime.now(UTC) + LATER),
    ).fetchone()
    return (*row, new)


def test_refresh_token_rotation_and_reuse_detection(schema_db: SchemaDatabase) -> None:
    client_id = schema_db.create_client()
    user_id = schema_db.create_user()
    first, family = issue_refresh_token(schema_db, client_id, user_id)
    with schema_db.app() as conn:  # the token endpoint has no user context
        status, uid, fam, new_id, second = rotate(conn, first, client_id)
        assert (status, uid, fam) == ("rotated", user_id, family)
        status, _, _, _, third = rotate(conn, second, client_id)
        assert status == "rotated"
        # An attacker (or a stale client) presents the first, already rotated token.
        status, uid, fam, new_id, _ = rotate(conn, first, client_id)
        assert (status, uid, fam, new_id) == ("reuse_detected", user_id, family, None)
        # The whole family is dead now, including the legitimate newest token.
        assert rotate(conn, third, client_id)[0] == "revoked"
        assert rotate(conn, "rt_unknown", client_id)[0] == "invalid_grant"
    with schema_db.owner() as conn:
        live = conn.execute(
            "SELECT (SELECT count(*) FROM refresh_tokens WHERE family_id = %s AND revoked_at IS NULL), "
            "(SELECT count(*) FROM tokens WHERE family_id = %s AND revoked_at IS NULL), "
            "(SELECT count(*) FROM refresh_tokens WHERE family_id = %s)",
            (family, family, family),
        ).fetchone()
        events = conn.execute(
            "SELECT severity FROM security_events WHERE user_id = %s AND event_type = 'refresh_token_reuse'",
            (user_id,),
        ).fetchall()
    assert live == (0, 0, 3)
    assert events == [("critical",)]


def test_refresh_token_rotation_refuses_other_clients_and_expired_tokens(
    schema_db: SchemaDatabase,
) -> None:
    client_id = schema_db.create_client()
    other = schema_db.create_client()
    user_id = schema_db.create_user()
    token, _ = issue_refresh_token(schema_db, client_id, user_id)
    with schema_db.app() as conn:
        assert rotate(conn, token, other)[0] == "invalid_grant"
    with schema_db.owner() as conn:
        conn.execute(
            "UPDATE refresh_tokens SET created_at = now() - interval '2 days', "
            "expires_at = now() - interval '1 day' WHERE token_hash = %s",
            (sha256(token),),
        )
    with schema_db.app() as conn:
        assert rotate(conn, token, client_id)[0] == "expired"


def create_code(
    db: SchemaDatabase, client_id: str, user_id: uuid.UUID, verifier: str | None
) -> tuple[str, Any]:
    code = "code_" + uuid.uuid4().hex
    with db.app(user_id=user_id) as conn:
        conn.execute(
            "INSERT INTO auth_codes (code_hash, client_id, user_id, redirect_uri, scopes, nonce, "
            "code_challenge, code_challenge_method) "
            "VALUES (%s, %s, %s, 'https://app.example.com/callback', '{openid}', 'n-1', %s, %s)",
            (sha256(code), client_id, user_id, verifier and s256(verifier), verifier and "S256"),
        )
    return code, None


def redeem(
    conn: Any, code: str, client_id: str, verifier: str | None, redirect: str | None = None
) -> Any:
    return conn.execute(
        "SELECT status, user_id, family_id, scopes, nonce FROM redeem_auth_code(%s, %s, %s, %s)",
        (sha256(code), client_id, redirect or "https://app.example.com/callback", verifier),
    ).fetchone()


def test_auth_code_is_single_use_and_pkce_verified(schema_db: SchemaDatabase) -> None:
    client_id = schema_db.create_client()
    user_id = schema_db.create_user()
    verifier = "dBjftJeZ4CVP-mJ92K27uhbUJU1p1r_wW1gFWFOEjXk"
    code, _ = create_code(schema_db, client_id, user_id, verifier)
    with schema_db.app() as conn:
        assert redeem(conn, code, client_id, "x" * 43)[0] == "invalid_grant"  # wrong verifier
        assert redeem(conn, code, client_id, None)[0] == "invalid_grant"  # verifier missing
        assert redeem(conn, code, client_id, verifier, "https://app.example.com/other")[0] == (
            "invalid_grant"
        )
        assert redeem(conn, code, schema_db.create_client(), verifier)[0] == "invalid_grant"
        status, uid, family, scopes, nonce = redeem(conn, code, client_id, verifier)
        assert (status, uid, scopes, nonce) == ("ok", user_id, ["openid"], "n-1")
    # Tokens issued from the code carry its family; replaying the code revokes them.
    with schema_db.app(user_id=user_id) as conn:
        conn.execute(
            "INSERT INTO tokens (token_hash, client_id, user_id, family_id, expires_at) "
            "VALUES (%s, %s, %s, %s, now() + interval '1 hour')",
            (sha256(uuid.uuid4().hex), client_id, user_id, family),
        )
    with schema_db.app() as conn:
        assert redeem(conn, code, client_id, verifier)[0] == "reused"
    with schema_db.owner() as conn:
        live = conn.execute(
            "SELECT count(*) FROM tokens WHERE family_id = %s AND revoked_at IS NULL", (family,)
        ).fetchone()
    assert live == (0,)


def test_pkce_downgrade_and_expired_codes_are_refused(schema_db: SchemaDatabase) -> None:
    client_id = schema_db.create_client(require_pkce=False)
    user_id = schema_db.create_user()
    code, _ = create_code(schema_db, client_id, user_id, None)
    with schema_db.app() as conn:
        # A verifier for a code requested without a challenge (RFC 9700 2.1.1).
        assert redeem(conn, code, client_id, "v" * 43)[0] == "invalid_grant"
    expired, _ = create_code(schema_db, client_id, user_id, None)
    with schema_db.owner() as conn:
        conn.execute(
            "UPDATE auth_codes SET created_at = now() - interval '5 minutes', "
            "expires_at = now() - interval '1 second' WHERE code_hash = %s",
            (sha256(expired),),
        )
    with schema_db.app() as conn:
        assert redeem(conn, expired, client_id, None)[0] == "invalid_grant"
        assert redeem(conn, code, client_id, None)[0] == "ok"


def test_lockout_after_max_failures_within_the_window(schema_db: SchemaDatabase) -> None:
    user_id = schema_db.create_user()
    with schema_db.owner() as conn:
        limit, duration = conn.execute(
            "SELECT max_failed_logins, lockout_duration FROM security_settings"
        ).fetchone()
    with schema_db.app() as conn:
        for attempt in range(1, limit):
            count, locked_until = conn.execute(
                "SELECT * FROM record_failed_login(%s, '198.51.100.7')", (user_id,)
            ).fetchone()
            assert (count, locked_until) == (attempt, None)
        count, locked_until = conn.execute(
            "SELECT * FROM record_failed_login(%s)", (user_id,)
        ).fetchone()
        assert count == limit
        assert locked_until is not None
        remaining = locked_until - datetime.now(UTC)
        assert duration - timedelta(minutes=1) < remaining <= duration
        assert conn.execute("SELECT is_account_locked(%s)", (user_id,)).fetchone() == (True,)
        # A correct password does not open a locked account, nor reset the counter.
        assert conn.execute("SELECT record_successful_login(%s)", (user_id,)).fetchone() == (False,)
    with schema_db.owner() as conn:
        assert conn.execute(
            "SELECT failed_login_attempts FROM users WHERE id = %s", (user_id,)
        ).fetchone() == (limit,)
        conn.execute(
            "UPDATE users SET locked_until = now() - interval '1 second' WHERE id = %s", (user_id,)
        )
    with schema_db.app() as conn:
        assert conn.execute("SELECT record_successful_login(%s)", (user_id,)).fetchone() == (True,)
    with schema_db.owner() as conn:
        state = conn.execute(
            "SELECT failed_login_attempts, locked_until, last_login_at IS NOT NULL FROM users WHERE id = %s",
            (user_id,),
        ).fetchone()
        events = conn.execute(
            "SELECT event_type, count(*) FROM security_events WHERE user_id = %s GROUP BY 1",
            (user_id,),
        ).fetchall()
    assert state == (0, None, True)
    assert dict(events) == {
        "user_created": 1,
        "login_failed": limit,
        "account_locked": 1,
        "login_refused_locked": 1,
        "login_succeeded": 1,
    }


def test_failures_outside_the_window_start_over(schema_db: SchemaDatabase) -> None:
    user_id = schema_db.create_user()
    with schema_db.app() as conn:
        conn.execute("SELECT record_failed_login(%s)", (user_id,))
        conn.execute("SELECT record_failed_login(%s)", (user_id,))
    with schema_db.owner() as conn:
        conn.execute(
            "UPDATE users SET last_failed_login_at = now() - (SELECT failed_login_window "
            "FROM security_settings) - interval '1 second' WHERE id = %s",
            (user_id,),
        )
    with schema_db.app() as conn:
        assert conn.execute("SELECT * FROM record_failed_login(%s)", (user_id,)).fetchone() == (
            1,
            None,
        )


def hit(conn: Any, subject: str, limit: int = 3, window: str = "1 minute") -> tuple[Any, ...]:
    row = conn.execute(
        "SELECT allowed, request_count FROM check_rate_limit(%s, 'login', %s, %s::interval)",
        (subject, limit, window),
    ).fetchone()
    return tuple(row)


def test_rate_limit_allows_up_to_the_limit_per_window(schema_db: SchemaDatabase) -> None:
    subject = "ip:" + uuid.uuid4().hex
    with schema_db.app() as conn:
        assert [hit(conn, subject) for _ in range(5)] == [
            (True, 1),
            (True, 2),
            (True, 3),
            (False, 4),
            (False, 4),  # capped: a flood cannot overflow the counter
        ]
        assert hit(conn, "ip:other" + subject) == (True, 1)  # buckets are per subject
    with schema_db.owner() as conn:
        conn.execute(
            "UPDATE rate_limits SET reset_at = now() - interval '1 second' WHERE subject = %s",
            (subject,),
        )
    with schema_db.app() as conn:
        assert hit(conn, subject) == (True, 1)  # a new window


def test_two_concurrent_rate_limit_calls_on_one_bucket(schema_db: SchemaDatabase) -> None:
    """With a limit of 1, two requests racing for a new bucket: exactly one is allowed.
    The second waits for the first's row, then counts on top of it."""
    subject = "user:" + uuid.uuid4().hex
    results: dict[str, tuple[Any, ...]] = {}
    with schema_db.app() as first, schema_db.app() as second:
        first_pid = first.execute("SELECT pg_backend_pid()").fetchone()[0]
        second_pid = second.execute("SELECT pg_backend_pid()").fetchone()[0]
        with first.transaction():
            results["first"] = hit(first, subject, limit=1)

            def racer() -> None:
                with second.transaction():
                    results["second"] = hit(second, subject, limit=1)

            thread = threading.Thread(target=racer)
            thread.start()
            with schema_db.superuser() as watcher:
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    blocked = watcher.execute(
                        "SELECT %s = ANY (pg_blocking_pids(%s))", (first_pid, second_pid)
                    ).fetchone()[0]
                    if blocked:
                        break
                    time.sleep(0.02)
                assert blocked, "the second call did not wait for the first"
        thread.join(10)
    assert results == {"first": (True, 1), "second": (False, 2)}


def test_concurrent_rate_limit_calls_count_every_request(schema_db: SchemaDatabase) -> None:
    subject = "ip:" + uuid.uuid4().hex
    allowed: list[bool] = []
    lock = threading.Lock()

    def worker() -> None:
        with schema_db.app() as conn:
            for _ in range(10):
                ok, _count = hit(conn, subject, limit=25)
                with lock:
                    allowed.append(ok)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(allowed) == 40
    assert allowed.count(True) == 25
    with schema_db.owner() as conn:
        assert conn.execute(
            "SELECT request_count FROM rate_limits WHERE subject = %s", (subject,)
        ).fetchone() == (26,)


def test_sessions_and_api_keys_validate_by_hash(schema_db: SchemaDatabase) -> None:
    user_id = schema_db.create_user()
    with schema_db.app(user_id=user_id) as conn:
        conn.execute(
            "INSERT INTO user_sessions (session_hash, user_id, idle_timeout) VALUES (%s, %s, '10 minutes')",
            (sha256("cookie-1"), user_id),
        )
        conn.execute(
            "INSERT INTO api_keys (user_id, name, key_prefix, key_hash, scopes) "
            "VALUES (%s, 'ci', 'ak_ci', %s, '{read}')",
            (user_id, sha256("ak_ci_secret")),
        )
    with schema_db.app() as conn:
        assert conn.execute(
            "SELECT user_id FROM validate_session(%s)", (sha256("cookie-1"),)
        ).fetchall() == [(user_id,)]
        assert conn.execute(
            "SELECT user_id, scopes FROM authenticate_api_key(%s)", (sha256("ak_ci_secret"),)
        ).fetchall() == [(user_id, ["read"])]
        assert (
            conn.execute("SELECT * FROM authenticate_api_key(%s)", (sha256("nope"),)).fetchall()
            == []
        )
    with schema_db.owner() as conn:  # idle for longer than the idle timeout
        conn.execute(
            "UPDATE user_sessions SET created_at = now() - interval '1 hour', "
            "last_seen_at = now() - interval '11 minutes' WHERE user_id = %s",
            (user_id,),
        )
        conn.execute("UPDATE api_keys SET revoked_at = now() WHERE user_id = %s", (user_id,))
    with schema_db.app() as conn:
        assert (
            conn.execute("SELECT * FROM validate_session(%s)", (sha256("cookie-1"),)).fetchall()
            == []
        )
        assert (
            conn.execute(
                "SELECT * FROM authenticate_api_key(%s)", (sha256("ak_ci_secret"),)
            ).fetchall()
            == []
        )


# --- cleanup_expired_data() -------------------------------------------------------

EXPIRED = "now() - interval '1 second'"
LIVE = "now() + interval '1 hour'"


def seed_cleanup_rows(db: SchemaDatabase, n: int) -> dict[str, dict[str, set[Any]]]:
    """n expired and n live rows in every table cleanup handles; returns their keys."""
    client_id = db.create_client()
    user_id = db.create_user()
    keys: dict[str, dict[str, set[Any]]] = {}
    with db.owner() as conn:

        def ids(sql: str) -> set[Any]:
            return {row[0] for row in conn.execute(sql).fetchall()}

        for kind, when in (("expired", EXPIRED), ("live", LIVE)):
            created = "now() - interval '5 minutes'"
            keys.setdefault("auth_codes", {})[kind] = ids(
                "INSERT INTO auth_codes (code_hash, client_id, user_id, redirect_uri, code_challenge, "
                f"code_challenge_method, created_at, expires_at) SELECT sha256(('{kind}' || g)::bytea), "
                f"'{client_id}', '{user_id}', 'https://app.example.com/callback', repeat('a', 43), 'S256', "
                f"{created}, {when if kind == 'expired' else 'now() + interval ' + chr(39) + '4 minutes' + chr(39)} "
                f"FROM generate_series(1, {n}) g RETURNING id"
            )
            for table in ("tokens", "refresh_tokens"):
                keys.setdefault(table, {})[kind] = ids(
                    f"INSERT INTO {table} (token_hash, client_id, user_id, created_at, expires_at) "
                    f"SELECT sha256(('{table}{kind}' || g)::bytea), '{client_id}', '{user_id}', "
                    f"now() - interval '2 days', {when} FROM generate_series(1, {n}) g RETURNING id"
                )
            keys.setdefault("user_sessions", {})[kind] = ids(
                "INSERT INTO user_sessions (session_hash, user_id, created_at, last_seen_at, expires_at) "
                f"SELECT sha256(('s{kind}' || g)::bytea), '{user_id}', now() - interval '2 days', now(), "
                f"{when} FROM generate_series(1, {n}) g RETURNING id"
            )
            keys.setdefault("rate_limits", {})[kind] = ids(
                "INSERT INTO rate_limits (subject, action, window_start, reset_at, request_count) "
                f"SELECT '{kind}' || g, 'login', now() - interval '1 hour', {when}, 1 "
                f"FROM generate_series(1, {n}) g RETURNING subject"
            )
        # Idle sessions count as expired; revoked-but-unexpired tokens stay until expiry.
        keys["user_sessions"]["expired"] |= ids(
            "INSERT INTO user_sessions (session_hash, user_id, created_at, last_seen_at, idle_timeout) "
            f"SELECT sha256(('idle' || g)::bytea), '{user_id}', now() - interval '2 days', "
            f"now() - interval '3 hours', '2 hours' FROM generate_series(1, {n}) g RETURNING id"
        )
        keys["tokens"]["live"] |= ids(
            "INSERT INTO tokens (token_hash, client_id, user_id, expires_at, revoked_at) "
            f"SELECT sha256(('revoked' || g)::bytea), '{client_id}', '{user_id}', {LIVE}, now() "
            f"FROM generate_series(1, {n}) g RETURNING id"
        )
        retention = conn.execute(
            "SELECT security_event_retention FROM security_settings"
        ).fetchone()[0]
        # Audit events are only ever inserted "now"; backdate the old ones as the superuser
        # would restore them (the trigger refuses updates).
        keys["security_events"] = {
            "live": ids("SELECT id FROM security_events"),
        }
    with db.superuser() as conn:
        conn.execute("ALTER TABLE security_events DISABLE TRIGGER security_events_append_only")
        old = {
            row[0]
            for row in conn.execute(
                "INSERT INTO security_events (event_type, occurred_at) SELECT 'old_event', "
                "now() - %s - interval '1 day' FROM generate_series(1, %s) RETURNING id",
                (retention, n),
            ).fetchall()
        }
        kept = {
            row[0]
            for row in conn.execute(
                "INSERT INTO security_events (event_type, occurred_at) SELECT 'recent_event', "
                "now() - %s + interval '1 day' FROM generate_series(1, %s) RETURNING id",
                (retention, n),
            ).fetchall()
        }
        conn.execute("ALTER TABLE security_events ENABLE TRIGGER security_events_append_only")
    keys["security_events"]["expired"] = old
    keys["security_events"]["live"] |= kept
    return keys


def remaining(db: SchemaDatabase) -> dict[str, set[Any]]:
    with db.owner() as conn:
        return {
            table: {row[0] for row in conn.execute(f"SELECT {key} FROM {table}").fetchall()}
            for table, key in (
                ("auth_codes", "id"),
                ("tokens", "id"),
                ("refresh_tokens", "id"),
                ("user_sessions", "id"),
                ("rate_limits", "subject"),
                ("security_events", "id"),
            )
        }


def test_cleanup_removes_exactly_the_expired_rows(fresh_schema_db: SchemaDatabase) -> None:
    db = fresh_schema_db
    keys = seed_cleanup_rows(db, 7)
    with db.owner() as conn:  # SEED.md: SELECT cleanup_expired_data(); as the owner (005)
        result = conn.execute("SELECT cleanup_expired_data()").fetchone()[0]
    expected_counts = {table: len(sets["expired"]) for table, sets in keys.items()}
    assert result == {**expected_counts, "more": False}
    left = remaining(db)
    for table, sets in keys.items():
        assert sets["live"] <= left[table], table
        assert not (sets["expired"] & left[table]), table
    with db.owner() as conn:
        again = conn.execute("SELECT cleanup_expired_data()").fetchone()[0]
    assert set(again.values()) == {0}


def test_cleanup_works_in_bounded_batches(fresh_schema_db: SchemaDatabase) -> None:
    db = fresh_schema_db
    keys = seed_cleanup_rows(db, 7)
    calls = []
    with db.owner() as conn:
        # At most 2 batches of 3 rows per table per call.
        while not calls or calls[-1]["more"]:
            calls.append(conn.execute("SELECT cleanup_expired_data(3, 2)").fetchone()[0])
            assert len(calls) <= 5
    assert all(count <= 6 for call in calls for table, count in call.items() if table != "more")
    assert [call["user_sessions"] for call in calls] == [6, 6, 2]  # 7 expired + 7 idle
    assert [call["tokens"] for call in calls] == [6, 1, 0]
    for table, sets in keys.items():
        assert sum(call[table] for call in calls) == len(sets["expired"]), table
    left = remaining(db)
    for table, sets in keys.items():
        assert left[table] >= sets["live"], table
        assert not (sets["expired"] & left[table]), table


def test_cleanup_procedure_commits_between_batches(fresh_schema_db: SchemaDatabase) -> None:
    db = fresh_schema_db
    keys = seed_cleanup_rows(db, 5)
    with db.owner() as conn:
        conn.execute("CALL cleanup_expired_data_all(2)")
    left = remaining(db)
    for table, sets in keys.items():
        assert not (sets["expired"] & left[table]), table
        assert sets["live"] <= left[table], table
