#!/usr/bin/env bash
# Mutation testing of the modules that decide (statement splitting, transaction modes, plans,
# configuration, status, redaction, other tools' folders): a developer's tool, not part of CI.
#
#   bash scripts/mutation.sh            # all of DECISION_MODULES, fresh, ~10-15 min on 2 cores
#   bash scripts/mutation.sh plan sql   # only these modules (quicker, while writing tests)
#
# mutmut copies the project into mutants/ (git-ignored), mutates each function of the listed
# modules one change at a time and runs the unit tests that reach it (tests/unit without the
# manifest and lock-key tests, see [tool.mutmut] in pyproject.toml). A mutant that no test
# notices "survived": a behaviour nothing asserts. It prints the score per module, the
# survivors, and exits 1 when the overall score is below MIN_SCORE (default 93).
# A change to a decision module runs this script and does not lower the score.
#
# Survivors known to be equivalent (no input can tell them apart from the original):
#   sql: _LineIndex.locate and position_to_line_column mutations that only differ for offsets
#        past the end; "if blank:" vs "if blank is not None"-style truthiness swaps.
#   config/logs: changes to the default of a keyword argument that every caller passes.
#   (see the README's Tests section for the current list and figures)
set -euo pipefail
cd "$(dirname "$0")/.."

# The modules that decide, as names under migrator/. A name whose file does not exist yet
# (lint before its branch is merged) is reported and skipped, so the list can run ahead.
DECISION_MODULES=(sql plan migration migrations config status logs formats foreign lint)
MUTMUT_VERSION=3.8.1
MIN_SCORE=${MIN_SCORE:-93}
VENV=${VENV:-.venv}
# Other engineers share the cores: one worker per core, at the lowest priority.
CHILDREN=${MUTMUT_CHILDREN:-$(nproc)}

if [[ $# -gt 0 ]]; then
    DECISION_MODULES=("$@")
fi

if [[ ! -x $VENV/bin/python ]]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q -e '.[test]'
fi
installed=$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("mutmut"))' \
    2>/dev/null || true)
if [[ $installed != "$MUTMUT_VERSION" ]]; then
    "$VENV/bin/pip" install -q "mutmut==$MUTMUT_VERSION"
fi

modules=()
patterns=()
for module in "${DECISION_MODULES[@]}"; do
    if [[ -f migrator/$module.py ]]; then
        modules+=("$module")
        patterns+=("migrator.$module.*")
    else
        echo "skipped: migrator/$module.py does not exist on this branch"
    fi
done
if [[ ${#modules[@]} -eq 0 ]]; then
    echo "no module to mutate" >&2
    exit 64
fi

# A fresh copy each time: results cached from other code would be counted as current.
rm -rf mutants
started=$(date +%s)
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! nice -n 19 "$VENV/bin/mutmut" run --max-children "$CHILDREN" "${patterns[@]}" >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    echo "mutmut failed (above: the end of its output)" >&2
    exit 1
fi
echo "mutmut ran $(($(date +%s) - started)) s with $CHILDREN workers"

"$VENV/bin/python" - "$MIN_SCORE" "${modules[@]}" <<'EOF'
"""Score per module from mutmut's meta files; survivors listed with their diff."""

import json
import sys
from pathlib import Path

from mutmut.__main__ import get_diff_for_mutant
from mutmut.stats import status_by_exit_code

KILLED = {"killed", "timeout", "caught by type check"}
min_score, modules = float(sys.argv[1]), sys.argv[2:]
survivors: list[tuple[str, str]] = []
total_killed = total_counted = 0
print(f"{'module':<12} {'mutants':>7} {'killed':>7} {'survived':>8} {'no tests':>8} {'score':>7}")
for module in modules:
    meta = json.loads(Path(f"mutants/migrator/{module}.py.meta").read_text())
    statuses = {name: status_by_exit_code[code] for name, code in meta["exit_code_by_key"].items()}
    counted = [name for name, status in statuses.items() if status != "skipped"]
    killed = sum(statuses[name] in KILLED for name in counted)
    missed = sorted(name for name in counted if statuses[name] not in KILLED)
    survivors += [(name, statuses[name]) for name in missed]
    no_tests = sum(statuses[name] == "no tests" for name in counted)
    score = 100 * killed / len(counted) if counted else 100.0
    print(
        f"{module:<12} {len(counted):>7} {killed:>7} {len(missed) - no_tests:>8} {no_tests:>8}"
        f" {score:>6.1f}%"
    )
    total_killed += killed
    total_counted += len(counted)
overall = 100 * total_killed / total_counted if total_counted else 100.0
print(f"{'overall':<12} {total_counted:>7} {total_killed:>7} {'':>8} {'':>8} {overall:>6.1f}%")
print(f"\n{len(survivors)} survivors (mutmut show NAME prints one again):")
for name, status in survivors:
    module = name.split(".")[1]
    print(f"\n# {name}: {status}")
    print(get_diff_for_mutant(name, path=Path(f"migrator/{module}.py")).rstrip())
if overall < min_score:
    print(f"\noverall score {overall:.1f}% is below {min_score:g}%")
    sys.exit(1)
EOF
