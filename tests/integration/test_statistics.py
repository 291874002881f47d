"""migrate analyzes what a file rewrote or filled (migrator/apply/statistics.py), with autovacuum off
on the tables so that only the runner can have analyzed them."""

from __future__ import annotations

import time
from typing import Any

from tests.conftest import Database, MigrationsFolder

TOKENS = (
    "CREATE TABLE tokens (id integer PRIMARY KEY, n integer NOT NULL)"
    " WITH (autovacuum_enabled = false);\n"
)
FILL = "INSERT INTO tokens SELECT g, g % 100 FROM generate_series({first}, {last}) g;\n"


# PostgreSQL 14 and older count ANALYZE through the statistics collector, which publishes its
# counts up to 0.5 s late (15 moved them to shared memory): read until two reads agree.
SHARED_MEMORY_STATS = 150000
COLLECTOR_DELAY = 1.0


def analyzed(database: Database, table: str = "tokens") -> tuple[int, float]:
    """(how many times ANALYZE ran on ``table``, its pg_class.reltuples)."""

    def read() -> tuple[int, float]:
        row = database.query(
            "SELECT s.analyze_count + s.autoanalyze_count, c.reltuples FROM pg_stat_user_tables s "
            "JOIN pg_class c ON c.oid = s.relid WHERE s.relname = %s",
            table,
        )
        return int(row[0][0]), float(row[0][1])

    last = read()
    if int(database.scalar("SHOW server_version_num")) >= SHARED_MEMORY_STATS:
        return last
    while True:
        time.sleep(COLLECTOR_DELAY)
        now = read()
        if now == last:
            return now
        last = now


def analyze(database: Database) -> None:
    with database.connect() as conn:
        conn.execute("ANALYZE tokens")


def migrate(run_runner: Any, database: Database, migrations: MigrationsFolder, **env: str) -> Any:
    result = run_runner(env=database.env(MIGRATIONS_DIR=str(migrations.path), **env))
    assert result.returncode == 0, result
    return result


def test_a_data_migration_of_10000_rows_is_analyzed(
    database: Database, migrations: MigrationsFolder, run_runner: Any
) -> None:
    migrations.add({"001_tokens.sql": TOKENS})
    first = migrate(run_runner, database, migrations)
    assert first.events_named("statistics_refreshed") == []  # an empty new table: nothing to do
    created = "CREATE TABLE scopes WITH (autovacuum_enabled = false) AS SELECT * FROM tokens;\n"
    migrations.add({"002_fill.sql": FILL.format(first=1, last=10_000) + created})
    result = migrate(run_runner, database, migrations)
    [new_table, event] = result.events_named("statistics_refreshed")  # by name
    assert (event["version"], event["relation"], event["reason"]) == (
        "002_fill",
        "public.tokens",
        "rows changed",
    )
    assert event["rows_changed"] == 10_000
    # A table the file created and filled counts too.
    assert (new_table["relation"], new_table["rows_changed"]) == ("public.scopes", 10_000)
    assert analyzed(database, "scopes") == (1, 10_000.0)
    assert event["duration_ms"] >= 0
    names = [e["event"] for e in result.events]
    assert names.index("statistics_refreshed") > names.index("migration_applied")
    assert analyzed(database) == (1, 10_000.0)
    last = "SELECT last_analyze IS NOT NULL FROM pg_stat_user_tables WHERE relname = 'tokens'"
    assert database.scalar(last) is True


def test_switched_off_nothing_is_analyzed(
    database: Database, migrations: MigrationsFolder, run_runner: Any
) -> None:
    migrations.add({"001_tokens.sql": TOKENS, "002_fill.sql": FILL.format(first=1, last=10_000)})
    result = migrate(run_runner, database, migrations, ANALYZE_AFTER_MIGRATE="false")
    assert result.events_named("statistics_refreshed") == []
    assert analyzed(database)[0] == 0


