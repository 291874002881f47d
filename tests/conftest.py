"""Shared fixtures: a real PostgreSQL for the session, fresh databases, and the runner as users run it.

Every run of entrypoint.py or healthcheck.py made through ``run_runner`` /
``start_runner`` is checked here, centrally: each stdout line is a JSON event
with ``timestamp``, ``level`` and ``event``, and no password known to the
session appears in stdout, stderr or the termination message.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from migrator.files.folder import MigrationSet, find_migrations
from migrator.history.table import AppliedMigration

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))

from pgserver import PgServer, ServerTls  # noqa: E402

ENTRYPOINT = REPO / "entrypoint.py"
HEALTHCHECK = REPO / "healthcheck.py"
REQUIRED_LOG_FIELDS = ("timestamp", "level", "event")

# Every password a test hands to a runner; the central check looks for each.
KNOWN_SECRETS: set[str] = set()


# What holds the migration lock, and what would be left of it on a server session.
HOLD_MIGRATION_LOCK = "LOCK TABLE public.schema_migrations_lock IN SHARE UPDATE EXCLUSIVE MODE"
LEFTOVER_LOCKS = (
    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' OR (locktype = 'relation' "
    "AND relation = to_regclass('public.schema_migrations_lock') AND pid <> pg_backend_pid())"
)


# The sessions holding the migration lock (or any advisory lock, as an older runner's).
LOCK_HOLDERS = (
    "SELECT pid FROM pg_locks WHERE granted AND (locktype = 'advisory' OR (locktype = 'relation' "
    "AND mode = 'ShareUpdateExclusiveLock' "
    "AND relation = to_regclass('public.schema_migrations_lock')))"
)


def hold_migration_lock(conn: psycopg.Connection[Any]) -> None:
    """Take the migration lock on ``conn`` (autocommit) as another runner would: in a
    transaction left open until the connection ends it."""
    from migrator.database.lock import ensure_lock_relation

    ensure_lock_relation(conn)
    conn.execute("BEGIN")
    conn.execute(HOLD_MIGRATION_LOCK)


def remember_secret(value: str) -> str:
    KNOWN_SECRETS.add(value)
    return value


@dataclass
class RunResult:
    args: list[str]
    returncode: int
    stdout: str
    stderr: str
    termination_message: str = ""
    events: list[dict[str, Any]] = field(default_factory=list)

    def events_named(self, name: str) -> list[dict[str, Any]]:
        return [event for event in self.events if event["event"] == name]

    def last_event(self) -> dict[str, Any]:
        return self.events[-1]

    def __str__(self) -> str:
        return f"exit {self.returncode}\nstdout:\n{self.stdout}\nstderr:\n{self.stderr}"


def check_output(result: RunResult, expect_json: bool = True) -> RunResult:
    """The central checks every run goes through: JSON lines and no secret anywhere."""
    for text in (result.stdout, result.stderr, result.termination_message):
        for secret in KNOWN_SECRETS:
            assert secret not in text, f"a password leaked into the output of {result.args}"
    if expect_json:
        for line in result.stdout.splitlines():
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                pytest.fail(f"stdout line is not JSON: {line!r}\n{result}")
            for key in REQUIRED_LOG_FIELDS:
                assert key in event, f"log event without {key!r}: {line}"
            result.events.append(event)
    return result


class Runner:
    """A started entrypoint.py / healthcheck.py; ``wait()`` runs the central checks."""

    def __init__(self, args: list[str], env: dict[str, str], termination_log: Path) -> None:
        self.args = args
        self.termination_log = termination_log
        self.process = subprocess.Popen(
            args,
            env=env,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def wait(self, timeout: float = 120, expect_json: bool = True) -> RunResult:
        stdout, stderr = self.process.communicate(timeout=timeout)
        message = self.termination_log.read_text() if self.termination_log.exists() else ""
        result = RunResult(self.args, self.process.returncode, stdout, stderr, message)
        return check_output(result, expect_json)


def running_server(
    tls: ServerTls | None = None, hba_lines: Sequence[str] = ()
) -> Iterator[PgServer]:
    """A new server, started; destroyed when the fixture using it ends.

    ``tls``: the server speaks TLS with that certificate (from a PostgreSQL built with OpenSSL,
    see scripts/pgserver.py); ``hba_lines`` go first in its pg_hba.conf.
    """
    server = PgServer.create(tls=tls, hba_lines=hba_lines)
    remember_secret(server.password)
    server.start()
    yield server
    server.destroy()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    yield from running_server()


@dataclass
class Database:
    """A fresh database on the session server, and the environment that points a runner at it."""

    server: PgServer
    name: str

    def connect(self, **overrides: Any) -> psycopg.Connection[Any]:
        info = {"autocommit": True, **self.server.conninfo(self.name), **overrides}
        return psycopg.connect(**info)

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        with self.connect() as conn:
            return conn.execute(sql, params or None).fetchall()

    def scalar(self, sql: str, *params: Any) -> Any:
        rows = self.query(sql, *params)
        return rows[0][0] if rows else None

    def pg_dump(self, *options: str) -> str:
        """pg_dump of this database (the password goes through the environment)."""
        result = subprocess.run(
            [str(self.server.bin_dir / "pg_dump"), *options, "-h", "127.0.0.1",
             "-p", str(self.server.port), "-U", "postgres", self.name],
            env={**os.environ, "PGPASSWORD": self.server.password},
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        # PostgreSQL 18's pg_dump writes a random \restrict key on every run.
        return "\n".join(
            line
            for line in result.stdout.splitlines()
            if not line.startswith(("\\restrict", "\\unrestrict"))
        )

    def env(self, **extra: str) -> dict[str, str]:
        """Runner variables for the superuser on this database (tests override as needed)."""
        return {
            "DB_HOST": "127.0.0.1",
            "DB_PORT": str(self.server.port),
            "DB_NAME": self.name,
            "DB_USER": "postgres",
            "DB_PASSWORD": self.server.password,
            "DB_WAIT_TIMEOUT": "10",
            **extra,
        }


def _drop_database(server: PgServer, name: str) -> None:
    with psycopg.connect(**server.conninfo(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def create_database(server: PgServer) -> Database:
    """An empty database with a fresh name (the caller drops it)."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(**server.conninfo(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return Database(server, name)


