"""Batched data migrations against a real PostgreSQL, through entrypoint.py.

A ``-- migrate:batch`` post file runs its statement once per batch of its table's key, each
batch a transaction that moves the checkpoint with it. The statements here count how many
times each row was done (``done = done + 1``): a row done twice or missed shows.
"""

from __future__ import annotations

from itertools import pairwise

import pytest

from tests.conftest import Database, MigrationsFolder, RunResult
from tests.integration.test_bad_input import one_error

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
    """How many rows were done how many times ({} without the table)."""
    if database.scalar("SELECT to_regclass('public.items')") is None:
        return {}
    return dict(database.query("SELECT done, count(*) FROM items GROUP BY done ORDER BY done"))


def recorded(database: Database) -> list[str]:
    if database.scalar("SELECT to_regclass('public.schema_migrations')") is None:
        return []
    return [row[0] for row in database.query("SELECT version FROM schema_migrations ORDER BY 1")]


def checkpoint(database: Database) -> tuple | None:
    if database.scalar("SELECT to_regclass('public.schema_migrations_batch')") is None:
        return None
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


def test_a_rerun_after_the_file_is_recorded_does_nothing(database, run_runner, migrations):
    migrations.add({"001_items.sql": TABLE, "002_backfill.sql": backfill()})
    assert run(run_runner, database, migrations).returncode == 0
    again = run(run_runner, database, migrations)
    assert again.returncode == 0, again
    assert again.events_named("batch_started") == []
    assert counts(database) == {1: ROWS}


# --- keys that are not unique, and statements other than UPDATE ----------------------------------

# 40 distinct timestamps, 75 rows each: every batch boundary falls inside a run of equal keys.
EQUAL_KEYS = (
    "CREATE TABLE events (id bigint PRIMARY KEY, at timestamptz NOT NULL, done int NOT NULL "
    "DEFAULT 0);\n"
    "INSERT INTO events (id, at) SELECT g, timestamptz '2024-01-01 00:00:00+00' "
    "+ (g % 40) * interval '1 second' FROM generate_series(1, 3000) g;\n"
    "CREATE INDEX events_at ON events (at);\n"
)


def test_equal_keys_across_a_batch_boundary_are_all_done_once(database, run_runner, migrations):
    """size=100 cuts inside runs of 75 equal timestamps: BETWEEN takes the whole run."""
    migrations.add(
        {
            "001_events.sql": EQUAL_KEYS,
            "002_backfill.sql": backfill(
                "table=events key=at size=100",
                "UPDATE events SET done = done + 1 WHERE at BETWEEN $1 AND $2;\n",
            ),
        }
    )
    result = run(run_runner, database, migrations, BATCH_TARGET_DURATION="1ms")
    assert result.returncode == 0, result
    assert database.query("SELECT done, count(*) FROM events GROUP BY 1") == [(1, 3000)]
    assert len(result.events_named("batch_committed")) > 5


