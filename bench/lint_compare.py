"""The hazard lint against squawk on the labelled corpus (tests/lint/corpus): recall and false
positives side by side.

    .venv/bin/python bench/lint_compare.py                  # both tools, a Markdown table
    .venv/bin/python bench/lint_compare.py --details        # and one line per file
    .venv/bin/python bench/lint_compare.py --squawk-only --json
    PG_BIN=/usr/lib/postgresql/15/bin .venv/bin/python bench/lint_compare.py

Our lint runs each file as the one pending file on a target built from tests/lint/setup.sql,
on a throwaway server (LINT_MIN_ROWS=0). squawk (PyPI ``squawk-cli``) reads the same files; only
its rules about locks, rewrites and scans count as flagging a hazard (its reminders to set
timeouts, style rules and breaking-change rules are left out: they fire on every file or are
about something else).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO / "tests" / "lint" / "corpus"
SETUP = REPO / "tests" / "lint" / "setup.sql"
LOCK_KINDS = ("rewrite", "scan", "index_build")
LABEL_RE = re.compile(r"^-- expect: (?:safe|(?P<kind>\w+) (?P<relation>\S+))$")
# squawk 2.x rules that say a statement locks, rewrites or scans a table for long.
SQUAWK_HAZARD_RULES = frozenset({
    "adding-field-with-default", "adding-foreign-key-constraint", "adding-not-nullable-field",
    "adding-required-field", "adding-serial-primary-key-field",
    "ban-alter-domain-with-add-constraint", "changing-column-type", "constraint-missing-not-valid",
    "disallowed-unique-constraint",
    "prefer-text-field", "require-concurrent-index-creation", "require-concurrent-index-deletion",
    "require-concurrent-reindex",
})  # fmt: skip


def corpus() -> dict[str, bool]:
    """File name -> True for a hazard, False for a safe look-alike."""
    labels = {}
    for path in sorted(CORPUS.glob("*.sql")):
        match = LABEL_RE.match(path.read_text().splitlines()[0])
        if not match:
            raise SystemExit(f"{path}: the first line must be its label")
        labels[path.name] = match["kind"] is not None
    return labels


def squawk_binary() -> str:
    found = shutil.which("squawk") or str(Path(sys.executable).parent / "squawk")
    if not Path(found).exists():
        raise SystemExit("squawk not found: pip install squawk-cli (it is in the test extra)")
    return found


def squawk_flagged(names: list[str]) -> dict[str, bool]:
    """File name -> whether squawk reports a lock/rewrite/scan rule on it."""
    result = subprocess.run(
        [squawk_binary(), "--reporter", "json", *names],
        cwd=CORPUS, capture_output=True, text=True, check=False,
    )  # fmt: skip
    rules: dict[str, set[str]] = {name: set() for name in names}
    for violation in json.loads(result.stdout or "[]"):
        rules[Path(violation["file"]).name].add(violation["rule_name"])
    return {name: bool(found & SQUAWK_HAZARD_RULES) for name, found in rules.items()}


def lint_flagged(names: list[str]) -> dict[str, bool]:
    """File name -> whether ``entrypoint.py lint`` exits 65 on it (a throwaway server)."""
    sys.path.insert(0, str(REPO / "scripts"))
    from pgserver import PgServer

    server = PgServer.create()
    server.start()
    try:
        with tempfile.TemporaryDirectory() as work:
            folder = Path(work) / "migrations"
            folder.mkdir()
            shutil.copy(SETUP, folder / "001_setup.sql")
            clean = {k: v for k, v in os.environ.items() if not k.startswith(("DB_", "PG"))}
            env = {
                **clean, "DB_HOST": "127.0.0.1", "DB_PORT": str(server.port),
                "DB_NAME": "corpus", "DB_USER": "postgres", "DB_PASSWORD": server.password,
                "DB_ADMIN_USER": "postgres", "DB_ADMIN_PASSWORD": server.password,
                "MIGRATIONS_DIR": str(folder), "LINT_MIN_ROWS": "0", "LOG_FORMAT": "json",
                "TERMINATION_LOG": str(Path(work) / "termination.log"),
            }  # fmt: skip
            entrypoint = [sys.executable, str(REPO / "entrypoint.py")]
            subprocess.run([*entrypoint], env=env, check=True, capture_output=True)
            flagged = {}
            for name in names:
                target = folder / f"002_{name}"
                shutil.copy(CORPUS / name, target)
                run = subprocess.run([*entrypoint, "lint"], env=env, capture_output=True, text=True)
                if run.returncode not in (0, 65):
                    raise SystemExit(f"lint failed on {name} (exit {run.returncode})")
                events = [json.loads(line) for line in run.stdout.splitlines()]
                flagged[name] = any(  # breaking changes and data loss are not squawk's subject
                    e["event"] == "hazard" and e["level"] == "error" and e["kind"] in LOCK_KINDS
                    for e in events
                )
                target.unlink()
            return flagged
    finally:
        server.destroy()


def score(labels: dict[str, bool], flagged: dict[str, bool]) -> dict[str, object]:
    hazards = [name for name, hazard in labels.items() if hazard]
    safe = [name for name, hazard in labels.items() if not hazard]
    return {
        "found": sum(flagged[name] for name in hazards),
        "hazards": len(hazards),
        "false_positives": sum(flagged[name] for name in safe),
        "safe": len(safe),
        "missed": [name for name in hazards if not flagged[name]],
        "flagged_safe": [name for name in safe if flagged[name]],
    }


def _names(files: object) -> str:
    names = [str(name).removesuffix(".sql") for name in files]  # type: ignore[attr-defined]
    return ", ".join(f"`{name}`" for name in names) or "none"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--squawk-only", action="store_true")
    parser.add_argument("--details", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    labels = corpus()
    tools = {"squawk": squawk_flagged(list(labels))}
    if not args.squawk_only:
        tools = {"entrypoint.py lint": lint_flagged(list(labels)), **tools}
    scores = {tool: score(labels, flagged) for tool, flagged in tools.items()}
    if args.json:
        print(json.dumps(scores, indent=2))
        return 0
    print("| tool | hazards found (recall) | safe files flagged (false positives) | missed "
          "| safe files flagged |")  # fmt: skip
    print("| --- | --- | --- | --- | --- |")
    for tool, s in scores.items():
        print(f"| {tool} | {s['found']} of {s['hazards']} | {s['false_positives']} of "
              f"{s['safe']} | {_names(s['missed'])} | {_names(s['flagged_safe'])} |")  # fmt: skip
    if args.details:
        print()
        for name, hazard in labels.items():
            marks = " ".join(f"{tool}={'flag' if f[name] else '-'}" for tool, f in tools.items())
            print(f"{'hazard' if hazard else 'safe  '}  {name:45} {marks}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
