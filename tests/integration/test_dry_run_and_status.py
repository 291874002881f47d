"""Dry run changes nothing (pg_dump before and after is identical); status shows applied and pending."""

from __future__ import annotations

FILES = {
    "001_a.sql": "CREATE TABLE a (id int);",
    "002_b.sql": "CREATE TABLE b (id int);",
}


def test_dry_run_prints_the_plan_and_changes_nothing(database, run_runner, migrations):
    migrations.add({"001_a.sql": FILES["001_a.sql"]})
    env = database.env(MIGRATIONS_DIR=str(migrations.path))
    assert run_runner(env=env).returncode == 0
    migrations.add({
        "002_b.sql": FILES["002_b.sql"],
        "003_index.sql": "CREATE INDEX CONCURRENTLY a_id ON a (id);",
    })  # fmt: skip
    before = database.pg_dump()

    for args, extra in ((("--dry-run",), {}), ((), {"DRY_RUN": "true"})):
        result = run_runner(*args, env={**env, **extra})
        assert result.returncode == 0, result
        plan = {e["version"]: e for e in result.events_named("plan_migration")}
        assert list(plan) == ["002_b", "003_index"]
        assert plan["002_b"]["mode"] == "transaction"
        assert plan["003_index"]["mode"] == "no-transaction"
        assert len(plan["002_b"]["checksum"]) == 64
        assert result.events_named("plan_complete")[0]["pending"] == ["002_b", "003_index"]

    assert database.pg_dump() == before


def test_dry_run_on_a_database_that_does_not_exist_yet(
    unborn_database, pg_server, run_runner, migrations
):
    migrations.add({"000_init_database.sql": "SELECT 1;", **FILES})
    env = unborn_database.env(
        DB_ADMIN_USER="postgres",
        DB_ADMIN_PASSWORD=pg_server.password,
        MIGRATIONS_DIR=str(migrations.path),
    )
    result = run_runner("--dry-run", env=env)
    assert result.returncode == 0, result
    bootstrap = result.events_named("plan_bootstrap")[0]
    assert bootstrap["create_database"] == unborn_database.name
    assert bootstrap["script"] == "000_init_database"
    assert result.events_named("plan_complete")[0]["pending"] == ["001_a", "002_b"]
    assert pg_server_has_database(pg_server, unborn_database.name) is False


def pg_server_has_database(pg_server, name: str) -> bool:
    import psycopg

    with psycopg.connect(**pg_server.conninfo()) as conn:
        return (
            conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
            is not None
        )


def test_status_lists_applied_and_pending_as_json(
    database, run_runner, run_status_json, migrations
):
    migrations.add({"001_a.sql": FILES["001_a.sql"]})
    env = database.env(MIGRATIONS_DIR=str(migrations.path))
    assert run_runner(env=env).returncode == 0
    migrations.add({"002_b.sql": FILES["002_b.sql"]})

    # One JSON document on stdout (json.load works on the whole of it), the log on stderr.
    result, status = run_status_json(env=env)
    assert result.returncode == 0, result
    states = {row["version"]: row["state"] for row in status["migrations"]}
    assert states == {"001_a": "applied", "002_b": "pending"}
    assert status["pending"] == ["002_b"]
    assert status["up_to_date"] is False
    assert result.events[-1]["event"] == "status_summary"

    plain = run_runner("status", env=env)
    assert [e["version"] for e in plain.events_named("migration_status")] == ["001_a", "002_b"]
    assert plain.events_named("status_summary")[0]["up_to_date"] is False
