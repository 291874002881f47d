"""Phases against a real PostgreSQL: `-- migrate:phase post` files run after the rollout.

A release expands in its pre files (the init container: ``--phase pre``) and contracts in its
post files (a Job or step after the rollout: ``--phase post``); a plain run applies both, pre
files first. Each test runs entrypoint.py (or healthcheck.py) as a deployment does and looks
at the exit code, the events, the history rows and the schema.
"""

from __future__ import annotations

import pytest

from tests.conftest import Database, MigrationsFolder, RunResult
from tests.integration.test_bad_input import one_error

POST = "-- migrate:phase post\n"
# Release 1: 002 (post) drops the column 001 made, once the old release stops writing it;
# it is numbered below 003 (pre), which the init container applies before it.
RELEASE = {
    "001_accounts.sql": "CREATE TABLE accounts (id bigint PRIMARY KEY, legacy_name text);",
    "002_drop_legacy_name.sql": "-- Description: contract\n"
    + POST
    + "ALTER TABLE accounts DROP COLUMN legacy_name;\n",
    "003_sessions.sql": "CREATE TABLE sessions (id bigint PRIMARY KEY);",
}
RELEASE_WITH_DOWN = {
    **RELEASE,
    "002_drop_legacy_name.down.sql": "ALTER TABLE accounts ADD COLUMN legacy_name text;\n",
    "003_sessions.down.sql": "DROP TABLE sessions;\n",
}


def run(run_runner, database: Database, migrations: MigrationsFolder, *args: str, **env: str):
    result: RunResult = run_runner(
        *args, env=database.env(MIGRATIONS_DIR=str(migrations.path), **env)
    )
    return result


def recorded(database: Database) -> list[str]:
    if database.scalar("SELECT to_regclass('public.schema_migrations')") is None:
        return []
    return [row[0] for row in database.query("SELECT version FROM schema_migrations ORDER BY 1")]


def has_legacy_name(database: Database) -> bool:
    return bool(
        database.scalar(
            "SELECT count(*) FROM pg_attribute WHERE attrelid = 'accounts'::regclass "
            "AND attname = 'legacy_name' AND NOT attisdropped"
        )
    )


# The two ways a deployment says which phase: the flag, or the variable.
PHASE_PRE = [("--phase", "pre"), ("MIGRATE_PHASE", "pre")]
PHASE_POST = [("--phase", "post"), ("MIGRATE_PHASE", "post")]


def phase_run(run_runner, database, migrations, how: tuple[str, str]) -> RunResult:
    name, value = how
    if name == "--phase":
        return run(run_runner, database, migrations, "--phase", value)
    return run(run_runner, database, migrations, **{name: value})


@pytest.mark.parametrize(("pre", "post"), list(zip(PHASE_PRE, PHASE_POST, strict=True)))
def test_pre_then_post_as_a_rollout_runs_them(database, run_runner, migrations, pre, post):
    migrations.add(RELEASE)
    first = phase_run(run_runner, database, migrations, pre)
    assert first.returncode == 0, first
    (done,) = first.events_named("migrations_complete")
    assert done["applied"] == ["001_accounts", "003_sessions"]
    assert done["deferred"] == ["002_drop_legacy_name"]
    assert "1 pending post file(s) left for --phase post" in done["summary"]
    assert recorded(database) == ["001_accounts", "003_sessions"]
    assert has_legacy_name(database), "the old release still writes it"
    assert database.scalar("SELECT to_regclass('public.sessions')") == "sessions"

    # A second pre run (another replica's init container) has nothing to do.
    again = phase_run(run_runner, database, migrations, pre)
    assert again.returncode == 0, again
    assert again.events_named("migrations_complete")[0]["applied"] == []

    # After the rollout: 002 is numbered below the applied 003, and still in order.
    second = phase_run(run_runner, database, migrations, post)
    assert second.returncode == 0, second
    (done,) = second.events_named("migrations_complete")
    assert done["applied"] == ["002_drop_legacy_name"]
    assert done["deferred"] == []
    assert recorded(database) == ["001_accounts", "002_drop_legacy_name", "003_sessions"]
    assert not has_legacy_name(database)


