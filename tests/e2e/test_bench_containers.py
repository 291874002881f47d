"""bench/bench.py's container workloads (C1, C5) work: the image, its floors, dbmate's image.

Like tests/integration/test_bench.py this asserts no timing, only that the quick mode runs
the workloads side by side, reports the images' sizes and that its correctness checks pass.
dbmate's image is built when bench/.peers has the binary (never installed here).
"""

from __future__ import annotations

from tests.conftest import REPO
from tests.integration.test_bench import run_bench

from .conftest import PYTHON_BASE

CONTAINER_TOOLS = {"runner", "python-floor", "python-bare"}


def test_bench_quick_runs_the_container_workloads_beside_the_image_floors(
    migrate_image: str,
) -> None:
    result, by_type = run_bench("--only", "C1,C5", "--image", migrate_image, timeout=300)
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"

    (machine,) = by_type["machine"]
    docker = machine["docker"]
    assert docker["image"] == migrate_image and docker["base_image"] == PYTHON_BASE
    assert "containers" not in {line["tool"] for line in by_type.get("unavailable", [])}
    dbmate = docker["dbmate_image"] is not None
    assert dbmate == (machine["dbmate"] is not None)

    measured: dict[str, set[str]] = {}
    for line in by_type["result"]:
        measured.setdefault(line["workload"], set()).add(line["tool"])
        assert line["median_s"] > 0 and len(line["runs_s"]) == 1, line
    expected = CONTAINER_TOOLS | ({"dbmate"} if dbmate else set())
    assert measured == {"C1": expected, "C5": expected}

    ratios = {(line["workload"], line["name"]): line for line in by_type["ratio"]}
    assert ratios[("C1", "runner / python-floor")]["target"] == "<= 1.15"
    added = ratios[("images", "added by the runner image")]
    assert added["unit"] == "MB" and added["value"] > 0 and isinstance(added["met"], bool)
    assert ratios[("images", "its base size")]["value"] > 0
    if dbmate:
        # One sample of a container start can outweigh dbmate's whole C5 work: the row is
        # then there with no value and says why, never silently missing.
        per_file = ratios[("C5", "(runner - its C1) / (dbmate - its C1)")]
        if per_file["value"] is None:
            assert per_file["note"] == "dbmate's C5 was not slower than its C1", per_file
        else:
            assert isinstance(per_file["value"], float) and per_file["note"] == "", per_file

    checks = by_type["check"]
    assert [c for c in checks if not c["ok"]] == []
    names = {(c["workload"], c["name"]) for c in checks}
    assert ("C1", "runner: schema_migrations has 5 rows") in names
    shipped = len(list((REPO / "migrations").glob("*.sql")))  # 000 and every schema file
    assert ("C5", f"runner: schema_migrations has {shipped} rows") in names
    if dbmate:
        assert ("C5", "schema after dbmate == schema after runner") in names