def test_a_delete_and_an_insert_select_in_batches(database, run_runner, migrations):
    migrations.add(
        {
            "001_items.sql": TABLE + "CREATE TABLE archive (id bigint PRIMARY KEY);\n",
            "002_archive.sql": POST
            + "-- migrate:batch table=items key=id size=300\n"
            + "INSERT INTO archive (id) SELECT id FROM items WHERE id BETWEEN $1 AND $2 "
            + "AND id % 2 = 0;\n",
            "003_delete.sql": POST
            + "-- migrate:batch table=items key=id size=300\n"
            + "DELETE FROM items WHERE id BETWEEN $1 AND $2 AND id % 2 = 0;\n",
        }
    )
    result = run(run_runner, database, migrations)
    assert result.returncode == 0, result
    assert database.scalar("SELECT count(*) FROM archive") == ROWS // 2
    assert database.scalar("SELECT count(*) FROM items") == ROWS // 2
    assert database.scalar("SELECT count(*) FROM items WHERE id % 2 = 0") == 0
    finished = result.events_named("batch_finished")
    assert [e["rows_changed"] for e in finished] == [ROWS // 2, ROWS // 2]


# --- refused up front --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "header", "mentions"),
    [
        ("UPDATE items SET done = done + 1;\n", None, ("line 4", "does not use $1")),
        ("UPDATE items SET done = 1 WHERE id >= $1;\n", None, ("line 4", "does not use $2")),
        (
            COUNTING + COUNTING,
            None,
            ("line 5", "a second statement"),
        ),
        (
            "ALTER TABLE items ADD COLUMN x int; -- $1 $2\n",
            None,
            ("line 4", "not ALTER"),
        ),
        (COUNTING, "table=items key=id rows=5", ("line 3", "'rows=5' is not understood")),
        (COUNTING, "table=items key=note", ("line 3", "key may be NULL")),
        (COUNTING, "table=items key=created", ("line 3", "no valid btree index")),
        (COUNTING, "table=nowhere key=id", ("line 3", "does not exist")),
    ],
)
def test_bad_batch_files_are_refused_with_one_line_and_nothing_runs(
    database, run_runner, migrations, body, header, mentions
):
    migrations.add(
        {
            "001_items.sql": TABLE,
            "002_backfill.sql": backfill(header or "table=public.items key=id size=500", body),
        }
    )
    result = run(run_runner, database, migrations)
    one_error(result, "invalid_migration_files", 65, "002_backfill.sql", *mentions)
    assert counts(database) in ({0: ROWS}, {}), "nothing of the batch file ran"
    assert "002_backfill" not in recorded(database)


def test_a_batch_file_without_phase_post_is_refused_before_anything_runs(
    database, run_runner, migrations
):
    migrations.add(
        {
            "001_items.sql": TABLE,
            "002_backfill.sql": "-- migrate:batch table=items key=id\n" + COUNTING,
        }
    )
    result = run(run_runner, database, migrations)
    one_error(result, "invalid_migration_files", 65, "002_backfill.sql", "line 1", "phase post")
    assert database.scalar("SELECT to_regclass('public.items')") is None


def test_a_changed_file_with_a_checkpoint_is_refused(database, run_runner, migrations):
    migrations.add({"001_items.sql": TABLE, "002_backfill.sql": backfill()})
    assert run(run_runner, database, migrations, "--phase", "pre").returncode == 0
    # A checkpoint left by an earlier text of the file (as a killed run leaves one).
    with database.connect() as conn:
        conn.execute(
            "CREATE TABLE schema_migrations_batch (version text PRIMARY KEY, checksum text NOT "
            "NULL, checkpoint text, rows_done bigint NOT NULL DEFAULT 0, batches bigint NOT NULL "
            "DEFAULT 0, started_at timestamptz, updated_at timestamptz)"
        )
        conn.execute(
            "INSERT INTO schema_migrations_batch VALUES ('002_backfill', %s, '1000', 1000, 2, "
            "now(), now())",
            ("0" * 64,),
        )
    result = run(run_runner, database, migrations, "--phase", "post")
    message = one_error(result, "invalid_migration_files", 65, "002_backfill.sql")
    assert "changed since its backfill started" in message
    assert "DELETE FROM public.schema_migrations_batch WHERE version = '002_backfill'" in message
    assert counts(database) == {0: ROWS}


# --- the checkpoint table --------------------------------------------------------------------


def test_the_runtime_role_cannot_write_the_checkpoints(database, run_runner, migrations):
    """The owner's default privileges (as 000 grants the runtime role) do not reach it."""
    with database.connect() as conn:
        conn.execute("CREATE ROLE batch_app_role")
        conn.execute(
            "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT INSERT, UPDATE, DELETE ON TABLES "
            "TO batch_app_role"
        )
    try:
        migrations.add({"001_items.sql": TABLE, "002_backfill.sql": backfill()})
        assert run(run_runner, database, migrations).returncode == 0
        granted = database.scalar(
            "SELECT string_agg(privilege_type, ',' ORDER BY privilege_type) FROM "
            "information_schema.role_table_grants WHERE table_name = 'schema_migrations_batch' "
            "AND grantee = 'batch_app_role'"
        )
        assert granted is None
        assert database.scalar("SELECT count(*) FROM items WHERE done <> 1") == 0
    finally:
        with database.connect() as conn:
            conn.execute("DROP OWNED BY batch_app_role")
            conn.execute("DROP ROLE batch_app_role")


