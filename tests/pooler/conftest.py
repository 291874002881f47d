"""Fixtures of the pooler suite: PgBouncer in transaction and in session pooling before the session's server.

Each pool has fewer server connections (``POOL_SIZE``) than the tests start runners, so
server sessions really are shared between clients.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest

from tests.conftest import Database, MigrationsFolder, PgServer
from tests.faults.conftest import (
    Snapshot,
    clean_run,
    start_watched,  # noqa: F401  (the fault suite's fixture)
)
from tests.faults.migration_sets import many_files
from tests.pooler.pgbouncer import PGBOUNCER, PgBouncer

POOL_SIZE = 3
POOL_MODES = ("transaction", "session")


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> MigrationsFolder:
    """34 files: tables, views, functions, seeds, CREATE INDEX CONCURRENTLY, VACUUM."""
    return MigrationsFolder(tmp_path_factory.mktemp("pooled") / "migrations").add(many_files())


@pytest.fixture(scope="module")
def reference(
    pg_server: PgServer, files: MigrationsFolder, tmp_path_factory: pytest.TempPathFactory
) -> Snapshot:
    """The schema and history of ``files`` applied by one runner on a direct connection."""
    return clean_run(pg_server, files, tmp_path_factory.mktemp("reference"))


def require_pgbouncer() -> None:
    """Skip, saying why, where PgBouncer is not installed; in CI (which installs it) fail."""
    if PGBOUNCER.exists():
        return
    message = f"PgBouncer not found at {PGBOUNCER} (apt-get install pgbouncer, or set PGBOUNCER)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def running_pooler(pg_server: PgServer, mode: str) -> Iterator[PgBouncer]:
    require_pgbouncer()
    bouncer = PgBouncer.start(pg_server, mode, POOL_SIZE)
    yield bouncer
    bouncer.stop()


@pytest.fixture(scope="session")
def transaction_pooler(pg_server: PgServer) -> Iterator[PgBouncer]:
    yield from running_pooler(pg_server, "transaction")


@pytest.fixture(scope="session")
def session_pooler(pg_server: PgServer) -> Iterator[PgBouncer]:
    yield from running_pooler(pg_server, "session")


@dataclass(frozen=True)
class Route:
    """How a runner reaches the server: directly, or through one of the PgBouncers."""

    name: str
    port: int

    def env(self, database: Database, **extra: str) -> dict[str, str]:
        return database.env(DB_PORT=str(self.port), **extra)

    def connect(self, database: Database, **overrides: Any) -> psycopg.Connection[Any]:
        """A client of this route (the superuser), as an application would connect."""
        return database.connect(port=self.port, prepare_threshold=None, **overrides)


def route_to(request: pytest.FixtureRequest, name: str) -> Route:
    server: PgServer = request.getfixturevalue("pg_server")
    if name == "direct":
        return Route(name, server.port)
    bouncer: PgBouncer = request.getfixturevalue(f"{name}_pooler")
    # Other suites' bootstraps set the superuser's password again (a new SCRAM salt).
    bouncer.refresh(server)
    return Route(name, bouncer.port)


@pytest.fixture(params=("direct", *POOL_MODES))
def route(request: pytest.FixtureRequest) -> Route:
    """Each test runs directly, through transaction pooling and through session pooling."""
    return route_to(request, request.param)


@pytest.fixture(params=POOL_MODES)
def pooled(request: pytest.FixtureRequest) -> Route:
    """Through PgBouncer only, in both pooling modes."""
    return route_to(request, request.param)
