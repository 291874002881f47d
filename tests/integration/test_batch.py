"""Batched data migrations against a real PostgreSQL, through entrypoint.py.

A ``-- migrate:batch`` post file runs its statement once per batch of its table's key, each
batch a transaction that moves the checkpoint with it. The statements here count how many
times each row was done (``done = done + 1``): a row done twice or missed shows.
"""

from __future__ import annotations

from tests.conftest import Database, MigrationsFolder, RunResult

ROWS = 3000
TABLE = (
    "CREATE TABLE items (id bigint PRIMARY KEY, done int NOT NULL DEFAULT 0, "
    "note text, created timestamptz NOT NULL DEFAULT '2024-01-01 00:00:00+00');\n"
    f"INSERT INTO items (id) SELECT g FROM generate_series(1, {ROWS}) g;\n"
)
POST = "-- Description: count each item once\n-- migrate:phase post\n"
COUNTING = "UPDATE items SET done = done + 1 WHERE id BETWEEN $1 AND $2;\n"


def backfill(header: str = "table=public.items key=id size=500", body: str = COUNTING) -> str:
    return POST + f"-- migrate:batch {header}\n" + body


def run(run_runner, database: Database, migrations: MigrationsFolder, *args: str, **env: str):
    result: RunResult = run_runner(
        *args, env=database.env(MIGRATIONS_DIR=str(migrations.path), **env)
    )
    return result


def counts(database: Database) -> dict[int, int]:
    """How many rows were done how many times."""
    return dict(database.query("SELECT done, count(*) FROM items GROUP BY done ORDER BY done"))


def checkpoint(database: Database) -> tuple | None:
    rows = database.query(
        "SELECT checkpoint, rows_done, batches FROM schema_migrations_batch WHERE version = %s",
        "002_backfill",
    )
    return rows[0] if rows else None


def test_a_backfill_does_every_row_once_and_records_the_file(database, run_runner, migrations):
    migrations.add({"001_items.sql": TABLE, "002_backfill.sql": backfill()})
    result = run(run_runner, database, migrations)
    assert result.returncode == 0, result
    assert counts(database) == {1: ROWS}
    (started,) = result.events_named("batch_started")
    assert (started["table"], started["key"], started["size"]) == ("public.items", "id", 500)
    (finished,) = result.events_named("batch_finished")
    assert finished["rows_done"] == ROWS and finished["rows_changed"] == ROWS
    assert finished["batches"] >= ROWS // 1000  # the size adapts, at most x2 a step
    applied = [e["version"] for e in result.events_named("migration_applied")]
    assert applied == ["001_items", "002_backfill"]
    assert database.query("SELECT version FROM schema_migrations ORDER BY 1") == [
        ("001_items",),
        ("002_backfill",),
    ]
    # Recorded with its last batch: no checkpoint left behind.
    assert database.scalar("SELECT count(*) FROM schema_migrations_batch") == 0
