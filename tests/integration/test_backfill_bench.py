"""bench/backfill_bench.py still works: a tiny table, every method but the pause run, real runner.

No timing is asserted (the benchmark's figures are its business); this keeps it from rotting
and checks what its reader relies on: one result per method with its figures, the targets
computed, the results page written, and every method (the runner's batch file through
``entrypoint.py migrate --phase post`` included) updating each row exactly once.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent.parent
BENCH = REPO / "bench" / "backfill_bench.py"
ROWS = 20_000
METHODS = ("baseline", "plain", "fixed", "runner")
FIGURES = {
    "total_s", "queries", "p50_ms", "p99_ms", "max_ms", "longest_lock_wait_ms",
    "lock_waits_over_deadlock_timeout", "max_lag_bytes", "max_replay_lag_s", "rows",
}  # fmt: skip


def test_backfill_bench_tiny_run_is_well_formed_and_the_runner_does_each_row_once(
    tmp_path: Path,
) -> None:
    page, plot = tmp_path / "results.md", tmp_path / "results.png"
    result = subprocess.run(
        [sys.executable, str(BENCH), "--rows", str(ROWS), "--methods", ",".join(METHODS),
         "--clients", "2", "--baseline-seconds", "1", "--warmup", "0.3", "--tail", "0.3",
         "--markdown", str(page), "--plot", str(plot)],
        cwd=REPO, capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    by_type: dict[str, list[dict[str, Any]]] = {}
    for line in result.stdout.splitlines():
        parsed = json.loads(line)
        by_type.setdefault(parsed["type"], []).append(parsed)

    (machine,) = by_type["machine"]
    assert machine["postgresql"] and machine["cores"]
    results = {line["method"]: line for line in by_type["result"]}
    assert list(results) == list(METHODS)
    for method, line in results.items():
        assert set(line) >= FIGURES, method
        assert line["rows"] == ROWS, line
        if method != "baseline":
            assert (line["rows_done_once"], line["rows_not_once"]) == (ROWS, 0), line
    # A tiny UPDATE may block both clients for its whole (short) time: only the baseline
    # surely saw queries.
    assert results["baseline"]["queries"] > 0 and results["baseline"]["p99_ms"] > 0
    runner = results["runner"]
    assert runner["exit_code"] == 0 and runner["rows_reported"] == ROWS, runner
    assert runner["batches"] >= 1

    targets = {line["name"]: line for line in by_type["target"]}
    assert set(targets) == {
        "runner p99 / baseline p99",
        "runner: longest application lock wait (ms)",
        "runner total / plain UPDATE total",
    }
    assert all(isinstance(line["met"], bool) for line in targets.values())
    (summary,) = by_type["summary"]
    assert summary["ok"] is True

    text = page.read_text()
    for method in METHODS:
        assert f"| {method} | " in text
    if importlib.util.find_spec("matplotlib") is not None:
        assert plot.read_bytes().startswith(b"\x89PNG")
        assert f"]({plot.name})" in text
    else:  # the plot is the optional bench extra's: the rest runs without it
        (missing,) = by_type["unavailable"]
        assert missing["what"] == "plot" and not plot.exists()
