"""The memory guard in a container with a memory limit (`docker run --memory`): a file that
cannot fit is refused with exit 65 and a line saying what to raise, never OOM-killed (137);
the limit the manifests set (384 MiB) fits the measured peak of a 48 MB data migration."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from .conftest import Stack

ROWS = 190_000
PAYLOAD = "x" * 200
KUBERNETES_LIMIT = "384m"  # compose/kubernetes/*.yaml and docker-compose.prod.yml


def big_file() -> str:
    line = "INSERT INTO big (id, payload) VALUES ({n}, '" + PAYLOAD + "');\n"
    return "CREATE TABLE big (id int, payload text);\n" + "".join(
        line.format(n=n) for n in range(ROWS)
    )


@pytest.fixture
def big_migrations(stack: Stack) -> Path:
    folder = stack.root / "big-migrations"
    folder.mkdir()
    shutil.copy(Path(__file__).resolve().parents[2] / "migrations" / "000_init_database.sql",
                folder)  # fmt: skip
    (folder / "001_big_data.sql").write_text(big_file())
    for path in [folder, *folder.iterdir()]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return folder


def run_limited(stack: Stack, folder: Path, memory: str) -> subprocess.CompletedProcess[str]:
    secrets = stack.secrets_dir
    return subprocess.run(
        ["docker", "run", "--rm", "--network", "host", "--read-only", "--cap-drop", "ALL",
         "--memory", memory, "--memory-swap", memory,
         "-v", f"{secrets}:/run/secrets:ro", "-v", f"{folder}:/migrations:ro",
         "-e", "DB_HOST=127.0.0.1", "-e", f"DB_PORT={stack.port}",
         "-e", "DB_PASSWORD_FILE=/run/secrets/db_password.txt",
         "-e", "DB_ADMIN_USER=postgres",
         "-e", "DB_ADMIN_PASSWORD_FILE=/run/secrets/postgres_password.txt",
         "-e", "APP_DB_PASSWORD_FILE=/run/secrets/app_db_password.txt",
         stack.image],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_a_file_too_big_for_the_limit_is_refused_and_the_manifests_limit_fits(
    stack: Stack, big_migrations: Path
) -> None:
    size_mb = (big_migrations / "001_big_data.sql").stat().st_size / 1e6
    assert 45 < size_mb < 50
    stack.up("postgres")
    stack.wait_healthy()

    refused = run_limited(stack, big_migrations, "256m")
    assert refused.returncode == 65, f"exit {refused.returncode}\n{refused.stdout[-2000:]}"
    events = [json.loads(line) for line in refused.stdout.splitlines()]
    (error,) = [e for e in events if e["event"] == "memory_limit_too_low"]
    assert "001_big_data.sql" in error["error"] and "memory limit of 268 MB" in error["error"]
    with stack.connect() as conn:
        assert conn.execute("SELECT to_regclass('big')").fetchone() == (None,)

    applied = run_limited(stack, big_migrations, KUBERNETES_LIMIT)
    assert applied.returncode == 0, f"exit {applied.returncode}\n{applied.stdout[-2000:]}"
    with stack.connect() as conn:
        assert conn.execute("SELECT count(*) FROM big").fetchone() == (ROWS,)
    stack.assert_no_secret(refused.stdout + refused.stderr + applied.stdout + applied.stderr)
