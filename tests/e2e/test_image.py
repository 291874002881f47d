"""The image itself: hardened, small, and working with a read-only root and no capabilities."""

from __future__ import annotations

import json
import re
import subprocess

from .conftest import PYTHON_BASE, Stack, repo_migration_versions, run

# Issue 14 set 15 MB; raised to 16 MB on 2026-12-07 when the cleanup command, phases,
# MIGRATIONS_TABLE and the release lint took the runner's own code past it (bench/README.md).
MAX_ADDED_BYTES = 16_000_000
# What an import prints under ``python -v``: a module read from its pyc says "<pyc> matches
# <source>"; one compiled from source says "code object from <source.py>" (unquoted).
PYC_USED = re.compile(r"^# (/\S+\.pyc) matches (/\S+\.py)$", re.MULTILINE)
SOURCE_COMPILED = re.compile(r"^# code object from (/\S+\.py)$", re.MULTILINE)
# Every .py under the venv and /app has a pyc next to it, and each pyc's flags word (bytes
# 4-8) is 0b01: hash-based and unchecked (PEP 552), so its bytes do not depend on when the
# image was built and the source is never read to validate it.
PYC_PROBE = """
import importlib.util, json, pathlib
missing, flags = [], {}
for root in ("/opt/venv/lib", "/app"):
    for source in pathlib.Path(root).rglob("*.py"):
        cached = pathlib.Path(importlib.util.cache_from_source(str(source)))
        if not cached.exists():
            missing.append(str(source))
            continue
        word = int.from_bytes(cached.read_bytes()[4:8], "little")
        flags[word] = flags.get(word, 0) + 1
print(json.dumps({"missing": missing, "flags": flags}))
"""


def inspect(image: str) -> dict:
    return json.loads(run(["docker", "image", "inspect", image]).stdout)[0]


def test_the_image_runs_as_a_numeric_non_root_user_with_an_exec_entrypoint(
    migrate_image: str,
) -> None:
    config = inspect(migrate_image)["Config"]
    user = config["User"].split(":")[0]
    assert user.isdigit() and user != "0"
    assert config["Entrypoint"][0].startswith("/") and len(config["Entrypoint"]) >= 2
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["MIGRATIONS_DIR"] == "/migrations"
    labels = config["Labels"]
    for key in ("title", "description", "version", "revision", "created", "licenses"):
        assert f"org.opencontainers.image.{key}" in labels
    for key in ("source", "documentation"):
        assert labels[f"org.opencontainers.image.{key}"].startswith("https://"), key


def test_version_prints_the_baked_revision(migrate_image: str) -> None:
    revision = inspect(migrate_image)["Config"]["Labels"]["org.opencontainers.image.revision"]
    result = run(["docker", "run", "--rm", "--network", "none", migrate_image, "--version"])
    assert result.stdout == f"auth-service-migrator 0.1.0 (revision {revision})\n"


def test_the_image_adds_at_most_16_mb_and_carries_no_build_tools(migrate_image: str) -> None:
    added = inspect(migrate_image)["Size"] - inspect(PYTHON_BASE)["Size"]
    assert 0 < added < MAX_ADDED_BYTES, f"the image adds {added / 1e6:.1f} MB over its base"
    probe = (
        "for tool in gcc cc make pip pip3; do command -v $tool && exit 1; done;"
        " test ! -e /opt/venv/bin/pip || exit 2;"
        " ls /migrations"
    )
    result = run(["docker", "run", "--rm", "--network", "none", "--entrypoint", "/bin/sh",
                  migrate_image, "-c", probe], check=False)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    baked = sorted(name for name in result.stdout.split() if name.endswith(".sql"))
    assert baked == sorted(f"{v}.sql" for v in repo_migration_versions())


