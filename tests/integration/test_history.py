"""schema_migrations as designed, and SEED.md's SQL snippets working as written."""

from __future__ import annotations

import hashlib

# Copied from SEED.md with its trailing spaces: it must work as written.
SEED_STATUS_QUERY = """
SELECT version, applied_at, description 
FROM schema_migrations 
ORDER BY version;
"""
SEED_MANUAL_INSERT = """
INSERT INTO schema_migrations (version, description, checksum)
VALUES ('002_new_feature', 'Add new feature tables', 'checksum_here');
"""


def test_history_table_columns(database, run_runner, migrations):
    migrations.add({"001_a.sql": "-- Description: Create table a\nCREATE TABLE a (id int);"})
    assert run_runner(env=database.env(MIGRATIONS_DIR=str(migrations.path))).returncode == 0
    columns = database.query(
        "SELECT column_name, data_type, is_nullable FROM information_schema.columns "
        "WHERE table_name = 'schema_migrations' ORDER BY ordinal_position"
    )
    assert columns == [
        ("version", "text", "NO"),
        ("description", "text", "YES"),
        ("checksum", "text", "YES"),
        ("applied_at", "timestamp with time zone", "NO"),
        ("execution_ms", "integer", "YES"),
        ("applied_by", "text", "YES"),
    ]
    row = database.query("SELECT version, description, checksum, applied_by FROM schema_migrations")
    expected_checksum = hashlib.sha256((migrations.path / "001_a.sql").read_bytes()).hexdigest()
    assert row == [("001_a", "Create table a", expected_checksum, "postgres")]


def test_seed_snippets_work_as_written_and_a_manual_row_is_honoured(
    database, run_runner, migrations
):
    migrations.add({
        "001_base.sql": "CREATE TABLE base (id int);",
        "002_new_feature.sql": "CREATE TABLE new_feature_table (id int);",
        "003_after.sql": "CREATE TABLE after_feature (id int);",
    })  # fmt: skip
    env = database.env(MIGRATIONS_DIR=str(migrations.path))
    # Apply 001 only, then record 002 by hand as SEED.md shows.
    (migrations.path / "002_new_feature.sql").rename(migrations.path / "002_new_feature.sql.off")
    (migrations.path / "003_after.sql").rename(migrations.path / "003_after.sql.off")
    assert run_runner(env=env).returncode == 0
    for name in ("002_new_feature.sql", "003_after.sql"):
        (migrations.path / f"{name}.off").rename(migrations.path / name)
    with database.connect() as conn:
        conn.execute(SEED_MANUAL_INSERT)
        status = conn.execute(SEED_STATUS_QUERY).fetchall()
    assert [(v, d) for v, _, d in status] == [
        ("001_base", "base"),
        ("002_new_feature", "Add new feature tables"),
    ]

    result = run_runner(env=env)
    assert result.returncode == 0, result
    assert result.events_named("migrations_complete")[0]["applied"] == ["003_after"]
    assert result.events_named("checksum_not_verified")[0]["version"] == "002_new_feature"
    assert database.scalar("SELECT to_regclass('new_feature_table')") is None, (
        "the manual row is honoured"
    )
