#!/usr/bin/env bash
# Deploy the auth service with Docker Compose, migrations first:
#
#   1. build (default: docker build of this checkout) or pull the migration image
#   2. start PostgreSQL and wait until it is healthy
#   3. run `migrate` to completion against it
#   4. only when it exited 0: start or update the application
#   5. wait for the application's health check (APP_HEALTH_TIMEOUT, default 120 s)
#   6. once it is healthy: run `migrate --phase post` (migrate-post), the files marked
#      `-- migrate:phase post` that must not run while the previous release served
#      (step 3 runs `--phase pre`; docs/writing-migrations.md, Phases)
#
#   ./deploy-docker-production.sh             # deploy
#   ./deploy-docker-production.sh --dry-run   # show the plan (and the pending
#                                             # migrations when the database runs)
#   ./deploy-docker-production.sh --pull      # pull images instead of building
#   ./deploy-docker-production.sh --no-build  # use the images already present
#   ./deploy-docker-production.sh --rollback  # go back to the images deployed before
#
# Before it replaces a healthy application with other images, the script tags the images it
# runs (the migrate and app containers') as <repository>:previous-<project> and records those
# names in DEPLOY_STATE_DIR/<project>.previous (default: .deploy/ next to this script);
# deploying the images that already run changes neither. --rollback deploys the recorded
# images again, whatever MIGRATE_IMAGE/APP_IMAGE say then: the older runner accepts the
# versions the newer one applied (a future_migrations warning; docs/operations.md,
# "Upgrades and rollbacks"), then the older application starts and must become healthy. A
# release that removed or renamed something the older application uses cannot be rolled
# back this way (expand/contract).
#
# Compose files: compose/docker-compose.yml + compose/docker-compose.prod.yml,
# or COMPOSE_FILE (colon separated) when set. Project: COMPOSE_PROJECT_NAME
# (default auth-service). Images: MIGRATE_IMAGE, APP_IMAGE, POSTGRES_IMAGE.
# Build without a registry or package index: BASE_IMAGE and PIP_FIND_LINKS become the
# build's arguments (PIP_FIND_LINKS is a URL served on this host: the build then uses the
# host's network; docs/docker.md, The image).
# Secrets: files in SECRETS_DIR (default compose/secrets/); never printed. They
# must not be readable by other local users (mode 600, or 640 with the
# containers' group 10001: see docs/docker.md); the script refuses them otherwise.
# Exit codes: 0 deployed (the application is healthy), 64 usage, 78 a secret file
# missing or readable by others, 1 preflight/infrastructure (a failed build, pull or
# postgres start, or no previous images to roll back to), 70 the application did not become healthy (it was replaced: roll back
# with --rollback), 71 step 6 failed (the application IS deployed and healthy, the post
# files are pending; the message gives the runner's own exit code: fix and run
# `docker compose up migrate-post`), otherwise the migration runner's exit code of step 3
# (the application was left as it was).
set -euo pipefail

readonly EX_USAGE=64
readonly EX_CONFIG=78
readonly EX_APP_UNHEALTHY=70
# Step 6 failed: not the runner's code, which step 3's failure passes on (the application was
# left as it was); here it is deployed and healthy, and only the post files are pending.
readonly EX_POST_FAILED=71
# Password files, and the TLS files the production override mounts (docs/docker.md).
readonly SECRET_FILES=(postgres_password.txt db_password.txt app_db_password.txt)
readonly TLS_FILES=(db_ca.crt db_server.crt db_server.key)
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
dry_run=false
image_source=build
health_timeout="${POSTGRES_HEALTH_TIMEOUT:-120}"
app_health_timeout="${APP_HEALTH_TIMEOUT:-120}"
# An application without a health check counts as up once it ran this long without restarting.
readonly APP_GRACE_SECONDS=5
rollback=false

say() { printf '[deploy] %s\n' "$*"; }
fail() {
    local code="$1"
    shift
    printf '[deploy] ERROR: %s\n' "$*" >&2
    exit "$code"
}

while (($#)); do
    case "$1" in
        --dry-run) dry_run=true ;;
        --pull) image_source=pull ;;
        --build) image_source=build ;;
        --no-build) image_source=none ;;
        --rollback) rollback=true ;;
        -h | --help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
        *) fail "$EX_USAGE" "unknown option: $1 (see --help)" ;;
    esac
    shift
done
if [[ "${DRY_RUN:-false}" == true ]]; then dry_run=true; fi

