"""Fixtures of the fidelity suite: the same files applied with psql and with the runner."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.fidelity.compare import Target, dump_difference


def target(database: Any) -> Target:
    return Target(database.server.bin_dir, database.server.port, database.server.password,
                  database.name)  # fmt: skip


def migration_paths(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.sql"), key=lambda path: int(path.name.split("_", 1)[0]))


@pytest.fixture
def apply_both(database, other_database, migrations, run_runner) -> Any:
    """Apply ``files`` with psql (``database``) and the runner (``other_database``); both must
    succeed and leave the same dump. Returns the runner's result."""

    def apply(files: dict[str, str]) -> Any:
        migrations.add(files)
        psql = target(database).psql_files(migration_paths(migrations.path))
        assert psql.returncode == 0, psql.stderr
        result = run_runner(env=other_database.env(MIGRATIONS_DIR=str(migrations.path)))
        assert result.returncode == 0, result
        difference = dump_difference(target(database).dump(), target(other_database).dump())
        assert difference == "", difference
        return result

    return apply