def test_a_checkpoint_table_another_role_planted_is_refused(database, run_runner, migrations):
    """A role that created schema_migrations_batch first could move the checkpoints."""
    password = "batch-Owner-5d1e-77c0aa"
    with database.connect() as conn:
        conn.execute(f"CREATE ROLE batch_owner LOGIN PASSWORD '{password}'")
        conn.execute("CREATE ROLE batch_intruder")
        conn.execute(f'GRANT CREATE ON DATABASE "{database.name}" TO batch_owner')
        conn.execute("ALTER SCHEMA public OWNER TO batch_owner")
        conn.execute("GRANT CREATE ON SCHEMA public TO batch_intruder")
        conn.execute("SET ROLE batch_intruder")
        conn.execute("CREATE TABLE schema_migrations_batch (version text PRIMARY KEY)")
        conn.execute("RESET ROLE")
    try:
        migrations.add({"001_items.sql": TABLE, "002_backfill.sql": backfill()})
        env = {"DB_USER": "batch_owner", "DB_PASSWORD": password}
        result = run(run_runner, database, migrations, **env)
        one_error(result, "permission_denied", 77, "public.schema_migrations_batch",
                  "owned by batch_intruder, not by batch_owner")  # fmt: skip
        assert counts(database) == {0: ROWS}, "nothing of the batch file ran"
        assert "002_backfill" not in recorded(database)
    finally:
        with database.connect() as conn:
            conn.execute("ALTER SCHEMA public OWNER TO pg_database_owner")
            for role in ("batch_owner", "batch_intruder"):
                conn.execute(f"DROP OWNED BY {role} CASCADE")
                conn.execute(f"DROP ROLE {role}")


# --- status and dry run ------------------------------------------------------------------------


def test_status_json_shows_a_backfill_in_progress(
    database, run_runner, run_status_json, migrations
):
    migrations.add({"001_items.sql": TABLE, "002_backfill.sql": backfill()})
    assert run(run_runner, database, migrations, "--phase", "pre").returncode == 0
    with database.connect() as conn:
        conn.execute("CREATE TABLE schema_migrations_batch (version text PRIMARY KEY, checksum "
                     "text NOT NULL, checkpoint text, rows_done bigint NOT NULL DEFAULT 0, batches "
                     "bigint NOT NULL DEFAULT 0, started_at timestamptz, updated_at timestamptz)")  # fmt: skip
    checksum = next(
        row["checksum"]
        for row in run_status_json(env=database.env(MIGRATIONS_DIR=str(migrations.path)))[1][
            "migrations"
        ]
        if row["version"] == "002_backfill"
    )
    with database.connect() as conn:
        conn.execute(
            "INSERT INTO schema_migrations_batch VALUES ('002_backfill', %s, '1500', 1500, 3, "
            "now(), now())",
            (checksum,),
        )
    _, document = run_status_json(env=database.env(MIGRATIONS_DIR=str(migrations.path)))
    rows = {row["version"]: row for row in document["migrations"]}
    backfill_row = rows["002_backfill"]
    assert backfill_row["state"] == "pending"
    assert backfill_row["backfill"]["checkpoint"] == "1500"
    assert (backfill_row["backfill"]["rows_done"], backfill_row["backfill"]["batches"]) == (1500, 3)
    assert backfill_row["backfill"]["updated_at"]
    assert "backfill" not in rows["001_items"]


def test_dry_run_names_table_key_and_size(database, run_runner, migrations):
    migrations.add({"001_items.sql": TABLE, "002_backfill.sql": backfill("table=items key=id")})
    result = run(run_runner, database, migrations, "--dry-run", BATCH_SIZE="250")
    assert result.returncode == 0, result
    plans = {e["version"]: e for e in result.events_named("plan_migration")}
    assert plans["002_backfill"]["batch"] == {"table": "items", "key": "id", "size": 250}
    assert "batch" not in plans["001_items"]


