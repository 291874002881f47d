#!/usr/bin/env bash
# Run the auth-service database migrations.
#
#   ./scripts/run-migrations.sh                      # apply all pending migrations
#   ./scripts/run-migrations.sh --dry-run            # show what would be migrated
#   ./scripts/run-migrations.sh --init-only          # database initialisation only
#   ./scripts/run-migrations.sh --host prod-db.example.com --database auth_service
#   ./scripts/run-migrations.sh --rollback-to 002    # run the down parts of the files after 002
#
# Environment: DB_HOST (localhost), DB_PORT (5432), DB_NAME (auth_service),
# DB_USER (auth_service), DB_PASSWORD or DB_PASSWORD_FILE (prompted on a terminal),
# DRY_RUN=true, and the runner's other variables (DB_ADMIN_USER,
# DB_ADMIN_PASSWORD(_FILE), APP_DB_USER, APP_DB_PASSWORD(_FILE), DB_SSLMODE, ...).
# DB_SSLROOTCERT, DB_SSLCERT, DB_SSLKEY, DB_SSLCRL name files on this machine; the
# image gets them mounted read-only (a key must be readable by the image's uid 10001).
#
# It runs the migration image (MIGRATE_IMAGE, default auth-service-migrate:latest)
# when a Docker engine answers and the image is present, otherwise the runner
# from this checkout. MIGRATE_RUNNER=docker|local forces one. The exit code is
# the runner's: 0 ok, 64 usage, 65 migration failed, 69 unreachable, 75 lock
# timeout, 77 auth/permission, 78 configuration.
set -euo pipefail

readonly EX_USAGE=64 EX_CONFIG=78
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
image="${MIGRATE_IMAGE:-auth-service-migrate:latest}"

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
    cat <<'USAGE'
Options:
  --dry-run           show the plan, change nothing (same as DRY_RUN=true)
  --init-only         bootstrap only (roles, database, extensions); needs DB_ADMIN_USER
  --host HOST         database host (DB_HOST)
  --port PORT         database port (DB_PORT)
  --database NAME     database name (DB_NAME)
  --user USER         migration user (DB_USER)
  --status            show applied and pending migrations instead of migrating
  --rollback-to V     roll back every applied file after version V (with --dry-run: the plan)
  -h, --help          this help
USAGE
}

die() {
    local code="$1"
    shift
    printf 'run-migrations: %s\n' "$*" >&2
    exit "$code"
}

command_name=migrate
runner_flags=()
while (($#)); do
    case "$1" in
        --dry-run) export DRY_RUN=true ;;
        --init-only) runner_flags+=(--init-only) ;;
        --host | --port | --database | --user)
            (($# >= 2)) && [[ -n "$2" ]] || die "$EX_USAGE" "$1 needs a value"
            case "$1" in
                --host) export DB_HOST="$2" ;;
                --port) export DB_PORT="$2" ;;
                --database) export DB_NAME="$2" ;;
                --user) export DB_USER="$2" ;;
            esac
            shift
            ;;
        --host=* | --port=* | --database=* | --user=*)
            value="${1#*=}"
            case "$1" in
                --host=*) export DB_HOST="$value" ;;
                --port=*) export DB_PORT="$value" ;;
                --database=*) export DB_NAME="$value" ;;
                --user=*) export DB_USER="$value" ;;
            esac
            ;;
        --status) command_name=status ;;
        --rollback-to)
            (($# >= 2)) && [[ -n "$2" ]] || die "$EX_USAGE" "$1 needs a version"
            command_name=rollback
            runner_flags+=(--to "$2")
            shift
            ;;
        --rollback-to=*)
            command_name=rollback
            runner_flags+=(--to "${1#*=}")
            ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; die "$EX_USAGE" "unknown option: $1" ;;
    esac
    shift
done

export DB_HOST="${DB_HOST:-localhost}" DB_PORT="${DB_PORT:-5432}"
export DB_NAME="${DB_NAME:-auth_service}" DB_USER="${DB_USER:-auth_service}"

# The password: from the environment, a file, the URL, or asked for on a terminal.
if [[ -z "${DB_PASSWORD:-}" && -z "${DB_PASSWORD_FILE:-}" && -z "${DATABASE_URL:-}" ]]; then
    if [[ -t 0 ]] && { : </dev/tty; } 2>/dev/null; then
        IFS= read -r -s -p "Password for $DB_USER@$DB_HOST:$DB_PORT/$DB_NAME: " DB_PASSWORD </dev/tty
        printf '\n' >&2
        [[ -n "$DB_PASSWORD" ]] || die "$EX_CONFIG" "no password given"
        export DB_PASSWORD
    else
        die "$EX_CONFIG" "DB_PASSWORD is not set and no terminal is attached to ask for it: set DB_PASSWORD or DB_PASSWORD_FILE (a file holding the password)"
    fi
fi

docker_usable() {
    command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1 &&
        docker image inspect "$image" >/dev/null 2>&1
}

runner="${MIGRATE_RUNNER:-auto}"
case "$runner" in
    auto) if docker_usable; then runner=docker; else runner=local; fi ;;
    docker | local) ;;
    *) die "$EX_USAGE" "MIGRATE_RUNNER must be auto, docker or local, not '$runner'" ;;