def test_post_before_pre_applies_only_the_post_files_it_can(database, run_runner, migrations):
    """--phase post never applies a pre file, even one still pending."""
    migrations.add(
        {
            "001_accounts.sql": RELEASE["001_accounts.sql"],
            "002_note.sql": POST + "COMMENT ON TABLE accounts IS 'post';",
            "003_sessions.sql": RELEASE["003_sessions.sql"],
        }
    )
    assert run(run_runner, database, migrations, "--phase", "pre").returncode == 0
    migrations.write("004_tokens.sql", "CREATE TABLE tokens (id int);")
    result = run(run_runner, database, migrations, "--phase", "post")
    assert result.returncode == 0, result
    (done,) = result.events_named("migrations_complete")
    assert (done["applied"], done["deferred"]) == (["002_note"], ["004_tokens"])
    assert database.scalar("SELECT to_regclass('public.tokens')") is None


def test_all_is_the_default_and_applies_pre_files_first(database, run_runner, migrations):
    """002 (post) needs 003 (pre): only pre-then-post order succeeds."""
    migrations.add(
        {
            "001_accounts.sql": RELEASE["001_accounts.sql"],
            "002_sessions_owner.sql": POST
            + "ALTER TABLE sessions ADD COLUMN account_id bigint REFERENCES accounts;",
            "003_sessions.sql": RELEASE["003_sessions.sql"],
        }
    )
    result = run(run_runner, database, migrations)
    assert result.returncode == 0, result
    (done,) = result.events_named("migrations_complete")
    assert done["applied"] == ["001_accounts", "003_sessions", "002_sessions_owner"]
    assert done["deferred"] == []
    applied_order = [
        row[0]
        for row in database.query("SELECT version FROM schema_migrations ORDER BY applied_at, 1")
    ]
    assert applied_order == ["001_accounts", "003_sessions", "002_sessions_owner"]
    explicit = run(run_runner, database, migrations, "--phase", "all")
    assert explicit.returncode == 0, explicit


def test_a_pending_post_file_below_an_applied_post_file_is_refused(
    database, run_runner, migrations
):
    migrations.add(RELEASE)
    assert run(run_runner, database, migrations).returncode == 0
    migrations.write("005_backfill.sql", POST + "SELECT 1;")
    assert run(run_runner, database, migrations, "--phase", "post").returncode == 0
    migrations.write("004_late.sql", POST + "SELECT 2;")  # merged late, below the applied 005
    result = run(run_runner, database, migrations, "--phase", "pre")
    one_error(result, "history_mismatch", 65, "004_late.sql", "005_backfill")
    assert "004_late" not in recorded(database)


def test_a_bad_phase_header_is_refused_naming_file_and_line(database, run_runner, migrations):
    migrations.add(RELEASE).write("004_later.sql", "-- x\n-- migrate:phase later\nSELECT 1;")
    result = run(run_runner, database, migrations, "--phase", "pre")
    message = one_error(result, "invalid_migration_files", 65, "004_later.sql", "line 2")
    assert "pre or post" in message and "'later'" in message
    assert recorded(database) == []
    assert database.scalar("SELECT to_regclass('public.accounts')") is None


@pytest.mark.parametrize(
    ("args", "env", "name"),
    [(("--phase", "later"), {}, "--phase"), ((), {"MIGRATE_PHASE": "both"}, "MIGRATE_PHASE")],
)
def test_a_bad_phase_setting_exits_78_naming_it(database, run_runner, migrations, args, env, name):
    migrations.add(RELEASE)
    result = run(run_runner, database, migrations, *args, **env)
    message = one_error(result, "invalid_configuration", 78, name, "pre, post, all")
    assert message.startswith(name)
    assert recorded(database) == []


def test_dry_run_shows_each_file_s_phase_and_what_is_left(database, run_runner, migrations):
    migrations.add(RELEASE)
    result = run(run_runner, database, migrations, "--dry-run", "--phase", "pre")
    assert result.returncode == 0, result
    assert [(e["version"], e["phase"]) for e in result.events_named("plan_migration")] == [
        ("001_accounts", "pre"),
        ("003_sessions", "pre"),
    ]
    (done,) = result.events_named("plan_complete")
    assert done["deferred"] == ["002_drop_legacy_name"]
    every = run(run_runner, database, migrations, "--dry-run")
    assert [(e["version"], e["phase"]) for e in every.events_named("plan_migration")] == [
        ("001_accounts", "pre"),
        ("003_sessions", "pre"),
        ("002_drop_legacy_name", "post"),
    ]
    assert recorded(database) == []


