"""Unit tests for migrator.version and the command line's --help and --version."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from migrator.cli.arguments import build_parser
from migrator.version import VERSION, git_revision, revision, version_line
from tests.conftest import ENTRYPOINT, REPO


def test_the_version_is_pyproject_s() -> None:
    with (REPO / "pyproject.toml").open("rb") as handle:
        assert tomllib.load(handle)["project"]["version"] == VERSION


def test_the_baked_revision_wins_over_git() -> None:
    assert revision({"MIGRATOR_REVISION": "0123456789ab"}) == "0123456789ab"


def test_a_checkout_reports_its_commit() -> None:
    if not (REPO / ".git").exists():
        pytest.skip("not run from a git checkout (an unpacked source tree has no commit)")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                          text=True, check=True).stdout.strip()  # fmt: skip
    assert git_revision(REPO) == head[:12]
    assert revision({}) == head[:12]


def test_without_git_or_variable_the_revision_is_unknown(tmp_path: Path) -> None:
    assert revision({}, root=tmp_path) == "unknown"


def test_a_packed_ref_is_read(tmp_path: Path) -> None:
    git = tmp_path / ".git"
    git.mkdir()
    (git / "HEAD").write_text("ref: refs/heads/main\n")
    (git / "packed-refs").write_text("# pack-refs\n" + "ab" * 20 + " refs/heads/main\n")
    assert git_revision(tmp_path) == "ab" * 6


def test_version_line() -> None:
    assert version_line("abc") == f"auth-service-migrator {VERSION} (revision abc)"


def run_entrypoint(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ENTRYPOINT), *args], capture_output=True,
                          text=True, env={"MIGRATOR_REVISION": "feedbeef"}, timeout=30)  # fmt: skip


def test_version_needs_no_configuration() -> None:
    result = run_entrypoint("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"auth-service-migrator {VERSION} (revision feedbeef)\n"


@pytest.mark.parametrize(
    "action", [a for a in build_parser()._actions if a.dest != "help"], ids=lambda a: a.dest
)
def test_every_flag_has_a_description(action: object) -> None:
    assert getattr(action, "help", None), f"{action} has no help text"


def test_help_lists_the_variables_and_the_exit_codes() -> None:
    result = run_entrypoint("--help")
    assert result.returncode == 0
    text = result.stdout
    for variable in ("DB_HOST", "DB_PASSWORD", "DB_ADMIN_USER", "MIGRATIONS_DIR",
                     "FUTURE_MIGRATIONS", "ROLE_PASSWORDS", "MIGRATION_LOCK_TIMEOUT",
                     "MIGRATIONS_WAIT_TIMEOUT", "LOG_FORMAT"):  # fmt: skip
        assert variable in text, variable
    for code in ("0 ", "1 ", "64 ", "65 ", "69 ", "75 ", "77 ", "78 ", "130 / 143", "137 "):
        assert f"  {code}" in text or f"   {code}" in text, code
    assert "wait" in text and "--timeout" in text
