"""Rollouts and rollbacks against a real PostgreSQL: an older image on a newer database, the
`wait` gate, `status --json` as one document, `--version`, and ROLE_PASSWORDS."""

from __future__ import annotations

import json
import time
import uuid

import psycopg
import pytest

from migrator.version import VERSION
from tests.conftest import RunResult, hold_migration_lock
from tests.integration.test_bootstrap import BOOTSTRAP_SQL

RELEASE_N = {
    "001_accounts.sql": "CREATE TABLE accounts (id bigint PRIMARY KEY);",
    "002_sessions.sql": "CREATE TABLE sessions (id bigint PRIMARY KEY);",
}
# Release N+1 expands the schema: release N keeps working on it.
RELEASE_N1 = {**RELEASE_N, "003_tokens.sql": "CREATE TABLE tokens (id bigint PRIMARY KEY);"}
# `wait` notices an applied file within a second (it polls every 0.5 s).
NOTICE_BUDGET = 1.0


def migrate(run_runner, database, folder, **extra: str) -> RunResult:
    result: RunResult = run_runner(env=database.env(MIGRATIONS_DIR=str(folder), **extra))
    return result


@pytest.fixture
def newer_database(database, run_runner, tmp_path):
    """A database migrated by release N+1, and release N's folder (one file fewer)."""
    newer, older = tmp_path / "n1", tmp_path / "n"
    for folder, files in ((newer, RELEASE_N1), (older, RELEASE_N)):
        folder.mkdir()
        for name, sql in files.items():
            (folder / name).write_text(sql)
    assert migrate(run_runner, database, newer).returncode == 0
    return older


# --- an older image on a newer database ----------------------------------------------------


def test_the_older_image_runs_and_names_the_newer_versions(newer_database, database, run_runner):
    result = migrate(run_runner, database, newer_database)
    assert result.returncode == 0, result
    (warning,) = result.events_named("future_migrations")
    assert warning["level"] == "warning"
    assert warning["versions"] == ["003_tokens"]
    assert result.events_named("migrations_complete")[0]["applied"] == []
    assert database.scalar("SELECT count(*) FROM schema_migrations") == 3, "history untouched"


def test_the_older_image_is_healthy_with_a_warning(newer_database, database, run_healthcheck):
    result = run_healthcheck(env=database.env(MIGRATIONS_DIR=str(newer_database)))
    assert result.returncode == 0, result
    assert result.stdout.startswith("ok")
    assert "future_migrations 003_tokens" in result.stdout


def test_future_migrations_fail_restores_the_strict_check(
    newer_database, database, run_runner, run_healthcheck
):
    env = {"FUTURE_MIGRATIONS": "fail"}
    result = migrate(run_runner, database, newer_database, **env)
    assert result.returncode == 65, result
    assert "003_tokens" in result.events_named("history_mismatch")[0]["error"]
    health = run_healthcheck(env=database.env(MIGRATIONS_DIR=str(newer_database), **env))
    assert health.returncode == 1, health
    assert "003_tokens future" in health.stdout


def test_a_file_missing_in_the_middle_is_still_an_error(newer_database, database, run_runner):
    (newer_database / "001_accounts.sql").unlink()
    result = migrate(run_runner, database, newer_database)
    assert result.returncode == 65, result
    error = result.events_named("history_mismatch")[0]["error"]
    assert "001_accounts" in error and "is gone" in error


def test_a_bad_future_migrations_value_is_refused(database, run_runner, migrations):
    result = run_runner(env=database.env(FUTURE_MIGRATIONS="ignore",
                                         MIGRATIONS_DIR=str(migrations.path)))  # fmt: skip
    assert result.returncode == 78, result
    assert "FUTURE_MIGRATIONS" in result.events_named("invalid_configuration")[0]["error"]


# --- status --json ---------------------------------------------------------------------------


def test_status_json_is_one_document_on_stdout(newer_database, database, run_status_json):
    result, document = run_status_json(env=database.env(MIGRATIONS_DIR=str(newer_database)))
    assert result.returncode == 0, result
    assert json.loads(result.stdout) == document  # the whole of stdout, nothing else
    assert document["database"] == database.name
    assert document["up_to_date"] is True
    assert document["future"] == ["003_tokens"]
    assert {row["version"]: row["state"] for row in document["migrations"]} == {
        "001_accounts": "applied", "002_sessions": "applied", "003_tokens": "future",
    }  # fmt: skip
    assert document["runner"]["version"]
    # The log went to stderr, as JSON lines.
    assert result.events_named("run_started") and result.events_named("future_migrations")


# --- the wait command ------------------------------------------------------------------------


