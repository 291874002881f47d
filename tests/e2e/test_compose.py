"""The compose stack in a real engine: the application starts only after migrate exited 0."""

from __future__ import annotations

import time

from .conftest import Stack, repo_migration_versions

BROKEN = """-- Migration: 900_broken
-- Description: fails on purpose, on line 6.
CREATE TABLE broken_feature (id int PRIMARY KEY);

INSERT INTO broken_feature VALUES (1);
INSERT INTO table_that_does_not_exist VALUES (1);
"""


def wait_for_event(stack: Stack, service: str, name: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [e for e in stack.events(service) if e["event"] == name]
        if found:
            return found[0]
        time.sleep(0.5)
    raise AssertionError(f"{service} never logged {name}: {stack.events(service)}")


def applied_events(stack: Stack) -> list[str]:
    return [e["version"] for e in stack.events("migrate") if e["event"] == "migration_applied"]


def schema_applied_at(stack: Stack) -> list[tuple]:
    """applied_at of the schema migrations (000, the bootstrap script, re-runs on every start)."""
    with stack.connect() as conn:
        return conn.execute(
            "SELECT version, applied_at FROM schema_migrations"
            " WHERE version <> '000_init_database' ORDER BY version"
        ).fetchall()


def test_up_migrates_then_starts_the_app_and_a_second_up_is_a_no_op(stack: Stack) -> None:
    stack.up()

    (postgres,) = stack.containers("postgres")
    assert postgres["State"]["Health"]["Status"] == "healthy"
    assert stack.wait_exited("migrate") == [0]
    assert wait_for_event(stack, "app", "schema_ok")["user"] == "auth_service_app"
    (app,) = stack.containers("app")
    (migrate,) = stack.containers("migrate")
    assert app["State"]["Running"]
    assert app["State"]["StartedAt"] > migrate["State"]["FinishedAt"], "app started before migrate"
    versions = repo_migration_versions()
    assert stack.applied_versions() == [(v, 1) for v in versions]
    assert sorted(set(applied_events(stack))) == versions
    first_applied_at = schema_applied_at(stack)

    stack.up()
    assert stack.wait_exited("migrate") == [0]
    completes = [e for e in stack.events("migrate") if e["event"] == "migrations_complete"]
    assert len(completes) == 2, "migrate ran again on the second up"
    assert completes[-1]["applied"] == []
    assert stack.applied_versions() == [(v, 1) for v in versions]
    assert schema_applied_at(stack) == first_applied_at, "a schema migration was applied again"
    assert stack.containers("app")[0]["State"]["Running"]
    stack.check_logs()


def test_a_failing_migration_exits_65_names_file_and_line_and_the_app_never_starts(
    stack: Stack,
) -> None:
    stack.migrations_dir({"900_broken.sql": BROKEN})

    result = stack.up(check=False)

    assert result.returncode != 0, "compose up reported success although migrate failed"
    assert stack.wait_exited("migrate") == [65]
    for app in stack.containers("app"):  # compose v1 does not create it; v2 creates, never starts
        assert not app["State"]["Running"]
        assert app["State"]["StartedAt"].startswith("0001-01-01"), "the app container was started"
    failures = [e for e in stack.events("migrate") if e.get("sqlstate") == "42P01"]
    assert failures, stack.events("migrate")
    failure = failures[0]
    assert failure["file"].endswith("900_broken.sql")
    assert failure["line"] == 6
    assert failure["error"].startswith("/migrations/900_broken.sql:6:")
    assert "table_that_does_not_exist" in failure["error"]
    assert ("900_broken", 1) not in stack.applied_versions()
    with stack.connect() as conn:
        assert conn.execute("SELECT to_regclass('broken_feature')").fetchone() == (None,)
    stack.check_logs()


def test_three_migrate_containers_apply_each_migration_exactly_once(stack: Stack) -> None:
    extra = {f"90{n}_feature_{n}.sql": f"CREATE TABLE feature_{n} (id int);\n" for n in (2, 3, 4)}
    stack.migrations_dir(extra)
    stack.up("--scale", "migrate=3")

    assert stack.wait_exited("migrate", count=3) == [0, 0, 0]
    versions = sorted([*repo_migration_versions(), *(name[:-4] for name in extra)])
    assert stack.applied_versions() == [(v, 1) for v in versions]
    applied = [v for v in applied_events(stack) if v != "000_init_database"]
    assert sorted(applied) == [v for v in versions if v != "000_init_database"], applied
    assert wait_for_event(stack, "app", "schema_ok")
    stack.check_logs()


def test_migrate_post_applies_the_post_files_once_the_app_is_healthy(stack: Stack) -> None:
    """A post file numbered below a pre file that it needs: migrate leaves it, migrate-post
    applies it after the application became healthy."""
    stack.migrations_dir({
        "900_contract.sql": "-- migrate:phase post\nALTER TABLE phase_probe DROP COLUMN old;",
        "901_expand.sql": "CREATE TABLE phase_probe (id int, old text);",
    })  # fmt: skip
    stack.up()
    assert stack.wait_exited("migrate") == [0]
    assert stack.wait_exited("migrate-post") == [0]
    (migrate,) = [e for e in stack.events("migrate") if e["event"] == "migrations_complete"]
    assert migrate["deferred"] == ["900_contract"] and "900_contract" not in migrate["applied"]
    (post,) = [e for e in stack.events("migrate-post") if e["event"] == "migrations_complete"]
    assert post["applied"] == ["900_contract"]
    (app,) = stack.containers("app")
    (migrate_post,) = stack.containers("migrate-post")
    assert migrate_post["State"]["StartedAt"] > app["State"]["StartedAt"]
    assert ("900_contract", 1) in stack.applied_versions()
    stack.check_logs()