def test_a_column_type_change_rewrites_and_is_analyzed(
    database: Database, migrations: MigrationsFolder, run_runner: Any
) -> None:
    migrations.add({"001_tokens.sql": TOKENS + FILL.format(first=1, last=100)})
    migrate(run_runner, database, migrations)
    analyze(database)  # statistics for n, which the type change drops
    migrations.add({"002_bigint.sql": "ALTER TABLE tokens ALTER COLUMN n TYPE bigint;\n"})
    result = migrate(run_runner, database, migrations)
    [event] = result.events_named("statistics_refreshed")
    assert (event["relation"], event["reason"], event["rows_changed"]) == (
        "public.tokens",
        "rewritten",
        0,
    )
    assert analyzed(database) == (2, 100.0)
    stats = "SELECT count(*) FROM pg_stats WHERE tablename = 'tokens' AND attname = 'n'"
    assert database.scalar(stats) == 1


def test_a_small_change_is_not_analyzed(
    database: Database, migrations: MigrationsFolder, run_runner: Any
) -> None:
    migrations.add({"001_tokens.sql": TOKENS + FILL.format(first=1, last=2_000)})
    migrate(run_runner, database, migrations)
    analyze(database)
    before = analyzed(database)
    migrations.add(
        {
            "002_ten.sql": FILL.format(first=2_001, last=2_010)
            + "ALTER TABLE tokens ADD COLUMN note text;\n"  # no rewrite
        }
    )
    result = migrate(run_runner, database, migrations)
    assert result.events_named("statistics_refreshed") == []
    assert analyzed(database) == before


def test_analyze_blocked_by_a_lock_is_a_warning(
    database: Database, migrations: MigrationsFolder, run_runner: Any
) -> None:
    migrations.add({"001_tokens.sql": TOKENS})
    migrate(run_runner, database, migrations)
    migrations.add({"002_fill.sql": FILL.format(first=1, last=10_000)})
    with database.connect(autocommit=False) as holder:
        # Inserts pass (ROW EXCLUSIVE), ANALYZE waits (SHARE UPDATE EXCLUSIVE conflicts).
        holder.execute("LOCK TABLE tokens IN SHARE UPDATE EXCLUSIVE MODE")
        result = migrate(run_runner, database, migrations, DDL_LOCK_TIMEOUT="200ms")
        holder.rollback()
    [warning] = result.events_named("statistics_not_refreshed")
    assert (warning["level"], warning["relation"], warning["sqlstate"]) == (
        "warning",
        "public.tokens",
        "55P03",
    )
    assert result.events_named("statistics_refreshed") == []
    assert database.scalar("SELECT count(*) FROM tokens") == 10_000
    assert database.scalar("SELECT count(*) FROM schema_migrations") == 2
    assert analyzed(database)[0] == 0


def test_a_refreshed_view_and_a_renamed_table_are_analyzed_under_their_new_names(
    database: Database, migrations: MigrationsFolder, run_runner: Any
) -> None:
    view = "CREATE MATERIALIZED VIEW counts AS SELECT n, count(*) FROM tokens GROUP BY n;\n"
    migrations.add({"001_tokens.sql": TOKENS + view})
    migrate(run_runner, database, migrations)
    migrations.add(
        {
            "002_refresh.sql": FILL.format(first=1, last=6_000)
            + "REFRESH MATERIALIZED VIEW counts;\n"
            + "ALTER TABLE tokens RENAME TO api_tokens;\n"
        }
    )
    result = migrate(run_runner, database, migrations)
    refreshed = result.events_named("statistics_refreshed")
    assert [(e["relation"], e["reason"], e["rows_changed"]) for e in refreshed] == [
        ("public.api_tokens", "rows changed", 6_000),
        ("public.counts", "rewritten", 100),  # the refresh inserts its rows anew
    ]
    assert analyzed(database, "api_tokens") == (1, 6_000.0)
    assert analyzed(database, "counts") == (1, 100.0)
