"""bench/bench.py still works: --quick (tiny workloads, one run), JSON lines, every check passed.

No timing is asserted (speed is the benchmark's business, not the tests'); this only keeps the
benchmark from rotting. dbmate is used when bench/.peers or PATH has it, never installed here
(--no-install), and the test passes either way.
"""

from __future__ import annotations

import importlib.util
import json
import py_compile
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent.parent
BENCH = REPO / "bench" / "bench.py"
WORKLOADS = {"W1", "W2", "W3", "W4", "W5"}
ALWAYS_MEASURED = {
    "W1": {"runner", "python-floor", "python-bare", "import-psycopg", "import-runner"},
    "W2": {"runner", "psql-session", "psql-per-file"},
    "W3": {"runner", "psql-session", "psql-per-file"},
    "W4": {"runner"},
    "W5": {"runner", "psql-session"},
}
ALWAYS_RATIOS = {
    ("W1", "runner / python-floor"),
    ("W1", "import-runner / runner"),
    ("W2", "runner / psql-session"),
    ("W2", "runner / psql-per-file"),
    ("W3", "runner / psql-session"),
    ("W3", "runner / psql-per-file"),
    ("W4", "runner median, ready to exit"),
    ("W5", "runner / psql-session"),
    # The server's own time, from its log (issue 29).
    ("W2", "runner server time per file"),
    ("W3", "runner server time per file"),
    ("W2", "(runner - its W1) / its server time"),
    ("all", "runner peak RSS"),
}
DBMATE_RATIOS = {(workload, "runner / dbmate") for workload in WORKLOADS} | {
    ("W3", "dbmate server time per file"),
    ("W3", "server time, runner / dbmate"),
}


def run_bench(
    *options: str, timeout: float = 120
) -> tuple[subprocess.CompletedProcess[str], dict[str, list[dict[str, Any]]]]:
    """``bench.py --quick --json --no-install`` (host workloads unless ``--only`` says more)."""
    only = () if "--only" in options else ("--only", ",".join(sorted(WORKLOADS)))
    result = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--json", "--no-install", *only, *options],
        cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
    by_type: dict[str, list[dict[str, Any]]] = {}
    for line in result.stdout.splitlines():
        try:
            parsed = json.loads(line)
        except json.JSONDecodeError as error:
            raise AssertionError(f"stdout line is not JSON: {line!r}\n{result.stderr}") from error
        by_type.setdefault(parsed["type"], []).append(parsed)
    return result, by_type


def test_bench_quick_runs_every_workload_and_its_checks_pass() -> None:
    result, by_type = run_bench()
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"

    (machine,) = by_type["machine"]
    assert machine["postgresql"] and machine["python"] and machine["cores"]
    unavailable = {line["tool"]: line["why"] for line in by_type.get("unavailable", [])}
    dbmate = machine["dbmate"] is not None
    assert dbmate == ("dbmate" not in unavailable)
    one_transaction = machine["runner_single_transaction"]
    assert one_transaction == ("runner-1tx" not in unavailable)

    measured: dict[str, set[str]] = {}
    for line in by_type["result"]:
        measured.setdefault(line["workload"], set()).add(line["tool"])
        assert line["median_s"] > 0, line
        assert line["peak_rss_kib"] > 0, line
        assert len(line["runs_s"]) == 1, line
    assert set(measured) == WORKLOADS
    for workload, tools in ALWAYS_MEASURED.items():
        expected = set(tools)
        if dbmate:
            expected.add("dbmate")
        if one_transaction and workload != "W4":
            expected.add("runner-1tx")
        assert measured[workload] == expected, workload

    ratios = {(line["workload"], line["name"]): line for line in by_type["ratio"]}
    assert set(ratios) >= ALWAYS_RATIOS
    assert (set(ratios) >= DBMATE_RATIOS) if dbmate else not (DBMATE_RATIOS & set(ratios))
    # Plain ratios are positive; the per-file work rows are differences, which one noisy quick
    # run can turn negative.
    assert all(line["value"] > 0 for (_, name), line in ratios.items() if "its W1" not in name)
    assert ratios[("W1", "runner / python-floor")]["target"] == "<= 1.3"
    assert isinstance(ratios[("W1", "runner / python-floor")]["met"], bool)

    checks = by_type["check"]
    failed = [
        f"{line['workload']}: {line['name']}: {line['detail']}" for line in checks if not line["ok"]
    ]
    assert not failed, failed
    names = {(line["workload"], line["name"]) for line in checks}
    assert ("W2", "schema after runner == schema after psql-session") in names
    assert ("W3", "runner: schema_migrations has 10 rows") in names
    assert ("W5", "schema after psql-session == schema after runner") in names
    assert ("W4", "runner exits after the server is ready") in names
    assert (
        "W1",
        "the runner's modules and libraries load from their pyc, as in the image",
    ) in names
    (summary,) = by_type["summary"]
    assert summary["checks_passed"] is True


