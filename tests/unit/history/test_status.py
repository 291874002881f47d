"""Unit tests for migrator.history.status: the rows of the status command and what counts as a problem."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import structlog

from migrator.files.folder import MigrationSet
from migrator.history.status import (
    FUTURE_HINT,
    future_rows,
    problems,
    status_document,
    status_rows,
    warn_future,
)
from migrator.logs import configure_logging
from tests.conftest import applied_row, write_migration_set

APPLIED_AT = datetime(2024, 5, 1, 12, 30, tzinfo=UTC)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    path = tmp_path / "migrations"
    path.mkdir()
    return path


files = write_migration_set
row = applied_row


def states(rows: list[dict[str, object]]) -> dict[object, object]:
    return {r["version"]: r["state"] for r in rows}


def test_every_state(folder: Path) -> None:
    found = files(
        folder,
        **{
            "000_init_database": "SELECT 0;",
            "001_applied": "SELECT 1;",
            "002_changed": "SELECT 2;",
            "003_by_hand": "SELECT 3;",
            "004_pending": "SELECT 4;",
        },
    )
    by_version = found.by_version()
    history = {
        "000_init_database": row("000_init_database", "b" * 64),  # repeatable: not "changed"
        "001_applied": row("001_applied", by_version["001_applied"].checksum),
        "002_changed": row("002_changed", "c" * 64),
        "003_by_hand": row("003_by_hand", "checksum_here"),
        "001_missing": row("001_missing", "d" * 64),  # between files: lost
        "005_future": row("005_future", "e" * 64),  # above every file: a newer release
    }
    rows = status_rows(found, history)
    assert [r["version"] for r in rows] == [
        "000_init_database",
        "001_applied",
        "002_changed",
        "003_by_hand",
        "004_pending",
        "001_missing",
        "005_future",
    ]
    assert states(rows) == {
        "000_init_database": "applied",
        "001_applied": "applied",
        "002_changed": "changed",
        "003_by_hand": "applied-unverified",
        "004_pending": "pending",
        "001_missing": "missing",
        "005_future": "future",
    }
    assert [(r["version"], r["state"]) for r in problems(rows)] == [
        ("002_changed", "changed"),
        ("004_pending", "pending"),
        ("001_missing", "missing"),
    ]
    strict = problems(rows, tolerate_future=False)
    assert [r["version"] for r in strict] == ["002_changed", "004_pending", "001_missing",
                                              "005_future"]  # fmt: skip


def test_row_fields(folder: Path) -> None:
    found = files(
        folder, **{"001_a": "SELECT 1;", "002_b": "CREATE INDEX CONCURRENTLY i ON t (a);"}
    )
    checksum = found.by_version()["001_a"].checksum
    rows = status_rows(found, {"001_a": row("001_a", checksum)})
    first, second = rows
    assert first == {
        "version": "001_a",
        "state": "applied",
        "checksum": checksum,
        "recorded_checksum": checksum,
        "applied_at": APPLIED_AT.isoformat(),
        "mode": "transaction",
        "bootstrap": False,
        "phase": "pre",
    }
    assert second["state"] == "pending"
    assert second["recorded_checksum"] is None
    assert second["applied_at"] is None
    assert second["mode"] != "transaction"
    json.dumps(rows)  # the status command prints them as JSON


def test_changed_row_carries_both_checksums(folder: Path) -> None:
    found = files(folder, **{"001_a": "SELECT 1;"})
    (changed,) = status_rows(found, {"001_a": row("001_a", "c" * 64)})
    assert changed["recorded_checksum"] == "c" * 64
    assert changed["checksum"] == found.by_version()["001_a"].checksum


def test_up_to_date_has_no_problems(folder: Path) -> None:
    found = files(folder, **{"001_a": "SELECT 1;", "002_b": "SELECT 2;"})
    history = {m.version: row(m.version, m.checksum) for m in found.versioned}
    assert problems(status_rows(found, history)) == []


def test_unapplied_bootstrap_is_not_a_problem(folder: Path) -> None:
    """A deployment without admin credentials never runs 000: health must not depend on it."""
    found = files(folder, **{"000_init_database": "SELECT 0;", "001_a": "SELECT 1;"})
    history = {"001_a": row("001_a", found.by_version()["001_a"].checksum)}
    rows = status_rows(found, history)
    assert states(rows)["000_init_database"] == "pending"
    assert problems(rows) == []


def test_empty_folder_and_empty_history() -> None:
    assert status_rows(MigrationSet(None, ()), {}) == []
    assert problems([]) == []


def test_only_a_missing_row(folder: Path) -> None:
    rows = status_rows(files(folder), {"001_gone": row("001_gone", "a" * 64)})
    assert states(rows) == {"001_gone": "missing"}
    assert rows[0]["checksum"] is None
    assert len(problems(rows)) == 1


def test_future_rows_are_listed_and_the_document_says_up_to_date(folder: Path) -> None:
    """An older image on a newer database: up to date, the newer versions named."""
    found = files(folder, **{"001_a": "SELECT 1;", "002_b": "SELECT 2;"})
    history = {m.version: row(m.version, m.checksum) for m in found.versioned}
    history |= {"003_c": row("003_c", "c" * 64), "010_d": row("010_d", "d" * 64)}
    rows = status_rows(found, history)
    assert future_rows(rows) == ["003_c", "010_d"]
    document = status_document(rows, "auth_service", True, {"version": "0.1.0"})
    assert document["up_to_date"] is True
    assert document["future"] == ["003_c", "010_d"]
    assert document["pending"] == []
    json.dumps(document)
    strict = status_document(rows, "auth_service", False, {"version": "0.1.0"})
    assert strict["up_to_date"] is False
    assert [p["version"] for p in strict["problems"]] == ["003_c", "010_d"]


def test_a_future_row_needs_a_numbered_name(folder: Path) -> None:
    """Another tool's version without <number>_ cannot be ordered: it stays missing."""
    found = files(folder, **{"001_a": "SELECT 1;"})
    history = {"001_a": row("001_a", found.by_version()["001_a"].checksum),
               "add_users": row("add_users", "a" * 64)}  # fmt: skip
    assert states(status_rows(found, history))["add_users"] == "missing"


