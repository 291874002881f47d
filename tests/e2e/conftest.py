"""End-to-end fixtures: a real Docker engine, locally built base images, the image, compose stacks.

Nothing is mocked: the tests build the migration image from this checkout, start
the compose stack of ``compose/`` (with its ``docker-compose.hostnet.yml``: the engine
here has no bridge, so every service uses the host's network on 127.0.0.1), and
look at what a user sees: exit codes, container states, log lines, rows.

Without a usable engine they skip with the reason; with ``REQUIRE_E2E=1`` (CI)
that skip is a failure. Images:

* base images: ``E2E_PYTHON_BASE_IMAGE`` (default ``local/python-bookworm``) and
  ``POSTGRES_IMAGE`` (default ``local/postgres-bookworm``), built by
  ``build-base-images.sh`` (debootstrap, run as root) when missing;
* wheels: downloaded on the host into ``.e2e-cache/wheels`` and served on
  127.0.0.1 to the build (``PIP_FIND_LINKS``), because pip inside a build
  container cannot verify the index's certificate on these machines;
* the image under test: ``local/auth-service-migrate:e2e``.
"""

from __future__ import annotations

import datetime
import functools
import http.server
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from tests.conftest import make_certificates

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
CACHE = Path(os.environ.get("E2E_CACHE_DIR", REPO / ".e2e-cache"))
PYTHON_BASE = os.environ.get("E2E_PYTHON_BASE_IMAGE", "local/python-bookworm")
POSTGRES_IMAGE = os.environ.get("POSTGRES_IMAGE", "local/postgres-bookworm")
MIGRATE_IMAGE = os.environ.get("E2E_MIGRATE_IMAGE", "local/auth-service-migrate:e2e")
HOSTNET_FILE = REPO / "compose" / "docker-compose.hostnet.yml"
COMPOSE_FILES = [REPO / "compose" / "docker-compose.yml", HOSTNET_FILE]
PROD_FILE = REPO / "compose" / "docker-compose.prod.yml"
REQUIRE_E2E = os.environ.get("REQUIRE_E2E") == "1"
SECRET_NAMES = ("postgres_password", "db_password", "app_db_password")
CONTAINER_GID = 10001  # the runner image's group (Dockerfile: USER 10001:10001)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.e2e)


def unavailable(reason: str) -> None:
    if REQUIRE_E2E:
        pytest.fail(f"end-to-end tests cannot run (REQUIRE_E2E=1): {reason}", pytrace=False)
    pytest.skip(f"end-to-end tests need a Docker engine: {reason}")


def run(args: list[str], timeout: float = 300, check: bool = True, **kwargs: Any) -> Any:
    result = subprocess.run(args, capture_output=True, text=True, timeout=timeout, **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(map(str, args))} exited {result.returncode}\n"
            f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        )
    return result


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def image_exists(name: str) -> bool:
    return run(["docker", "image", "inspect", name], check=False).returncode == 0


# --- session: engine, base images, wheels, the image ------------------------------------------


# A test's stack outlives it only when its run was killed before the teardown; the production
# services restart with the engine ("unless-stopped") and would load every later run.
STALE_STACK_AGE = datetime.timedelta(hours=2)  # no e2e test runs this long
PROJECT_NAME_RE = re.compile(r"e2e[0-9a-f]{10}")


