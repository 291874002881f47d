"""All connection slots taken (53300) for a while: the runner retries each of its connections and succeeds."""

from __future__ import annotations

import secrets

import psycopg
import pytest

from tests.conftest import remember_secret

MAX_CONNECTIONS = 8  # superuser_reserved_connections (3) of them stay free for our own queries
MIGRATOR_ROLE = "crowded_migrator"  # not a superuser: superusers would get the reserved slots
FILES = {
    "001_accounts.sql": "CREATE TABLE accounts (id bigint PRIMARY KEY);",
    "002_sessions.sql": "CREATE TABLE sessions (id bigint PRIMARY KEY);",
}


@pytest.fixture(scope="module")
def crowded_server(own_server):
    with psycopg.connect(**own_server.conninfo(), autocommit=True) as conn:
        conn.execute(f"ALTER SYSTEM SET max_connections = {MAX_CONNECTIONS}")
    own_server.stop()
    own_server.start()
    return own_server


@pytest.fixture
def role_password(crowded_server, own_database) -> str:
    password = remember_secret(secrets.token_urlsafe(18))
    with own_database.connect() as conn:
        conn.execute(f"CREATE ROLE {MIGRATOR_ROLE} LOGIN PASSWORD '{password}'")
        conn.execute(f'ALTER DATABASE "{own_database.name}" OWNER TO {MIGRATOR_ROLE}')
        conn.execute(f"ALTER SCHEMA public OWNER TO {MIGRATOR_ROLE}")
    yield password
    with psycopg.connect(**crowded_server.conninfo(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{own_database.name}" WITH (FORCE)')
        conn.execute(f"DROP ROLE {MIGRATOR_ROLE}")


def take_every_slot(database, password: str) -> list[psycopg.Connection]:
    """Connect as the migration role until the server refuses with 53300."""
    taken = []
    while True:
        try:
            taken.append(database.connect(user=MIGRATOR_ROLE, password=password))
        except psycopg.OperationalError as error:
            # libpq reports a refused connection without its SQLSTATE (53300): the text says it.
            if "connection slots are reserved" not in str(error):
                raise
            return taken


def test_the_runner_waits_for_a_free_slot_for_each_of_its_connections(
    own_database, role_password, start_watched, migrations
):
    migrations.add(FILES)
    env = own_database.env(
        MIGRATIONS_DIR=str(migrations.path),
        DB_USER=MIGRATOR_ROLE,
        DB_PASSWORD=role_password,
        DB_WAIT_TIMEOUT="30",
    )
    hogs = take_every_slot(own_database, role_password)
    assert len(hogs) >= 2
    runner = start_watched(env=env)
    try:
        refused = runner.wait_for(lambda e: e["event"] == "database_not_ready")
        assert refused is not None
        hogs.pop().close()  # one slot: the lock's connection gets it
        runner.wait_for(lambda e: e["event"] == "database_ready")
        # The second connection (the one that applies) finds the server full again.
        second = runner.wait_for(lambda e: e["event"] == "database_not_ready")
        assert second is not None and second["attempt"] == 1
        hogs.pop().close()
        result = runner.finish()
    finally:
        for hog in hogs:
            hog.close()
    assert result.returncode == 0, result
    reasons = [str(e["reason"]) for e in result.events_named("database_not_ready")]
    assert all("slots" in r or "too many" in r for r in reasons), reasons
    assert own_database.query("SELECT version FROM schema_migrations ORDER BY version") == [
        ("001_accounts",), ("002_sessions",)
    ]  # fmt: skip
