"""deploy-docker-production.sh's secret-file check, which runs before Docker is touched.

The real script runs under bash; the documented recipe (docs/docker.md, Secrets) is run as
written and must pass the check.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO

DEPLOY = REPO / "deploy-docker-production.sh"
DOCS = REPO / "docs" / "docker.md"
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


def documented_recipe() -> str:
    """The bash block of docs/docker.md that creates the secrets, without its final deploy."""
    blocks = re.findall(r"```bash\n(.*?)```", DOCS.read_text(), re.DOTALL)
    (recipe,) = [block for block in blocks if "umask 077" in block]
    return "\n".join(line for line in recipe.splitlines() if "deploy-docker-production" not in line)


@pytest.mark.skipif(os.geteuid() != 0, reason="the recipe's chgrp/chown need root (CI is root)")
def test_the_documented_recipe_passes_the_check(tmp_path: Path) -> None:
    env = {**os.environ, "HOME": str(tmp_path / "home")}
    subprocess.run(["bash", "-euo", "pipefail", "-c", documented_recipe()], cwd=tmp_path,
                   env=env, check=True, capture_output=True, timeout=60)  # fmt: skip
    folder = tmp_path / "compose" / "secrets"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for name in PASSWORD_FILES:
        info = (folder / name).stat()
        assert (stat.S_IMODE(info.st_mode), info.st_gid) == (0o640, 10001), name
        assert len((folder / name).read_text().strip()) >= 16
    key = (folder / "db_server.key").stat()
    assert (stat.S_IMODE(key.st_mode), key.st_uid) == (0o600, 999)
    assert not (folder / "ca.key").exists(), "the CA's key stays out of the secrets"
    result = deploy(folder)
    assert "readable by other users" not in result.stderr
    assert "missing secret" not in result.stderr
    assert result.returncode != EX_CONFIG, result
    # The certificate names the compose service and is signed by the CA next to it.
    verify = subprocess.run(["openssl", "verify", "-CAfile", "db_ca.crt", "db_server.crt"],
                            cwd=folder, capture_output=True, text=True)  # fmt: skip
    assert verify.returncode == 0, verify.stderr
    names = subprocess.run(["openssl", "x509", "-in", "db_server.crt", "-noout", "-ext",
                            "subjectAltName"], cwd=folder, capture_output=True, text=True)  # fmt: skip
    assert "DNS:postgres" in names.stdout
