"""scripts/wait-for-job.sh ends on a Job's success *and* on its failure.

No cluster here: a stand-in `kubectl` on PATH answers `get job` with the conditions a real API
server reports over time (read from a file the test rewrites), and `logs` with a line.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "wait-for-job.sh"
KUBECTL = """#!/bin/sh
case "$1" in
    get) cat "{conditions}" ;;
    logs) echo "runner: migration failed (exit 65)" ;;
esac
"""


@pytest.fixture
def cluster(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    conditions = tmp_path / "conditions"
    conditions.write_text("")
    kubectl = tmp_path / "bin" / "kubectl"
    kubectl.parent.mkdir()
    kubectl.write_text(KUBECTL.format(conditions=conditions))
    kubectl.chmod(0o755)
    return conditions, {**os.environ, "PATH": f"{kubectl.parent}:{os.environ['PATH']}"}


def start(env: dict[str, str], timeout: str = "30") -> subprocess.Popen[str]:
    return subprocess.Popen([str(SCRIPT), "auth-service-migrate-0-1-0", timeout], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


@pytest.mark.parametrize(
    ("final", "code", "said"),
    [("SuccessCriteriaMet Complete", 0, "complete"), ("FailureTarget Failed", 1, "FAILED")],
)
def test_it_returns_when_the_job_ends_either_way(cluster, final: str, code: int, said: str) -> None:
    conditions, env = cluster
    waiter = start(env)
    time.sleep(1.0)
    assert waiter.poll() is None, "the Job is still running"
    conditions.write_text(final)
    stdout, stderr = waiter.communicate(timeout=10)
    assert waiter.returncode == code, stdout + stderr
    assert said in stdout + stderr
    if code:
        assert "migration failed (exit 65)" in stderr, "the Job's last log lines are shown"


def test_it_gives_up_at_its_timeout(cluster) -> None:
    _, env = cluster
    started = time.monotonic()
    waiter = start(env, timeout="2")
    _, stderr = waiter.communicate(timeout=15)
    assert waiter.returncode == 2
    assert "did not finish within 2s" in stderr
    assert time.monotonic() - started < 8
