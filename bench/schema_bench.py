"""Benchmark of the production schema's hot queries and cleanup at production size.

    .venv/bin/python bench/schema_bench.py              # scale 10: 2M users, 10M tokens
    .venv/bin/python bench/schema_bench.py --scale 1    # 200k users, 1M tokens

Starts its own throwaway PostgreSQL (scripts/pgserver.py; PG_BIN selects the
binaries), migrates a database with entrypoint.py as users do, seeds it with
generate_series, and prints JSON lines:

  {"event": "seed", ...}                       row counts and seconds
  {"event": "hot_query", "name": ..., "index_ms": ..., "seqscan_ms": ..., "ratio": ...}
      median latency of each hot query as the service runs it (row level
      security for the runtime role included), against a baseline measured in the
      same run with index and bitmap scans disabled; ratio = baseline / indexed
  {"event": "cleanup", "rows": ..., "seconds": ..., "s_per_million": ..., "unbatched_s": ..., "ratio": ...}
      CALL cleanup_expired_data_all() (batched, committing) against one unbatched
      DELETE of the same expired rows from an identical copy of the table

The seed and the hot-query catalogue are shared with
tests/integration/test_schema_indexes.py, which checks each plan at scale 1.
"""

# The SQL of the seed and the hot queries reads better unwrapped.
# ruff: noqa: E501

from __future__ import annotations

import argparse
import hashlib
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

REPO = Path(__file__).resolve().parent.parent
OWNER_ROLE = "auth_service"
APP_ROLE = "auth_service_app"

BASE = {
    "users": 200_000,
    "tokens": 1_000_000,
    "refresh_tokens": 100_000,
    "user_sessions": 100_000,
    "api_keys": 20_000,
    "auth_codes": 20_000,
    "security_events": 200_000,
    "groups": 20_000,
    "rate_limits": 100_000,
}


def counts(scale: float) -> dict[str, int]:
    return {table: max(1, int(n * scale)) for table, n in BASE.items()}


def user_id_sql(expr: str) -> str:
    """The deterministic id of user number ``expr`` (1-based)."""
    return f"md5('u' || ({expr}))::uuid"


