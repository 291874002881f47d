"""Fixtures of the fault-injection suite: private servers, runs killed at a chosen moment, clean-run references.

Every runner started here goes through ``tests.conftest.launch`` and, killed or not, its
output through ``check_output`` (JSON lines, no known password anywhere).
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import (
    Database,
    MigrationsFolder,
    PgServer,
    Runner,
    RunResult,
    check_output,
    create_database,
    drop_database,
    fresh_database,
    launch,
    running_server,
)

APPLICATION_NAME = "auth-service-migrator"
SETTLE_TIMEOUT = 15.0

Event = dict[str, Any]


@dataclass(frozen=True)
class Snapshot:
    """What a user can compare after a run: the schema as pg_dump prints it, and the history."""

    schema: str
    history: list[tuple[str, str]]  # (version, checksum): timestamps and durations differ

    @classmethod
    def of(cls, database: Database) -> Snapshot:
        history = database.query("SELECT version, checksum FROM schema_migrations ORDER BY version")
        return cls(database.pg_dump("--schema-only"), [(v, c) for v, c in history])


def clean_run(server: PgServer, files: MigrationsFolder, workdir: Path) -> Snapshot:
    """The reference: the same files applied without interference to a new database."""
    database = create_database(server)
    try:
        result = launch(env=database.env(MIGRATIONS_DIR=str(files.path)), workdir=workdir).wait()
        assert result.returncode == 0, result
        return Snapshot.of(database)
    finally:
        drop_database(database)


def invalid_indexes(database: Database) -> list[str]:
    rows = database.query("SELECT indexrelid::regclass::text FROM pg_index WHERE NOT indisvalid")
    return [name for (name,) in rows]


def assert_converged(database: Database, reference: Snapshot, context: str) -> None:
    """Schema and history equal to a clean run, and no index left invalid."""
    assert invalid_indexes(database) == [], context
    snapshot = Snapshot.of(database)
    assert snapshot.history == reference.history, context
    assert snapshot.schema == reference.schema, context


def runner_backends(database: Database) -> int:
    """Backends of any runner on this database's server (other than ours)."""
    return int(
        database.scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
            APPLICATION_NAME,
        )
    )


def wait_until(condition: Callable[[], bool], timeout: float = SETTLE_TIMEOUT) -> float:
    """Poll ``condition``; returns the seconds it took, fails after ``timeout``."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(0.02)
    return time.monotonic() - start


class Watched:
    """A started runner whose stdout is read line by line, so a test can act on its events."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self.lines: list[str] = []
        self.started = time.monotonic()

    def wait_for(self, predicate: Callable[[Event], bool], timeout: float = 60) -> Event | None:
        """Read events until one matches; None when the runner ended first."""
        assert self.runner.process.stdout is not None
        deadline = time.monotonic() + timeout
        for line in self.runner.process.stdout:
            self.lines.append(line)
            event = _event(line)
            if event is not None and predicate(event):
                return event
            assert time.monotonic() < deadline, "the awaited event never came"
        return None

    def signal(self, signum: int) -> float:
        """Send ``signum``; returns the monotonic time it was sent."""
        self.runner.process.send_signal(signum)
        return time.monotonic()

    def finish(self, timeout: float = 60, killed: bool = False) -> RunResult:
        """Collect the rest of the output and run the central checks on all of it."""
        stdout, stderr = self.runner.process.communicate(timeout=timeout)
        log = self.runner.termination_log
        message = log.read_text() if log.exists() else ""
        result = RunResult(
            self.runner.args, self.runner.process.returncode, "".join(self.lines) + stdout,
            stderr, message,
        )  # fmt: skip
        # A process killed by -9 may die in the middle of a line: only secrets are checked then,
        # and the whole lines become its events.
        check_output(result, expect_json=not killed)
        if killed:
            result.events = [e for e in map(_event, result.stdout.splitlines()) if e is not None]
        return result

    def kill(self) -> RunResult:
        if self.runner.process.poll() is None:
            self.runner.process.send_signal(signal.SIGKILL)
        return self.finish(killed=True)


def _event(line: str) -> Event | None:
    try:
        event = json.loads(line)
    except json.JSONDecodeError:
        return None
    return event if isinstance(event, dict) else None


@pytest.fixture
def start_watched(tmp_path: Path) -> Callable[..., Watched]:
    def start(*args: str, env: dict[str, str]) -> Watched:
        return Watched(launch(*args, env=env, workdir=tmp_path))

    return start


@pytest.fixture(scope="module")
def own_server() -> Iterator[PgServer]:
    """A server of this module's own, to stop, restart or fill up without disturbing the others."""
    yield from running_server()


@pytest.fixture
def own_database(own_server: PgServer) -> Iterator[Database]:
    yield from fresh_database(own_server)