def test_a_missing_row_has_every_key_a_file_row_has(folder: Path) -> None:
    # status --json prints these rows: a missing version keeps the same keys, nulls where
    # only a file could tell.
    found = files(folder, **{"001_a": "SELECT 1;", "003_c": "SELECT 3;"})
    history = {m.version: row(m.version, m.checksum) for m in found.versioned}
    history["002_gone"] = row("002_gone", "a" * 64)  # below the newest file: missing, not future
    file_row, _, missing = status_rows(found, history)
    assert missing == {
        "version": "002_gone",
        "state": "missing",
        "checksum": None,
        "recorded_checksum": "a" * 64,
        "applied_at": APPLIED_AT.isoformat(),
        "mode": None,
        "bootstrap": False,
        "phase": None,
    }
    assert missing.keys() == file_row.keys()
    assert problems([file_row, missing]) == [missing]


def test_pending_row_of_a_no_transaction_file(folder: Path) -> None:
    found = files(folder, **{"001_a": "CREATE INDEX CONCURRENTLY i ON t (a);"})
    (pending,) = status_rows(found, {})
    assert pending == {
        "version": "001_a",
        "state": "pending",
        "checksum": found.by_version()["001_a"].checksum,
        "recorded_checksum": None,
        "applied_at": None,
        "mode": "no-transaction",
        "bootstrap": False,
        "phase": "pre",
    }
    assert problems([pending]) == [pending]