def drop_database(database: Database) -> None:
    _drop_database(database.server, database.name)


def fresh_database(server: PgServer) -> Iterator[Database]:
    """Create an empty database, yield it, drop it (the body of the database fixtures)."""
    database = create_database(server)
    yield database
    drop_database(database)


@pytest.fixture
def database(pg_server: PgServer) -> Iterator[Database]:
    yield from fresh_database(pg_server)


@pytest.fixture
def other_database(pg_server: PgServer) -> Iterator[Database]:
    """A second fresh database, e.g. for the same files applied by another tool."""
    yield from fresh_database(pg_server)


@pytest.fixture
def unborn_database(pg_server: PgServer) -> Iterator[Database]:
    """A database name that does not exist yet (bootstrap creates it)."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    yield Database(pg_server, name)
    _drop_database(pg_server, name)


@pytest.fixture
def migrations(tmp_path: Path) -> MigrationsFolder:
    return MigrationsFolder(tmp_path / "migrations")


HISTORY_APPLIED_AT = datetime(2024, 5, 1, 12, 30, tzinfo=UTC)


def applied_row(version: str, checksum: str | None) -> AppliedMigration:
    """A schema_migrations row as read_history returns it."""
    return AppliedMigration(version, None, checksum, HISTORY_APPLIED_AT, 3, "auth_service")


def write_migration_set(folder: Path, **contents: str) -> MigrationSet:
    """Write ``<stem>.sql`` files into ``folder`` and read them back as the runner does."""
    for stem, sql in contents.items():
        (folder / f"{stem}.sql").write_text(sql)
    return find_migrations(folder)


class MigrationsFolder:
    """A migrations/ folder a test fills with files."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)

    def write(self, name: str, sql: str | bytes) -> Path:
        target = self.path / name
        if isinstance(sql, bytes):
            target.write_bytes(sql)
        else:
            target.write_text(sql)
        return target

    def add(self, files: Mapping[str, str]) -> MigrationsFolder:
        for name, sql in files.items():
            self.write(name, sql)
        return self


def entrypoint_env(env: Mapping[str, str], termination_log: Path) -> dict[str, str]:
    """The runner's environment: the test's variables over a clean copy of ours."""
    for key, value in env.items():
        if key.endswith("PASSWORD") and value:
            remember_secret(value)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DB_", "PG"))}
    return {"TERMINATION_LOG": str(termination_log), "LOG_LEVEL": "debug", **base, **env}


