"""A hot standby behind DB_HOST (a replica, or the old primary while a failover settles).

Commands that write need a server that takes writes: on a standby they wait like for a server
that is starting, and end with exit 69 and a line that says what the server is. The read-only
commands (status, wait, the health check) work on a standby. A standby promoted while the
runner waits (a failover) is migrated, through PgBouncer too. The standby is a real one:
pg_basebackup of a primary of this module's own, streaming from it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import psycopg
import pytest

from tests.conftest import Database, MigrationsFolder, PgServer, launch, running_server
from tests.pooler.conftest import require_pgbouncer
from tests.pooler.pgbouncer import PgBouncer

FIRST = {"001_tokens.sql": "CREATE TABLE tokens (id int PRIMARY KEY);"}
PENDING = {"002_scope.sql": "ALTER TABLE tokens ADD COLUMN scope text;"}
DATABASE = "auth"


@pytest.fixture(scope="module")
def primary(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PgServer]:
    """A primary whose database ``auth`` has 001 applied by the runner."""
    for server in running_server():
        with psycopg.connect(**server.conninfo(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {DATABASE}")
        folder = MigrationsFolder(tmp_path_factory.mktemp("first")).add(FIRST)
        env = Database(server, DATABASE).env(MIGRATIONS_DIR=str(folder.path))
        result = launch(env=env, workdir=folder.path.parent).wait()
        assert result.returncode == 0, result
        yield server


@pytest.fixture
def standby(primary: PgServer) -> Iterator[PgServer]:
    server = PgServer.standby_of(primary)
    server.start()
    yield server
    server.destroy()


def env_for(server: PgServer, migrations: MigrationsFolder, **extra: str) -> dict[str, str]:
    return Database(server, DATABASE).env(MIGRATIONS_DIR=str(migrations.path), **extra)


def test_a_standby_is_waited_for_then_refused_with_what_it_is(standby, migrations, run_runner):
    migrations.add({**FIRST, **PENDING})
    result = run_runner(env=env_for(standby, migrations, DB_WAIT_TIMEOUT="2"))
    assert result.returncode == 69, result
    refused = f'connection to server at "127.0.0.1", port {standby.port} failed: session is '
    refused += "read-only (a hot standby: in recovery)"
    assert result.events_named("database_not_ready")[0]["reason"] == refused
    [error] = result.events_named("database_unreachable")
    assert error["error"] == (
        f"PostgreSQL at 127.0.0.1:{standby.port} took no writes within 2s ({refused}); point "
        "DB_HOST at the primary, or list every node (DB_HOST=db-1,db-2) and the runner takes the "
        "one that accepts writes"
    )
    assert result.events_named("migration_started") == []


def test_bootstrap_on_a_standby_is_refused_the_same_way(standby, primary, migrations, run_runner):
    # It used to go on to its first write and fail there (exit 65 with the 000 we ship).
    migrations.add(FIRST)
    env = env_for(
        standby,
        migrations,
        DB_WAIT_TIMEOUT="2",
        DB_USER="auth_owner",
        DB_PASSWORD="owner-Standby-4f1c-a9e2",
        DB_ADMIN_USER="postgres",
        DB_ADMIN_PASSWORD=primary.password,
    )
    result = run_runner(env=env)
    assert result.returncode == 69, result
    assert "took no writes within 2s" in result.events_named("database_unreachable")[0]["error"]


def test_read_only_commands_work_on_a_standby(
    standby, migrations, run_runner, run_status_json, run_healthcheck
):
    migrations.add(FIRST)
    env = env_for(standby, migrations, DB_WAIT_TIMEOUT="2")
    result, document = run_status_json(env=env)
    assert result.returncode == 0, result
    assert (document["up_to_date"], document["pending"]) == (True, [])
    health = run_healthcheck(env=env)
    assert (health.returncode, health.stdout.strip()) == (
        0,
        f"ok: 1 migrations applied, database {DATABASE} is up to date",
    )
    waited = run_runner("wait", env=env)
    assert waited.returncode == 0, waited
    assert waited.events_named("migrations_ready")


def test_a_standby_promoted_while_the_runner_waits_is_migrated(standby, migrations, start_runner):
    migrations.add({**FIRST, **PENDING})
    runner = start_runner(env=env_for(standby, migrations, DB_WAIT_TIMEOUT="60"))
    time.sleep(2)  # the runner has started and been refused at least once
    standby.promote()
    result = runner.wait(60)
    assert result.returncode == 0, result
    assert result.events_named("database_not_ready"), "promoted before the runner asked"
    assert [e["version"] for e in result.events_named("migration_applied")] == ["002_scope"]
    history = Database(standby, DATABASE).query("SELECT version FROM schema_migrations ORDER BY 1")
    assert history == [("001_tokens",), ("002_scope",)]


def test_through_pgbouncer_a_promoted_standby_is_migrated(standby, migrations, start_runner):
    # libpq's own check (target_session_attrs=read-write) reads the in_hot_standby reported at
    # login, which PgBouncer replays from its cache: stale after the promotion, it refused the
    # new primary until the deadline. The runner asks the server itself.
    require_pgbouncer()
    bouncer = PgBouncer.start(standby, "transaction", 2)
    try:
        migrations.add({**FIRST, **PENDING})
        env = env_for(standby, migrations, DB_PORT=str(bouncer.port), DB_WAIT_TIMEOUT="60")
        runner = start_runner(env=env)
        time.sleep(2)
        standby.promote()
        result = runner.wait(60)
    finally:
        bouncer.stop()
    assert result.returncode == 0, result
    assert result.events_named("database_not_ready"), "promoted before the runner asked"
    assert [e["version"] for e in result.events_named("migration_applied")] == ["002_scope"]


def test_a_database_set_read_only_is_named_as_such(database, migrations, run_runner):
    with database.connect() as conn:
        conn.execute(f'ALTER DATABASE "{database.name}" SET default_transaction_read_only = on')
    migrations.add(FIRST)
    result = run_runner(env=database.env(MIGRATIONS_DIR=str(migrations.path), DB_WAIT_TIMEOUT="1"))
    assert result.returncode == 69, result
    assert (
        "session is read-only (default_transaction_read_only is on)); point DB_HOST"
        in (result.events_named("database_unreachable")[0]["error"])
    )