def test_wait_exits_as_soon_as_the_files_are_applied(database, start_runner, run_runner, tmp_path):
    folder = tmp_path / "release"
    folder.mkdir()
    for name, sql in RELEASE_N1.items():
        (folder / name).write_text(sql)
    env = database.env(MIGRATIONS_DIR=str(folder))
    waiter = start_runner("wait", "--timeout", "60", env=env)
    time.sleep(2.0)  # the waiter polls an absent history table meanwhile
    assert waiter.process.poll() is None, "wait must not exit before the files are applied"
    assert run_runner(env=env).returncode == 0
    migrated_at = time.monotonic()
    result = waiter.wait(timeout=30)
    noticed = time.monotonic() - migrated_at
    assert result.returncode == 0, result
    print(f"wait noticed the applied files {noticed:.2f}s after the migration exited")
    assert noticed < NOTICE_BUDGET + 0.5, f"noticed {noticed:.2f}s after the migration"
    assert result.events_named("migrations_ready")
    waiting = result.events_named("waiting_for_migrations")
    assert len(waiting) == 1, "one line per 10 s, not one per poll"
    assert waiting[0]["pending"] == ["001_accounts", "002_sessions", "003_tokens"]


def test_wait_times_out_with_75_and_writes_nothing(database, run_runner, migrations):
    migrations.add(RELEASE_N)
    start = time.monotonic()
    result = run_runner("wait", "--timeout", "1.5",
                        env=database.env(MIGRATIONS_DIR=str(migrations.path)))  # fmt: skip
    elapsed = time.monotonic() - start
    assert result.returncode == 75, result
    assert 1.5 <= elapsed < 6.0
    error = result.events_named("wait_timeout")[0]["error"]
    assert "001_accounts, 002_sessions" in error
    assert database.scalar("SELECT to_regclass('schema_migrations')") is None, "read only"
    assert not result.events_named("lock_acquired")


def test_wait_does_not_need_the_lock(newer_database, database, run_runner):
    """A runner holding the migration lock does not keep `wait` from seeing the history."""
    with database.connect(autocommit=True) as holder:
        hold_migration_lock(holder)
        start = time.monotonic()
        result = run_runner("wait", "--timeout", "10",
                            env=database.env(MIGRATIONS_DIR=str(newer_database)))  # fmt: skip
    assert result.returncode == 0, result
    assert time.monotonic() - start < 5.0
    assert result.events_named("future_migrations")[0]["versions"] == ["003_tokens"]


def test_wait_fails_at_once_on_a_changed_file(newer_database, database, run_runner):
    (newer_database / "002_sessions.sql").write_text("CREATE TABLE sessions (id int);")
    start = time.monotonic()
    result = run_runner("wait", "--timeout", "30",
                        env=database.env(MIGRATIONS_DIR=str(newer_database)))  # fmt: skip
    assert result.returncode == 65, result
    assert time.monotonic() - start < 10.0


# --- --version and run_started ----------------------------------------------------------------


def test_version_and_run_started_carry_the_revision(database, run_runner, start_runner, migrations):
    runner = start_runner("--version", env={"MIGRATOR_REVISION": "abc123def456"})
    result = runner.wait(expect_json=False)
    assert result.returncode == 0, result
    assert result.stdout.strip() == f"auth-service-migrator {VERSION} (revision abc123def456)"
    run = run_runner(env=database.env(MIGRATIONS_DIR=str(migrations.path),
                                      MIGRATOR_REVISION="abc123def456"))  # fmt: skip
    started = run.events_named("run_started")[0]
    assert (started["version"], started["revision"]) == (VERSION, "abc123def456")


# --- ROLE_PASSWORDS ----------------------------------------------------------------------------


def can_log_in(database, user: str, password: str) -> bool:
    try:
        with psycopg.connect(host="127.0.0.1", port=database.server.port, dbname=database.name,
                             user=user, password=password, connect_timeout=5):  # fmt: skip
            return True
    except psycopg.OperationalError:
        return False


def test_role_passwords_on_create_leaves_an_existing_password(
    unborn_database, pg_server, run_runner, migrations
):
    migrations.add({"000_init_database.sql": BOOTSTRAP_SQL})
    suffix = uuid.uuid4().hex[:8]
    owner, app = f"owner_{suffix}", f"app_{suffix}"
    first, second = f"first-Pa55word-{suffix}", f"second-Pa55word-{suffix}"

    def bootstrap(owner_password: str, app_password: str, **extra: str) -> RunResult:
        env = unborn_database.env(
            DB_USER=owner, DB_PASSWORD=owner_password, APP_DB_USER=app,
            APP_DB_PASSWORD=app_password, DB_ADMIN_USER="postgres",
            DB_ADMIN_PASSWORD=pg_server.password, MIGRATIONS_DIR=str(migrations.path), **extra,
        )  # fmt: skip
        result: RunResult = run_runner("--init-only", env=env)
        assert result.returncode == 0, result
        return result

    # The owner's password stays the same: bootstrap records 000 over the owner's own login.
    created = bootstrap(first, first, ROLE_PASSWORDS="on-create")
    assert {e["role"] for e in created.events_named("role_password_set")} == {owner, app}
    kept = bootstrap(first, second, ROLE_PASSWORDS="on-create")
    assert {e["role"] for e in kept.events_named("role_password_kept")} == {owner, app}
    assert not kept.events_named("role_password_set")
    assert can_log_in(unborn_database, app, first)
    assert not can_log_in(unborn_database, app, second)
    bootstrap(first, second)  # the default, always: the Secret is the truth
    assert can_log_in(unborn_database, app, second)