def remove_stacks_of_killed_runs() -> None:
    """Remove the containers and volumes of e2e projects older than STALE_STACK_AGE."""
    label = "com.docker.compose.project"
    listed = run(["docker", "ps", "-a", "--filter", f"label={label}",
                  "--format", f'{{{{.ID}}}}|{{{{.Label "{label}"}}}}|{{{{.CreatedAt}}}}'],
                 timeout=60).stdout  # fmt: skip
    now = datetime.datetime.now(datetime.UTC)
    stale: dict[str, list[str]] = {}
    for line in listed.splitlines():
        container, project, created = line.split("|")
        when = datetime.datetime.strptime(created.rsplit(" ", 1)[0], "%Y-%m-%d %H:%M:%S %z")
        if PROJECT_NAME_RE.fullmatch(project) and now - when > STALE_STACK_AGE:
            stale.setdefault(project, []).append(container)
    for project, containers in stale.items():
        run(["docker", "rm", "-f", "-v", *containers], timeout=120, check=False)
        volumes = run(["docker", "volume", "ls", "-q", "--filter", f"label={label}={project}"],
                      timeout=60).stdout.split()  # fmt: skip
        if volumes:
            run(["docker", "volume", "rm", "-f", *volumes], timeout=120, check=False)


@pytest.fixture(scope="session")
def compose_cmd() -> list[str]:
    if not shutil.which("docker"):
        unavailable("the docker client is not installed")
    info = run(["docker", "info", "--format", "{{.ServerVersion}}"], check=False, timeout=30)
    if info.returncode != 0:
        unavailable(f"no engine answers `docker info`: {info.stderr.strip()[:200]}")
    remove_stacks_of_killed_runs()
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if run(["docker", "compose", "version"], check=False).returncode == 0:
        return ["docker", "compose"]
    unavailable("neither docker-compose nor the compose plugin is installed")
    raise AssertionError("unreachable")


@pytest.fixture(scope="session")
def base_images(compose_cmd: list[str]) -> None:
    if image_exists(PYTHON_BASE) and image_exists(POSTGRES_IMAGE):
        return
    if os.geteuid() != 0 or not shutil.which("debootstrap"):
        unavailable(
            f"{PYTHON_BASE} / {POSTGRES_IMAGE} are missing and cannot be built here "
            "(tests/e2e/build-base-images.sh needs root and debootstrap)"
        )
    env = {**os.environ, "PYTHON_BASE_IMAGE": PYTHON_BASE, "POSTGRES_IMAGE": POSTGRES_IMAGE}
    run([str(HERE / "build-base-images.sh")], timeout=900, env=env)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="session")
def wheel_url(base_images: None) -> Iterator[str]:
    """The runtime wheels for the base image's Python, served on 127.0.0.1."""
    version = run(["docker", "run", "--rm", "--network", "none", PYTHON_BASE, "python3", "-c",
                   "import sys; print(f'{sys.version_info[0]}{sys.version_info[1]}')"]).stdout.strip()  # fmt: skip
    wheels = CACHE / f"wheels-cp{version}"
    wheels.mkdir(parents=True, exist_ok=True)
    import tomllib

    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    download = run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
         "--dest", str(wheels), "--only-binary=:all:", "--implementation", "cp",
         "--python-version", version, "--abi", f"cp{version}",
         "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_17_x86_64",
         "--platform", "manylinux2014_x86_64", *deps],
        check=False, timeout=300,
    )  # fmt: skip
    if download.returncode != 0 and not any(wheels.glob("*.whl")):
        raise AssertionError(f"pip download failed:\n{download.stderr}")
    handler = functools.partial(_QuietHandler, directory=str(wheels))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


@pytest.fixture(scope="session")
def migrate_image(wheel_url: str) -> str:
    """The image built from this checkout (the layer cache makes a rebuild quick)."""
    env = {**os.environ, "DOCKER_BUILDKIT": "0"}  # the legacy builder: no buildx needed
    run(["docker", "build", "--quiet", "--network", "host",
         "--build-arg", f"BASE_IMAGE={PYTHON_BASE}", "--build-arg", f"PIP_FIND_LINKS={wheel_url}",
         "--build-arg", "REVISION=e2e", "-t", MIGRATE_IMAGE, str(REPO)],
        timeout=600, env=env)  # fmt: skip
    return MIGRATE_IMAGE


# --- a compose stack per test ----------------------------------------------------------------


