"""Six runners at once, directly and through PgBouncer (pool of 3): every file applied once, every runner exits 0."""

from __future__ import annotations

import threading

import pytest

from tests.conftest import LEFTOVER_LOCKS
from tests.faults.conftest import assert_converged
from tests.pooler.conftest import POOL_SIZE

RUNNERS = 6
ROUNDS = 2


@pytest.mark.parametrize("round_number", range(ROUNDS))
def test_six_runners_apply_every_file_exactly_once(
    route, database, start_runner, files, reference, round_number
):
    env = route.env(database, MIGRATIONS_DIR=str(files.path), DB_WAIT_TIMEOUT="30")
    runners = [start_runner(env=env) for _ in range(RUNNERS)]
    results = [runner.wait(120) for runner in runners]
    context = f"{route.name}, round {round_number}\n" + "\n".join(map(str, results))
    assert [r.returncode for r in results] == [0] * RUNNERS, context
    appliers = [r for r in results if r.events_named("migrations_complete")[0]["applied"]]
    assert len(appliers) == 1, context
    # The others really queued behind the lock (through the pool, holding no server session).
    assert any(r.events_named("lock_waiting") for r in results), context
    assert len(appliers[0].events_named("migration_applied")) == len(reference.history)
    # The schema and history of an undisturbed direct run; no index left invalid.
    assert_converged(database, reference, context)
    assert database.scalar(LEFTOVER_LOCKS) == 0


CONCURRENT_INDEX = {
    "001_tokens.sql": "CREATE TABLE tokens (id int PRIMARY KEY, owner text);\n"
    "INSERT INTO tokens SELECT g, 'owner' || g FROM generate_series(1, 50000) g;",
    "002_tokens_owner_idx.sql": "CREATE INDEX CONCURRENTLY IF NOT EXISTS tokens_owner_idx\n"
    "  ON tokens (owner);",
    "003_after.sql": "CREATE TABLE after_index (id int);",
}


def test_create_index_concurrently_does_not_wait_for_the_lock_transaction(
    route, database, run_runner, migrations
):
    """The lock's open transaction holds no snapshot: CIC's waits for older snapshots pass it."""
    migrations.add(CONCURRENT_INDEX)
    result = run_runner(env=route.env(database, MIGRATIONS_DIR=str(migrations.path),
                                      STATEMENT_TIMEOUT="20s"))  # fmt: skip
    assert result.returncode == 0, result
    index_ms = result.events_named("migrations_complete")[0]["durations_ms"]
    print(f"{route.name}: CREATE INDEX CONCURRENTLY on 50k rows took {index_ms}")
    assert index_ms["002_tokens_owner_idx"] < 10_000, result
    assert database.scalar(
        "SELECT indisvalid FROM pg_index WHERE indexrelid = 'tokens_owner_idx'::regclass"
    )


CREATORS = POOL_SIZE  # in session pooling each creator holds one of the pool's server sessions


def test_the_history_table_is_created_once_when_creators_race(route, database):
    """CREATE TABLE IF NOT EXISTS from many sessions at once: no unique violation on pg_type."""
    from migrator.history.name import DEFAULT_TABLE
    from migrator.history.table import ensure_history_table

    connections = [route.connect(database) for _ in range(CREATORS)]
    barrier = threading.Barrier(CREATORS)
    errors: list[BaseException] = []

    def create(conn) -> None:
        barrier.wait()
        try:
            ensure_history_table(conn, DEFAULT_TABLE)
        except BaseException as error:  # collected: the assertion below names them
            errors.append(error)

    threads = [threading.Thread(target=create, args=(conn,)) for conn in connections]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    finally:
        for conn in connections:
            conn.close()
    assert errors == []
    assert database.scalar("SELECT to_regclass('public.schema_migrations') IS NOT NULL")


def test_a_backfill_through_the_pooler_does_every_row_once(
    pooled, database, run_runner, migrations
):
    """Each batch is one transaction: nothing is kept on a server session between batches
    (the bounds travel as parameters of an unnamed statement, the timeouts as SET LOCAL)."""
    from tests.integration.test_batch import ROWS, TABLE, backfill, counts

    migrations.add(
        {"001_items.sql": TABLE, "002_backfill.sql": backfill("table=items key=id size=50")}
    )
    env = pooled.env(database, MIGRATIONS_DIR=str(migrations.path), BATCH_MAX_SIZE="200")
    result = run_runner(env=env)
    assert result.returncode == 0, result
    assert counts(database) == {1: ROWS}
    assert len(result.events_named("batch_committed")) >= ROWS // 200
    assert database.scalar("SELECT count(*) FROM schema_migrations_batch") == 0
    assert database.scalar(LEFTOVER_LOCKS) == 0
