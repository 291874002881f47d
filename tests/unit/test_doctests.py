"""Every ``>>>`` example in the package's docstrings runs, and shows what the code returns.

An example that needs a server, a connection or a configuration it cannot build is written as
prose (a literal block after "For example::"), so that doctest does not collect it: what is
left here runs, in CI, against the code as it is.
"""

from __future__ import annotations

import doctest
import functools
import importlib
import pkgutil
from pathlib import Path

import pytest

import migrator

REPO = Path(__file__).resolve().parents[2]
OPTIONS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
# Fewer examples than this across the package: the finder collected (next to) nothing.
MIN_EXAMPLES = 20
MODULES = sorted(
    info.name for info in pkgutil.walk_packages(migrator.__path__, f"{migrator.__name__}.")
)


@functools.cache
def run_examples(name: str) -> tuple[doctest.TestResults, str]:
    """The results of the examples of module ``name``, and the report of those that failed."""
    module = importlib.import_module(name)
    runner = doctest.DocTestRunner(optionflags=OPTIONS)
    report: list[str] = []
    for test in doctest.DocTestFinder().find(module, name):
        runner.run(test, out=report.append)
    return runner.summarize(verbose=False), "".join(report)


@pytest.fixture(autouse=True)
def in_repository(monkeypatch: pytest.MonkeyPatch) -> None:
    # The examples read migrations/ by its path relative to the repository.
    monkeypatch.chdir(REPO)


@pytest.mark.parametrize("name", MODULES)
def test_examples_pass(name: str) -> None:
    results, report = run_examples(name)
    assert results.failed == 0, report


def test_examples_are_collected() -> None:
    attempted = sum(run_examples(name)[0].attempted for name in MODULES)
    assert attempted >= MIN_EXAMPLES, f"only {attempted} doctest examples ran in {MODULES}"
