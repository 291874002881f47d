"""The SQL corpus (tests/corpus) gives the same schema through the runner as through psql -f.

Database A is migrated by entrypoint.py, database B by ``psql -v ON_ERROR_STOP=1 -X -q -f``
one file at a time, and ``pg_dump --schema-only`` of both must be identical. A third test
applies the corpus with migrator.files.sql alone (split, then one transaction or autocommit as
transaction_mode decides) to check the splitter against the server, runner aside.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from migrator.files.sql import TransactionMode, split_statements, transaction_mode
from tests.conftest import Database

CORPUS_DIR = Path(__file__).resolve().parent.parent / "corpus"
MIGRATION_NAME = re.compile(r"^(\d+)_.+\.sql$")
MINIMUM_CORPUS_SIZE = 40
HISTORY_TABLE = "schema_migrations"
# pg_dump 18 (and 17.6+) brackets the dump with \restrict KEY / \unrestrict KEY, KEY random.
RESTRICT_LINE = re.compile(r"^\\(?:un)?restrict .*$", re.MULTILINE)
TOOL_TIMEOUT = 120


def corpus_files() -> list[Path]:
    files = [path for path in CORPUS_DIR.iterdir() if MIGRATION_NAME.match(path.name)]
    return sorted(files, key=lambda path: int(path.name.split("_", 1)[0]))


def tool_env(server: Any) -> dict[str, str]:
    """libpq variables for the client tools; the password travels in PGPASSWORD, not argv."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    return {
        **base,
        "PGHOST": "127.0.0.1",
        "PGPORT": str(server.port),
        "PGUSER": "postgres",
        "PGPASSWORD": server.password,
    }


def psql_apply(database: Database, files: list[Path]) -> None:
    psql = database.server.bin_dir / "psql"
    for path in files:
        result = subprocess.run(
            [str(psql), "-v", "ON_ERROR_STOP=1", "-X", "-q", "-d", database.name, "-f", str(path)],
            env=tool_env(database.server),
            capture_output=True,
            text=True,
            timeout=TOOL_TIMEOUT,
        )
        assert result.returncode == 0, f"psql failed on {path.name}:\n{result.stderr}"


def schema_dump(database: Database) -> str:
    pg_dump = database.server.bin_dir / "pg_dump"
    result = subprocess.run(
        [
            str(pg_dump),
            "--schema-only",
            "--no-owner",
            "--no-privileges",
            f"--exclude-table={HISTORY_TABLE}",
            f"--exclude-table={HISTORY_TABLE}_lock",
            database.name,
        ],
        env=tool_env(database.server),
        capture_output=True,
        text=True,
        timeout=TOOL_TIMEOUT,
        check=True,
    )
    return RESTRICT_LINE.sub("", result.stdout)


@pytest.fixture(scope="module")
def files() -> list[Path]:
    found = corpus_files()
    assert len(found) >= MINIMUM_CORPUS_SIZE
    return found


def test_runner_builds_the_same_schema_as_psql(
    database: Database, other_database: Database, run_runner: Any, files: list[Path]
) -> None:
    result = run_runner("--migrations-dir", str(CORPUS_DIR), env=database.env())
    assert result.returncode == 0, result
    psql_apply(other_database, files)

    runner_schema, psql_schema = schema_dump(database), schema_dump(other_database)
    assert "CREATE TABLE public.books" in psql_schema
    assert runner_schema == psql_schema


def test_runner_records_every_file_once_and_a_second_run_is_a_no_op(
    database: Database, run_runner: Any, files: list[Path]
) -> None:
    first = run_runner("--migrations-dir", str(CORPUS_DIR), env=database.env())
    assert first.returncode == 0, first
    rows = database.query(f"SELECT version, checksum, applied_at FROM {HISTORY_TABLE}")
    expected = {path.stem: hashlib.sha256(path.read_bytes()).hexdigest() for path in files}
    assert sorted(version for version, _, _ in rows) == sorted(expected)  # once each
    assert {version: checksum for version, checksum, _ in rows} == expected

    second = run_runner("--migrations-dir", str(CORPUS_DIR), env=database.env())
    assert second.returncode == 0, second
    assert second.events_named("migration_applied") == []
    assert database.query(f"SELECT version, checksum, applied_at FROM {HISTORY_TABLE}") == rows


def test_runner_chooses_the_expected_transaction_modes(database: Database, run_runner: Any) -> None:
    result = run_runner("--migrations-dir", str(CORPUS_DIR), env=database.env())
    assert result.returncode == 0, result
    modes = {e["version"]: e["mode"] for e in result.events_named("migration_started")}
    no_transaction = {version for version, mode in modes.items() if mode == "no-transaction"}
    assert no_transaction == {
        "014_index_orders_placed_at",
        "015_backfill_book_slugs",
        "016_order_payments",
        "029_customers_created_at_covering_idx",
        "036_vacuum_after_backfill",
    }


def apply_with_splitter(database: Database, files: list[Path]) -> None:
    """Apply each file's split statements: in one transaction unless the file says otherwise."""
    with database.connect() as conn:
        for path in files:
            text = path.read_text(encoding="utf-8")
            statements = split_statements(text)
            if transaction_mode(text, statements).mode is TransactionMode.NO_TRANSACTION:
                for statement in statements:
                    conn.execute(statement.text, prepare=False)
                continue
            with conn.transaction():
                for statement in statements:
                    conn.execute(statement.text, prepare=False)


def test_split_statements_rebuild_the_same_schema_as_psql(
    database: Database, other_database: Database, files: list[Path]
) -> None:
    apply_with_splitter(database, files)
    psql_apply(other_database, files)
    splitter_schema, psql_schema = schema_dump(database), schema_dump(other_database)
    assert "CREATE TABLE public.books" in psql_schema
    assert splitter_schema == psql_schema
