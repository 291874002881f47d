"""The benchmark's container side: the engine, the runner's image, and dbmate in an image.

Users run the runner as an image, so ``bench.py`` also times ``docker run`` of it (C1, C5)
beside the same image's floors and dbmate in a container. Nothing comes from a registry:
dbmate's image is built here ``FROM scratch`` out of the static binary that npm's
``@dbmate/linux-x64`` ships (the one the host workloads run), and the runner's image is the
one the checkout was built into (``docker build -t auth-service-migrate .``, or the image
``tests/e2e`` builds). Every container uses the host's network (the bench's PostgreSQL
listens on 127.0.0.1) and, like the shipped compose file, a read-only root and no
capabilities; passwords are passed as ``-e NAME`` (the value comes from the docker client's
environment, never from argv).

    >>> engine = Engine.find()
    >>> engine.image_size("local/python-bookworm")
    123150043
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

DEFAULT_IMAGES = ("auth-service-migrate:latest", "local/auth-service-migrate:e2e")
DBMATE_IMAGE = "local/dbmate-bench:{version}"
# The Dockerfile records its BASE_IMAGE build argument under this standard OCI label.
BASE_LABEL = "org.opencontainers.image.base.name"
REVISION_LABEL = "org.opencontainers.image.revision"
RUNNER_PYTHON = "/opt/venv/bin/python"
CONTAINER_MIGRATIONS = "/migrations"
CONTAINER_USER = "10001:10001"
ENGINE_TIMEOUT = 30
BUILD_TIMEOUT = 300
DBMATE_DOCKERFILE = f"""FROM scratch
COPY dbmate /dbmate
USER {CONTAINER_USER}
ENTRYPOINT ["/dbmate"]
"""


class Unavailable(RuntimeError):
    """The container workloads cannot run here; the message says why."""


def _docker(*args: str, timeout: float = ENGINE_TIMEOUT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


@dataclass(frozen=True)
class Image:
    """An image measured by the benchmark: its name, id, size in bytes and labels."""

    name: str
    id: str
    size: int
    labels: Mapping[str, str]


@dataclass(frozen=True)
class Engine:
    """A Docker engine that answers ``docker info``."""

    version: str

    @classmethod
    def find(cls) -> Engine:
        """The engine, or Unavailable with the reason (no client, no answer)."""
        if not shutil.which("docker"):
            raise Unavailable("the docker client is not installed")
        try:
            info = _docker("info", "--format", "{{.ServerVersion}}")
        except subprocess.TimeoutExpired as error:
            raise Unavailable(f"docker info did not answer in {ENGINE_TIMEOUT} s") from error
        if info.returncode != 0:
            raise Unavailable(f"no engine answers docker info: {info.stderr.strip()[:200]}")
        return cls(info.stdout.strip())

    def image(self, name: str) -> Image | None:
        found = _docker("image", "inspect", name)
        if found.returncode != 0:
            return None
        data = json.loads(found.stdout)[0]
        labels = (data.get("Config") or {}).get("Labels") or {}
        return Image(name, data["Id"], int(data["Size"]), labels)

    def image_size(self, name: str) -> int | None:
        found = self.image(name)
        return found.size if found else None

    def runner_image(self, explicit: str | None) -> Image:
        """``--image``, else the first of DEFAULT_IMAGES that exists."""
        for name in [explicit] if explicit else DEFAULT_IMAGES:
            found = self.image(name)
            if found:
                return found
        tried = explicit or " or ".join(DEFAULT_IMAGES)
        raise Unavailable(
            f"no image {tried}: build it (docker build -t auth-service-migrate .) or run the "
            "e2e tests (they build local/auth-service-migrate:e2e)"
        )

    def dbmate_image(self, binary: Path, version: str) -> Image:
        """dbmate's static binary in an image FROM scratch, built here (the layer is cached)."""
        name = DBMATE_IMAGE.format(version=version)
        with tempfile.TemporaryDirectory(prefix="bench-dbmate-image-") as context:
            shutil.copy2(binary, Path(context) / "dbmate")
            (Path(context) / "Dockerfile").write_text(DBMATE_DOCKERFILE)
            built = subprocess.run(
                ["docker", "build", "--quiet", "-t", name, context],
                capture_output=True, text=True, timeout=BUILD_TIMEOUT, check=False,
                env={**os.environ, "DOCKER_BUILDKIT": "0"},  # the legacy builder: no buildx
            )  # fmt: skip
        if built.returncode != 0:
            raise Unavailable(f"docker build of {name} failed: {built.stderr.strip()[-300:]}")
        found = self.image(name)
        if found is None:
            raise Unavailable(f"{name} was built but cannot be inspected")
        return found


def run_argv(
    image: str,
    env_names: Sequence[str],
    *args: str,
    mounts: Sequence[tuple[Path, str]] = (),
    entrypoint: str | None = None,
) -> list[str]:
    """``docker run`` as the deployments run the image: host network, read-only, no caps.

    >>> run_argv("img", ["DB_PASSWORD"], "--dry-run")[-3:]
    ['DB_PASSWORD', 'img', '--dry-run']
    """
    argv = ["docker", "run", "--rm", "--network", "host", "--read-only", "--cap-drop", "ALL",
            "--security-opt", "no-new-privileges"]  # fmt: skip
    for source, target in mounts:
        argv += ["-v", f"{source}:{target}:ro"]
    for name in env_names:
        argv += ["-e", name]  # the value comes from the client's environment, not argv
    if entrypoint:
        argv += ["--entrypoint", entrypoint]
    return [*argv, image, *args]


def readable_by_containers(*paths: Path) -> None:
    """Mounted files are read by the containers' user (10001): open the folders to it."""
    for path in paths:
        for item in [path, *path.rglob("*")]:
            item.chmod(0o755 if item.is_dir() else 0o644)