def seed_statements(n: dict[str, int]) -> list[tuple[str, str]]:
    """(table, SQL) that seed a migrated database; run as the superuser with
    session_replication_role = replica: the rows are consistent by construction,
    so foreign key checks and audit triggers are skipped for speed."""
    u = n["users"]
    uid = user_id_sql
    return [
        (
            "oauth_clients",
            "INSERT INTO oauth_clients (client_id, client_name, redirect_uris, client_secret_hash, scopes) "
            "SELECT 'client-' || lpad(g::text, 4, '0'), 'Client ' || g, "
            "ARRAY['https://app' || g || '.example.com/cb'], sha256(('secret' || g)::bytea), "
            "'{openid,profile,email}' FROM generate_series(1, 50) g",
        ),
        (
            "users",
            "INSERT INTO users (id, email, display_name, password_hash, password_changed_at, deleted_at) "
            f"SELECT {uid('g')}, 'user' || g || '@example.com', 'User ' || md5(g::text), "
            "'$2b$12$' || rpad(md5(g::text), 53, 'x'), now(), "
            "CASE WHEN g % 100 = 0 THEN now() END "
            f"FROM generate_series(1, {u}) g",
        ),
        (
            "groups",
            "INSERT INTO groups (id, name, permissions) "
            "SELECT md5('g' || g)::uuid, 'group ' || md5(g::text), "
            "CASE WHEN g = 1 THEN '{users:read,groups:manage}'::text[] ELSE '{}' END "
            f"FROM generate_series(1, {n['groups']}) g",
        ),
        (
            "group_members",
            "INSERT INTO group_members (group_id, user_id) "
            f"SELECT md5('g' || (1 + g % {n['groups']}))::uuid, {uid('g')} "
            f"FROM generate_series(1, {u}) g",
        ),
        (
            "tokens",
            "INSERT INTO tokens (id, token_hash, token_prefix, client_id, user_id, family_id, scopes, "
            "created_at, expires_at, revoked_at) "
            "SELECT md5('t' || g)::uuid, sha256(('token' || g)::bytea), 'at_' || (g % 1000), "
            f"'client-' || lpad((1 + g % 50)::text, 4, '0'), {uid(f'1 + g % {u}')}, "
            "md5('f' || (g % 400000))::uuid, '{openid}', now() - interval '3 hours', "
            # Half expired (cleanup's work), a tenth revoked.
            "now() + ((g % 240) - 120) * interval '1 minute' + interval '1 second', "
            "CASE WHEN g % 10 = 0 THEN now() - interval '1 hour' END "
            f"FROM generate_series(1, {n['tokens']}) g",
        ),
        (
            "refresh_tokens",
            "INSERT INTO refresh_tokens (id, token_hash, family_id, client_id, user_id, created_at, "
            "expires_at) SELECT md5('r' || g)::uuid, sha256(('refresh' || g)::bytea), "
            f"md5('f' || g)::uuid, 'client-' || lpad((1 + g % 50)::text, 4, '0'), {uid(f'1 + g % {u}')}, "
            "now() - interval '20 days', now() + (g % 60 - 10) * interval '1 day' + interval '1 second' "
            f"FROM generate_series(1, {n['refresh_tokens']}) g",
        ),
        (
            "user_sessions",
            "INSERT INTO user_sessions (id, session_hash, user_id, ip_address, user_agent, created_at, "
            "last_seen_at, expires_at, idle_expires_at) SELECT md5('s' || g)::uuid, "
            f"sha256(('session' || g)::bytea), {uid(f'1 + g % {u}')}, '203.0.113.7', 'bench', "
            "now() - interval '1 day', now() - (g % 180) * interval '1 minute', now() + interval '29 days', "
            "least(now() + interval '29 days', now() - (g % 180) * interval '1 minute' + interval '2 hours') "
            f"FROM generate_series(1, {n['user_sessions']}) g",
        ),
        (
            "api_keys",
            "INSERT INTO api_keys (user_id, name, key_prefix, key_hash, scopes) "
            f"SELECT {uid(f'1 + g % {u}')}, 'key ' || g, 'ak_' || (g % 10000), "
            f"sha256(('apikey' || g)::bytea), '{{read}}' FROM generate_series(1, {n['api_keys']}) g",
        ),
        (
            "auth_codes",
            "INSERT INTO auth_codes (code_hash, client_id, user_id, redirect_uri, code_challenge, "
            "code_challenge_method, created_at, expires_at) "
            "SELECT sha256(('code' || g)::bytea), 'client-' || lpad((1 + g % 50)::text, 4, '0'), "
            f"{uid(f'1 + g % {u}')}, 'https://app' || (1 + g % 50) || '.example.com/cb', "
            "repeat('a', 43), 'S256', now() - interval '2 minutes', "
            "now() + (g % 3 - 1) * interval '1 minute' + interval '1 second' "
            f"FROM generate_series(1, {n['auth_codes']}) g",
        ),
        (
            "security_events",
            "INSERT INTO security_events (occurred_at, event_type, user_id, details) "
            "SELECT now() - (g % 500) * interval '1 day', 'login_succeeded', "
            f"{uid(f'1 + g % {u}')}, '{{}}' FROM generate_series(1, {n['security_events']}) g",
        ),
        (
            "rate_limits",
            "INSERT INTO rate_limits (subject, action, window_start, reset_at, request_count) "
            "SELECT 'ip:' || g, 'login', now() - interval '30 seconds', "
            "now() + (g % 2 * 2 - 1) * interval '30 seconds', 1 "
            f"FROM generate_series(1, {n['rate_limits']}) g",
        ),
    ]


@dataclass(frozen=True)
class HotQuery:
    name: str
    role: str  # "owner" (inside a SECURITY DEFINER function) or "app" (runtime role, RLS)
    sql: str
    index: str  # the index the plan must use
    relation: str
    params: Any  # callable(i) -> tuple of parameters for the i-th run


def _user(i: int, users: int) -> str:
    """A user number that exists and is not soft-deleted."""
    k = 1 + (i * 7919) % users
    return str(k if k % 100 else k + 1)


