"""Through PgBouncer: status, --dry-run and healthcheck.py; nothing left in the pool; bootstrap; the pooler's own refusals."""

from __future__ import annotations

import time
from typing import Any

import pytest

from migrator.errors import EX_UNAVAILABLE
from tests.conftest import LEFTOVER_LOCKS
from tests.faults.test_parallel import FILES as BOOTSTRAP_FILES
from tests.integration.test_progress import SLOW_INDEX
from tests.pooler.conftest import POOL_MODES, POOL_SIZE, require_pgbouncer
from tests.pooler.pgbouncer import PgBouncer

FILES = {
    "001_accounts.sql": "CREATE TABLE accounts (id int PRIMARY KEY, email text);",
    # Non-transactional: its statements run in autocommit, each its own pooled transaction.
    "002_accounts_email.sql": "CREATE INDEX CONCURRENTLY IF NOT EXISTS accounts_email\n"
    "  ON accounts (email);",
    "003_seed.sql": "INSERT INTO accounts SELECT g, 'a' || g FROM generate_series(1, 100) g;",
}
# What the runner sets for itself; a later client of the pool must see the server's defaults.
SETTINGS = ("lock_timeout", "statement_timeout", "search_path", "application_name",
            "client_connection_check_interval", "idle_in_transaction_session_timeout")  # fmt: skip
TINY_POOL = 2
SHOW_SETTINGS = "SELECT " + ", ".join(f"current_setting('{name}')" for name in SETTINGS)


def test_status_dry_run_and_healthcheck_work_through_the_pooler(
    pooled, database, run_runner, run_status_json, run_healthcheck, migrations
):
    migrations.add(FILES)
    env = pooled.env(database, MIGRATIONS_DIR=str(migrations.path))
    dry = run_runner("--dry-run", env=env)
    assert dry.returncode == 0, dry
    assert dry.events_named("plan_complete")[0]["pending"] == [n[:-4] for n in FILES]
    unhealthy = run_healthcheck(env=env)
    assert unhealthy.returncode == 1 and "3 migration(s) not up to date" in unhealthy.stdout

    assert run_runner(env=env).returncode == 0
    status, document = run_status_json(env=env)
    assert status.returncode == 0, status
    assert document["up_to_date"] is True
    healthy = run_healthcheck(env=env)
    assert healthy.returncode == 0, healthy
    assert healthy.stdout.startswith("ok: 3 migrations applied")


def test_nothing_is_left_in_the_pool(pooled, database, run_runner, migrations):
    """After runs, every server session of the pool shows the defaults and holds no lock."""
    migrations.add(FILES)
    env = pooled.env(database, MIGRATIONS_DIR=str(migrations.path), DDL_LOCK_TIMEOUT="3s",
                     STATEMENT_TIMEOUT="40s", PROGRESS_INTERVAL="1")  # fmt: skip
    for _ in range(2):  # the first applies, the second reads and finds nothing to do
        assert run_runner(env=env).returncode == 0
    with database.connect() as direct:
        defaults = direct.execute(SHOW_SETTINGS).fetchone()
    # POOL_SIZE clients each inside a transaction: together they hold every server session.
    clients = [pooled.connect(database) for _ in range(POOL_SIZE)]
    try:
        seen = []
        for client in clients:
            client.execute("BEGIN")
            seen.append(client.execute(SHOW_SETTINGS).fetchone())
        pids = {client.execute("SELECT pg_backend_pid()").fetchone() for client in clients}
        assert len(pids) == POOL_SIZE
        assert seen == [defaults] * POOL_SIZE, f"defaults {defaults}, pool {seen}"
    finally:
        for client in clients:
            client.close()
    assert database.scalar(LEFTOVER_LOCKS) == 0
    assert (
        database.scalar("SELECT count(*) FROM pg_prepared_statements") == 0
    )  # this session's only; the runner's never prepare (prepare_threshold=None)


