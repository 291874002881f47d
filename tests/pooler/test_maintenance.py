"""adopt, baseline and rollback through PgBouncer: the migration lock migrate takes, three
copies at once on a pool of two server connections, and nothing left on the pool afterwards.

A pool smaller than the runners is where a second lock protocol failed: a session-level lock
leaked onto a pooled server connection, a guard looked for PgBouncer's pid instead of the
server's, and in session pooling the holder waited for a work connection a waiter held.
"""

from __future__ import annotations

import pytest

from tests.conftest import LEFTOVER_LOCKS
from tests.pooler.conftest import POOL_MODES, require_pgbouncer
from tests.pooler.pgbouncer import PgBouncer

TINY_POOL = 2
COPIES = 3
FOLDER = {
    "001_accounts.sql": (
        "CREATE TABLE accounts (id bigint PRIMARY KEY, email text);\n"
        "-- migrate:down\nDROP TABLE accounts;\n"
    ),
    "002_sessions.sql": (
        "CREATE TABLE sessions (id bigint REFERENCES accounts);\n"
        "-- migrate:down\nDROP TABLE sessions;\n"
    ),
    "003_email_index.sql": (
        "-- migrate:up transaction:false\n"
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS accounts_email ON accounts (email);\n"
        "-- migrate:down transaction:false\n"
        "DROP INDEX CONCURRENTLY IF EXISTS accounts_email;\n"
    ),
}
BUILT_BY_HAND = "CREATE TABLE accounts (id bigint PRIMARY KEY, email text);" + (
    "CREATE TABLE sessions (id bigint REFERENCES accounts);"
)
# golang-migrate's table (database/postgres/postgres.go): version 2 applied, not dirty.
GOLANG_MIGRATE_HISTORY = (
    "CREATE TABLE schema_migrations (version bigint NOT NULL PRIMARY KEY, dirty boolean NOT NULL);"
    "INSERT INTO schema_migrations VALUES (2, false);"
)
ADVISORY_LOCKS = LEFTOVER_LOCKS


@pytest.fixture(params=POOL_MODES)
def small_pool(request, pg_server):
    """PgBouncer with fewer server connections than the copies started at once."""
    require_pgbouncer()
    bouncer = PgBouncer.start(pg_server, request.param, TINY_POOL)
    yield bouncer
    bouncer.stop()


def pooled_env(database, pool, migrations):
    migrations.add(FOLDER)
    # A deadlocked pool would hold the copies until these deadlines: exit 75 or 69, not 0.
    return database.env(MIGRATIONS_DIR=str(migrations.path), DB_PORT=str(pool.port),
                        MIGRATION_LOCK_TIMEOUT="60", DB_WAIT_TIMEOUT="60")  # fmt: skip


def run_copies(start_runner, *args, env):
    runners = [start_runner(*args, env=env) for _ in range(COPIES)]
    results = [runner.wait(150) for runner in runners]
    for result in results:
        assert result.returncode == 0, result
    return results


def versions(database):
    return [row[0] for row in database.query("SELECT version FROM schema_migrations ORDER BY 1")]


def assert_pool_left_clean(database, run_runner, env):
    """No lock on any server connection, and the next migrate through the pool gets the lock."""
    assert database.scalar(ADVISORY_LOCKS) == 0
    after = run_runner(env={**env, "MIGRATION_LOCK_TIMEOUT": "5"})
    assert after.returncode == 0, after
    assert database.scalar(ADVISORY_LOCKS) == 0


def test_baseline_three_copies_through_a_small_pool(
    small_pool, database, start_runner, run_runner, migrations
):
    env = pooled_env(database, small_pool, migrations)
    with database.connect() as conn:
        conn.execute(BUILT_BY_HAND)
    results = run_copies(start_runner, "baseline", "--version", "002_sessions", env=env)
    recorded = [r for r in results if r.events_named("baseline_recorded")]
    idle = [r for r in results if r.events_named("baseline_nothing_to_do")]
    assert (len(recorded), len(idle)) == (1, COPIES - 1), results
    assert versions(database) == ["001_accounts", "002_sessions"]
    assert database.scalar("SELECT count(DISTINCT description) FROM schema_migrations") == 1
    assert_pool_left_clean(database, run_runner, env)
    assert versions(database) == ["001_accounts", "002_sessions", "003_email_index"]


def test_adopt_three_copies_through_a_small_pool(
    small_pool, database, start_runner, run_runner, migrations
):
    env = pooled_env(database, small_pool, migrations)
    with database.connect() as conn:
        conn.execute(BUILT_BY_HAND + GOLANG_MIGRATE_HISTORY)
    results = run_copies(start_runner, "adopt", env=env)
    adopted = [r for r in results if r.events_named("adopted")]
    assert len(adopted) == 1, results
    assert adopted[0].events_named("adopted")[0]["versions"] == ["001_accounts", "002_sessions"]
    assert versions(database) == ["001_accounts", "002_sessions"]
    kept = "SELECT version FROM schema_migrations_golang_migrate"
    assert database.query(kept) == [(2,)]
    assert_pool_left_clean(database, run_runner, env)
    assert versions(database) == ["001_accounts", "002_sessions", "003_email_index"]


def test_rollback_three_copies_through_a_small_pool(
    small_pool, database, start_runner, run_runner, migrations
):
    env = pooled_env(database, small_pool, migrations)
    assert run_runner(env=env).returncode == 0
    results = run_copies(start_runner, "rollback", "--to", "001_accounts", env=env)
    rolled_back = [e["version"] for r in results for e in r.events_named("migration_rolled_back")]
    assert rolled_back == ["003_email_index", "002_sessions"]  # once each, newest first
    assert versions(database) == ["001_accounts"]
    assert database.scalar("SELECT to_regclass('sessions')") is None
    assert database.scalar("SELECT to_regclass('accounts_email')") is None
    assert_pool_left_clean(database, run_runner, env)
    assert versions(database) == ["001_accounts", "002_sessions", "003_email_index"]