def test_the_status_document_in_full(folder: Path) -> None:
    """What `status --json` prints, key by key: scripts read it with jq."""
    found = files(folder, **{"001_a": "SELECT 1;", "002_b": "SELECT 2;", "004_d": "SELECT 4;"})
    history = {
        "001_a": row("001_a", found.by_version()["001_a"].checksum),
        "003_gone": row("003_gone", "c" * 64),
        "005_newer": row("005_newer", "e" * 64),
    }
    rows = status_rows(found, history)
    runner = {"version": "0.1.0", "revision": "abc123"}
    document = status_document(rows, "auth_db", False, runner)
    assert document == {
        "database": "auth_db",
        "phase": "all",
        "up_to_date": False,
        "pending": ["002_b", "004_d"],
        "future": ["005_newer"],
        "problems": [
            {"version": "002_b", "state": "pending"},
            {"version": "004_d", "state": "pending"},
            {"version": "003_gone", "state": "missing"},
            {"version": "005_newer", "state": "future"},
        ],
        "migrations": rows,
        "runner": runner,
    }
    tolerant = status_document(rows, "auth_db", True, runner)
    assert [problem["version"] for problem in tolerant["problems"]] == [
        "002_b",
        "004_d",
        "003_gone",
    ]


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """The runner's JSON log, into a buffer (configure_logging changes process-wide state)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    stream = io.StringIO()
    configure_logging("json", "info", stream=stream)
    yield stream
    structlog.reset_defaults()
    root.handlers, root.level = handlers, level


def test_one_warning_names_the_versions_a_newer_release_applied(json_log: io.StringIO) -> None:
    warn_future(iter(["005_newer", "006_newest"]))
    (event,) = [json.loads(line) for line in json_log.getvalue().splitlines()]
    del event["timestamp"]
    assert event == {
        "event": "future_migrations",
        "level": "warning",
        "logger": "status",
        "versions": ["005_newer", "006_newest"],
        "hint": FUTURE_HINT,
    }
    assert "FUTURE_MIGRATIONS=fail" in FUTURE_HINT


def test_no_warning_without_future_versions(json_log: io.StringIO) -> None:
    warn_future([])
    assert json_log.getvalue() == ""


# --- phases -------------------------------------------------------------------------------------


POST_FILES = {
    "001_a": "SELECT 1;",
    "002_contract": "-- migrate:phase post\nSELECT 2;",
    "003_b": "SELECT 3;",
}


def test_rows_carry_each_file_s_phase(folder: Path) -> None:
    found = files(folder, **POST_FILES)
    rows = status_rows(found, {"009_gone": row("009_gone", "a" * 64)})
    assert [(r["version"], r["phase"]) for r in rows] == [
        ("001_a", "pre"),
        ("002_contract", "post"),
        ("003_b", "pre"),
        ("009_gone", None),
    ]


def test_a_pending_post_file_is_no_problem_for_the_pre_phase(folder: Path) -> None:
    found = files(folder, **POST_FILES)
    history = {v: row(v, found.by_version()[v].checksum) for v in ("001_a", "003_b")}
    rows = status_rows(found, history)
    assert problems(rows, phase="pre") == []
    assert [r["version"] for r in problems(rows)] == ["002_contract"]  # all, the default
    assert [r["version"] for r in problems(rows, phase="all")] == ["002_contract"]
    assert [r["version"] for r in problems(rows, phase="post")] == ["002_contract"]


def test_a_pending_pre_file_is_no_problem_for_the_post_phase(folder: Path) -> None:
    found = files(folder, **POST_FILES)
    history = {v: row(v, found.by_version()[v].checksum) for v in ("001_a", "002_contract")}
    rows = status_rows(found, history)
    assert problems(rows, phase="post") == []
    assert [r["version"] for r in problems(rows, phase="pre")] == ["003_b"]


def test_a_changed_post_file_is_a_problem_in_every_phase(folder: Path) -> None:
    found = files(folder, **POST_FILES)
    history = {v: row(v, found.by_version()[v].checksum) for v in ("001_a", "003_b")}
    history["002_contract"] = row("002_contract", "c" * 64)
    rows = status_rows(found, history)
    for phase in ("pre", "post", "all"):
        assert [(r["version"], r["state"]) for r in problems(rows, phase=phase)] == [
            ("002_contract", "changed")
        ], phase


def test_the_document_judges_the_phase_it_names(folder: Path) -> None:
    found = files(folder, **POST_FILES)
    history = {v: row(v, found.by_version()[v].checksum) for v in ("001_a", "003_b")}
    rows = status_rows(found, history)
    pre = status_document(rows, "db", True, {}, "pre")
    assert (pre["phase"], pre["up_to_date"], pre["pending"]) == ("pre", True, ["002_contract"])
    every = status_document(rows, "db", True, {})
    assert (every["phase"], every["up_to_date"]) == ("all", False)
    assert every["problems"] == [{"version": "002_contract", "state": "pending"}]


def test_a_file_with_a_checkpoint_shows_its_backfill(folder: Path) -> None:
    found = files(folder, **{"001_a": "SELECT 1;", "002_backfill": "SELECT 2;"})
    backfill = {"checkpoint": "1500", "rows_done": 1500, "batches": 3, "updated_at": "t"}
    rows = status_rows(found, {}, {"002_backfill": backfill, "009_gone": {"checkpoint": "1"}})
    by_version = {r["version"]: r for r in rows}
    assert by_version["002_backfill"]["backfill"] == backfill
    assert by_version["002_backfill"]["state"] == "pending"
    assert "backfill" not in by_version["001_a"]
    assert [r["version"] for r in rows] == ["001_a", "002_backfill"]
    assert "backfill" not in status_rows(found, {})[1]
