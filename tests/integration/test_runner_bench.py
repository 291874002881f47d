"""bench/runner_bench.py still runs: a tiny history, one run, JSON lines, every check passed.

No timing is asserted (speed is the benchmark's business, not the tests'); this only keeps the
benchmark from rotting. dbmate is used when bench/.peers or PATH has it, never installed here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent.parent
BENCH = REPO / "bench" / "runner_bench.py"
FILES = 10
ALWAYS_MEASURED = {"psql-per-file", "psql-single-tx", "runner", "runner-noop", "python-floor"}
ALWAYS_RATIOS = {
    ("runner/psql-per-file", "time"),
    ("runner/psql-single-tx", "time"),
    ("runner-noop/python-floor", "time"),
    ("runner/psql-per-file", "rss"),
    ("runner/python-floor", "rss"),
}
DBMATE_RATIOS = {
    ("runner/dbmate", "time"),
    ("runner-noop/dbmate-noop", "time"),
    ("runner/dbmate", "rss"),
    ("runner-noop/dbmate-noop", "rss"),
}


def run_bench() -> tuple[subprocess.CompletedProcess[str], list[dict[str, Any]]]:
    result = subprocess.run(
        [sys.executable, str(BENCH), "--files", str(FILES), "--repeat", "1", "--json",
         "--no-install"],
        cwd=REPO, capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    lines = []
    for line in result.stdout.splitlines():
        try:
            lines.append(json.loads(line))
        except json.JSONDecodeError as error:
            raise AssertionError(f"stdout line is not JSON: {line!r}\n{result.stderr}") from error
    return result, lines


def test_runner_bench_runs_and_its_checks_pass() -> None:
    result, lines = run_bench()
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    by_type: dict[str, list[dict[str, Any]]] = {}
    for line in lines:
        by_type.setdefault(line["type"], []).append(line)

    (meta,) = by_type["meta"]
    assert meta["files"] == FILES
    (peer,) = by_type["peer"]
    dbmate = peer["available"]
    if not dbmate:
        assert "unavailable" in result.stderr  # says so, and why

    measured = {line["tool"]: line for line in by_type["result"]}
    expected_tools = ALWAYS_MEASURED | ({"dbmate", "dbmate-noop"} if dbmate else set())
    assert set(measured) == expected_tools
    for line in measured.values():
        assert line["median_s"] > 0
        assert line["peak_rss_kib"] > 0

    ratios = {(line["name"], line["metric"]): line["value"] for line in by_type["ratio"]}
    assert set(ratios) >= ALWAYS_RATIOS
    assert (set(ratios) >= DBMATE_RATIOS) if dbmate else not (DBMATE_RATIOS & set(ratios))
    assert all(value > 0 for value in ratios.values())

    checks = {line["name"]: line for line in by_type["check"]}
    failed = [f"{name}: {line['detail']}" for name, line in checks.items() if not line["ok"]]
    assert not failed, failed
    assert "schema after runner == schema after psql-per-file" in checks
    assert f"runner: schema_migrations has {FILES} rows" in checks
    assert any("migrate:up" in name for name in checks)
    (summary,) = by_type["summary"]
    assert summary["checks_passed"] is True
