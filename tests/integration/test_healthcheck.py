"""healthcheck.py against a real database: exit 0 only when every file is applied unchanged.

Whatever the outcome, stdout is exactly one line saying why, and the check is fast enough
for a readiness probe.
"""

from __future__ import annotations

import time

from pgserver import free_port

from tests.conftest import RunResult

QUICK_SECONDS = 5.0
FILES = {
    "001_create_accounts.sql": "CREATE TABLE accounts (id bigint PRIMARY KEY);",
    "002_create_sessions.sql": "CREATE TABLE sessions (id bigint PRIMARY KEY);",
}


def one_line(result: RunResult) -> str:
    lines = result.stdout.splitlines()
    assert len(lines) == 1, result
    assert result.stdout == lines[0] + "\n", "nothing but the one line"
    assert lines[0].strip(), "the line says something"
    assert "Traceback" not in result.stderr, result
    return lines[0]


def timed(run_healthcheck, *args: str, env: dict[str, str]) -> RunResult:
    start = time.monotonic()
    result: RunResult = run_healthcheck(*args, env=env)
    elapsed = time.monotonic() - start
    assert elapsed < QUICK_SECONDS, f"healthcheck took {elapsed:.1f}s"
    return result


def applied(run_runner, database, migrations) -> None:
    result = run_runner(env=database.env(MIGRATIONS_DIR=str(migrations.path)))
    assert result.returncode == 0, result


def test_up_to_date(database, run_runner, run_healthcheck, migrations):
    migrations.add(FILES)
    applied(run_runner, database, migrations)
    result = timed(run_healthcheck, "--migrations-dir", str(migrations.path), env=database.env())
    line = one_line(result)
    assert result.returncode == 0, result
    assert line.startswith("ok")
    assert database.name in line


def test_up_to_date_with_migrations_dir_from_the_environment(
    database, run_runner, run_healthcheck, migrations
):
    migrations.add(FILES)
    applied(run_runner, database, migrations)
    result = timed(run_healthcheck, env=database.env(MIGRATIONS_DIR=str(migrations.path)))
    assert result.returncode == 0, result
    assert one_line(result).startswith("ok")


def test_pending_file(database, run_runner, run_healthcheck, migrations):
    migrations.add(FILES)
    applied(run_runner, database, migrations)
    migrations.write("003_add_tokens.sql", "CREATE TABLE tokens (id int);")
    result = timed(run_healthcheck, env=database.env(MIGRATIONS_DIR=str(migrations.path)))
    line = one_line(result)
    assert result.returncode == 1, result
    assert "003_add_tokens" in line
    assert "pending" in line
    assert "001_create_accounts" not in line


def test_nothing_applied_yet(database, run_healthcheck, migrations):
    migrations.add(FILES)
    result = timed(run_healthcheck, env=database.env(MIGRATIONS_DIR=str(migrations.path)))
    line = one_line(result)
    assert result.returncode == 1, result
    assert "001_create_accounts" in line
    assert "002_create_sessions" in line


def test_changed_file_is_unhealthy(database, run_runner, run_healthcheck, migrations):
    migrations.add(FILES)
    applied(run_runner, database, migrations)
    migrations.write("002_create_sessions.sql", "CREATE TABLE sessions (id uuid PRIMARY KEY);")
    result = timed(run_healthcheck, env=database.env(MIGRATIONS_DIR=str(migrations.path)))
    line = one_line(result)
    assert result.returncode == 1, result
    assert "002_create_sessions" in line
    assert "changed" in line


def test_applied_file_gone_is_unhealthy(database, run_runner, run_healthcheck, migrations):
    migrations.add(FILES)
    applied(run_runner, database, migrations)
    # A file before the newest one: lost, not a newer release's (see tests/integration/
    # test_rollout.py for versions above the newest file).
    (migrations.path / "001_create_accounts.sql").unlink()
    result = timed(run_healthcheck, env=database.env(MIGRATIONS_DIR=str(migrations.path)))
    line = one_line(result)
    assert result.returncode == 1, result
    assert "001_create_accounts" in line
    assert "missing" in line


def test_row_recorded_by_hand_counts_as_applied(database, run_runner, run_healthcheck, migrations):
    migrations.write("001_create_accounts.sql", FILES["001_create_accounts.sql"])
    applied(run_runner, database, migrations)
    migrations.write("002_create_sessions.sql", FILES["002_create_sessions.sql"])
    with database.connect() as conn:
        conn.execute(
            "INSERT INTO schema_migrations (version, description, checksum) "
            "VALUES ('002_create_sessions', 'by hand', 'checksum_here')"
        )
    result = timed(run_healthcheck, env=database.env(MIGRATIONS_DIR=str(migrations.path)))
    assert result.returncode == 0, result
    assert one_line(result).startswith("ok")


def test_server_unreachable(database, run_healthcheck, migrations):
    migrations.add(FILES)
    closed_port = str(free_port())
    env = database.env(MIGRATIONS_DIR=str(migrations.path), DB_PORT=closed_port)
    result = timed(run_healthcheck, env=env)
    line = one_line(result)
    assert result.returncode == 1, result
    assert "not reachable" in line
    assert closed_port in line


def test_wrong_password_is_unhealthy_without_echoing_it(database, run_healthcheck, migrations):
    migrations.add(FILES)
    wrong = "wrong-Healthcheck-pw-4411"
    env = database.env(MIGRATIONS_DIR=str(migrations.path), DB_PASSWORD=wrong)
    result = timed(run_healthcheck, env=env)  # the fixture checks the password never shows
    line = one_line(result)
    assert result.returncode == 1, result
    assert "password authentication failed" in line


def test_missing_migrations_folder_is_unhealthy(database, run_healthcheck, tmp_path):
    missing = tmp_path / "nowhere"
    result = timed(run_healthcheck, "--migrations-dir", str(missing), env=database.env())
    line = one_line(result)
    assert result.returncode == 1, result
    assert str(missing) in line


def test_bad_migration_file_is_unhealthy(database, run_runner, run_healthcheck, migrations):
    migrations.add(FILES)
    applied(run_runner, database, migrations)
    migrations.write("2_duplicate.sql", "SELECT 1;")
    result = timed(run_healthcheck, env=database.env(MIGRATIONS_DIR=str(migrations.path)))
    line = one_line(result)
    assert result.returncode == 1, result
    assert "2_duplicate.sql" in line


def test_bootstrap_script_not_needed_for_health(database, run_runner, run_healthcheck, migrations):
    """Without admin credentials 000 never runs; the application is still ready."""
    migrations.add(FILES).write("000_init_database.sql", "SELECT 1;")
    applied(run_runner, database, migrations)
    result = timed(run_healthcheck, env=database.env(MIGRATIONS_DIR=str(migrations.path)))
    assert result.returncode == 0, result
    assert one_line(result).startswith("ok")