def hot_queries(n: dict[str, int]) -> list[HotQuery]:
    u = n["users"]
    return [
        HotQuery(
            "introspect_token_by_hash", "owner",
            # introspect_token() as 002 redefines it: the user active, the client enabled.
            "SELECT true, t.id, t.user_id, t.client_id, t.scopes, t.created_at, t.expires_at "
            "FROM tokens t JOIN oauth_clients c ON c.client_id = t.client_id AND c.disabled_at IS NULL "
            "LEFT JOIN users u ON u.id = t.user_id "
            "WHERE t.token_hash = sha256(%s::bytea) AND t.revoked_at IS NULL "
            "AND t.expires_at > now() AND (t.user_id IS NULL OR (u.status = 'active' AND u.deleted_at IS NULL))",
            "tokens_token_hash_key", "tokens",
            lambda i: (f"token{1 + (i * 7919) % n['tokens']}",),
        ),
        HotQuery(
            "refresh_token_by_hash", "owner",
            "SELECT * FROM refresh_tokens WHERE token_hash = sha256(%s::bytea) FOR UPDATE",
            "refresh_tokens_token_hash_key", "refresh_tokens",
            lambda i: (f"refresh{1 + (i * 7919) % n['refresh_tokens']}",),
        ),
        HotQuery(
            "auth_code_by_hash", "owner",
            "SELECT * FROM auth_codes WHERE code_hash = sha256(%s::bytea) FOR UPDATE",
            "auth_codes_code_hash_key", "auth_codes",
            lambda i: (f"code{1 + (i * 7919) % n['auth_codes']}",),
        ),
        HotQuery(
            "api_key_by_hash", "owner",
            "SELECT k.id, k.user_id, k.scopes FROM api_keys k JOIN users u ON u.id = k.user_id "
            "WHERE k.key_hash = sha256(%s::bytea) AND k.revoked_at IS NULL "
            "AND (k.expires_at IS NULL OR k.expires_at > now()) AND u.deleted_at IS NULL "
            "AND u.status = 'active'",
            "api_keys_key_hash_key", "api_keys",
            lambda i: (f"apikey{1 + (i * 7919) % n['api_keys']}",),
        ),
        HotQuery(
            "session_by_hash", "owner",
            "SELECT s.id, s.user_id, s.expires_at, s.idle_expires_at FROM user_sessions s "
            "JOIN users u ON u.id = s.user_id "
            "WHERE s.session_hash = sha256(%s::bytea) AND s.revoked_at IS NULL "
            "AND s.idle_expires_at > now() AND u.status = 'active' AND u.deleted_at IS NULL",
            "user_sessions_session_hash_key", "user_sessions",
            lambda i: (f"session{1 + (i * 7919) % n['user_sessions']}",),
        ),
        HotQuery(
            "login_user_by_email", "owner",
            "SELECT u.id, u.password_hash, u.status, u.locked_until, u.password_changed_at "
            "FROM users u WHERE u.email = %s::citext AND u.deleted_at IS NULL",
            "users_email_active_key", "users",
            lambda i: (f"USER{_user(i, u)}@Example.com",),
        ),
        HotQuery(
            "user_active_tokens", "app",
            "SELECT id, client_id, scopes, expires_at FROM tokens "
            "WHERE revoked_at IS NULL AND expires_at > now()",
            "tokens_user_active_idx", "tokens",
            lambda i: (),
        ),
        HotQuery(
            "user_tokens_for_client", "app",
            "SELECT id FROM tokens WHERE client_id = %s AND revoked_at IS NULL",
            "tokens_user_active_idx", "tokens",
            lambda i: (f"client-{1 + i % 50:04d}",),
        ),
        HotQuery(
            "user_active_sessions", "app",
            "SELECT id, ip_address, user_agent, last_seen_at FROM user_sessions "
            "WHERE revoked_at IS NULL AND idle_expires_at > now()",
            "user_sessions_user_active_idx", "user_sessions",
            lambda i: (),
        ),
        HotQuery(
            "user_api_keys", "app",
            "SELECT id, name, key_prefix, last_used_at FROM api_keys WHERE revoked_at IS NULL",
            "api_keys_user_active_idx", "api_keys",
            lambda i: (),
        ),
        HotQuery(
            "user_security_events", "app",
            "SELECT occurred_at, event_type, ip_address FROM security_events "
            "ORDER BY occurred_at DESC LIMIT 50",
            "security_events_user_idx", "security_events",
            lambda i: (),
        ),
        HotQuery(
            "user_group_permissions", "owner",
            "SELECT EXISTS (SELECT 1 FROM group_members gm JOIN groups g ON g.id = gm.group_id "
            "WHERE gm.user_id = %s::uuid AND 'users:read' = ANY (g.permissions))",
            "group_members_user_idx", "group_members",
            lambda i: (f"{_uuid_of_user(_user(i, u))}",),
        ),
        HotQuery(
            "revoke_token_family", "owner",
            "SELECT id FROM tokens WHERE family_id = md5(%s)::uuid AND revoked_at IS NULL",
            "tokens_family_active_idx", "tokens",
            lambda i: (f"f{(i * 7919) % 400000}",),
        ),
        HotQuery(
            "search_users", "owner",
            "SELECT u.id, u.email, u.display_name, u.status FROM users u "
            "WHERE (u.email::text || ' ' || u.display_name) ILIKE '%%' || %s || '%%' "
            "AND u.deleted_at IS NULL ORDER BY u.email LIMIT 20",
            "users_search_trgm_idx", "users",
            lambda i: (f"user{_user(i, u)}@",),
        ),
        HotQuery(
            "search_groups", "app",
            "SELECT id, name FROM groups WHERE name ILIKE '%%' || %s || '%%' LIMIT 20",
            "groups_name_trgm_idx", "groups",
            lambda i: (_md5(str(1 + i % n["groups"]))[:8],),
        ),
        HotQuery(
            "cleanup_batch_tokens", "owner",
            "SELECT id FROM tokens WHERE expires_at < now() ORDER BY expires_at LIMIT 5000 "
            "FOR UPDATE SKIP LOCKED",
            "tokens_expires_at_idx", "tokens",
            lambda i: (),
        ),
        HotQuery(
            "cleanup_batch_sessions", "owner",
            "SELECT id FROM user_sessions WHERE idle_expires_at < now() ORDER BY idle_expires_at "
            "LIMIT 5000 FOR UPDATE SKIP LOCKED",
            "user_sessions_idle_expires_at_idx", "user_sessions",
            lambda i: (),
        ),
        HotQuery(
            "cleanup_batch_security_events", "owner",
            "SELECT id FROM security_events WHERE occurred_at < now() - interval '400 days' "
            "ORDER BY occurred_at LIMIT 5000 FOR UPDATE SKIP LOCKED",
            "security_events_occurred_at_idx", "security_events",
            lambda i: (),
        ),
    ]  # fmt: skip


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()  # noqa: S324 - matches the seed's md5()