esac

# Variables handed to the runner by name (values never appear on a command line).
passthrough=(DB_HOST DB_PORT DB_NAME DB_USER DB_ADMIN_USER APP_DB_USER DB_SSLMODE
    DB_CHANNEL_BINDING DRY_RUN ALLOW_OUT_OF_ORDER DB_WAIT_TIMEOUT MIGRATION_LOCK_TIMEOUT DDL_LOCK_TIMEOUT
    DDL_LOCK_RETRIES STATEMENT_TIMEOUT LOG_FORMAT LOG_LEVEL DATABASE_URL)
secrets=(DB_PASSWORD DB_ADMIN_PASSWORD APP_DB_PASSWORD)
# Certificate files: host paths, mounted read-only into the container.
tls_files=(DB_SSLROOTCERT DB_SSLCERT DB_SSLKEY DB_SSLCRL)

if [[ "$runner" == local ]]; then
    python="$repo/.venv/bin/python"
    [[ -x "$python" ]] || python="$(command -v python3)" || die "$EX_CONFIG" "python3 not found"
    exec "$python" "$repo/entrypoint.py" "$command_name" "${runner_flags[@]}"
fi

absolute() { echo "$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"; }

# Docker: secrets go in as files mounted read-only, never as arguments.
secret_dir="$(mktemp -d "${TMPDIR:-/tmp}/run-migrations.XXXXXX")"
trap 'rm -rf "$secret_dir"' EXIT
chmod 700 "$secret_dir"
args=(run --rm --network "${DOCKER_NETWORK:-host}" --read-only --cap-drop ALL
    --security-opt no-new-privileges)
[[ -t 1 ]] && args+=(-t)
for name in "${passthrough[@]}"; do
    [[ -n "${!name:-}" ]] && args+=(-e "$name")
done
for name in "${secrets[@]}"; do
    file_var="${name}_FILE"
    mount="/run/secrets/$(tr '[:upper:]_' '[:lower:]-' <<<"$name")"
    if [[ -n "${!name:-}" ]]; then
        (umask 022 && printf '%s' "${!name}" >"$secret_dir/$name")
        args+=(-v "$secret_dir/$name:$mount:ro" -e "$file_var=$mount")
    elif [[ -n "${!file_var:-}" ]]; then
        [[ -r "${!file_var}" ]] || die "$EX_CONFIG" "$file_var: cannot read ${!file_var}"
        args+=(-v "$(absolute "${!file_var}"):$mount:ro" -e "$file_var=$mount")
    fi
done
for name in "${tls_files[@]}"; do
    value="${!name:-}"
    if [[ -z "$value" || "$value" == system ]]; then
        [[ -n "$value" ]] && args+=(-e "$name")
        continue
    fi
    [[ -r "$value" ]] || die "$EX_CONFIG" "$name: cannot read $value"
    mount="/run/tls/$(tr '[:upper:]_' '[:lower:]-' <<<"$name")"
    args+=(-v "$(absolute "$value"):$mount:ro" -e "$name=$mount")
done
status=0
docker "${args[@]}" "$image" "$command_name" "${runner_flags[@]}" || status=$?
exit "$status"
