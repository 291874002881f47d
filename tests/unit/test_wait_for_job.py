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
echo "$@" >> "{conditions}.args"
case "$1" in
    get)
        failures=$(cat "{conditions}.failures" 2>/dev/null || echo 0)
        if [ "$failures" -gt 0 ]; then
            echo $((failures - 1)) > "{conditions}.failures"
            echo "Unable to connect to the server: EOF" >&2
            exit 1
        fi
        cat "{conditions}" ;;
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


def run_script(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SCRIPT), *args], env=env, capture_output=True, text=True,
                          timeout=30)  # fmt: skip


@pytest.mark.parametrize(
    "args", [("-n", "prod"), ("5m", "-n", "prod"), ("300s", "--namespace=prod"), ("1h",)]
)
def test_the_documented_forms_are_parsed(cluster, args: tuple[str, ...]) -> None:
    """`wait-for-job.sh JOB -n prod` took -n for the timeout ("n: unbound variable"); 5m too."""
    conditions, env = cluster
    conditions.write_text("Complete")
    result = run_script(env, "auth-service-migrate-0-1-0", *args)
    assert result.returncode == 0, result.stderr
    options = [a for a in args if a.startswith("-") or a == "prod"]
    sent = conditions.with_name("conditions.args").read_text().split()
    assert (
        sent[:2] == ["get", "job/auth-service-migrate-0-1-0"]
        and sent[2 : 2 + len(options)] == options
    )


@pytest.mark.parametrize("args", [(), ("-n", "prod"), ("job", "5x")])
def test_bad_arguments_exit_64_with_the_usage(cluster, args: tuple[str, ...]) -> None:
    _, env = cluster
    result = run_script(env, *args)
    assert result.returncode == 64, result.stderr
    assert "usage: wait-for-job.sh JOB" in result.stderr


def test_a_transient_api_error_is_retried_not_taken_for_a_timeout(cluster) -> None:
    conditions, env = cluster
    conditions.write_text("Complete")
    conditions.with_name("conditions.failures").write_text("2")
    result = run_script(env, "auth-service-migrate-0-1-0", "60")
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("retrying") == 2


def test_a_job_that_cannot_be_read_exits_3(cluster) -> None:
    conditions, env = cluster
    conditions.with_name("conditions.failures").write_text("99")
    result = run_script(env, "auth-service-migrate-0-1-0", "60")
    assert result.returncode == 3, result.stderr
    assert "cannot read job/auth-service-migrate-0-1-0" in result.stderr
