#!/usr/bin/env bash
# Mutation testing of the modules that decide (statement splitting, transaction modes, plans,
# configuration, status, redaction, other tools' folders, and the hazard lint's conclusions:
# findings, hazards, contract): a developer's tool, not part of CI. The lint's driver
# (migrator/lint/linter.py: the scratch database, the observers' reads) is left to tests/lint.
#
#   bash scripts/mutation.sh              # all of DECISION_MODULES, from scratch
#   bash scripts/mutation.sh plan sql     # only these modules (quicker, while writing tests)
#   bash scripts/mutation.sh --survivors  # only the last run's survivors again, after adding
#                                         # tests (a killed mutant stays killed while the code
#                                         # is unchanged and tests are only added)
#
# mutmut copies the project into mutants/ (git-ignored), changes one thing at a time in each
# function of the listed modules and runs the unit tests that reach that function
# (tests/unit without the manifest, lock-key and docs tests: [tool.mutmut] in pyproject.toml). A
# mutant no test notices "survived": a behaviour nothing asserts. "no tests": only the
# database suites reach that code. Both count against the score. The script prints the
# score per module and every mutant not killed with its diff, and exits 1 when the overall
# score is below MIN_SCORE (default 93). A change to a decision module runs this script and
# does not lower the score. The survivors known to be equivalent (no behaviour can tell them
# apart) are listed in the README's Tests section.
set -euo pipefail
cd "$(dirname "$0")/.."

# The modules that decide, as names under migrator/. A name whose file does not exist on the
# branch is reported and skipped, so the list can run ahead.
DECISION_MODULES=(files/sql history/plan files/migration files/folder config history/status logs
    files/formats history/foreign lint/findings lint/hazards lint/contract cli/arguments
    database/conninfo files/batch apply/health)
MUTMUT_VERSION=3.8.1
MIN_SCORE=${MIN_SCORE:-93}
# A venv of its own: mutmut brings rich, which structlog imports when it finds it, and the
# benchmark would then time a runner start the image never has.
VENV=${VENV:-.venv-mutation}
# One worker per core, at the lowest priority: other people share the cores.
CHILDREN=${MUTMUT_CHILDREN:-$(nproc)}

survivors_only=false
if [[ ${1:-} == --survivors ]]; then
    survivors_only=true
    shift
fi
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
        patterns+=("migrator.${module//\//.}.*")
    else
        echo "skipped: migrator/$module.py does not exist on this branch"
    fi
done
if [[ ${#modules[@]} -eq 0 ]]; then
    echo "no module to mutate" >&2
    exit 64
fi

# report names: the last run's mutants not killed; report score: figures, survivors, diffs.
report() {
    "$VENV/bin/python" - "$@" <<'PYTHON'
import json
import sys
from pathlib import Path

from mutmut.__main__ import get_diff_for_mutant
from mutmut.stats import status_by_exit_code

KILLED = {"killed", "timeout", "caught by type check"}
mode, min_score, modules = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
statuses: dict[str, dict[str, str]] = {}
for module in modules:
    meta = Path(f"mutants/migrator/{module}.py.meta")
    if not meta.exists():
        sys.exit(f"no results for {module}: run without --survivors first")
    codes = json.loads(meta.read_text())["exit_code_by_key"]
    statuses[module] = {
        name: status_by_exit_code[code]
        for name, code in codes.items()
        if status_by_exit_code[code] != "skipped"
    }
if mode in ("names", "unchecked"):
    wanted = {"not checked"} if mode == "unchecked" else None
    print(
        " ".join(
            name
            for found in statuses.values()
            for name, status in found.items()
            if status not in KILLED and (wanted is None or status in wanted)
        )
    )
    sys.exit()
survivors: list[tuple[str, str]] = []
total_killed = total_counted = 0
print(f"{'module':<12} {'mutants':>7} {'killed':>7} {'survived':>8} {'no tests':>8} {'score':>7}")
for module, found in statuses.items():
    killed = sum(status in KILLED for status in found.values())
    missed = sorted((name, status) for name, status in found.items() if status not in KILLED)
    no_tests = sum(status == "no tests" for _, status in missed)
    score = 100 * killed / len(found) if found else 100.0
    print(
        f"{module:<12} {len(found):>7} {killed:>7} {len(missed) - no_tests:>8} {no_tests:>8}"
        f" {score:>6.1f}%"
    )
    survivors += missed
    total_killed += killed
    total_counted += len(found)
overall = 100 * total_killed / total_counted if total_counted else 100.0
print(f"{'overall':<12} {total_counted:>7} {total_killed:>7} {'':>8} {'':>8} {overall:>6.1f}%")
print(f"\n{len(survivors)} not killed (mutmut show NAME prints one again):")
for name, status in survivors:
    print(f"\n# {name}: {status}")
    if status == "survived":
        module = next(m for m in modules if name.startswith(f"migrator.{m.replace('/', '.')}."))
        print(get_diff_for_mutant(name, path=Path(f"migrator/{module}.py")).rstrip())
if overall < min_score:
    print(f"\noverall score {overall:.1f}% is below {min_score:g}%")
    sys.exit(1)
PYTHON
}

run_mutmut() {
    local started log
    started=$(date +%s)
    log=$(mktemp)
    if ! nice -n 19 "$VENV/bin/mutmut" run --max-children "$CHILDREN" "$@" >"$log" 2>&1; then
        tail -n 40 "$log" >&2
        rm -f "$log"
        echo "mutmut failed (above: the end of its output)" >&2
        exit 1
    fi
    rm -f "$log"
    echo "mutmut ran $# name(s) or pattern(s) in $(($(date +%s) - started)) s, $CHILDREN workers"
}

if $survivors_only; then
    read -r -a survivors <<<"$(report names 0 "${modules[@]}")"
    if [[ ${#survivors[@]} -gt 0 ]]; then
        run_mutmut "${survivors[@]}"
    fi
    # Functions changed since the last run have new mutants, not run yet: run those too.
    read -r -a unchecked <<<"$(report unchecked 0 "${modules[@]}")"
    if [[ ${#unchecked[@]} -gt 0 ]]; then
        run_mutmut "${unchecked[@]}"
    fi
else
    # A fresh copy each time: results cached from other code would be counted as current.
    rm -rf mutants
    run_mutmut "${patterns[@]}"
fi
report score "$MIN_SCORE" "${modules[@]}"