def launch(*args: str, env: Mapping[str, str], workdir: Path, script: Path = ENTRYPOINT) -> Runner:
    """Start ``script *args``; its termination message goes to a file in ``workdir``.

    For fixtures wider than one test too (``start_runner`` is per test).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    termination_log = workdir / f"termination-{uuid.uuid4().hex[:8]}.log"
    return Runner([sys.executable, str(script), *args], entrypoint_env(env, termination_log),
                  termination_log)  # fmt: skip


@pytest.fixture
def start_runner(tmp_path: Path) -> Any:
    """Start ``entrypoint.py *args`` with ``env``; returns a Runner (call ``.wait()``)."""

    def start(*args: str, env: Mapping[str, str], script: Path = ENTRYPOINT) -> Runner:
        return launch(*args, env=env, workdir=tmp_path, script=script)

    return start


@pytest.fixture
def run_runner(start_runner: Any) -> Any:
    """Run ``entrypoint.py *args`` to completion; returns a checked RunResult."""

    def run(*args: str, env: Mapping[str, str], timeout: float = 120) -> RunResult:
        result: RunResult = start_runner(*args, env=env).wait(timeout)
        return result

    return run


@pytest.fixture
def run_status_json(start_runner: Any) -> Any:
    """Run ``entrypoint.py status --json``: (checked RunResult, the one document on stdout).

    Its stdout is a single JSON document, not log lines (those go to stderr, checked here).
    """

    def run(*args: str, env: Mapping[str, str]) -> tuple[RunResult, dict[str, Any]]:
        result: RunResult = start_runner("status", "--json", *args, env=env).wait(expect_json=False)
        assert result.stdout.count("\n") == 1, f"not one document:\n{result}"
        for line in result.stderr.splitlines():
            result.events.append(json.loads(line))
        return result, json.loads(result.stdout)

    return run


@pytest.fixture
def run_healthcheck(start_runner: Any) -> Any:
    """Run healthcheck.py; its output is one plain line, checked for secrets."""

    def run(*args: str, env: Mapping[str, str]) -> RunResult:
        runner = start_runner(*args, env=env, script=HEALTHCHECK)
        result: RunResult = runner.wait(60, expect_json=False)
        return result

    return run


# --- TLS certificates, made with the openssl command -------------------------------------------

CERT_DAYS = "2"
EC_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def signed_certificate(folder: Path, name: str, subject: str, extensions: str) -> None:
    """``name``.key and ``name``.crt in ``folder``, signed by its ca.crt/ca.key."""
    openssl("req", *EC_KEY, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subject,
            cwd=folder)  # fmt: skip
    (folder / f"{name}.ext").write_text(extensions)
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", CERT_DAYS, "-out", f"{name}.crt",
            "-extfile", f"{name}.ext", cwd=folder)  # fmt: skip
    (folder / f"{name}.key").chmod(0o600)  # libpq and PostgreSQL refuse keys others can read


def make_certificates(folder: Path, server_names: Sequence[str]) -> Path:
    """In ``folder``: ca (trusted), other-ca (not), server (for ``server_names`` only, e.g.
    ``DNS:localhost``, ``IP:127.0.0.1``) and client (CN postgres), all signed by ca."""
    folder.mkdir(parents=True, exist_ok=True)
    for ca in ("ca", "other-ca"):
        openssl("req", "-x509", *EC_KEY, "-keyout", f"{ca}.key", "-out", f"{ca}.crt",
                "-days", CERT_DAYS, "-subj", f"/CN=test {ca}", cwd=folder)  # fmt: skip
    names = ",".join(server_names)
    signed_certificate(folder, "server", "/CN=postgres-server",
                       f"subjectAltName={names}\nextendedKeyUsage=serverAuth\n")  # fmt: skip
    signed_certificate(folder, "client", "/CN=postgres", "extendedKeyUsage=clientAuth\n")
    return folder


# dbmate, the real one: the Go binary of the npm package, installed once into bench/.peers
# (by .ci/run, or by bench/bench.py). REQUIRE_PEERS=1 (CI) makes its absence a failure.
DBMATE = REPO / "bench" / ".peers" / "node_modules" / "@dbmate" / "linux-x64" / "bin" / "dbmate"


@pytest.fixture(scope="session")
def dbmate_binary() -> Path:
    if not DBMATE.exists():
        reason = (
            f"dbmate not installed in {DBMATE.relative_to(REPO)}: "
            "npm install --prefix bench/.peers dbmate@2.36.0"
        )
        if os.environ.get("REQUIRE_PEERS") == "1":
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    return DBMATE


@pytest.fixture
def dbmate(dbmate_binary: Path, tmp_path: Path) -> Any:
    """Run ``dbmate *args`` (up, rollback, ...) on a database with a migrations folder."""

    def run(database: Database, folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
        server = database.server
        url = (
            f"postgres://postgres:{server.password}@127.0.0.1:{server.port}/{database.name}"
            "?sslmode=disable"
        )
        env = {"PATH": os.environ.get("PATH", ""), "DATABASE_URL": url}
        argv = [str(dbmate_binary), "--no-dump-schema", "--migrations-dir", str(folder), *args]
        return subprocess.run(argv, env=env, cwd=tmp_path, capture_output=True, text=True)

    return run


# --- mutation testing (scripts/mutation.sh) -----------------------------------------------------

# mutmut runs each mutant's tests as a list of node ids, one argument each: for a lexer
# function, 590 of them, and pytest resolves every argument on its own (1.3 s, four times
# the tests' own time when the first one kills the mutant). Under mutmut (its worker sets
# MUTANT_UNDER_TEST) the files are collected once and the other tests deselected instead.
MUTANT_UNDER_TEST = "MUTANT_UNDER_TEST"
WANTED_TESTS = pytest.StashKey[frozenset[str]]()


def pytest_configure(config: pytest.Config) -> None:
    node_ids = [arg for arg in config.args if "::" in arg]
    if not os.environ.get(MUTANT_UNDER_TEST) or not node_ids:
        return
    config.stash[WANTED_TESTS] = frozenset(node_ids)
    config.args[:] = list(dict.fromkeys(arg.split("::", 1)[0] for arg in config.args))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    wanted = config.stash.get(WANTED_TESTS, None)
    if wanted is None:
        return
    deselected = [item for item in items if item.nodeid not in wanted]
    items[:] = [item for item in items if item.nodeid in wanted]
    config.hook.pytest_deselected(items=deselected)
