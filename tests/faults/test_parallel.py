"""Ten runners at once, twenty rounds, a fresh database each round: every file applied exactly once, every runner exits 0."""

from __future__ import annotations

import uuid

from tests.conftest import Database, create_database, drop_database

RUNNERS = 10
ROUNDS = 20
FILES = {
    "000_init_database.sql": "CREATE EXTENSION IF NOT EXISTS citext;",
    "001_counter.sql": "CREATE TABLE applied_counter (version text);\n"
    "INSERT INTO applied_counter VALUES ('001');",
    "002_accounts.sql": "CREATE TABLE accounts (id int PRIMARY KEY, email citext);\n"
    "INSERT INTO applied_counter VALUES ('002');",
    "003_index.sql": "CREATE INDEX CONCURRENTLY IF NOT EXISTS accounts_email ON accounts (email);",
    "004_more.sql": "INSERT INTO applied_counter VALUES ('004');",
}
EXPECTED_HISTORY = [(name.removesuffix(".sql"),) for name in FILES]


def _round_database(pg_server, round_number: int) -> Database:
    """Even rounds: the runners' bootstrap creates the database (they race on CREATE DATABASE)."""
    if round_number % 2 == 0:
        return Database(pg_server, f"t_{uuid.uuid4().hex[:12]}")
    return create_database(pg_server)


def test_ten_runners_twenty_rounds(pg_server, start_runner, migrations):
    migrations.add(FILES)
    for round_number in range(ROUNDS):
        database = _round_database(pg_server, round_number)
        env = database.env(MIGRATIONS_DIR=str(migrations.path), DB_WAIT_TIMEOUT="30",
                           DB_ADMIN_USER="postgres", DB_ADMIN_PASSWORD=pg_server.password)  # fmt: skip
        try:
            runners = [start_runner(env=env) for _ in range(RUNNERS)]
            results = [runner.wait(120) for runner in runners]
            context = f"round {round_number}\n" + "\n".join(map(str, results))
            assert [r.returncode for r in results] == [0] * RUNNERS, context
            assert database.query(
                "SELECT version, count(*) FROM applied_counter GROUP BY version ORDER BY version"
            ) == [("001", 1), ("002", 1), ("004", 1)], context
            assert database.query("SELECT version FROM schema_migrations ORDER BY version") == (
                EXPECTED_HISTORY
            ), context
            appliers = [r for r in results if r.events_named("migrations_complete")[0]["applied"]]
            assert len(appliers) == 1, context
        finally:
            drop_database(database)