@pytest.fixture(params=POOL_MODES)
def bootstrap_pooler(request, pg_server):
    """A pooler whose userlist holds DB_USER's password itself: the bootstrap re-salts it."""
    require_pgbouncer()
    bouncer = PgBouncer.start(pg_server, request.param, POOL_SIZE,
                              plaintext={"postgres": pg_server.password})  # fmt: skip
    yield bouncer
    bouncer.stop()


def test_bootstrap_directly_with_migrations_through_the_pooler(
    pg_server, bootstrap_pooler, unborn_database, run_runner, migrations
):
    """DB_ADMIN_HOST/DB_ADMIN_PORT: the superuser's bootstrap direct, the rest pooled."""
    migrations.add(BOOTSTRAP_FILES)
    env = unborn_database.env(
        MIGRATIONS_DIR=str(migrations.path), DB_PORT=str(bootstrap_pooler.port),
        DB_ADMIN_HOST="127.0.0.1", DB_ADMIN_PORT=str(pg_server.port),
        DB_ADMIN_USER="postgres", DB_ADMIN_PASSWORD=pg_server.password,
    )  # fmt: skip
    result = run_runner(env=env)
    assert result.returncode == 0, result
    assert result.events_named("database_created")
    assert result.events_named("database_ready")[0]["port"] == pg_server.port
    versions = [v for (v,) in unborn_database.query("SELECT version FROM schema_migrations")]
    assert sorted(versions) == sorted(name[:-4] for name in BOOTSTRAP_FILES)


def test_bootstrap_through_the_session_pooler(pg_server, unborn_database, run_runner, migrations):
    """Session pooling keeps one server session per client: CREATE DATABASE and all work."""
    require_pgbouncer()
    bouncer = PgBouncer.start(pg_server, "session", POOL_SIZE,
                              plaintext={"postgres": pg_server.password})  # fmt: skip
    try:
        migrations.add(BOOTSTRAP_FILES)
        env = unborn_database.env(
            MIGRATIONS_DIR=str(migrations.path), DB_PORT=str(bouncer.port),
            DB_ADMIN_USER="postgres", DB_ADMIN_PASSWORD=pg_server.password,
        )  # fmt: skip
        result = run_runner(env=env)
        assert result.returncode == 0, result
        assert result.events_named("database_created")
        count = unborn_database.scalar("SELECT count(*) FROM schema_migrations")
        assert count == len(BOOTSTRAP_FILES)
    finally:
        bouncer.stop()


@pytest.fixture
def tiny_pooler(pg_server):
    """Two server connections (a runner needs both: lock and migrations), quick to time out."""
    require_pgbouncer()
    bouncer = PgBouncer.start(pg_server, "transaction", TINY_POOL, query_wait_timeout=1)
    yield bouncer
    bouncer.stop()


def test_an_exhausted_pool_is_retried_then_says_so(
    tiny_pooler, pg_server, database, run_runner, start_runner, migrations
):
    """query_wait_timeout: retried within DB_WAIT_TIMEOUT, then one line naming the pooler, 69."""
    migrations.add(FILES)
    env = database.env(MIGRATIONS_DIR=str(migrations.path), DB_PORT=str(tiny_pooler.port),
                       DB_WAIT_TIMEOUT="3")  # fmt: skip
    squatters = [database.connect(port=tiny_pooler.port, prepare_threshold=None)
                 for _ in range(TINY_POOL)]  # fmt: skip
    try:
        for squatter in squatters:  # each holds a server connection, inside its transaction
            squatter.execute("BEGIN")
            squatter.execute("SELECT 1")
        started = time.monotonic()
        result = run_runner(env=env)
        elapsed = time.monotonic() - started
        assert result.returncode == EX_UNAVAILABLE, result
        error = result.last_event()["error"]
        assert "connection pooler" in error and "query_wait_timeout" in error, result
        assert result.events_named("database_not_ready"), result
        assert 3 <= elapsed < 10, elapsed

        # Freed while the runner retries: it goes on and applies everything.
        runner = start_runner(env={**env, "DB_WAIT_TIMEOUT": "20"})
        time.sleep(3)  # beyond query_wait_timeout: at least one refusal, retried
    finally:
        for squatter in squatters:
            squatter.close()
    retried = runner.wait(60)
    assert retried.returncode == 0, retried
    assert retried.events_named("database_not_ready"), retried