def _uuid_of_user(number: str) -> str:
    h = _md5("u" + number)
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def context_user(i: int, n: dict[str, int]) -> str:
    """The request context of the i-th run of an "app" query."""
    return _uuid_of_user(_user(i, n["users"]))


def plan_nodes(plan: Any) -> Iterator[dict[str, Any]]:
    if isinstance(plan, dict):
        if "Node Type" in plan:
            yield plan
        for value in plan.values():
            yield from plan_nodes(value)
    elif isinstance(plan, list):
        for item in plan:
            yield from plan_nodes(item)


def explain(conn: psycopg.Connection[Any], query: HotQuery, params: tuple[Any, ...]) -> Any:
    row = conn.execute(f"EXPLAIN (FORMAT JSON) {query.sql}", params or None).fetchone()
    assert row is not None
    return row[0]


def uses_index(plan: Any, query: HotQuery) -> tuple[bool, list[str]]:
    """(whether the expected index is used and no sequential scan reads the relation,
    a short description of the scans)."""
    scans = [
        f"{node['Node Type']}:{node.get('Index Name') or node.get('Relation Name')}"
        for node in plan_nodes(plan)
        if "Scan" in node["Node Type"]
    ]
    seq = any(
        node["Node Type"] == "Seq Scan" and node.get("Relation Name") == query.relation
        for node in plan_nodes(plan)
    )
    used = any(node.get("Index Name") == query.index for node in plan_nodes(plan))
    return used and not seq, scans


# --- running it ---------------------------------------------------------------------


