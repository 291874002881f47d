"""scripts/validate-migrations.sh: the README's first command, on a throwaway server."""

from __future__ import annotations

import os
import re
import socket
import subprocess

from tests.conftest import REPO, RunResult, check_output

SCRIPT = REPO / "scripts" / "validate-migrations.sh"


def _run(*args: str, **env: str) -> RunResult:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DB_", "PG", "APP_DB_"))}
    process = subprocess.run(
        ["bash", str(SCRIPT), *args], cwd=REPO, env={**clean, **env},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    return check_output(
        RunResult([str(SCRIPT), *args], process.returncode, process.stdout, process.stderr),
        expect_json=False,
    )


def _port_is_closed(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def test_validates_the_shipped_migrations_and_removes_the_server():
    result = _run()
    assert result.returncode == 0, result
    assert "ok      hazard lint" in result.stdout
    assert "ok      bootstrap and migrations" in result.stdout
    assert "ok      second run is a no-op" in result.stdout
    assert "ok      health check" in result.stdout
    port = int(re.search(r"== summary \(127\.0\.0\.1:(\d+)/", result.stdout)[1])
    assert _port_is_closed(port), "the throwaway server must be removed"


def test_a_broken_migration_fails_the_validation(migrations):
    migrations.add({
        "000_init_database.sql": (REPO / "migrations" / "000_init_database.sql").read_text(),
        "001_broken.sql": "CREATE TABLE broken (id int;",
    })  # fmt: skip
    result = _run(MIGRATIONS_DIR=str(migrations.path))
    assert result.returncode != 0, result
    assert "FAILED  bootstrap and migrations (exit 65)" in result.stdout
    assert "001_broken.sql:1:28: 42601" in result.stdout


def test_unknown_option_is_a_usage_error():
    result = _run("--bogus")
    assert result.returncode == 64
    assert "unknown option --bogus" in result.stderr