def test_runs_with_a_read_only_root_all_capabilities_dropped_as_user_10001(
    stack: Stack, migrate_image: str
) -> None:
    stack.up("postgres")
    stack.wait_healthy()
    secrets = stack.secrets_dir
    common = [
        "docker", "run", "--rm", "--network", "host", "--read-only", "--cap-drop", "ALL",
        "--user", "10001", "--security-opt", "no-new-privileges",
        "-v", f"{secrets}:/run/secrets:ro",
        "-e", "DB_HOST=127.0.0.1", "-e", f"DB_PORT={stack.port}",
        "-e", "DB_PASSWORD_FILE=/run/secrets/db_password.txt",
        "-e", "DB_ADMIN_USER=postgres",
        "-e", "DB_ADMIN_PASSWORD_FILE=/run/secrets/postgres_password.txt",
        "-e", "APP_DB_PASSWORD_FILE=/run/secrets/app_db_password.txt",
    ]  # fmt: skip
    result = subprocess.run([*common, migrate_image], capture_output=True, text=True, timeout=120)

    assert result.returncode == 0, result.stdout + result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert events[-1]["level"] == "info"
    assert any(e["event"] == "migrations_complete" for e in events)
    stack.assert_no_secret(result.stdout + result.stderr)
    assert stack.applied_versions() == [(v, 1) for v in repo_migration_versions()]

    health = subprocess.run(
        [*common, "--entrypoint", "/opt/venv/bin/python", migrate_image, "/app/healthcheck.py"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert health.returncode == 0, health.stdout + health.stderr
    stack.assert_no_secret(health.stdout + health.stderr)


def test_every_module_ships_an_unchecked_hash_pyc(migrate_image: str) -> None:
    result = run(["docker", "run", "--rm", "--network", "none", "--read-only",
                  "--entrypoint", "/opt/venv/bin/python", migrate_image, "-c", PYC_PROBE])  # fmt: skip
    found = json.loads(result.stdout)
    assert found["missing"] == [], f"no pyc for {found['missing'][:5]}"
    assert set(found["flags"]) == {"1"}, f"pyc flags words: {found['flags']}"
    assert found["flags"]["1"] > 100


def test_a_run_loads_every_module_from_its_pyc_and_compiles_nothing(
    stack: Stack, migrate_image: str
) -> None:
    """The real run (bootstrap and apply import everything lazily loaded), under ``python -v``.

    Read-only root and PYTHONDONTWRITEBYTECODE unset: a module compiled from source would show
    (and the interpreter would try to write its pyc), so none may be.
    """
    stack.up("postgres")
    stack.wait_healthy()
    result = subprocess.run(
        ["docker", "run", "--rm", "--network", "host", "--read-only", "--cap-drop", "ALL",
         "-v", f"{stack.secrets_dir}:/run/secrets:ro",
         "-e", "DB_HOST=127.0.0.1", "-e", f"DB_PORT={stack.port}",
         "-e", "DB_PASSWORD_FILE=/run/secrets/db_password.txt", "-e", "DB_ADMIN_USER=postgres",
         "-e", "DB_ADMIN_PASSWORD_FILE=/run/secrets/postgres_password.txt",
         "-e", "APP_DB_PASSWORD_FILE=/run/secrets/app_db_password.txt",
         "-e", "PYTHONDONTWRITEBYTECODE=",
         "--entrypoint", "/opt/venv/bin/python", migrate_image, "-v", "/app/entrypoint.py"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip

    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert stack.applied_versions() == [(v, 1) for v in repo_migration_versions()]
    stack.assert_no_secret(result.stdout + result.stderr)
    # The script run as __main__ is always compiled from source (3.5 kB: about 1 ms).
    compiled = [p for p in SOURCE_COMPILED.findall(result.stderr) if p != "/app/entrypoint.py"]
    assert compiled == [], f"compiled from source at run time: {compiled[:10]}"
    used = {source for _, source in PYC_USED.findall(result.stderr)}
    for module in (
        "/app/migrator/database/bootstrap.py",
        "/app/migrator/apply/applier.py",
        "/app/migrator/database/lock.py",
    ):
        assert module in used, f"{module} was not loaded from its pyc"
    assert any(path.startswith("/opt/venv/") and "/psycopg/" in path for path in used)
    assert "Read-only file system" not in result.stderr
