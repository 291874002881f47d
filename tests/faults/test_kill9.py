"""kill -9 of the runner at random moments: the next run converges, half-done files are finished."""

from __future__ import annotations

import os
import random
import time

import pytest

from tests.conftest import LEFTOVER_LOCKS, MigrationsFolder, create_database, drop_database
from tests.faults.conftest import (
    Snapshot,
    assert_converged,
    invalid_indexes,
    runner_backends,
    wait_until,
)
from tests.faults.migration_sets import NON_TRANSACTIONAL, many_files

TRIALS = 20
# Half the trials kill at a uniform moment of the whole run, half inside a non-transactional file.
MIN_KILLS_INSIDE_NON_TRANSACTIONAL = 5
SEED = int(os.environ.get("FAULTS_SEED", time.time_ns() % 1_000_000))
# With client_connection_check_interval = 1s the server notices a dead client within ~1 s.
ORPHAN_BACKEND_BUDGET = 3.0
LONG_SLEEP = 60


@pytest.fixture
def reference(other_database, run_runner, migrations):
    """A clean, uninterrupted run of the same files: its snapshot and how long each file took."""
    migrations.add(many_files())
    started = time.monotonic()
    result = run_runner(env=other_database.env(MIGRATIONS_DIR=str(migrations.path)))
    assert result.returncode == 0, result
    duration = time.monotonic() - started
    durations_ms = result.events_named("migrations_complete")[0]["durations_ms"]
    return Snapshot.of(other_database), duration, durations_ms


def interrupted_non_transactional(killed) -> str | None:
    """The non-transactional file the killed run was in the middle of, if any."""
    started = [e["version"] for e in killed.events_named("migration_started")]
    applied = {e["version"] for e in killed.events_named("migration_applied")}
    if started and started[-1] not in applied and started[-1] in NON_TRANSACTIONAL:
        return started[-1]
    return None


def test_kill_9_at_random_moments_then_the_next_run_converges(
    pg_server, start_watched, run_runner, migrations, reference
):
    snapshot, run_duration, durations_ms = reference
    rng = random.Random(SEED)
    inside_non_transactional = []
    invalid_before_rerun = 0
    for trial in range(TRIALS):
        database = create_database(pg_server)
        env = database.env(MIGRATIONS_DIR=str(migrations.path))
        context = f"trial {trial}, FAULTS_SEED={SEED}"
        try:
            runner = start_watched(env=env)
            if trial % 2:
                target = rng.choice(NON_TRANSACTIONAL)
                runner.wait_for(
                    lambda e, t=target: e["event"] == "migration_started" and e["version"] == t
                )
                time.sleep(rng.uniform(0, durations_ms[target] / 1000))
            else:
                time.sleep(rng.uniform(0, run_duration))
            killed = runner.kill()
            interrupted = interrupted_non_transactional(killed)
            if interrupted:
                inside_non_transactional.append(interrupted)
            invalid_before_rerun += bool(invalid_indexes(database))

            rerun = run_runner(env=env)
            assert rerun.returncode == 0, f"{context}\n{rerun}"
            assert_converged(database, snapshot, context)
        finally:
            drop_database(database)
    print(
        f"kill -9: {TRIALS} trials, {len(inside_non_transactional)} inside a non-transactional "
        f"file, {invalid_before_rerun} left an invalid index, FAULTS_SEED={SEED}"
    )
    assert len(inside_non_transactional) >= MIN_KILLS_INSIDE_NON_TRANSACTIONAL, (
        f"only {inside_non_transactional} kills landed in non-transactional files, FAULTS_SEED={SEED}"
    )


def test_the_server_aborts_the_statement_of_a_killed_runner_within_seconds(
    database, start_watched, migrations
):
    """Without client_connection_check_interval the backend sleeps on, holding its locks."""
    migrations.add(
        {"001_long.sql": f"CREATE TABLE long_one (id int);\nSELECT pg_sleep({LONG_SLEEP});"}
    )
    runner = start_watched(env=database.env(MIGRATIONS_DIR=str(migrations.path)))
    runner.wait_for(lambda e: e["event"] == "migration_started")
    wait_until(lambda: database.scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE query LIKE %s AND state = 'active'",
        "%pg_sleep(60)%",
    ) == 1)  # fmt: skip
    runner.kill()
    gone_after = wait_until(lambda: runner_backends(database) == 0, timeout=LONG_SLEEP / 2)
    print(f"orphan backends gone {gone_after:.2f}s after kill -9")
    assert gone_after < ORPHAN_BACKEND_BUDGET
    assert database.scalar(LEFTOVER_LOCKS) == 0
    assert database.scalar("SELECT to_regclass('long_one')") is None


CLEAN_LOGINS = (
    "CREATE TABLE logins (id int, email text);\n"
    "INSERT INTO logins VALUES (1, 'a@example.com'), (3, 'b@example.com');"
)
INVALID_INDEX_FILES = {
    # A duplicate email makes the unique index build fail after its catalog entry exists.
    "001_logins.sql": CLEAN_LOGINS.replace("(3,", "(2, 'a@example.com'), (3,"),
    "002_logins_email_key.sql": "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS logins_email_key\n"
    "  ON logins (email);",
}


def test_an_index_left_invalid_is_rebuilt_by_the_rerun(
    database, other_database, run_runner, migrations, tmp_path
):
    """A CREATE INDEX CONCURRENTLY that fails half-way leaves an INVALID index behind."""
    migrations.add(INVALID_INDEX_FILES)
    env = database.env(MIGRATIONS_DIR=str(migrations.path))
    failed = run_runner(env=env)
    assert failed.returncode == 65, failed
    assert invalid_indexes(database) == ["logins_email_key"]

    database.query("DELETE FROM logins WHERE id = 2 RETURNING id")
    rerun = run_runner(env=env)
    assert rerun.returncode == 0, rerun
    dropped = rerun.events_named("invalid_index_dropped")
    assert [(e["index"], e["version"]) for e in dropped] == [
        ("public.logins_email_key", "002_logins_email_key")
    ]
    assert invalid_indexes(database) == []

    # The clean run: the same files with the duplicate never inserted.
    clean = MigrationsFolder(tmp_path / "clean").add(INVALID_INDEX_FILES)
    clean.write("001_logins.sql", CLEAN_LOGINS)
    result = run_runner(env=other_database.env(MIGRATIONS_DIR=str(clean.path)))
    assert result.returncode == 0, result
    assert database.pg_dump("--schema-only") == other_database.pg_dump("--schema-only")


def test_an_index_left_invalid_under_a_unicode_escaped_name_is_rebuilt(
    database, run_runner, migrations
):
    """U&"..." names: the leftover is found by the name PostgreSQL decoded, not the spelling."""
    files = {
        **INVALID_INDEX_FILES,
        "002_logins_email_key.sql": "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS "
        "U&\"l!006Fgins_!0065mail\" UESCAPE '!' ON logins (email);",
    }
    migrations.add(files)
    env = database.env(MIGRATIONS_DIR=str(migrations.path))
    assert run_runner(env=env).returncode == 65
    assert invalid_indexes(database) == ["logins_email"]

    database.query("DELETE FROM logins WHERE id = 2 RETURNING id")
    rerun = run_runner(env=env)
    assert rerun.returncode == 0, rerun
    dropped = rerun.events_named("invalid_index_dropped")
    assert [e["index"] for e in dropped] == ["public.logins_email"]
    assert invalid_indexes(database) == []
    assert database.scalar("SELECT count(*) FROM pg_indexes WHERE indexname = %s",
                           "logins_email") == 1  # fmt: skip
