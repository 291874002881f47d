"""deploy-docker-production.sh's secret-file check, which runs before Docker is touched.

The real script runs under bash. The documented recipe (docs/docker.md, Secrets) asks Docker
for the postgres user's uid: tests/e2e/test_documented_setup.py runs it, then deploys with it.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO

DEPLOY = REPO / "deploy-docker-production.sh"
PASSWORD_FILES = ("postgres_password.txt", "db_password.txt", "app_db_password.txt")
TLS_FILES = ("db_ca.crt", "db_server.crt", "db_server.key")
EX_CONFIG = 78


def deploy(secrets_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("COMPOSE_", "DB_"))},
        "SECRETS_DIR": str(secrets_dir),
        "COMPOSE_PROJECT_NAME": f"deploy-check-{os.getpid()}",
    }
    return subprocess.run(["bash", str(DEPLOY), "--dry-run", "--no-build", *args], env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def secrets_folder(tmp_path: Path, mode: int, names: tuple[str, ...]) -> Path:
    folder = tmp_path / "secrets"
    folder.mkdir(mode=0o700)
    for name in names:
        path = folder / name
        path.write_text("a-long-random-secret-value\n")
        path.chmod(mode)
    return folder


def test_secret_files_other_users_can_read_are_refused(tmp_path: Path) -> None:
    folder = secrets_folder(tmp_path, 0o644, PASSWORD_FILES + TLS_FILES)
    (folder / "db_server.key").chmod(0o600)
    result = deploy(folder)
    assert result.returncode == EX_CONFIG, result
    (line,) = result.stderr.splitlines()
    assert "readable by other users" in line and "chmod o-rwx" in line
    for name in PASSWORD_FILES:
        assert str(folder / name) in line
    assert "db_server.key" not in line and "db_ca.crt" not in line
    assert "a-long-random-secret-value" not in result.stdout + result.stderr
    assert result.stdout == "", "refused before the plan or Docker"


@pytest.mark.parametrize("mode", [0o604, 0o640 | 0o001, 0o602])
def test_any_permission_for_others_is_refused(tmp_path: Path, mode: int) -> None:
    folder = secrets_folder(tmp_path, 0o600, PASSWORD_FILES + TLS_FILES)
    (folder / "db_password.txt").chmod(mode)
    result = deploy(folder)
    assert result.returncode == EX_CONFIG, result
    assert str(folder / "db_password.txt") in result.stderr
    assert str(folder / "app_db_password.txt") not in result.stderr


def test_the_production_files_need_the_tls_files(tmp_path: Path) -> None:
    folder = secrets_folder(tmp_path, 0o600, PASSWORD_FILES)
    result = deploy(folder)
    assert result.returncode == EX_CONFIG, result
    (line,) = result.stderr.splitlines()
    assert "missing secret file(s)" in line
    assert all(str(folder / name) in line for name in TLS_FILES)
