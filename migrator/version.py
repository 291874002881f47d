"""The runner's version and the source revision it was built from (--version, run_started).

>>> version_line("3f2c1ab9e0d4")
'auth-service-migrator 0.1.0 (revision 3f2c1ab9e0d4)'
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

VERSION = "0.1.0"  # kept equal to pyproject.toml's by tests/unit/test_version.py
NAME = "auth-service-migrator"
# Baked into the image from the REVISION build argument (Dockerfile).
REVISION_VARIABLE = "MIGRATOR_REVISION"
UNKNOWN = "unknown"
SOURCE_ROOT = Path(__file__).resolve().parent.parent
REVISION_LENGTH = 12


def revision(environ: Mapping[str, str], root: Path = SOURCE_ROOT) -> str:
    """The image's baked revision, else the checkout's commit, else "unknown"."""
    return environ.get(REVISION_VARIABLE) or git_revision(root) or UNKNOWN


def git_revision(root: Path) -> str | None:
    """HEAD's commit read from the files of .git (no git process: this runs at every start).

    Handles a plain checkout, a worktree (.git is a file naming the git directory) and
    refs packed into packed-refs.
    """
    try:
        git_dir = root / ".git"
        if git_dir.is_file():
            git_dir = Path(git_dir.read_text().split(":", 1)[1].strip())
        if not git_dir.is_dir():
            return None
        head = (git_dir / "HEAD").read_text().strip()
        if not head.startswith("ref: "):
            return head[:REVISION_LENGTH]
        ref = head.removeprefix("ref: ")
        common = git_dir
        if (git_dir / "commondir").is_file():
            common = (git_dir / (git_dir / "commondir").read_text().strip()).resolve()
        for folder in (git_dir, common):
            if (folder / ref).is_file():
                return (folder / ref).read_text().strip()[:REVISION_LENGTH]
        packed = common / "packed-refs"
        for line in packed.read_text().splitlines() if packed.is_file() else ():
            if line.endswith(" " + ref):
                return line.split()[0][:REVISION_LENGTH]
    except (OSError, IndexError):
        return None
    return None


def version_line(rev: str) -> str:
    return f"{NAME} {VERSION} (revision {rev})"
