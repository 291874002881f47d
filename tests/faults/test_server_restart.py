"""The server stops (fast and immediate) in the middle of a run and starts again: a documented exit, then convergence."""

from __future__ import annotations

import os
import random
import time

import pytest

from migrator.errors import EX_OK, EX_UNAVAILABLE
from tests.conftest import MigrationsFolder, create_database, drop_database
from tests.faults.conftest import Snapshot, assert_converged, clean_run
from tests.faults.migration_sets import many_files

TRIALS_PER_MODE = 3
SEED = int(os.environ.get("FAULTS_SEED", time.time_ns() % 1_000_000))
# The runner either finishes (it was past the last statement) or says the server went away.
DOCUMENTED_OUTCOMES = {EX_OK, EX_UNAVAILABLE}


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> MigrationsFolder:
    return MigrationsFolder(tmp_path_factory.mktemp("restart") / "migrations").add(many_files())


@pytest.fixture(scope="module")
def reference(own_server, files, tmp_path_factory) -> Snapshot:
    return clean_run(own_server, files, tmp_path_factory.mktemp("reference"))


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_server_stopped_mid_run_then_started_again(
    own_server, files, reference, start_watched, run_runner, mode
):
    rng = random.Random(f"{SEED}-{mode}")
    versions = [path.stem for path in sorted(files.path.glob("*.sql"))]
    outcomes = []
    for trial in range(TRIALS_PER_MODE):
        database = create_database(own_server)
        env = database.env(MIGRATIONS_DIR=str(files.path), DB_WAIT_TIMEOUT="5")
        target = rng.choice(versions)
        context = f"{mode} trial {trial}, stopped at {target}, FAULTS_SEED={SEED}"
        runner = start_watched(env=env)
        runner.wait_for(lambda e, t=target: e["event"] == "migration_started" and e["version"] == t)
        own_server.stop(mode)
        try:
            result = runner.finish(timeout=30)
        finally:
            own_server.start()
        assert result.returncode in DOCUMENTED_OUTCOMES, f"{context}\n{result}"
        assert "Traceback" not in result.stdout + result.stderr, f"{context}\n{result}"
        outcomes.append(result.returncode)
        if result.returncode == EX_UNAVAILABLE:
            last = result.events[-1]
            print(f"{mode}: {last['error']}")
            # Whichever of the runner's two sessions noticed first: the migration's or the lock's.
            assert last["event"] in ("connection_lost", "lock_lost"), f"{context}\n{result}"
            assert "run again" in last["error"], f"{context}\n{result}"
            assert result.termination_message == last["error"] + "\n"
        rerun = run_runner(env=env)
        assert rerun.returncode == 0, f"{context}\n{rerun}"
        assert_converged(database, reference, context)
        drop_database(database)
    print(f"server stopped ({mode}): exit codes {outcomes}, FAULTS_SEED={SEED}")
