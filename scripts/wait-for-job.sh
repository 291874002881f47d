#!/usr/bin/env bash
# Wait for a Kubernetes Job to finish, whichever way it ends:
#   scripts/wait-for-job.sh JOB [TIMEOUT_SECONDS] [kubectl options, e.g. -n NAMESPACE]
# Exit 0 when the Job completed, 1 when it failed (its last log lines are printed), 2 on a
# timeout or a Job that cannot be read. `kubectl wait --for=condition=complete` alone waits
# out its whole timeout on a failed Job; this returns as soon as either condition is set.
set -euo pipefail

readonly POLL_SECONDS=2
job="${1:?usage: wait-for-job.sh JOB [TIMEOUT_SECONDS] [kubectl options]}"
timeout="${2:-2700}"
shift $(( $# >= 2 ? 2 : 1 ))
deadline=$(( SECONDS + timeout ))

while (( SECONDS < deadline )); do
    # The conditions whose status is True: Complete, or Failed (with SuccessCriteriaMet /
    # FailureTarget before them on Kubernetes 1.31+).
    if ! conditions=$(kubectl get "job/$job" "$@" \
            -o 'jsonpath={.status.conditions[?(@.status=="True")].type}'); then
        echo "[wait-for-job] cannot read job/$job" >&2
        exit 2
    fi
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
