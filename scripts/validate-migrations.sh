#!/usr/bin/env bash
# Validate migrations/ the way the image runs them: bootstrap + all migrations, a second run that
# must be a no-op, then the health check. With no server given (DB_HOST unset) it starts a
# throwaway PostgreSQL on 127.0.0.1, the same way the tests do, and removes it afterwards.
#
#   ./scripts/validate-migrations.sh            # throwaway server, removed at the end
#   ./scripts/validate-migrations.sh --keep     # leave it running and print how to connect
#   ./scripts/validate-migrations.sh --docker   # a temporary postgres container and the image
#   DB_HOST=h DB_ADMIN_USER=postgres DB_ADMIN_PASSWORD=... DB_PASSWORD=... ./scripts/validate-migrations.sh
set -euo pipefail
cd "$(dirname "$0")/.."

keep=0
for arg in "$@"; do
    case "$arg" in
        --keep) keep=1 ;;
        --docker) exec ./scripts/validate-in-docker.sh ;;
        -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
        *) echo "validate-migrations.sh: unknown option $arg (see --help)" >&2; exit 64 ;;
    esac
done

if [ ! -x .venv/bin/python ]; then
    "${PYTHON:-python3}" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[local]'
py=.venv/bin/python

workdir=$(mktemp -d)
chmod 711 "$workdir"  # the server runs as nobody under root: it must reach its folder
server_dir="$workdir/server"
cleanup() {
    if [ "$keep" = 0 ] && [ -f "$server_dir/port" ]; then
        "$py" scripts/pgserver.py stop "$server_dir" >/dev/null 2>&1 || true
    fi
    [ "$keep" = 1 ] || rm -rf "$workdir"
}
trap cleanup EXIT

if [ -z "${DB_HOST:-}" ]; then
    echo "== starting a throwaway PostgreSQL"
    read -r port admin_password_file < <("$py" scripts/pgserver.py start "$server_dir")
    export DB_HOST=127.0.0.1 DB_PORT="$port" DB_ADMIN_USER=postgres
    export DB_ADMIN_PASSWORD_FILE="$admin_password_file"
    # Fresh random passwords for the roles, in files (never on a command line).
    umask 077
    "$py" -c 'import secrets; print(secrets.token_urlsafe(24))' >"$workdir/db-password"
    "$py" -c 'import secrets; print(secrets.token_urlsafe(24))' >"$workdir/app-password"
    export DB_PASSWORD_FILE="$workdir/db-password" APP_DB_PASSWORD_FILE="$workdir/app-password"
fi

failures=0
step() {  # step NAME COMMAND...: run, remember the outcome, keep going
    local name=$1; shift
    if "$@"; then
        summary+=("ok      $name")
    else
        summary+=("FAILED  $name (exit $?)")
        failures=$((failures + 1))
    fi
}
no_op() {  # the second run must apply nothing
    "$py" entrypoint.py --log-format json | tee "$workdir/second-run.log"
    "$py" -c 'import json, sys
events = [json.loads(line) for line in open(sys.argv[1])]
done = [e for e in events if e["event"] == "migrations_complete"]
sys.exit(0 if done and done[-1]["applied"] == [] else 1)' "$workdir/second-run.log"
}

summary=()
# Before the database exists: each file is linted against the files before it (README, Hazard lint).
step "hazard lint" "$py" entrypoint.py lint --log-format json
step "bootstrap and migrations" "$py" entrypoint.py
step "second run is a no-op" no_op
step "health check" "$py" healthcheck.py

echo
echo "== summary ($DB_HOST:${DB_PORT:-5432}/${DB_NAME:-auth_service})"
printf '  %s\n' "${summary[@]}"
if [ "$keep" = 1 ] && [ -f "$server_dir/port" ]; then
    echo
    echo "The server keeps running. Connect with:"
    echo "  PGPASSWORD=\$(cat $DB_ADMIN_PASSWORD_FILE) psql -h 127.0.0.1 -p $DB_PORT -U postgres ${DB_NAME:-auth_service}"
    echo "Stop it with:"
    echo "  .venv/bin/python scripts/pgserver.py stop $server_dir"
fi
[ "$failures" = 0 ]
