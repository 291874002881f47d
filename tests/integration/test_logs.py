"""Logs as users see them: JSON lines when piped, a readable console on a terminal, no secrets."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys

from tests.conftest import ENTRYPOINT, REPO, remember_secret


def test_a_terminal_gets_console_output(database, migrations):
    migrations.add({"001_a.sql": "CREATE TABLE a (id int);"})
    env = {**os.environ, **database.env(MIGRATIONS_DIR=str(migrations.path))}
    remember_secret(env["DB_PASSWORD"])
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, str(ENTRYPOINT)], cwd=REPO, env=env,
        stdin=subprocess.DEVNULL, stdout=terminal, stderr=terminal,
    )  # fmt: skip
    os.close(terminal)
    chunks = []
    while True:
        try:
            chunk = os.read(controller, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    assert process.wait(30) == 0
    output = b"".join(chunks).decode()
    lines = [line for line in output.splitlines() if line.strip()]
    assert any("migration_applied" in line and "version=001_a" in line for line in lines)
    for line in lines:
        try:
            json.loads(line)
        except json.JSONDecodeError:
            continue
        raise AssertionError(f"a terminal should get console lines, got JSON: {line}")
    assert env["DB_PASSWORD"] not in output


def test_a_password_echoed_by_the_server_is_redacted(database, run_runner, migrations):
    password = database.server.password
    migrations.add({"001_leak.sql": f'SELECT 1/0 AS "{password}";'})
    result = run_runner(env=database.env(MIGRATIONS_DIR=str(migrations.path)))
    assert result.returncode == 65, result
    failure = result.events_named("migration_failed")[0]
    assert failure["sqlstate"] == "22012"
    assert failure["statement"] == 'SELECT 1/0 AS "***"'


def test_log_level_filters_debug_events(database, run_runner, migrations):
    migrations.add({"001_a.sql": "-- migrate:no-transaction\nCREATE TABLE a (id int);"})
    env = database.env(MIGRATIONS_DIR=str(migrations.path))
    debug = run_runner(env={**env, "LOG_LEVEL": "debug"})
    assert debug.events_named("statement_started")
    with database.connect() as conn:
        conn.execute("DROP TABLE a")
        conn.execute("DELETE FROM schema_migrations")
    info = run_runner(env={**env, "LOG_LEVEL": "info"})
    assert info.returncode == 0
    assert not info.events_named("statement_started")
    assert {e["level"] for e in info.events} <= {"info", "warning", "error"}