export COMPOSE_FILE="${COMPOSE_FILE:-$repo/compose/docker-compose.yml:$repo/compose/docker-compose.prod.yml}"
export COMPOSE_PROJECT_NAME="${COMPOSE_PROJECT_NAME:-auth-service}"
export SECRETS_DIR="${SECRETS_DIR:-$repo/compose/secrets}"
# The compose files' defaults, so that the images can be tagged and swapped for a rollback.
export MIGRATE_IMAGE="${MIGRATE_IMAGE:-auth-service-migrate:latest}"
export APP_IMAGE="${APP_IMAGE:-auth-service-migrate:latest}"
# Where the names of the previous images are kept for --rollback (not secret).
state_file="${DEPLOY_STATE_DIR:-$repo/.deploy}/$COMPOSE_PROJECT_NAME.previous"

# registry:5000/name:tag -> registry:5000/name:previous-<project>
previous_of() {
    local image="$1" repository="$1"
    [[ "${image##*/}" == *:* ]] && repository="${image%:*}"
    printf '%s:previous-%s\n' "$repository" "$COMPOSE_PROJECT_NAME"
}

mode_of() { stat -c '%a' "$1" 2>/dev/null || stat -f '%Lp' "$1"; }

# Before anything else, Docker included: a secret that every local user can read is a leak
# already, and deploying would spread it further.
check_secret_files() {
    local name path missing=() exposed=()
    for name in "${SECRET_FILES[@]}"; do
        [[ -s "$SECRETS_DIR/$name" ]] || missing+=("$SECRETS_DIR/$name")
    done
    if [[ "$COMPOSE_FILE" == *docker-compose.prod.yml* ]]; then
        for name in "${TLS_FILES[@]}"; do
            [[ -s "$SECRETS_DIR/$name" ]] || missing+=("$SECRETS_DIR/$name")
        done
    fi
    ((${#missing[@]} == 0)) || fail "$EX_CONFIG" "missing secret file(s): ${missing[*]} (see docs/docker.md, Secrets)"
    for path in "$SECRETS_DIR"/*; do
        [[ -f "$path" && "$path" != *.crt ]] || continue  # certificates are public
        (((8#$(mode_of "$path")) & 8#007)) && exposed+=("$path")
    done
    ((${#exposed[@]} == 0)) || fail "$EX_CONFIG" "secret file(s) readable by other users: ${exposed[*]}; fix: chmod o-rwx ${exposed[*]} (see docs/docker.md, Secrets)"
    return 0
}
check_secret_files

if docker compose version >/dev/null 2>&1; then
    compose=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then
    compose=(docker-compose)
else
    fail 1 "neither 'docker compose' nor 'docker-compose' is installed"
fi

exit_meaning() {
    case "$1" in
        1) echo "internal error in the runner (see its log for the traceback)" ;;
        64) echo "bad command line" ;;
        65) echo "a migration failed, or the history does not match the files" ;;
        69) echo "PostgreSQL was not reachable before the deadline" ;;
        75) echo "the migration lock was not obtained in time (safe to retry)" ;;
        77) echo "authentication or permission denied" ;;
        78) echo "invalid configuration" ;;
        130 | 143) echo "interrupted" ;;
        *) echo "unexpected exit code" ;;
    esac
}

preflight() {
    docker info >/dev/null 2>&1 || fail 1 "no Docker engine answers"
}

# The service's container, stopped ones included (compose v2's `ps` lists running ones only, and
# migrate may have exited already), by the labels both compose versions set: one `docker ps`
# instead of a compose start-up each time.
project_label="$(printf '%s' "$COMPOSE_PROJECT_NAME" | tr '[:upper:]' '[:lower:]')"
container_of() {
    docker ps -aq --filter "label=com.docker.compose.project=$project_label" \
        --filter "label=com.docker.compose.service=$1" \
        --filter "label=com.docker.compose.oneoff=False" | head -n1
}

postgres_running() {
    local id
    id="$(container_of postgres)"
    [[ -n "$id" && "$(docker inspect -f '{{.State.Health.Status}}' "$id" 2>/dev/null)" == healthy ]]
}

wait_for_postgres() {
    local id deadline=$((SECONDS + health_timeout)) state
    id="$(container_of postgres)"
    [[ -n "$id" ]] || fail 1 "the postgres container did not start"
    while :; do
        state="$(docker inspect -f '{{.State.Status}}/{{.State.Health.Status}}' "$id")"
        case "$state" in
            running/healthy) return 0 ;;
            exited/* | dead/*) fail 1 "postgres stopped ($state); see: ${compose[*]} logs postgres" ;;
        esac
        ((SECONDS < deadline)) || fail 1 "postgres not healthy after ${health_timeout}s ($state)"
        sleep 1
    done
}

plan() {
    say "plan (project $COMPOSE_PROJECT_NAME, compose ${compose[*]}):"
    case "$image_source" in
        build) say "  1. build the migration image: docker build ${build_args[*]} -t $MIGRATE_IMAGE $repo" ;;
        pull) say "  1. pull the images: ${compose[*]} pull" ;;
        none) say "  1. use the images already present (--no-build)" ;;
    esac
    say "  2. start postgres and wait until it is healthy"
    say "  3. run migrate to completion; stop here unless it exits 0"
    say "  4. start or update app"
    say "  5. wait until app is healthy"
    say "  6. run migrate --phase post (migrate-post): the files marked -- migrate:phase post"
    if postgres_running; then
        say "pending migrations of both phases (runner dry run, nothing is changed):"
        "${compose[@]}" run --rm --no-deps -T -e DRY_RUN=true migrate migrate --phase all ||
            say "the dry run failed with exit code $?"
    else
        say "postgres is not running: pending migrations are listed once it is"
    fi
}

# Tag what runs now, before it is replaced, when it is healthy (a broken deployment must not
# become the one to go back to) and when this deploy changes an image: deploying the running
# release again must not make it its own "previous".
remember_previous() {
    local service variable id image changed=false running=()
    [[ "$rollback" == false ]] || return 0
    id="$(container_of app)"
    [[ -n "$id" && "$(docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' "$id")" =~ ^(healthy|running)$ ]] || return 0
    for service in migrate app; do
        variable="$(image_variable "$service")"
        id="$(container_of "$service")"
        [[ -n "$id" ]] || continue
        image="$(docker inspect -f '{{.Image}}' "$id")"
        running+=("$service=$image")
        # An image not present yet (pulled by `up`) is another one.
        [[ "$image" == "$(docker image inspect -f '{{.Id}}' "${!variable}" 2>/dev/null)" ]] || changed=true
    done
    if [[ "$changed" == false ]]; then
        say "the running images are this release's: the previous release stays as it was"
        return 0
    fi
    local entry state=""
    for entry in "${running[@]}"; do
        service="${entry%%=*}"
        variable="$(image_variable "$service")"
        docker tag "${entry#*=}" "$(previous_of "${!variable}")"
        say "kept the running $service image as $(previous_of "${!variable}")"
        state+="$variable=$(previous_of "${!variable}")"$'\n'
    done
    # Recorded before anything is replaced: --rollback finds these names whatever the
    # environment says then.
    { mkdir -p "$(dirname "$state_file")" && printf '%s' "$state" >"$state_file.tmp" &&
        mv "$state_file.tmp" "$state_file"; } ||
        fail 1 "cannot record the previous images in $state_file (set DEPLOY_STATE_DIR to a writable folder); nothing was changed"
}

image_variable() {
    if [[ "$1" == app ]]; then echo APP_IMAGE; else echo MIGRATE_IMAGE; fi
}

use_previous_images() {
    local variable previous key value recorded_migrate="" recorded_app=""
    if [[ -f "$state_file" ]]; then
        while IFS='=' read -r key value; do
            case "$key" in
                MIGRATE_IMAGE) recorded_migrate="$value" ;;
                APP_IMAGE) recorded_app="$value" ;;
            esac
        done <"$state_file"
    fi
    for variable in MIGRATE_IMAGE APP_IMAGE; do
        previous="$recorded_migrate"
        [[ "$variable" == APP_IMAGE ]] && previous="$recorded_app"
        # Without a record (a deploy before records were kept): the names given now.
        [[ -n "$previous" ]] || previous="$(previous_of "${!variable}")"
        docker image inspect "$previous" >/dev/null 2>&1 ||
            fail 1 "no previous image to roll back to ($previous): it is tagged by a deploy that replaces a healthy application with other images"
        export "$variable=$previous"
    done
    image_source=none
    say "rolling back to $MIGRATE_IMAGE (migrate) and $APP_IMAGE (app)"
}

wait_for_app() {
    local id state deadline=$((SECONDS + app_health_timeout)) grace=$((SECONDS + APP_GRACE_SECONDS))
    id="$(container_of app)"
    [[ -n "$id" ]] || fail "$EX_APP_UNHEALTHY" "the app container did not start"
    while :; do
        state="$(docker inspect -f '{{.State.Status}}/{{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}/{{.RestartCount}}' "$id")"
        case "$state" in
            running/healthy/*) return 0 ;;
            running/none/0) ((SECONDS < grace)) || return 0 ;;
            */unhealthy/* | exited/* | dead/* | restarting/* | */*/[1-9]*) break ;;
        esac
        ((SECONDS < deadline)) || break
        sleep 1
    done
    # What the health check said is why the app counts as unhealthy: the app's own log may not
    # say it at all.
    if [[ -n "$(docker inspect -f '{{if .State.Health}}{{len .State.Health.Log}}{{end}}' "$id")" ]]; then
        printf '[deploy] last health check results (exit code: output):\n' >&2
        docker inspect -f '{{range .State.Health.Log}}{{.ExitCode}}: {{.Output}}{{"\n"}}{{end}}' "$id" |
            sed '/^[[:space:]]*$/d' | tail -n 8 | sed 's/^/[deploy]   /' >&2
    fi
    printf '[deploy] last app log lines:\n' >&2
    docker logs --tail 5 "$id" 2>&1 | sed 's/^/[deploy]   /' >&2
    local hint="roll back with: $0 --rollback"
    [[ "$rollback" == true ]] && hint="the previous images are not healthy either"
    fail "$EX_APP_UNHEALTHY" "the application did not become healthy within ${app_health_timeout}s (status/health/restarts: $state); $hint"
}

# The build of this checkout's Dockerfile. The revision is what `--version` and run_started
# report; BASE_IMAGE and PIP_FIND_LINKS let it build without a registry or package index.
build_args=(--build-arg "REVISION=$(git -C "$repo" rev-parse HEAD 2>/dev/null || echo unknown)")
[[ -z "${BASE_IMAGE:-}" ]] || build_args+=(--build-arg "BASE_IMAGE=$BASE_IMAGE")
# pip runs inside the build: the wheel server on this host's 127.0.0.1 is reachable only
# through the host's network.
[[ -z "${PIP_FIND_LINKS:-}" ]] || build_args+=(--network host --build-arg "PIP_FIND_LINKS=$PIP_FIND_LINKS")

# Run a runner service (migrate, migrate-post) once, to its end. On a failure: its last events,
# then the runner's exit code and what the failure leaves behind (the deploy stops there),
# exiting with the runner's code, or with the fourth argument when given.
run_to_completion() {
    local service=$1 what=$2 consequence=$3 exit_code=${4:-} id code
    "${compose[@]}" up -d --no-build --no-deps --force-recreate "$service"
    id="$(container_of "$service")"
    [[ -n "$id" ]] || fail 1 "the $service container did not start"
    code="$(docker wait "$id")"
    if [[ "$code" != 0 ]]; then
        printf '[deploy] last runner events:\n' >&2
        docker logs --tail 5 "$id" 2>&1 | sed 's/^/[deploy]   /' >&2
        fail "${exit_code:-$code}" "$what failed with exit code $code ($(exit_meaning "$code")): $consequence"
    fi
}

# Step 6: the post phase, only now that the new application serves (the previous one is
# gone). A failure leaves the application as it is, healthy: the post files stay pending.
run_post_migrations() {
    if ! "${compose[@]}" config --services 2>/dev/null | grep -qx migrate-post; then
        say "no migrate-post service in the compose files: post-rollout migrations skipped"
        return 0
    fi
    say "running post-rollout migrations (migrate --phase post)"
    run_to_completion migrate-post "post-rollout migrations" "the application IS deployed and healthy, the post files are pending; fix them, then run: ${compose[*]} up --no-deps migrate-post" "$EX_POST_FAILED"
    say "post-rollout migrations applied (exit 0)"
}

main() {
    preflight
    if [[ "$rollback" == true ]]; then
        use_previous_images
    fi
    if [[ "$dry_run" == true ]]; then
        plan
        return 0
    fi

    case "$image_source" in
        build)
            say "building the migration image ($MIGRATE_IMAGE)"
            docker build "${build_args[@]}" -t "$MIGRATE_IMAGE" "$repo" ||
                fail 1 "building the migration image failed (exit $?; docker build output above)${BASE_IMAGE:+; BASE_IMAGE=$BASE_IMAGE}${PIP_FIND_LINKS:+; PIP_FIND_LINKS=$PIP_FIND_LINKS}" ;;
        pull)
            say "pulling images"
            "${compose[@]}" pull --quiet || fail 1 "pulling the images failed (exit $?; output above)" ;;
        none) ;;
    esac

    say "starting postgres"
    "${compose[@]}" up -d --no-build postgres || fail 1 "starting postgres failed (exit $?; output above)"
    wait_for_postgres
    say "postgres is healthy"

    remember_previous
    say "running migrations"
    run_to_completion migrate "migration" "the application was NOT started or updated"
    say "migrations applied (exit 0)"

    say "starting or updating app"
    "${compose[@]}" up -d --no-build --no-deps app
    say "waiting for app to become healthy (at most ${app_health_timeout}s)"
    wait_for_app
    say "app is healthy ($APP_IMAGE)"
    run_post_migrations
    say "deployed: app is healthy ($APP_IMAGE), post-rollout migrations applied"
}

main