# --- readiness: wait, healthcheck.py, status --------------------------------------------------


@pytest.fixture
def pre_applied(database, run_runner, migrations):
    """The init container ran: the pre files are applied, the post file is pending."""
    migrations.add(RELEASE)
    assert run(run_runner, database, migrations, "--phase", "pre").returncode == 0
    return database.env(MIGRATIONS_DIR=str(migrations.path))


def test_wait_does_not_wait_for_post_files(pre_applied, run_runner):
    result = run_runner("wait", "--timeout", "5", env=pre_applied)
    assert result.returncode == 0, result
    (ready,) = result.events_named("migrations_ready")
    assert ready["deferred"] == ["002_drop_legacy_name"]


def test_wait_for_every_phase_when_asked(pre_applied, run_runner):
    result = run_runner("wait", "--timeout", "1", "--phase", "all", env=pre_applied)
    one_error(result, "wait_timeout", 75, "002_drop_legacy_name")


def test_healthcheck_is_healthy_with_a_pending_post_file(pre_applied, run_healthcheck):
    result = run_healthcheck(env=pre_applied)
    assert result.returncode == 0, result
    (line,) = result.stdout.splitlines()
    assert line.startswith("ok: 2 migrations applied")
    assert "1 pending post migration(s) (002_drop_legacy_name), applied by --phase post" in line
    every = run_healthcheck("--phase", "all", env=pre_applied)
    assert every.returncode == 1, every
    assert "002_drop_legacy_name pending" in every.stdout


def test_healthcheck_pre_phase_still_sees_a_pending_pre_file(
    pre_applied, run_healthcheck, migrations
):
    migrations.write("004_tokens.sql", "CREATE TABLE tokens (id int);")
    result = run_healthcheck(env=pre_applied)
    assert result.returncode == 1, result
    assert "004_tokens pending" in result.stdout
    assert "002_drop_legacy_name" not in result.stdout


def test_status_json_shows_each_file_s_phase(pre_applied, run_status_json):
    result, document = run_status_json(env=pre_applied)
    assert result.returncode == 0, result
    rows = {row["version"]: (row["state"], row["phase"]) for row in document["migrations"]}
    assert rows == {
        "001_accounts": ("applied", "pre"),
        "002_drop_legacy_name": ("pending", "post"),
        "003_sessions": ("applied", "pre"),
    }
    assert (document["phase"], document["up_to_date"]) == ("all", False)
    _, pre = run_status_json("--phase", "pre", env=pre_applied)
    assert (pre["phase"], pre["up_to_date"], pre["problems"]) == ("pre", True, [])


# --- rollback and baseline ---------------------------------------------------------------------


def test_rollback_of_the_post_phase_undoes_post_files_only(database, run_runner, migrations):
    migrations.add(RELEASE_WITH_DOWN)
    env = database.env(MIGRATIONS_DIR=str(migrations.path))
    assert run_runner(env=env).returncode == 0
    assert not has_legacy_name(database)
    result = run_runner("rollback", "--steps", "1", "--phase", "post", env=env)
    assert result.returncode == 0, result
    assert [e["version"] for e in result.events_named("migration_rolled_back")] == [
        "002_drop_legacy_name"
    ]
    assert recorded(database) == ["001_accounts", "003_sessions"]
    assert has_legacy_name(database)
    # Without --phase: the newest version of either phase, as before phases.
    assert run_runner(env=env).returncode == 0
    both = run_runner("rollback", "--steps", "1", env=env)
    assert [e["version"] for e in both.events_named("migration_rolled_back")] == ["003_sessions"]


def test_baseline_records_both_phases_up_to_the_version(database, run_runner, migrations):
    migrations.add(RELEASE)
    env = database.env(MIGRATIONS_DIR=str(migrations.path), MIGRATE_PHASE="pre")
    result = run_runner("baseline", "--version", "003", env=env)
    assert result.returncode == 0, result
    assert [(e["version"], e["phase"]) for e in result.events_named("baseline_version")] == [
        ("001_accounts", "pre"),
        ("002_drop_legacy_name", "post"),
        ("003_sessions", "pre"),
    ]
    assert recorded(database) == ["001_accounts", "002_drop_legacy_name", "003_sessions"]