def log(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


def migrate(port: int, dbname: str, admin_password: str, owner_pw: str, app_pw: str) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DB_", "PG"))},
        "DB_HOST": "127.0.0.1",
        "DB_PORT": str(port),
        "DB_NAME": dbname,
        "DB_USER": OWNER_ROLE,
        "DB_PASSWORD": owner_pw,
        "DB_ADMIN_USER": "postgres",
        "DB_ADMIN_PASSWORD": admin_password,
        "APP_DB_PASSWORD": app_pw,
        "LOG_FORMAT": "json",
    }
    done = subprocess.run(
        [sys.executable, str(REPO / "entrypoint.py")],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise SystemExit(
            f"migration failed (exit {done.returncode}):\n{done.stdout}\n{done.stderr}"
        )


def seed(conn: psycopg.Connection[Any], n: dict[str, int]) -> dict[str, float]:
    seconds: dict[str, float] = {}
    with conn.transaction():
        conn.execute("SET LOCAL session_replication_role = replica")
        for table, statement in seed_statements(n):
            start = time.perf_counter()
            conn.execute(statement)
            seconds[table] = round(time.perf_counter() - start, 2)
    start = time.perf_counter()
    conn.execute("VACUUM ANALYZE")
    seconds["vacuum_analyze"] = round(time.perf_counter() - start, 2)
    return seconds


def timed(conn: psycopg.Connection[Any], query: HotQuery, runs: int, n: dict[str, int]) -> float:
    samples = []
    for i in range(runs):
        if query.role == "app":
            conn.execute(
                "SELECT set_config('app.current_user_id', %s, false)", (context_user(i, n),)
            )
        params = query.params(i)
        start = time.perf_counter()
        conn.execute(query.sql, params or None).fetchall()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


def run(scale: float, runs: int, baseline_runs: int) -> None:
    sys.path.insert(0, str(REPO / "scripts"))
    from pgserver import PgServer

    n = counts(scale)
    owner_pw, app_pw = secrets.token_urlsafe(18), secrets.token_urlsafe(18)
    server = PgServer.create(Path(tempfile.mkdtemp(prefix="schema-bench-")))
    server.start()
    try:
        migrate(server.port, "auth_bench", server.password, owner_pw, app_pw)
        info = {**server.conninfo("auth_bench")}
        with psycopg.connect(**info, autocommit=True) as conn:
            version = conn.execute("SHOW server_version").fetchone()
            start = time.perf_counter()
            seconds = seed(conn, n)
            log("seed", scale=scale, server_version=version[0] if version else None, rows=n,
                seconds=seconds, total_s=round(time.perf_counter() - start, 1))  # fmt: skip
        owner = {**info, "user": OWNER_ROLE, "password": owner_pw}
        app = {**info, "user": APP_ROLE, "password": app_pw}
        for query in hot_queries(n):
            role = owner if query.role == "owner" else app
            # No prepared statements: a cached plan would survive the SETs below.
            with psycopg.connect(**role, autocommit=True, prepare_threshold=None) as conn:
                if query.role == "app":
                    conn.execute(
                        "SELECT set_config('app.current_user_id', %s, false)", (context_user(0, n),)
                    )
                ok, scans = uses_index(explain(conn, query, query.params(0)), query)
                index_ms = timed(conn, query, runs, n)
            with psycopg.connect(**role, autocommit=True, prepare_threshold=None) as conn:
                conn.execute("SET enable_indexscan = off")
                conn.execute("SET enable_bitmapscan = off")
                conn.execute("SET enable_indexonlyscan = off")
                seq_ms = timed(conn, query, baseline_runs, n)
            log("hot_query", name=query.name, role=query.role, index=query.index, uses_index=ok,
                scans=scans, index_ms=round(index_ms, 3), seqscan_ms=round(seq_ms, 3),
                ratio=round(seq_ms / index_ms, 1) if index_ms else None)  # fmt: skip
        cleanup(info, owner, app)
    finally:
        server.destroy()


def cleanup(admin: dict[str, Any], owner: dict[str, Any], app: dict[str, Any]) -> None:
    with psycopg.connect(**admin, autocommit=True) as conn:
        conn.execute("CREATE TABLE tokens_unbatched (LIKE tokens INCLUDING ALL)")
        conn.execute("INSERT INTO tokens_unbatched SELECT * FROM tokens")
        conn.execute("VACUUM ANALYZE tokens_unbatched")
        expired = conn.execute("SELECT count(*) FROM tokens WHERE expires_at < now()").fetchone()
        rows = int(expired[0]) if expired else 0
    with psycopg.connect(**owner, autocommit=True) as conn:  # 005: the owner's alone
        start = time.perf_counter()
        conn.execute("CALL cleanup_expired_data_all()")
        batched = time.perf_counter() - start
    with psycopg.connect(**admin, autocommit=True) as conn:
        start = time.perf_counter()
        deleted = conn.execute("DELETE FROM tokens_unbatched WHERE expires_at < now()").rowcount
        unbatched = time.perf_counter() - start
        left = conn.execute("SELECT count(*) FROM tokens WHERE expires_at < now()").fetchone()
    log("cleanup", table="tokens", rows=rows, unbatched_rows=deleted, left_expired=left[0] if left else None,
        seconds=round(batched, 2), s_per_million=round(batched / max(rows, 1) * 1e6, 2),
        unbatched_s=round(unbatched, 2), ratio=round(batched / unbatched, 2) if unbatched else None,
        note="seconds covers every table cleanup handles; unbatched_s one DELETE on tokens only")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=10.0, help="1 = 200k users, 1M tokens")
    parser.add_argument("--runs", type=int, default=200, help="timed runs per hot query")
    parser.add_argument("--baseline-runs", type=int, default=3, help="runs with index scans off")
    args = parser.parse_args(argv)
    run(args.scale, args.runs, args.baseline_runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
