"""Unit tests for migrator.files.prefetch: the read-ahead thread decides the files' modes in order."""

from __future__ import annotations

from pathlib import Path

from migrator.files.formats import read_migration
from migrator.files.prefetch import THREAD_NAME, read_ahead
from migrator.files.sql import TransactionMode

REPO = Path(__file__).resolve().parents[3]


def test_read_ahead_leaves_every_decision_made_and_equal_to_the_applier_s(tmp_path: Path) -> None:
    (tmp_path / "002_index.sql").write_text("CREATE INDEX CONCURRENTLY i ON t (a);\n")
    (tmp_path / "003_plain.sql").write_text("CREATE TABLE t2 (a int);\n")
    files = [
        read_migration(REPO / "migrations" / "001_initial_production_schema.sql"),
        read_migration(tmp_path / "002_index.sql"),
        read_migration(tmp_path / "003_plain.sql"),
    ]

    thread = read_ahead(files)
    assert thread.name == THREAD_NAME and thread.daemon
    thread.join(timeout=30)

    assert not thread.is_alive()
    assert all("mode_decision" in vars(m) for m in files)  # cached: the applier reads these
    modes = [m.mode_decision.mode for m in files]
    assert modes == [
        TransactionMode.TRANSACTION,
        TransactionMode.NO_TRANSACTION,
        TransactionMode.TRANSACTION,
    ]
    # The shipped schema mentions BEGIN/END (plpgsql), so it was lexed, in the thread.
    assert "statements" in vars(files[0]) and len(files[0].statements) > 100
