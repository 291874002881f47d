"""SQL fidelity on a big set of files: what ``psql -v ON_ERROR_STOP=1 -f`` applies, the runner
must apply with the same pg_dump, or refuse up front (exit 65).  Outside CI (minutes).

    .venv/bin/python bench/fidelity.py SOURCE_DIR                  # e.g. PostgreSQL's regress SQL
    .venv/bin/python bench/fidelity.py SOURCE_DIR --out tests/fidelity/corpus --only a.sql,b.sql
    PG_BIN=/usr/lib/postgresql/15/bin .venv/bin/python bench/fidelity.py SOURCE_DIR

PostgreSQL's regression files fail on purpose and lean on each other, so each file is first made
standalone: psql runs it (without ON_ERROR_STOP) on a fresh database and every statement it
reports an error for is removed, with psql's meta-commands and the statements that touch
cluster-wide objects (roles, databases, tablespaces: both databases live on one server), until
psql applies the rest with ON_ERROR_STOP.  That file is then applied with psql on one fresh
database and with the runner on another, and the dumps are compared.  The figures: files and
statements compared, mismatches (with their first differing lines), refusals, runner failures.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import psycopg

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from pgserver import PgServer  # noqa: E402

from migrator.files.sql import read_script  # noqa: E402
from tests.fidelity.compare import Target, dump_difference  # noqa: E402

MAX_CLEANING_ROUNDS = 8
PSQL_ERROR_RE = re.compile(r"^psql:[^\n]*?:(\d+): ERROR:", re.MULTILINE)
# Objects shared by every database of the server: applied on the first database, they would
# already exist on the second.  Removed from the files before comparing.
CLUSTER_WIDE_RE = re.compile(
    r"^\s*(?:(?:create|alter|drop)\s+(?:role|user|group|database|tablespace)\b"
    r"|(?:reassign|drop)\s+owned\b|set\s+(?:session\s+)?(?:role|session\s+authorization)\b"
    r"|grant\s+\w+\s+to\b|revoke\s+\w+\s+from\b|alter\s+system\b|comment\s+on\s+(?:role|database)"
    r"|security\s+label\s+on\s+role|(?:create|alter|drop)\s+subscription\b)",
    re.IGNORECASE,
)
RUNNER = REPO / "entrypoint.py"
SOURCE_HEADER = "-- From PostgreSQL's src/test/regress/sql/{name}, made standalone.\n"


@dataclass
class Outcome:
    file: str
    statements: int
    result: str  # same, mismatch, refused, runner_failed, unstable
    detail: str = ""


class Bench:
    def __init__(self, server: PgServer) -> None:
        self.server = server

    def database(self) -> Target:
        name = f"f_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(**self.server.conninfo(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return Target(self.server.bin_dir, self.server.port, self.server.password, name)

    def drop(self, target: Target) -> None:
        with psycopg.connect(**self.server.conninfo(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{target.dbname}" WITH (FORCE)')

    def psql(self, text: str, stop_on_error: bool) -> subprocess.CompletedProcess[str]:
        target = self.database()
        try:
            with tempfile.TemporaryDirectory() as folder:
                path = Path(folder) / "file.sql"
                path.write_text(text)
                if stop_on_error:
                    return target.psql_files([path])
                return target._run("psql", "-X", "-q", "-d", target.dbname, "-f", str(path))
        finally:
            self.drop(target)

    def standalone(self, text: str) -> str | None:
        """The file without what fails under psql on a fresh database; None if it won't settle."""
        text = drop_statements(text, lambda statement: bool(CLUSTER_WIDE_RE.match(statement)))
        text = drop_meta_lines(text)
        for _ in range(MAX_CLEANING_ROUNDS):
            result = self.psql(text, stop_on_error=False)
            failed_lines = {int(n) for n in PSQL_ERROR_RE.findall(result.stderr)}
            if not failed_lines:
                return text
            text = drop_statements_ending_on(text, failed_lines)
        return None

    def compare(self, name: str, text: str) -> Outcome:
        count = len(read_script(text).statements)
        psql_db, runner_db = self.database(), self.database()
        try:
            with tempfile.TemporaryDirectory() as folder:
                migrations = Path(folder) / "migrations"
                migrations.mkdir()
                path = migrations / f"001_{re.sub(r'[^A-Za-z0-9_]', '_', Path(name).stem)}.sql"
                path.write_text(text)
                psql = psql_db.psql_files([path])
                if psql.returncode != 0:
                    return Outcome(name, count, "unstable", psql.stderr.strip()[:200])
                exit_code, events = self.runner(runner_db, migrations)
            if exit_code == 65 and any(e["event"] == "invalid_migration_files" for e in events):
                return Outcome(name, count, "refused", events[-1].get("error", ""))
            if exit_code != 0:
                failure = next((e for e in events if e["level"] == "error"), {})
                return Outcome(name, count, "runner_failed", json.dumps(failure)[:300])
            difference = dump_difference(psql_db.dump(), runner_db.dump(), context=0)
            return Outcome(name, count, "mismatch" if difference else "same", difference[:600])
        finally:
            self.drop(psql_db)
            self.drop(runner_db)

    def runner(self, target: Target, migrations: Path) -> tuple[int, list[dict[str, object]]]:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("DB_", "PG"))},
            "DB_HOST": "127.0.0.1",
            "DB_PORT": str(target.port),
            "DB_NAME": target.dbname,
            "DB_USER": "postgres",
            "DB_PASSWORD": target.password,
            "MIGRATIONS_DIR": str(migrations),
            "TERMINATION_LOG": os.devnull,
            "LOG_LEVEL": "info",
        }
        result = subprocess.run(
            [sys.executable, str(RUNNER)], env=env, capture_output=True, text=True, check=False
        )
        events = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
        return result.returncode, events


