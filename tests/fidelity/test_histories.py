"""Real migration histories of public projects (tests/fidelity/histories, vendored with their
licences) applied by psql file by file and by the runner in one run: the same pg_dump, schema
and data, without the runner's history table.

psql cannot read the tools' up/down markers, so it is given each file's up part as the tool
would send it. That part is cut here by a few lines of test code that follow each tool's
documented rule, not by the runner's parser, so a parsing defect of the runner shows as a
difference instead of being copied to both sides.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.fidelity.compare import dump_difference
from tests.fidelity.conftest import target

HISTORIES = Path(__file__).resolve().parent / "histories"

# goose: annotations are case-insensitive comments; the Up section runs to ``+goose Down``.
GOOSE_ANNOTATION = re.compile(r"^\s*--\s*\+goose\s+(\w+)", re.IGNORECASE)
# dbmate: ``-- migrate:up`` and ``-- migrate:down`` start a line.
DBMATE_MARKER = re.compile(r"^--\s*migrate:(up|down)\b")


def goose_up(text: str) -> str:
    """The lines of the Up section. A StatementBegin/End block goes as one statement in goose;
    psql splits it at its semicolons, which leaves the same objects when it succeeds."""
    kept: list[str] = []
    section = ""
    for line in text.splitlines():
        annotation = GOOSE_ANNOTATION.match(line)
        if annotation:
            name = annotation.group(1).lower()
            section = name if name in ("up", "down") else section
        elif section == "up":
            kept.append(line)
    return "\n".join(kept) + "\n"


def dbmate_up(text: str) -> str:
    """The lines between ``-- migrate:up`` and ``-- migrate:down``."""
    kept: list[str] = []
    section = ""
    for line in text.splitlines():
        marker = DBMATE_MARKER.match(line)
        if marker:
            section = marker.group(1)
        elif section == "up":
            kept.append(line)
    return "\n".join(kept) + "\n"


def golang_migrate_up(text: str) -> str:
    """A ``.up.sql`` file runs whole."""
    return text


# project folder -> (the files that go up, in order; what psql is given of each)
SHAPES: dict[str, tuple[str, Callable[[str], str]]] = {
    "goose": ("*.sql", goose_up),
    "golang-migrate": ("*.up.sql", golang_migrate_up),
    "dbmate": ("*.sql", dbmate_up),
}


def up_files(project: str, out: Path) -> list[Path]:
    """Each migration's up part written to ``out``, in version order."""
    pattern, cut = SHAPES[project]
    folder = HISTORIES / project / "migrations"
    sources = sorted(folder.glob(pattern), key=lambda path: int(path.name.split("_", 1)[0]))
    out.mkdir()
    written = []
    for source in sources:
        path = out / source.name
        path.write_text(cut(source.read_text()))
        written.append(path)
    return written


def test_the_up_parts_are_cut_as_each_tool_does() -> None:
    goose = "-- +goose NO TRANSACTION\n-- +goose up\nA;\n-- +goose StatementBegin\nB;\n" + (
        "-- +goose StatementEnd\n-- +goose Down\nC;\n"
    )
    assert goose_up(goose) == "A;\nB;\n"
    assert dbmate_up("-- migrate:up\nA;\n-- migrate:down\nB;\n") == "A;\n"


@pytest.mark.parametrize("project", sorted(SHAPES))
def test_a_real_history_gives_the_same_dump(
    project: str, database: Any, other_database: Any, run_runner: Any, tmp_path: Path
) -> None:
    psql = target(database).psql_files(up_files(project, tmp_path / "up"))
    assert psql.returncode == 0, psql.stderr
    folder = shutil.copytree(HISTORIES / project / "migrations", tmp_path / "migrations")
    result = run_runner(env=other_database.env(MIGRATIONS_DIR=str(folder)))
    assert result.returncode == 0, result
    expected = target(database).dump()
    assert "CREATE TABLE" in expected  # the histories did build something
    difference = dump_difference(expected, target(other_database).dump())
    assert difference == "", difference