def load_bench() -> Any:
    """bench/bench.py as a module (it is a script, not a package)."""
    spec = importlib.util.spec_from_file_location("bench_script", BENCH)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench  # dataclasses look their module up there
    spec.loader.exec_module(bench)
    return bench


def test_the_bench_sees_a_module_compiled_from_source_at_each_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As on the machine of the README's figures (and in the image): no pyc is ever written.
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    bench = load_bench()
    module = tmp_path / "fresh_module.py"
    module.write_text("VALUE = 1\n")
    assert bench.compiled_from_source("import fresh_module", tmp_path) == [str(module)]
    assert bench.compiled_from_source("import fresh_module", tmp_path) == [str(module)]
    py_compile.compile(str(module))
    assert bench.compiled_from_source("import fresh_module", tmp_path) == []


def test_bench_markdown_and_text_share_one_renderer() -> None:
    bench = load_bench()
    table = bench.Table(["tool", "median"], [["runner", "0.250"], ["dbmate", "0.030"]])
    assert table.markdown().splitlines() == [
        "| tool | median |",
        "| --- | --- |",
        "| runner | 0.250 |",
        "| dbmate | 0.030 |",
    ]
    assert table.text().splitlines()[1] == "runner   0.250"


def test_a_per_file_ratio_dbmate_did_not_pay_for_is_shown_with_its_reason_not_dropped() -> None:
    bench = load_bench()
    lost = bench.work_only_row("C5", "C1", {"runner": 0.2, "dbmate": -0.01})
    assert lost.as_json() == {
        "type": "ratio",
        "workload": "C5",
        "name": "(runner - its C1) / (dbmate - its C1)",
        "value": None,
        "unit": "",
        "target": "",
        "met": None,
        "note": "dbmate's C5 was not slower than its C1",
    }
    row = bench.ratio_table([lost]).markdown().splitlines()[2]
    assert row == (
        "| C5 | (runner - its C1) / (dbmate - its C1) "
        "| n/a (dbmate's C5 was not slower than its C1) |  |  |"
    )
    measured = bench.work_only_row("W2", "W1", {"runner": 0.06, "dbmate": 0.05})
    assert (measured.value, measured.target, measured.met) == (pytest.approx(1.2), "<= 1.0", False)
    assert measured.shown() == "1.20"


def test_bench_says_why_the_container_workloads_cannot_run_and_runs_the_rest() -> None:
    result, by_type = run_bench("--only", "W1,C1", "--image", "local/no-such-image:bench")
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    unavailable = {line["tool"]: line["why"] for line in by_type["unavailable"]}
    # No engine here, or an engine without that image: either way one line says which.
    assert "no-such-image" in unavailable["containers"] or "docker" in unavailable["containers"]
    assert {line["workload"] for line in by_type["result"]} == {"W1"}
    assert by_type["machine"][0]["docker"] is None
