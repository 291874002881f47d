"""The migration lock: ten runners at once, each migration applied exactly once."""

from __future__ import annotations

import time

import psycopg
import pytest

from tests.conftest import hold_migration_lock

RUNNERS = 10

SLOW_FILES = {
    "001_counter.sql": "CREATE TABLE applied_counter (version text);\n"
    "INSERT INTO applied_counter VALUES ('001');",
    # Slow enough that the others queue behind the lock and report its holder: it waits for
    # another runner's session (at most 30 s; on a loaded machine the others may start late),
    # then long enough for that one to try the lock.
    "002_slow.sql": "DO $$ BEGIN FOR i IN 1..300 LOOP EXIT WHEN (SELECT count(*) "
    "FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() "
    "AND application_name = 'auth-service-migrator') >= 2; PERFORM pg_sleep(0.1); "
    "PERFORM pg_stat_clear_snapshot(); END LOOP; "
    "END $$;\nSELECT pg_sleep(1.5);\nINSERT INTO applied_counter VALUES ('002');",
    "003_more.sql": "INSERT INTO applied_counter VALUES ('003');",
}


def test_ten_runners_at_once_apply_each_migration_exactly_once(
    unborn_database, pg_server, start_runner, migrations
):
    migrations.add(
        {"000_init_database.sql": "CREATE EXTENSION IF NOT EXISTS citext;", **SLOW_FILES}
    )
    env = unborn_database.env(
        DB_ADMIN_USER="postgres",
        DB_ADMIN_PASSWORD=pg_server.password,
        MIGRATIONS_DIR=str(migrations.path),
        DB_WAIT_TIMEOUT="30",
    )
    runners = [start_runner(env=env) for _ in range(RUNNERS)]
    results = [runner.wait(120) for runner in runners]

    assert [r.returncode for r in results] == [0] * RUNNERS, "\n".join(map(str, results))
    assert unborn_database.query(
        "SELECT version, count(*) FROM applied_counter GROUP BY version ORDER BY version"
    ) == [("001", 1), ("002", 1), ("003", 1)]
    assert unborn_database.query("SELECT version FROM schema_migrations ORDER BY version") == [
        ("000_init_database",),
        ("001_counter",),
        ("002_slow",),
        ("003_more",),
    ]

    appliers = [r for r in results if r.events_named("migrations_complete")[0]["applied"]]
    assert len(appliers) == 1, "exactly one runner applies; the others find nothing to do"
    waits = [
        e for r in results for e in r.events_named("lock_waiting") if e["lock"] == "migrations"
    ]
    assert waits, "runners that waited must say so"
    for wait in waits:
        holder = wait["holder"]
        assert holder is not None and isinstance(holder["pid"], int)
        assert holder["application_name"] == "auth-service-migrator"
        assert holder["since"]


def test_lock_timeout_exits_75_and_names_the_holder(database, run_runner, migrations):
    migrations.add({"001_t.sql": "CREATE TABLE t (id int);"})
    with database.connect(application_name="someone-else") as holder:
        hold_migration_lock(holder)
        holder_pid = holder.info.backend_pid
        env = database.env(MIGRATIONS_DIR=str(migrations.path), MIGRATION_LOCK_TIMEOUT="1")
        result = run_runner(env=env)
    assert result.returncode == 75, result
    error = result.events_named("lock_timeout")[0]["error"]
    assert "could not get the migration lock within 1s" in error and "someone-else" in error
    assert result.events_named("lock_waiting")[0]["holder"]["pid"] == holder_pid
    assert database.scalar("SELECT to_regclass('t')") is None


# The runner's sessions on the database, the test's own excepted.
RUNNER_SESSIONS = """
SELECT count(*) FROM pg_stat_activity
WHERE datname = current_database() AND backend_type = 'client backend'
  AND pid <> pg_backend_pid() AND pid <> %s
"""


def test_a_runner_queued_for_the_lock_holds_one_connection(database, start_runner, migrations):
    """The applying connection logs in ahead, beside the lock; it is given up while the lock is
    busy, so that ten queued replicas hold ten server sessions, not twenty."""
    migrations.add({"001_t.sql": "CREATE TABLE t (id int);"})
    with database.connect() as holder, database.connect() as observer:
        hold_migration_lock(holder)
        holder_pid = holder.info.backend_pid
        runner = start_runner(env=database.env(MIGRATIONS_DIR=str(migrations.path)))
        deadline = time.monotonic() + 30
        while observer.execute(RUNNER_SESSIONS, (holder_pid,)).fetchone() != (1,):
            assert time.monotonic() < deadline, "the runner never connected"
            time.sleep(0.02)
        time.sleep(0.5)  # past its first try of the lock and any login still under way
        samples = []
        for _ in range(25):
            samples.append(observer.execute(RUNNER_SESSIONS, (holder_pid,)).fetchone()[0])
            time.sleep(0.02)
        holder.execute("COMMIT")
        result = runner.wait(60)
    assert samples == [1] * 25, samples
    assert result.returncode == 0, result
    assert result.events_named("lock_waiting")[0]["holder"]["pid"] == holder_pid
    assert result.events_named("migrations_complete")[0]["applied"] == ["001_t"]
    assert database.scalar("SELECT count(*) FROM schema_migrations WHERE version = '001_t'") == 1


# PostgreSQL 17 added transaction_timeout: it ends any transaction older than the setting.
TRANSACTION_TIMEOUT_SINCE = 170000
SET_TRANSACTION_TIMEOUT = "ALTER DATABASE {name} SET transaction_timeout = '1s'"


def test_transaction_timeout_pg17_and_later_does_not_end_the_lock(database, run_runner, migrations):
    """The lock's transaction lasts the whole run: on PostgreSQL 17+ a transaction_timeout set
    on the database would end it (and the run, exit 75) after the first second, so the runner
    turns it off for that transaction alone. Older servers do not know the setting; the runner
    must not name it there (42704, every run would fail)."""
    migrations.add({f"00{n}_slow.sql": "SELECT pg_sleep(0.6);" for n in (1, 2, 3)})
    with database.connect() as conn:
        version = conn.execute("SELECT current_setting('server_version_num')::int").fetchone()
        if version and version[0] >= TRANSACTION_TIMEOUT_SINCE:
            conn.execute(SET_TRANSACTION_TIMEOUT.format(name=database.name))
        else:
            with pytest.raises(psycopg.errors.UndefinedObject):
                conn.execute(SET_TRANSACTION_TIMEOUT.format(name=database.name))
    result = run_runner(env=database.env(MIGRATIONS_DIR=str(migrations.path)))
    assert result.returncode == 0, result
    assert result.events_named("migrations_complete")[0]["applied"] == [
        "001_slow", "002_slow", "003_slow"
    ]  # fmt: skip