# --- batch size --------------------------------------------------------------------------------

SLOW_ROWS = (
    "CREATE TABLE items (id bigint PRIMARY KEY, done int NOT NULL DEFAULT 0);\n"
    "INSERT INTO items (id) SELECT g FROM generate_series(1, 400) g;\n"
    # 2 ms a row: 25 rows make the 50 ms target.
    "CREATE FUNCTION slow_row() RETURNS int LANGUAGE sql AS 'SELECT 1 FROM pg_sleep(0.002)';\n"
    "ANALYZE items;\n"
)


def test_the_batch_size_moves_toward_the_target_duration(database, run_runner, migrations):
    migrations.add(
        {
            "001_items.sql": SLOW_ROWS,
            "002_backfill.sql": backfill(
                "table=items key=id size=2",
                "UPDATE items SET done = done + slow_row() WHERE id BETWEEN $1 AND $2;\n",
            ),
        }
    )
    result = run(
        run_runner, database, migrations, BATCH_TARGET_DURATION="50ms", PROGRESS_INTERVAL="100ms"
    )
    assert result.returncode == 0, result
    assert counts(database) == {1: 400}
    progress = result.events_named("batch_progress")
    assert progress, "a progress event every PROGRESS_INTERVAL"
    done = [e["rows_done"] for e in progress]
    assert done == sorted(done) and 0 < done[-1] < 400
    last = progress[-1]
    assert last["estimated_total"] == 400  # pg_class.reltuples after ANALYZE
    assert last["rows_per_second"] > 0 and last["eta_seconds"] >= 0
    assert last["batch_size"] >= 1 and last["paused_seconds"] == 0
    sizes = [e["batch_size"] for e in result.events_named("batch_committed")]
    assert sizes[0] == 2 and sizes[1] == 4, sizes  # far below the target: doubled
    assert all(a / 2 <= b <= a * 2 for a, b in pairwise(sizes)), sizes
    # 2 ms a row can never make more than 25 rows in 50 ms; settled near it.
    settled = sorted(sizes[6:-1])
    assert settled and 8 <= settled[len(settled) // 2] <= 26, sizes


def test_batch_max_size_caps_the_growth(database, run_runner, migrations):
    migrations.add({"001_items.sql": TABLE, "002_backfill.sql": backfill("table=items key=id")})
    result = run(run_runner, database, migrations, BATCH_SIZE="10", BATCH_MAX_SIZE="40")
    assert result.returncode == 0, result
    sizes = [e["batch_size"] for e in result.events_named("batch_committed")]
    assert sizes[:3] == [10, 20, 40] and max(sizes) == 40, sizes
    assert counts(database) == {1: ROWS}


# --- lock timeouts -----------------------------------------------------------------------------


def test_a_locked_row_makes_batches_time_out_retry_and_split(database, start_runner, migrations):
    """A session holds row 20: its batch times out, is retried, then halved; once the row is
    free the walk goes on and every row is done once."""
    from tests.faults.conftest import Watched

    migrations.add(
        {
            "001_items.sql": "CREATE TABLE items (id bigint PRIMARY KEY, done int NOT NULL "
            "DEFAULT 0);\nINSERT INTO items (id) SELECT g FROM generate_series(1, 60) g;\n",
            "002_backfill.sql": backfill("table=items key=id size=4"),
        }
    )
    env = database.env(MIGRATIONS_DIR=str(migrations.path), DDL_LOCK_TIMEOUT="50ms")
    assert start_runner("--phase", "pre", env=env).wait().returncode == 0
    with database.connect() as holder:
        holder.execute("BEGIN")
        holder.execute("SELECT * FROM items WHERE id = 20 FOR UPDATE")
        runner = Watched(start_runner("--phase", "post", env=env))
        split = runner.wait_for(lambda e: e["event"] == "batch_split")
        assert split is not None
        assert split["batch_size"] == split["previous_size"] // 2
        holder.execute("COMMIT")
    result = runner.finish()
    assert result.returncode == 0, result
    retries = result.events_named("lock_timeout_retry")
    assert [e["attempt"] for e in retries[:3]] == [1, 2, 3]
    assert database.query("SELECT done, count(*) FROM items GROUP BY 1") == [(1, 60)]
    assert "002_backfill" in recorded(database)


def test_a_batch_file_is_refused_in_a_single_transaction(database, run_runner, migrations):
    migrations.add({"001_items.sql": TABLE, "002_backfill.sql": backfill()})
    result = run(run_runner, database, migrations, SINGLE_TRANSACTION="true")
    one_error(result, "invalid_configuration", 78, "002_backfill.sql", "batched data migration")
    assert counts(database) == {}


def test_a_row_locked_for_good_fails_the_run_and_keeps_the_batches_before(
    database, run_runner, migrations
):
    """A batch of one row that keeps timing out: exit 65 naming the file, the checkpoint kept."""
    migrations.add(
        {
            "001_items.sql": "CREATE TABLE items (id bigint PRIMARY KEY, done int NOT NULL "
            "DEFAULT 0);\nINSERT INTO items (id) SELECT g FROM generate_series(1, 10) g;\n",
            "002_backfill.sql": backfill("table=items key=id size=1"),
        }
    )
    env = {"DDL_LOCK_TIMEOUT": "50ms", "DDL_LOCK_RETRIES": "1", "BATCH_MAX_SIZE": "1"}
    assert run(run_runner, database, migrations, "--phase", "pre").returncode == 0
    with database.connect() as holder:
        holder.execute("BEGIN")
        holder.execute("SELECT * FROM items WHERE id = 4 FOR UPDATE")
        result = run(run_runner, database, migrations, "--phase", "post", **env)
    one_error(result, "migration_failed", 65, "002_backfill.sql", "key after 3", "2 times in a row")
    assert checkpoint(database) == ("3", 3, 3)
    assert database.scalar("SELECT count(*) FROM items WHERE done = 1") == 3
    rerun = run(run_runner, database, migrations, "--phase", "post", **env)
    assert rerun.returncode == 0, rerun
    assert database.query("SELECT done, count(*) FROM items GROUP BY 1") == [(1, 10)]


def test_a_batch_that_loses_a_deadlock_is_tried_again(database, start_runner, migrations):
    """The application holds row 50, the batch waits for it, then the application waits for
    row 10, which the batch holds: the batch is the deadlock's victim (its check runs first),
    rolls back whole, and its retry does every row once."""
    from tests.faults.conftest import Watched, wait_until

    migrations.add(
        {
            "001_items.sql": "CREATE TABLE items (id bigint PRIMARY KEY, done int NOT NULL "
            "DEFAULT 0, note text);\n"
            "INSERT INTO items (id) SELECT g FROM generate_series(1, 200) g;\n",
            "002_backfill.sql": backfill("table=items key=id size=100"),
        }
    )
    env = database.env(MIGRATIONS_DIR=str(migrations.path))
    assert start_runner("--phase", "pre", env=env).wait().returncode == 0
    waiting = (
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
        "AND application_name = 'auth-service-migrator'"
    )
    with database.connect() as application:
        application.execute("SET deadlock_timeout = '10s'")  # the batch's check runs first
        application.execute("BEGIN")
        application.execute("UPDATE items SET note = 'app' WHERE id = 50")
        runner = Watched(start_runner("--phase", "post", env=env))
        wait_until(lambda: database.scalar(waiting) == 1, timeout=30)
        application.execute("UPDATE items SET note = 'app' WHERE id = 10")  # waits, then wins
        application.execute("COMMIT")
    result = runner.finish()
    assert result.returncode == 0, result
    (retry,) = result.events_named("batch_retry")
    assert (retry["sqlstate"], retry["reason"], retry["attempt"]) == ("40P01", "deadlock", 1)
    assert database.query("SELECT done, count(*) FROM items GROUP BY 1") == [(1, 200)]
    assert database.scalar("SELECT count(*) FROM items WHERE note = 'app'") == 2
