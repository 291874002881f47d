"""Applying the same files with ``psql -v ON_ERROR_STOP=1 -f`` and with the runner, and
comparing what each left in its database (pg_dump, schema and data).

Shared by tests/fidelity and bench/fidelity.py; takes plain connection facts so that either
can call it.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

HISTORY_TABLE = "public.schema_migrations"
LOCK_VIEW = "public.schema_migrations_lock"  # the migration lock
# -X: no ~/.psqlrc; -q: quiet; ON_ERROR_STOP: a failing statement ends the file, exit 3.
PSQL_OPTIONS = ("-X", "-q", "-v", "ON_ERROR_STOP=1")
SUPERUSER = "postgres"
PSQL_TIMEOUT = 300


@dataclass(frozen=True)
class Target:
    """A database on a local server, and the binaries of that server."""

    bin_dir: Path
    port: int
    password: str
    dbname: str

    def _run(self, tool: str, *args: str) -> subprocess.CompletedProcess[str]:
        command = [str(self.bin_dir / tool), "-h", "127.0.0.1", "-p", str(self.port)]
        return subprocess.run(
            [*command, "-U", SUPERUSER, *args],
            env={**os.environ, "PGPASSWORD": self.password},
            capture_output=True,
            text=True,
            timeout=PSQL_TIMEOUT,
            check=False,
        )

    def psql_files(self, files: Sequence[Path]) -> subprocess.CompletedProcess[str]:
        """Each file in its own psql session, in order; stops at the first that fails."""
        result = subprocess.CompletedProcess[str]([], 0, "", "")
        for path in files:
            result = self._run("psql", *PSQL_OPTIONS, "-d", self.dbname, "-f", str(path))
            if result.returncode != 0:
                break
        return result

    def dump_file(self) -> str:
        """pg_dump's plain output as it is, to be applied like a migration file."""
        result = self._run("pg_dump", self.dbname)
        if result.returncode != 0:
            raise RuntimeError(f"pg_dump failed: {result.stderr}")
        return result.stdout

    def dump(self) -> str:
        """pg_dump (schema and data) without the runner's history table and lock view and
        pg_dump 18's random \\restrict key."""
        result = self._run("pg_dump", f"--exclude-table={HISTORY_TABLE}",
                           f"--exclude-table={LOCK_VIEW}", self.dbname)  # fmt: skip
        if result.returncode != 0:
            raise RuntimeError(f"pg_dump failed: {result.stderr}")
        return "\n".join(
            line
            for line in result.stdout.splitlines()
            if not line.startswith(("\\restrict", "\\unrestrict"))
        )


def dump_difference(left: str, right: str, context: int = 3) -> str:
    """A short unified diff of two dumps ('' when they are the same)."""
    import difflib

    lines = difflib.unified_diff(
        left.splitlines(), right.splitlines(), "psql", "runner", n=context, lineterm=""
    )
    return "\n".join(list(lines)[:80])