NO_TRANSACTION = (
    "-- migrate:no-transaction\n"
    "CREATE TABLE IF NOT EXISTS sessions (id int);\n"
    "ALTER TABLE sessions ADD COLUMN IF NOT EXISTS expires_at timestamptz;\n"
    "SELECT missing_column FROM sessions;\n"
)


def run_while_held(
    route, database, run_runner, migrations, table: str
) -> tuple[dict[str, str], Any, float]:
    """A run with DDL_LOCK_TIMEOUT=300ms, no retry, while another session holds ``table``
    (created here) in ACCESS SHARE mode: its settings, its result and how long it took. A run
    that waits for the table without limit is stopped after 30 s (the test fails)."""
    with database.connect() as owner:
        owner.execute(f"CREATE TABLE {table} (id int)")
    env = route.env(database, MIGRATIONS_DIR=str(migrations.path), DDL_LOCK_TIMEOUT="300ms",
                    DDL_LOCK_RETRIES="0")  # fmt: skip
    with database.connect() as blocker:
        blocker.execute("BEGIN")
        blocker.execute(f"LOCK TABLE {table} IN ACCESS SHARE MODE")
        started = time.monotonic()
        result = run_runner(env=env, timeout=30)
        return env, result, time.monotonic() - started


def test_timeouts_reach_the_statements_of_a_non_transactional_file(
    route, database, run_runner, migrations
):
    """DDL_LOCK_TIMEOUT applies to each statement, as SET LOCAL in its own transaction."""
    migrations.add({"001_sessions.sql": NO_TRANSACTION})
    env, blocked, elapsed = run_while_held(route, database, run_runner, migrations, "sessions")
    assert blocked.returncode == 65, blocked
    failed = blocked.events_named("migration_failed")[0]
    assert (failed["sqlstate"], failed["line"]) == ("55P03", 3), blocked
    assert elapsed < 10, elapsed

    # Unblocked: the error of line 4 is named at its line and column, offsets and all.
    result = run_runner(env=env)
    assert result.returncode == 65, result
    failed = result.events_named("migration_failed")[0]
    assert (failed["sqlstate"], failed["line"], failed["column"]) == ("42703", 4, 8), result


# A file's own statements that put lock_timeout back to the session's default (0: no limit).
RESETS = ("RESET ALL;", "RESET lock_timeout;", "SET lock_timeout TO DEFAULT;")
HEADERS = {"transaction": "", "no-transaction": "-- migrate:no-transaction\n"}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("mode", HEADERS)
@pytest.mark.parametrize("reset", RESETS, ids=("reset_all", "reset_one", "set_default"))
def test_a_file_that_resets_its_settings_still_waits_at_most_ddl_lock_timeout(
    route, database, run_runner, migrations, reset, mode
):
    """RESET ALL (or RESET lock_timeout) in a file dropped the runner's lock_timeout for the
    rest of it: its ALTER TABLE waited for a held table without limit, the application's
    queries queued behind it. The runner sets its timeouts again after such a statement."""
    header = HEADERS[mode]
    migrations.add({"001_held.sql": f"{header}{reset}\nALTER TABLE held ADD COLUMN note text;\n"})
    _, result, elapsed = run_while_held(route, database, run_runner, migrations, "held")
    assert result.returncode == 65, result
    failed = result.events_named("migration_failed")[0]
    assert (failed["sqlstate"], failed["line"]) == ("55P03", 2 + header.count("\n")), result
    assert "lock timeout" in failed["error"], result
    assert elapsed < 10, elapsed
    assert database.scalar("SELECT count(*) FROM schema_migrations") == 0


