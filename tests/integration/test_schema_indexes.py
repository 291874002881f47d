"""Production-sized data: every hot query of the service is an index scan.

Seeds 200,000 users, 1,000,000 tokens and the other tables in proportion
(bench/schema_bench.py's seed at scale 1, the benchmark runs it at 10x), then
checks each hot query's plan with EXPLAIN (FORMAT JSON), as the role that runs it:
the runtime role with a request context (row level security included) or the
owner inside a SECURITY DEFINER function.
"""

from __future__ import annotations

import importlib.util
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.integration import schema_fixtures
from tests.integration.schema_fixtures import SchemaDatabase

BENCH = Path(__file__).resolve().parents[2] / "bench" / "schema_bench.py"


def load_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("schema_bench", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


bench = load_bench()
COUNTS: dict[str, int] = bench.counts(1)
QUERIES = bench.hot_queries(COUNTS)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def big_db(pg_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SchemaDatabase]:
    db = schema_fixtures.migrate_fresh_database(pg_server, tmp_path_factory.mktemp("big"))
    start = time.perf_counter()
    with db.superuser() as conn:
        seconds = bench.seed(conn, COUNTS)
    print(f"\nseeded {COUNTS} in {time.perf_counter() - start:.1f}s: {seconds}")
    yield db
    schema_fixtures.drop_database(db)


def test_production_sized_seed(big_db: SchemaDatabase) -> None:
    with big_db.superuser() as conn:
        users, tokens = conn.execute(
            "SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM tokens)"
        ).fetchone()
    assert users >= 200_000
    assert tokens >= 1_000_000


@pytest.mark.parametrize("query", QUERIES, ids=[q.name for q in QUERIES])
def test_hot_query_uses_its_index(big_db: SchemaDatabase, query: Any) -> None:
    connect = big_db.owner if query.role == "owner" else big_db.app
    with connect() as conn:
        if query.role == "app":
            schema_fixtures.set_context(conn, bench.context_user(0, COUNTS))
        plan = bench.explain(conn, query, query.params(0))
        used, scans = bench.uses_index(plan, query)
        assert used, f"{query.name}: expected {query.index}, got {scans}"
        # And it returns what the service expects from it.
        rows = conn.execute(query.sql, query.params(0) or None).fetchall()
    if query.name.endswith("_by_hash") or query.name == "login_user_by_email":
        assert len(rows) <= 1
    if query.role == "app" and rows and query.relation != "groups":
        assert len(rows) < 100  # one user's rows, not the table


def test_rate_limit_upsert_uses_the_primary_key(big_db: SchemaDatabase) -> None:
    with big_db.owner() as conn:
        plan = conn.execute(
            "EXPLAIN (FORMAT JSON) INSERT INTO rate_limits AS r "
            "(subject, action, window_start, reset_at, request_count) "
            "VALUES ('ip:1', 'login', now(), now() + interval '1 minute', 1) "
            "ON CONFLICT (subject, action) DO UPDATE SET request_count = r.request_count + 1"
        ).fetchone()[0]
    assert plan[0]["Plan"]["Conflict Arbiter Indexes"] == ["rate_limits_pkey"]


def test_cleanup_at_size_is_batched_and_exact(big_db: SchemaDatabase) -> None:
    with big_db.owner() as conn:
        expired_before = conn.execute(
            "SELECT count(*) FROM tokens WHERE expires_at < now()"
        ).fetchone()[0]
        live_before = conn.execute(
            "SELECT count(*) FROM tokens WHERE expires_at >= now()"
        ).fetchone()[0]
    with big_db.owner() as conn:  # 005: the owner's alone
        start = time.perf_counter()
        result = conn.execute("SELECT cleanup_expired_data()").fetchone()[0]
        elapsed = time.perf_counter() - start
    print(f"\none cleanup_expired_data() call: {result} in {elapsed:.2f}s")
    # One call does at most cleanup_batch_size * cleanup_max_batches rows per table.
    assert result["tokens"] == min(expired_before, 5000 * 20)
    assert result["more"] is (expired_before > 5000 * 20)
    with big_db.owner() as conn:
        live_after = conn.execute(
            "SELECT count(*) FROM tokens WHERE expires_at >= now()"
        ).fetchone()[0]
    assert (
        live_after >= live_before - 10_000
    )  # only rows that expired meanwhile (none at this pace)
