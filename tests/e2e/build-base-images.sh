#!/usr/bin/env bash
# Build the local base images the end-to-end tests use where no registry can be
# reached: Debian bookworm by debootstrap, loaded with `docker import`.
#
#   local/python-bookworm    python3 + python3-venv (BASE_IMAGE for the Dockerfile)
#   local/postgres-bookworm  Debian's postgresql-15 with an entrypoint that mimics
#                            the official image (POSTGRES_PASSWORD(_FILE), POSTGRES_USER,
#                            POSTGRES_DB, /docker-entrypoint-initdb.d, pg_isready)
#
# Work is skipped when an image already exists; the root filesystems are cached
# as tarballs under .e2e-cache/ (git-ignored), so a new engine re-imports them
# in seconds. Must run as root (debootstrap). Environment:
#   DEBIAN_MIRROR       default: the host's apt mirror, else http://deb.debian.org/debian
#   E2E_CACHE_DIR       default: <repo>/.e2e-cache
#   PYTHON_BASE_IMAGE   default: local/python-bookworm
#   POSTGRES_IMAGE      default: local/postgres-bookworm
#   FORCE_REBUILD=1     ignore existing images and cached tarballs
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cache="${E2E_CACHE_DIR:-$repo/.e2e-cache}"
python_image="${PYTHON_BASE_IMAGE:-local/python-bookworm}"
postgres_image="${POSTGRES_IMAGE:-local/postgres-bookworm}"
suite=bookworm

log() { printf '[build-base-images] %s\n' "$*" >&2; }

host_mirror() {
    local uri
    uri="$(grep -hs -m1 -E '^URIs:.*/debian/?$' /etc/apt/sources.list.d/*.sources | awk '{print $2}' || true)"
    if [[ -z "$uri" ]]; then
        uri="$(grep -hs -m1 -E '^deb .*/debian/? ' /etc/apt/sources.list | awk '{print $2}' || true)"
    fi
    printf '%s\n' "${uri:-http://deb.debian.org/debian}"
}
mirror="${DEBIAN_MIRROR:-$(host_mirror)}"

image_exists() { docker image inspect "$1" >/dev/null 2>&1; }

# Trim a root filesystem: package caches, indexes, docs, locales we never read.
slim_rootfs() {
    local root="$1"
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/cache/apt/*.bin \
        "$root"/var/lib/apt/lists/* "$root"/var/log/*.log "$root"/var/log/apt/* \
        "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* \
        "$root"/usr/share/locale/* "$root"/tmp/* "$root"/var/tmp/*
    # Same sources as the official images, so apt-get update works inside.
    printf 'deb http://deb.debian.org/debian %s main\n' "$suite" >"$root/etc/apt/sources.list"
}

# debootstrap a minbase rootfs with extra packages into a cached tarball.
make_rootfs_tarball() {
    local tarball="$1" packages="$2" customise="$3"
    local work
    work="$(mktemp -d "${TMPDIR:-/tmp}/e2e-rootfs.XXXXXX")"
    log "debootstrap $suite ($packages) from $mirror"
    if ! debootstrap --variant=minbase --include="$packages" "$suite" "$work/root" "$mirror" \
        >"$work/debootstrap.log" 2>&1; then
        tail -n 30 "$work/debootstrap.log" >&2
        rm -rf "$work"
        return 1
    fi
    "$customise" "$work/root"
    slim_rootfs "$work/root"
    mkdir -p "$cache"
    tar --numeric-owner -C "$work/root" -cf "$tarball.partial" .
    mv "$tarball.partial" "$tarball"
    rm -rf "$work"
}

customise_python() { :; }

customise_postgres() {
    local root="$1"
    # The package's postinst made a cluster in /var/lib/postgresql/15/main: the
    # entrypoint initialises its own in $PGDATA instead.
    rm -rf "$root/var/lib/postgresql/15" "$root/etc/postgresql/15"
    mkdir -p "$root/var/lib/postgresql/data" "$root/var/run/postgresql" "$root/docker-entrypoint-initdb.d"
    chroot "$root" chown -R postgres:postgres /var/lib/postgresql /var/run/postgresql
    chmod 2777 "$root/var/run/postgresql"
    install -m 0755 "$here/postgres-entrypoint.sh" "$root/usr/local/bin/docker-entrypoint.sh"
}

build_image() {
    local image="$1" name="$2" packages="$3" customise="$4"
    shift 4
    if [[ "${FORCE_REBUILD:-0}" != 1 ]] && image_exists "$image"; then
        log "$image exists: reused"
        return 0
    fi
    local tarball="$cache/$name-$suite.tar"
    if [[ "${FORCE_REBUILD:-0}" == 1 || ! -s "$tarball" ]]; then
        make_rootfs_tarball "$tarball" "$packages" "$customise"
    else
        log "$tarball cached: re-imported"
    fi
    local changes=()
    for change in "$@"; do changes+=(--change "$change"); done
    docker import "${changes[@]}" "$tarball" "$image" >/dev/null
    log "$image built"
}

main() {
    if [[ "$(id -u)" != 0 ]]; then
        log "must run as root (debootstrap)"
        exit 1
    fi
    command -v debootstrap >/dev/null || { log "debootstrap is not installed"; exit 1; }
    docker info >/dev/null 2>&1 || { log "no Docker engine answers"; exit 1; }

    local start=$SECONDS
    # The two debootstraps are mostly network and disk: run them side by side.
    build_image "$python_image" python python3,python3-venv,ca-certificates customise_python \
        'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        'ENV LANG=C.UTF-8' \
        'CMD ["python3"]' &
    local python_pid=$!
    build_image "$postgres_image" postgres postgresql-15 customise_postgres \
        'ENV PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        'ENV LANG=C.UTF-8' \
        'ENV PGDATA=/var/lib/postgresql/data' \
        'VOLUME /var/lib/postgresql/data' \
        'ENTRYPOINT ["docker-entrypoint.sh"]' \
        'EXPOSE 5432' \
        'CMD ["postgres"]' &
    local postgres_pid=$!
    local status=0
    wait "$python_pid" || status=1
    wait "$postgres_pid" || status=1
    log "done in $((SECONDS - start)) s"
    return "$status"
}

main "$@"