@dataclass
class Stack:
    """One compose project on its own free port, secrets in its own folder."""

    compose_cmd: list[str]
    image: str
    root: Path
    project: str = field(default_factory=lambda: f"e2e{uuid.uuid4().hex[:10]}")
    port: int = field(default_factory=free_port)
    extra_files: list[Path] = field(default_factory=list)
    passwords: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.secrets_dir = self.root / "secrets"
        self.secrets_dir.mkdir(parents=True)
        # 750 with the runner's group: test_image.py mounts the folder itself.
        os.chown(self.secrets_dir, -1, CONTAINER_GID)
        self.secrets_dir.chmod(0o750)
        postgres_uid, _ = postgres_ids()
        for name in SECRET_NAMES:
            self.passwords[name] = secrets.token_urlsafe(18)
            path = self.secrets_dir / f"{name}.txt"
            path.write_text(self.passwords[name] + "\n")
            # As docs/docker.md says: the containers' users read it, other local users do not
            # (deploy-docker-production.sh checks). This postgres image reads its password
            # after dropping root, so that file is its user's.
            owner = postgres_uid if name == "postgres_password" else -1
            os.chown(path, owner, CONTAINER_GID)
            path.chmod(0o640)

    def enable_tls(self) -> None:
        """The files compose/docker-compose.prod.yml mounts: a CA, and a server certificate for
        the one name docs/docker.md makes it for (postgres: the hostnet file keeps that name)."""
        folder = make_certificates(self.root / "tls", ["DNS:postgres"])
        for source, target in (("ca.crt", "db_ca.crt"), ("server.crt", "db_server.crt"),
                               ("server.key", "db_server.key")):  # fmt: skip
            shutil.copyfile(folder / source, self.secrets_dir / target)
        uid, gid = postgres_ids()
        key = self.secrets_dir / "db_server.key"
        os.chown(key, uid, gid)  # PostgreSQL wants its key owned by its user, mode 600
        key.chmod(0o600)
        for name in ("db_ca.crt", "db_server.crt"):
            (self.secrets_dir / name).chmod(0o644)

    @property
    def files(self) -> list[Path]:
        return [*COMPOSE_FILES, *self.extra_files]

    @property
    def env(self) -> dict[str, str]:
        drop = ("DB_", "PG", "COMPOSE_", "DOCKER_BUILDKIT")
        return {
            **{k: v for k, v in os.environ.items() if not k.startswith(drop)},
            "COMPOSE_PROJECT_NAME": self.project,
            "COMPOSE_FILE": os.pathsep.join(map(str, self.files)),
            "SECRETS_DIR": str(self.secrets_dir),
            "POSTGRES_PORT": str(self.port),
            "MIGRATE_IMAGE": self.image,
            "APP_IMAGE": self.image,
            "POSTGRES_IMAGE": POSTGRES_IMAGE,
        }

    def compose(self, *args: str, check: bool = True, timeout: float = 180) -> Any:
        return run([*self.compose_cmd, *args], check=check, timeout=timeout, env=self.env)

    def up(self, *args: str, check: bool = True) -> Any:
        return self.compose("up", "-d", "--no-build", *args, check=check)

    def override(self, name: str, services: dict[str, Any]) -> Path:
        """Add a compose override file (absolute paths) for this stack."""
        path = self.root / name
        path.write_text(yaml.safe_dump({"services": services}))
        self.extra_files.append(path)
        return path

    def migrations_dir(self, extra: dict[str, str]) -> Path:
        """A copy of migrations/ plus ``extra`` files, mounted over /migrations."""
        target = self.root / "migrations"
        shutil.copytree(REPO / "migrations", target)
        for name, sql in extra.items():
            (target / name).write_text(sql)
        for path in [target, *target.iterdir()]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        mount = {"volumes": [f"{target}:/migrations:ro"]}
        self.override("migrations.yml", {"migrate": mount, "migrate-post": mount})
        return target

    def containers(self, service: str) -> list[dict[str, Any]]:
        ids = run(["docker", "ps", "-aq",
                   "--filter", f"label=com.docker.compose.project={self.project}",
                   "--filter", f"label=com.docker.compose.service={service}"]).stdout.split()  # fmt: skip
        if not ids:
            return []
        return list(json.loads(run(["docker", "inspect", *ids]).stdout))

    def wait_exited(self, service: str, count: int = 1, timeout: float = 120) -> list[int]:
        deadline = time.monotonic() + timeout
        while True:
            states = [c["State"] for c in self.containers(service)]
            if len(states) >= count and all(s["Status"] == "exited" for s in states):
                return [s["ExitCode"] for s in states]
            if time.monotonic() > deadline:
                raise AssertionError(f"{service} did not exit in {timeout}s: {states}")
            time.sleep(0.5)

    def wait_healthy(self, service: str = "postgres", timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while True:
            states = [c["State"] for c in self.containers(service)]
            if states and all(s.get("Health", {}).get("Status") == "healthy" for s in states):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"{service} not healthy in {timeout}s: {states}")
            time.sleep(0.5)

    def logs(self, container: dict[str, Any]) -> str:
        result = run(["docker", "logs", container["Id"]])
        return str(result.stdout + result.stderr)

    def events(self, service: str) -> list[dict[str, Any]]:
        """Every log line of every container of ``service``, each one parsed as JSON."""
        events = []
        for container in self.containers(service):
            for line in self.logs(container).splitlines():
                try:
                    events.append(json.loads(line))
                except json.JSONDecodeError:
                    pytest.fail(f"{service} wrote a line that is not JSON: {line!r}")
        return events

    def check_logs(self, json_services: tuple[str, ...] = ("migrate", "app")) -> None:
        """What every test ends with: JSON lines only, and no password anywhere."""
        for service in json_services:
            for event in self.events(service):
                assert {"timestamp", "level", "event"} <= set(event), event
        output = self.compose("logs", "--no-color").stdout
        for service in ("postgres", "migrate", "app"):
            output += "".join(self.logs(c) for c in self.containers(service))
        self.assert_no_secret(output)

    def assert_no_secret(self, text: str) -> None:
        for name, password in self.passwords.items():
            assert password not in text, f"the {name} secret leaked into the output"

    def connect(self, dbname: str = "auth_service", user: str = "postgres") -> Any:
        password = {"postgres": self.passwords["postgres_password"],
                    "auth_service": self.passwords["db_password"],
                    "auth_service_app": self.passwords["app_db_password"]}[user]  # fmt: skip
        return psycopg.connect(host="127.0.0.1", port=self.port, dbname=dbname, user=user,
                               password=password, autocommit=True, connect_timeout=5)  # fmt: skip

    def applied_versions(self) -> list[tuple[str, int]]:
        with self.connect() as conn:
            rows = conn.execute(
                "SELECT version, count(*) FROM schema_migrations GROUP BY version ORDER BY version"
            ).fetchall()
        return [(str(v), int(n)) for v, n in rows]

    def down(self) -> None:
        self.compose("down", "-v", "--remove-orphans", "--timeout", "5", check=False)


@functools.cache
def postgres_ids() -> tuple[int, int]:
    """(uid, gid) of the postgres user in POSTGRES_IMAGE."""
    command = ["docker", "run", "--rm", "--network", "none", "--entrypoint", "id", POSTGRES_IMAGE]
    uid = int(run([*command, "-u", "postgres"], timeout=60).stdout)
    gid = int(run([*command, "-g", "postgres"], timeout=60).stdout)
    return uid, gid


@pytest.fixture
def stack(compose_cmd: list[str], migrate_image: str, tmp_path: Path) -> Iterator[Stack]:
    created = Stack(compose_cmd, migrate_image, tmp_path / "stack")
    try:
        yield created
    finally:
        created.down()


def repo_migration_versions() -> list[str]:
    return sorted(p.stem for p in (REPO / "migrations").glob("*.sql"))
