"""Drift: an applied file that changed or vanished stops the run before anything is applied."""

from __future__ import annotations

import hashlib


def _checksum(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_an_edited_applied_file_stops_the_run_with_65(database, run_runner, migrations):
    first = migrations.write("001_a.sql", "CREATE TABLE a (id int);")
    env = database.env(MIGRATIONS_DIR=str(migrations.path))
    assert run_runner(env=env).returncode == 0
    recorded = _checksum(first)
    first.write_text("CREATE TABLE a (id bigint);")
    migrations.write("002_b.sql", "CREATE TABLE b (id int);")

    result = run_runner(env=env)
    assert result.returncode == 65, result
    error = result.events_named("history_mismatch")[0]["error"]
    assert str(first) in error and recorded in error and _checksum(first) in error
    assert database.scalar("SELECT to_regclass('b')") is None, "nothing is applied after drift"
    assert database.scalar("SELECT count(*) FROM schema_migrations") == 1


def test_a_deleted_applied_file_stops_the_run_with_65(database, run_runner, migrations):
    first = migrations.write("001_a.sql", "CREATE TABLE a (id int);")
    env = database.env(MIGRATIONS_DIR=str(migrations.path))
    assert run_runner(env=env).returncode == 0
    recorded = _checksum(first)
    first.unlink()
    migrations.write("002_b.sql", "CREATE TABLE b (id int);")

    result = run_runner(env=env)
    assert result.returncode == 65, result
    error = result.events_named("history_mismatch")[0]["error"]
    assert "001_a" in error and "is gone" in error and recorded in error
    assert database.scalar("SELECT to_regclass('b')") is None


def test_a_pending_file_older_than_the_newest_applied_is_refused_unless_allowed(
    database, run_runner, migrations
):
    migrations.write("002_b.sql", "CREATE TABLE b (id int);")
    env = database.env(MIGRATIONS_DIR=str(migrations.path))
    assert run_runner(env=env).returncode == 0
    migrations.write("001_a.sql", "CREATE TABLE a (id int);")

    refused = run_runner(env=env)
    assert refused.returncode == 65, refused
    assert (
        "older than the newest applied migration 002_b"
        in refused.events_named("history_mismatch")[0]["error"]
    )
    allowed = run_runner("--allow-out-of-order", env=env)
    assert allowed.returncode == 0, allowed
    assert database.scalar("SELECT to_regclass('a')::text") == "a"