def test_a_reset_gives_back_the_runners_timeouts_and_a_files_own_value_stays(
    route, database, run_runner, migrations
):
    """After RESET ALL a file runs under DDL_LOCK_TIMEOUT and STATEMENT_TIMEOUT again; a value
    the file sets itself is its choice, kept when it resets only another setting."""
    seen = (
        "SELECT current_setting('lock_timeout') AS lock, current_setting('statement_timeout') AS st"
    )
    migrations.add({
        "001_reset_all.sql": f"SET lock_timeout = '1234ms';\nRESET ALL;\nCREATE TABLE reset_all AS {seen};",
        "002_own.sql": f"SET lock_timeout = '1234ms';\nRESET statement_timeout;\nCREATE TABLE own AS {seen};",
    })  # fmt: skip
    env = route.env(database, MIGRATIONS_DIR=str(migrations.path), DDL_LOCK_TIMEOUT="3s",
                    STATEMENT_TIMEOUT="40s")  # fmt: skip
    result = run_runner(env=env)
    assert result.returncode == 0, result
    assert database.query("SELECT lock, st FROM reset_all") == [("3s", "40s")]
    assert database.query("SELECT lock, st FROM own") == [("1234ms", "40s")]


def test_an_index_build_reports_its_phase_through_the_pooler(pooled, database, run_runner,
                                                             migrations):  # fmt: skip
    """The applying backend changes between transactions: progress finds the build by database."""
    table, index = SLOW_INDEX.rsplit("CREATE INDEX", 1)
    migrations.add({"001_big.sql": table,
                    "002_big_slow.sql": "CREATE INDEX CONCURRENTLY" + index})  # fmt: skip
    env = pooled.env(database, MIGRATIONS_DIR=str(migrations.path), PROGRESS_INTERVAL="300ms")
    result = run_runner(env=env)
    assert result.returncode == 0, result
    progress = result.events_named("migration_progress")
    phases = {p.get("phase") for p in progress if p["version"] == "002_big_slow"}
    assert any(phase and phase.startswith("building index") for phase in phases), progress


def test_a_default_a_file_sets_is_warned_of_behind_the_pooler(
    pooled, database, run_runner, migrations
):
    """A new login through the pooler gets a pooled server session that keeps the defaults it
    logged in with: the runner says so instead of renewing, and the run completes."""
    migrations.add(
        {
            "001_path.sql": "CREATE SCHEMA app;\nDO $$ BEGIN EXECUTE format("
            "'ALTER DATABASE %I SET search_path = app, public', current_database()); END $$;\n",
            "002_t.sql": "CREATE TABLE app.t (id int);\n",
        }
    )
    result = run_runner(env=pooled.env(database, MIGRATIONS_DIR=str(migrations.path)))
    assert result.returncode == 0, result
    assert [e["version"] for e in result.events_named("session_not_renewed")] == ["001_path"]
    assert result.events_named("session_renewed") == []
    assert database.scalar("SELECT count(*) FROM schema_migrations") == 2
    assert database.scalar(LEFTOVER_LOCKS) == 0


def test_cleanup_works_through_the_pooler_and_leaves_nothing_in_it(
    pooled, pg_server, tmp_path, run_runner
):
    """The batches are whole transactions, one round trip each; the cleanup lock, a session
    lock, is not taken behind a pooler (it would stay on a pooled server session)."""
    from tests.integration.schema_fixtures import drop_database, migrate_fresh_database
    from tests.integration.test_schema_functions import remaining, seed_cleanup_rows

    db = migrate_fresh_database(pg_server, tmp_path)
    try:
        keys = seed_cleanup_rows(db, 5)
        result = run_runner("cleanup", env=pooled.env(db.db))
        assert result.returncode == 0, result
        assert result.events_named("cleanup_lock_skipped")
        left = remaining(db)
        for table, sets in keys.items():
            assert not (sets["expired"] & left[table]) and sets["live"] <= left[table], table
        assert db.db.scalar(LEFTOVER_LOCKS) == 0
    finally:
        drop_database(db)
