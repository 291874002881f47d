"""PostgreSQL's own regression SQL (tests/fidelity/corpus, made standalone) applied with
``psql -v ON_ERROR_STOP=1 -f`` and with the runner: the same pg_dump, schema and data."""

from __future__ import annotations

from pathlib import Path

import pytest

from migrator.files.sql import read_script

CORPUS = Path(__file__).resolve().parent / "corpus"
CORPUS_FILES = sorted(CORPUS.glob("*.sql"))
MINIMUM_STATEMENTS = 300


def test_the_corpus_holds_a_few_hundred_statements() -> None:
    count = sum(len(read_script(path.read_text()).statements) for path in CORPUS_FILES)
    assert count >= MINIMUM_STATEMENTS


@pytest.mark.parametrize("path", CORPUS_FILES, ids=[path.stem for path in CORPUS_FILES])
def test_a_regression_file_gives_the_same_dump(apply_both, path: Path) -> None:
    apply_both({f"001_{path.stem}.sql": path.read_text()})
