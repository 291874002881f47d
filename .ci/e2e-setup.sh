#!/usr/bin/env bash
# Prepare a fresh Debian bookworm machine (root, no terminal) for the end-to-end tests:
#   1. install docker.io, docker-compose and debootstrap when missing;
#   2. start dockerd (host networking only: --bridge=none --iptables=false) when no
#      engine answers, and wait for it;
#   3. build the local base images (tests/e2e/build-base-images.sh: debootstrap +
#      docker import), reused when they exist, from .e2e-cache/ tarballs when cached.
# Idempotent: a second run takes a few seconds. Logs of dockerd: $E2E_DOCKERD_LOG.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive

log() { printf '[e2e-setup] %s\n' "$*"; }
start=$SECONDS

missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v docker-compose >/dev/null 2>&1 || docker compose version >/dev/null 2>&1 ||
    missing+=(docker-compose)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
if ((${#missing[@]})); then
    log "installing ${missing[*]}"
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! docker info >/dev/null 2>&1; then
    dockerd_log="${E2E_DOCKERD_LOG:-$(mktemp -d "${TMPDIR:-/tmp}/e2e-dockerd.XXXXXX")/dockerd.log}"
    log "starting dockerd (log: $dockerd_log)"
    # Its own session, so it outlives this script and the CI step that started it.
    setsid nohup dockerd --bridge=none --iptables=false --ip6tables=false \
        >"$dockerd_log" 2>&1 </dev/null &
    for _ in $(seq 1 120); do
        docker info >/dev/null 2>&1 && break
        sleep 0.5
    done
    if ! docker info >/dev/null 2>&1; then
        tail -n 40 "$dockerd_log" >&2
        log "dockerd did not come up"
        exit 1
    fi
fi
log "engine $(docker info --format '{{.ServerVersion}}') answers"

tests/e2e/build-base-images.sh
log "ready in $((SECONDS - start)) s"