def drop_statements(text: str, unwanted: object) -> str:
    """``text`` without the statements for which ``unwanted(statement_text)`` is true."""
    assert callable(unwanted)
    script = read_script(text)
    pieces, done = [], 0
    for statement in script.statements:
        if unwanted(statement.text):
            pieces.append(text[done : statement.offset])
            done = statement.end
            pieces.append("\n")
    pieces.append(text[done:])
    return "".join(pieces)


def drop_statements_ending_on(text: str, lines: set[int]) -> str:
    """Remove every statement whose text ends on one of ``lines`` (psql's error lines)."""
    ends = {}
    for statement in read_script(text).statements:
        last = statement.offset + len(statement.text)
        ends[statement.offset] = text.count("\n", 0, last) + 1
    return drop_statements_at(text, {offset for offset, line in ends.items() if line in lines})


def drop_statements_at(text: str, offsets: set[int]) -> str:
    script = read_script(text)
    pieces, done = [], 0
    for statement in script.statements:
        if statement.offset in offsets:
            pieces.append(text[done : statement.offset])
            done = statement.end
            pieces.append("\n")
    pieces.append(text[done:])
    return "".join(pieces)


def drop_meta_lines(text: str) -> str:
    """psql's meta-commands out (the runner refuses them; they are counted apart)."""
    meta_lines = {meta.line for meta in read_script(text).meta_commands}
    return "".join(
        line if number not in meta_lines else "\n"
        for number, line in enumerate(text.splitlines(keepends=True), start=1)
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="a folder of .sql files")
    parser.add_argument("--out", type=Path, help="write the standalone files that match here")
    parser.add_argument("--only", help="comma-separated file names")
    parser.add_argument("--limit", type=int, default=0, help="at most this many files")
    args = parser.parse_args(argv)
    files = sorted(args.source.glob("*.sql"))
    if args.only:
        wanted = set(args.only.split(","))
        files = [path for path in files if path.name in wanted]
    if args.limit:
        files = files[: args.limit]
    server = PgServer.create()
    server.start()
    start = time.monotonic()
    outcomes: list[Outcome] = []
    with_meta = 0
    try:
        bench = Bench(server)
        for path in files:
            try:
                original = path.read_text()
            except UnicodeDecodeError:
                continue
            with_meta += bool(read_script(original).meta_commands)
            text = bench.standalone(original)
            if text is None or not read_script(text).statements:
                outcomes.append(Outcome(path.name, 0, "unstable", "did not settle"))
                continue
            outcome = bench.compare(path.name, text)
            outcomes.append(outcome)
            print(f"{outcome.result:14} {outcome.statements:5} {path.name}", file=sys.stderr)
            if outcome.result != "same":
                print(f"    {outcome.detail[:600]}", file=sys.stderr)
            if args.out and outcome.result == "same":
                header = SOURCE_HEADER.format(name=path.name)
                (args.out / path.name).write_text(
                    text if text.startswith(header) else header + text
                )
    finally:
        server.destroy()
    report(outcomes, with_meta, len(files), time.monotonic() - start)
    return 0


def report(outcomes: list[Outcome], with_meta: int, total: int, seconds: float) -> None:
    counts = Counter(outcome.result for outcome in outcomes)
    statements = Counter()
    for outcome in outcomes:
        statements[outcome.result] += outcome.statements
    compared = sum(statements[r] for r in ("same", "mismatch", "refused", "runner_failed"))
    print(f"files read: {total}; files with psql meta-commands (lines dropped): {with_meta}")
    for result in ("same", "mismatch", "refused", "runner_failed", "unstable"):
        print(f"{result:14} files {counts[result]:4}  statements {statements[result]:6}")
    print(f"statements compared: {compared}; mismatching statements' files: {counts['mismatch']}")
    print(f"took {seconds:.0f} s")


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
