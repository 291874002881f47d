"""Unit tests for migrator.apply.memory: the cgroup limit, and refusing a file that cannot fit."""

from __future__ import annotations

from pathlib import Path

import pytest

from migrator.apply.memory import check_memory, memory_limit, resident_bytes
from migrator.errors import EX_DATAERR, MemoryLimitError
from tests.conftest import write_migration_set

MIB = 1024 * 1024


def limit_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "memory.max"
    path.write_text(text + "\n")
    return path


def test_a_v2_limit_is_read(tmp_path: Path) -> None:
    assert memory_limit([limit_file(tmp_path, "268435456")]) == 256 * MIB


@pytest.mark.parametrize("text", ["max", "9223372036854771712"])
def test_no_limit(tmp_path: Path, text: str) -> None:
    assert memory_limit([limit_file(tmp_path, text)]) is None


def test_no_cgroup_file_means_no_limit(tmp_path: Path) -> None:
    assert memory_limit([tmp_path / "absent", tmp_path / "absent-too"]) is None


def test_the_first_file_present_wins(tmp_path: Path) -> None:
    assert memory_limit([tmp_path / "absent", limit_file(tmp_path, "1000")]) == 1000


def test_this_process_has_a_resident_size() -> None:
    assert resident_bytes() > 1 * MIB


@pytest.fixture
def pending(tmp_path: Path) -> list:
    folder = tmp_path / "migrations"
    folder.mkdir()
    found = write_migration_set(folder, **{"001_small": "SELECT 1;\n",
                                           "002_big": "SELECT 2;\n" + "-- x\n" * 200_000})  # fmt: skip
    return list(found.versioned)


def test_a_file_that_cannot_fit_is_refused_with_65(pending: list) -> None:
    with pytest.raises(MemoryLimitError) as caught:
        check_memory(pending, limit=4 * 1_000_000, resident=1_000_000)
    error = caught.value
    assert error.exit_code == EX_DATAERR == 65
    assert "002_big.sql" in error.message
    assert "memory limit of 4 MB" in error.message
    assert "nothing was applied" in error.message


def test_a_file_that_fits_passes(pending: list) -> None:
    check_memory(pending, limit=64 * MIB, resident=10 * MIB)
    check_memory(pending, limit=None)  # unlimited (or no cgroup): nothing to check
    check_memory([], limit=1, resident=1)


def test_one_transaction_needs_room_for_every_file(pending: list) -> None:
    big = len(pending[1].sql)
    limit = int(big * 4.5) + 1_000_000 + 20  # room for the big file alone, not both
    check_memory(pending, limit=limit, resident=1_000_000)
    with pytest.raises(MemoryLimitError):
        check_memory(pending, single_transaction=True, limit=limit, resident=1_000_000)


def test_a_small_file_and_limit_are_told_in_kb_not_0_mb(tmp_path: Path) -> None:
    """A file, need or limit below a MB is named in kB (or bytes), never as "0 MB"."""
    folder = tmp_path / "migrations"
    folder.mkdir()
    found = write_migration_set(folder, **{"001_seed": "SELECT 1;\n" + "-- x\n" * 80_000})
    with pytest.raises(MemoryLimitError) as caught:
        check_memory(list(found.versioned), limit=900_000, resident=100_000)
    message = caught.value.message
    assert "0 MB" not in message, message
    assert "001_seed.sql (400 kB) needs about 2 MB" in message, message
    assert "memory limit of 900 kB" in message and "at least 2 MB" in message, message
