#!/usr/bin/env bash
# Wait for a Kubernetes Job to finish, whichever way it ends:
#   scripts/wait-for-job.sh JOB [TIMEOUT] [kubectl options, e.g. -n NAMESPACE]
# TIMEOUT: seconds, or with a unit (300, 300s, 5m, 1h); default 45m. Exit codes:
#   0 the Job completed   1 it failed (its last log lines are printed)   2 timeout
#   3 the Job cannot be read (the API kept failing, or no such Job)   64 bad arguments
# `kubectl wait --for=condition=complete` alone waits out its whole timeout on a failed Job;
# this returns as soon as either condition is set. A failed `kubectl get` (an API server
# restarting, a network blip) is retried for about READ_RETRIES x POLL_SECONDS.
set -euo pipefail

readonly POLL_SECONDS=2
readonly READ_RETRIES=5
readonly DEFAULT_TIMEOUT=2700
readonly USAGE="usage: wait-for-job.sh JOB [TIMEOUT (300, 300s, 5m, 1h)] [kubectl options]"

fail_usage() {
    echo "[wait-for-job] $1; $USAGE" >&2
    exit 64
}

# Seconds from 300, 300s, 5m or 1h; nothing for anything else.
seconds_of() {
    if [[ $1 =~ ^([0-9]+)(s|m|h)?$ ]]; then
        case "${BASH_REMATCH[2]}" in
            h) echo $(( BASH_REMATCH[1] * 3600 )) ;;
            m) echo $(( BASH_REMATCH[1] * 60 )) ;;
            *) echo "${BASH_REMATCH[1]}" ;;
        esac
    fi
}

[[ $# -ge 1 && -n $1 && $1 != -* ]] || fail_usage "the Job's name comes first"
job=$1
shift
timeout=$DEFAULT_TIMEOUT
if [[ $# -ge 1 && $1 != -* ]]; then
    timeout=$(seconds_of "$1")
    [[ -n $timeout ]] || fail_usage "TIMEOUT '$1' is not a duration"
    shift
fi
deadline=$(( SECONDS + timeout ))

failures=0
while (( SECONDS < deadline )); do
    # The conditions whose status is True: Complete, or Failed (with SuccessCriteriaMet /
    # FailureTarget before them on Kubernetes 1.31+).
    if ! conditions=$(kubectl get "job/$job" "$@" \
            -o 'jsonpath={.status.conditions[?(@.status=="True")].type}'); then
        failures=$(( failures + 1 ))
        if (( failures >= READ_RETRIES )); then
            echo "[wait-for-job] cannot read job/$job ($failures attempts)" >&2
            exit 3
        fi
        echo "[wait-for-job] could not read job/$job; retrying" >&2
        sleep "$POLL_SECONDS"
        continue
    fi
    failures=0
    case " $conditions " in
        *" Complete "*)
            echo "[wait-for-job] job/$job complete"
            exit 0 ;;
        *" Failed "*)
            echo "[wait-for-job] job/$job FAILED; its last log lines:" >&2
            kubectl logs "job/$job" "$@" --tail=20 >&2 || true
            exit 1 ;;
    esac
    sleep "$POLL_SECONDS"
done
echo "[wait-for-job] job/$job did not finish within ${timeout}s" >&2
exit 2
