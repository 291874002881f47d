"""The user documentation refers only to files that are in the repository."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCS = [
    REPO / "README.md",
    *sorted((REPO / "docs").glob("*.md")),
    REPO / "migrations" / "README.md",
]
# A link target, or a backticked path with a folder or a Markdown file.
LINK = re.compile(r"\]\(([^)#\s]+)")
PATH = re.compile(r"`([A-Za-z0-9_.-]+(?:/[A-Za-z0-9_.-]+)+/?)`")
# Any Markdown file named in the text, backticked or not ("see SEED.md").
MARKDOWN = re.compile(r"(?<![\w/.-])([A-Za-z0-9_./-]+\.md)\b")
# Paths that name places outside the repository on purpose (the image, the host, local images).
OUTSIDE = ("/", "~", ".venv", ".e2e-cache", "compose/secrets", "http", "local/")


def tracked() -> set[str]:
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                            cwd=REPO, capture_output=True, text=True, check=True).stdout  # fmt: skip
    names = set(listed.split())
    return names | {str(Path(n).parent) for n in names}


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_file_the_docs_name_is_in_the_repository(doc: Path) -> None:
    text = doc.read_text()
    files = tracked()
    named = set(LINK.findall(text)) | set(PATH.findall(text)) | set(MARKDOWN.findall(text))
    missing = []
    for name in sorted(named):
        if name.startswith(OUTSIDE) or "*" in name or "<" in name or name.isupper():
            continue
        relative = (doc.parent / name).resolve()
        candidates = {
            name.rstrip("/"),
            str(relative.relative_to(REPO)) if relative.is_relative_to(REPO) else "",
        }
        if not candidates & files:
            missing.append(name)
    assert not missing, f"{doc.name} names files that are not in the repository: {missing}"
