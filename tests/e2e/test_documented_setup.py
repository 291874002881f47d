"""docs/docker.md's production path, run as written.

The Secrets recipe (the postgres user's uid asked from the image), an offline build and a
deploy with the documented ``COMPOSE_FILE`` (host network + production file: TLS verified
against the recipe's certificate), then the ``docker run`` example that mounts the secrets
folder. Only what cannot be as written on a test machine is changed: the stack's port (a free
one, not 5432) and the image's name.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import uuid
from pathlib import Path

from .conftest import (
    POSTGRES_IMAGE,
    PROD_FILE,
    PYTHON_BASE,
    REPO,
    SECRET_NAMES,
    Stack,
    postgres_ids,
    repo_migration_versions,
    run,
)

DOCS = REPO / "docs" / "docker.md"
DEPLOY = REPO / "deploy-docker-production.sh"
CONTAINER_GID = 10001


def documented_block(marker: str) -> str:
    """The one bash block of docs/docker.md that contains ``marker``."""
    blocks = re.findall(r"```bash\n(.*?)```", DOCS.read_text(), re.DOTALL)
    (block,) = [block for block in blocks if marker in block]
    return str(block)


def documented_compose_file() -> str:
    """The COMPOSE_FILE that docs/docker.md gives deploy-docker-production.sh on a host network."""
    match = re.search(
        r"COMPOSE_FILE=(\S+) \\\n\s+\./deploy-docker-production\.sh", DOCS.read_text()
    )
    assert match, "docs/docker.md no longer shows the host-network production deploy"
    return match[1]


def clean_env(**extra: str) -> dict[str, str]:
    drop = ("DB_", "APP_DB_", "PG", "COMPOSE_", "DOCKER_BUILDKIT", "MIGRATE_IMAGE", "APP_IMAGE")
    return {**{k: v for k, v in os.environ.items() if not k.startswith(drop)}, **extra}


def run_recipe(workdir: Path) -> Path:
    """The Secrets recipe without its final deploy, in ``workdir``; its secrets folder."""
    recipe = documented_block("umask 077")
    body = "\n".join(line for line in recipe.splitlines() if "deploy-docker-production" not in line)
    env = clean_env(HOME=str(workdir / "home"), POSTGRES_IMAGE=POSTGRES_IMAGE)
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", body], cwd=workdir, env=env,
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return workdir / "compose" / "secrets"


def test_the_documented_production_setup_works_as_written(
    compose_cmd: list[str], migrate_image: str, wheel_url: str, tmp_path: Path
) -> None:
    folder = run_recipe(tmp_path)

    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for name in SECRET_NAMES:
        info = (folder / f"{name}.txt").stat()
        assert (stat.S_IMODE(info.st_mode), info.st_gid) == (0o640, CONTAINER_GID), name
    key = (folder / "db_server.key").stat()
    assert (stat.S_IMODE(key.st_mode), key.st_uid) == (0o600, postgres_ids()[0])
    assert not (folder / "ca.key").exists(), "the CA's key stays out of the secrets"
    # This image reads its password file after dropping root: the recipe says what to add.
    assert '#   chown "$pg_uid" postgres_password.txt' in documented_block("umask 077")
    os.chown(folder / "postgres_password.txt", postgres_ids()[0], -1)

    image = f"local/auth-service-migrate:docs-{uuid.uuid4().hex[:10]}"
    stack = Stack(compose_cmd, image, tmp_path / "stack", extra_files=[PROD_FILE])
    stack.secrets_dir = folder
    stack.passwords = {name: (folder / f"{name}.txt").read_text().strip() for name in SECRET_NAMES}
    try:
        # Built as an offline machine builds (docs/docker.md, The image), deployed as written.
        env = {**stack.env, "COMPOSE_FILE": documented_compose_file(), "BASE_IMAGE": PYTHON_BASE,
               "PIP_FIND_LINKS": wheel_url, "DEPLOY_STATE_DIR": str(tmp_path / "state")}  # fmt: skip
        deployed = subprocess.run([str(DEPLOY)], cwd=REPO, env=env, capture_output=True,
                                  text=True, timeout=900)  # fmt: skip
        stack.assert_no_secret(deployed.stdout + deployed.stderr)
        assert deployed.returncode == 0, deployed.stdout + deployed.stderr
        assert "deployed: app is healthy" in deployed.stdout
        labels = run(["docker", "image", "inspect", "-f", "{{json .Config.Labels}}", image]).stdout
        assert f'"org.opencontainers.image.base.name":"{PYTHON_BASE}"' in labels
        # The runner verified the recipe's certificate (made for DNS:postgres only).
        (migrate,) = stack.containers("migrate")
        assert migrate["State"]["ExitCode"] == 0
        assert {"DB_HOST=postgres", "DB_SSLMODE=verify-full"} <= set(migrate["Config"]["Env"])
        assert not [e for e in stack.events("migrate") if e["event"] == "tls_not_verified"]
        assert stack.applied_versions() == [(v, 1) for v in repo_migration_versions()]
        stack.check_logs()

        # The docker run example, the secrets folder mounted: nothing left to apply.
        mine = tmp_path / "my-migrations"
        shutil.copytree(REPO / "migrations", mine)
        for path in [mine, *mine.iterdir()]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        example = documented_block('"$PWD/compose/secrets:/run/secrets:ro"')
        example = example.replace(
            "-e DB_HOST=127.0.0.1", f"-e DB_HOST=127.0.0.1 -e DB_PORT={stack.port}"
        )
        example = example.replace(" auth-service-migrate ", f" {image} ")
        assert str(stack.port) in example and image in example, example
        dry_run = subprocess.run(["bash", "-euo", "pipefail", "-c", example], cwd=tmp_path,
                                 env=clean_env(), capture_output=True, text=True, timeout=120)  # fmt: skip
        stack.assert_no_secret(dry_run.stdout + dry_run.stderr)
        assert dry_run.returncode == 0, dry_run.stdout + dry_run.stderr
        assert '"pending": []' in dry_run.stdout
    finally:
        stack.down()
        subprocess.run(
            ["docker", "rmi", "-f", image], capture_output=True, check=False, timeout=120
        )
