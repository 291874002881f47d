#!/usr/bin/env bash
# Validate migrations/ in Docker (scripts/validate-migrations.sh --docker): a
# temporary PostgreSQL container and the migration image with this checkout's
# migrations/ mounted over /migrations. Bootstrap + all migrations, a second run
# that must be a no-op, then the health check; the container is removed at the end.
#
# Environment:
#   MIGRATE_IMAGE    default auth-service-migrate:latest (built from this checkout if missing,
#                    with BASE_IMAGE / PIP_FIND_LINKS passed on when set)
#   POSTGRES_IMAGE   default postgres:15-bookworm
# Both containers use the host's network; PostgreSQL listens on 127.0.0.1 on a free port.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
image="${MIGRATE_IMAGE:-auth-service-migrate:latest}"
postgres_image="${POSTGRES_IMAGE:-postgres:15-bookworm}"

say() { printf '== %s\n' "$*"; }

docker info >/dev/null 2>&1 || { echo "validate-in-docker: no Docker engine answers" >&2; exit 69; }

if ! docker image inspect "$image" >/dev/null 2>&1; then
    say "building $image"
    build_args=()
    [[ -n "${BASE_IMAGE:-}" ]] && build_args+=(--build-arg "BASE_IMAGE=$BASE_IMAGE")
    [[ -n "${PIP_FIND_LINKS:-}" ]] && build_args+=(--build-arg "PIP_FIND_LINKS=$PIP_FIND_LINKS")
    docker build --quiet --network host "${build_args[@]}" -t "$image" "$repo" >/dev/null
fi

workdir="$(mktemp -d "${TMPDIR:-/tmp}/validate-in-docker.XXXXXX")"
container="validate-migrations-$$-$RANDOM"
cleanup() {
    docker rm -f -v "$container" >/dev/null 2>&1 || true
    rm -rf "$workdir"
}
trap cleanup EXIT

# Random passwords in files the containers' users can read; the folder stays private.
chmod 700 "$workdir"
mkdir "$workdir/secrets"
for name in postgres_password db_password app_db_password; do
    head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$workdir/secrets/$name"
    chmod 644 "$workdir/secrets/$name"
done
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"

say "starting $postgres_image on 127.0.0.1:$port"
docker run -d --name "$container" --network host -e PGPORT="$port" \
    -e POSTGRES_PASSWORD_FILE=/run/secrets/postgres_password \
    -v "$workdir/secrets:/run/secrets:ro" \
    "$postgres_image" -c listen_addresses=127.0.0.1 >/dev/null
for _ in $(seq 1 120); do
    docker exec "$container" pg_isready -q -h 127.0.0.1 -p "$port" && break
    sleep 0.5
done

runner=(docker run --rm --network host --read-only --cap-drop ALL --security-opt no-new-privileges
    -v "$workdir/secrets:/run/secrets:ro" -v "$repo/migrations:/migrations:ro"
    -e DB_HOST=127.0.0.1 -e DB_PORT="$port" -e DB_WAIT_TIMEOUT=60s
    -e DB_PASSWORD_FILE=/run/secrets/db_password
    -e DB_ADMIN_USER=postgres -e DB_ADMIN_PASSWORD_FILE=/run/secrets/postgres_password
    -e APP_DB_PASSWORD_FILE=/run/secrets/app_db_password -e LOG_FORMAT=json)

failures=0
summary=()
step() {
    local name="$1"
    shift
    if "$@"; then
        summary+=("ok      $name")
    else
        summary+=("FAILED  $name (exit $?)")
        failures=$((failures + 1))
    fi
}
no_op() {
    "${runner[@]}" "$image" | tee "$workdir/second-run.log"
    grep '"event": "migrations_complete"' "$workdir/second-run.log" | tail -n1 | grep -q '"applied": \[\]'
}

say "bootstrap and migrations"
step "bootstrap and migrations" "${runner[@]}" "$image"
say "second run (must apply nothing)"
step "second run is a no-op" no_op
say "health check"
step "health check" "${runner[@]}" --entrypoint /opt/venv/bin/python "$image" /app/healthcheck.py

echo
say "summary ($image against $postgres_image)"
printf '  %s\n' "${summary[@]}"
[[ "$failures" == 0 ]]
