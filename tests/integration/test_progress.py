"""Long migrations report progress: elapsed time, and the phase of an index build."""

from __future__ import annotations

SLOW_INDEX = """
CREATE TABLE big (id int);
INSERT INTO big SELECT generate_series(1, 30);
-- An expression index whose function sleeps: a deterministic slow index build.
CREATE FUNCTION slow_identity(int) RETURNS int LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    PERFORM pg_sleep(0.05);
    RETURN $1;
END $$;
CREATE INDEX big_slow ON big (slow_identity(id));
"""


def test_a_long_migration_logs_progress(database, run_runner, migrations):
    migrations.add({"001_sleep.sql": "SELECT pg_sleep(1.3);"})
    env = database.env(MIGRATIONS_DIR=str(migrations.path), PROGRESS_INTERVAL="400ms")
    result = run_runner(env=env)
    assert result.returncode == 0, result
    progress = result.events_named("migration_progress")
    assert len(progress) >= 2
    assert [p["version"] for p in progress] == ["001_sleep"] * len(progress)
    elapsed = [p["elapsed_s"] for p in progress]
    assert elapsed == sorted(elapsed) and elapsed[0] >= 0.4


def test_an_index_build_reports_its_phase(database, run_runner, migrations):
    migrations.add({"001_index.sql": SLOW_INDEX})
    env = database.env(MIGRATIONS_DIR=str(migrations.path), PROGRESS_INTERVAL="300ms")
    result = run_runner(env=env)
    assert result.returncode == 0, result
    phases = {p.get("phase") for p in result.events_named("migration_progress")}
    assert any(phase and phase.startswith("building index") for phase in phases), phases


def test_progress_is_off_when_the_interval_is_zero(database, run_runner, migrations):
    migrations.add({"001_sleep.sql": "SELECT pg_sleep(0.5);"})
    env = database.env(MIGRATIONS_DIR=str(migrations.path), PROGRESS_INTERVAL="0")
    result = run_runner(env=env)
    assert result.returncode == 0, result
    assert result.events_named("migration_progress") == []
