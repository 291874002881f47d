# Migration runner for the auth service's PostgreSQL database: an init container
# that applies migrations/ and exits 0 before the application starts.
#
#   docker build -t auth-service-migrate .
#   docker build --build-arg BASE_IMAGE=local/python-bookworm \
#                --build-arg PIP_FIND_LINKS=http://127.0.0.1:8000/ --network host .
#
# BASE_IMAGE: any image with python3 (3.11+) and its venv module at the same
# path in both stages (the official slim images; Debian with python3-venv).
# PIP_FIND_LINKS: the URL of a wheel folder served on the host (pip runs inside the build: a
# host path does not exist there; hence --network host); when set, pip uses it and nothing
# else. docs/docker.md shows how to make the wheels and serve them.
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS builder
ARG PIP_FIND_LINKS=""
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml ./
# The runtime dependencies are read from pyproject.toml (one source of truth),
# installed as wheels only (no compiler), then pip itself leaves the venv.
RUN python3 -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' > requirements.txt \
    && python3 -m venv /opt/venv \
    && if [ -n "$PIP_FIND_LINKS" ]; then set -- --no-index --find-links "$PIP_FIND_LINKS"; else unset PIP_FIND_LINKS; fi \
    && /opt/venv/bin/python -m pip install --no-compile --only-binary=:all: "$@" -r requirements.txt \
    && /opt/venv/bin/python -m pip uninstall --yes pip setuptools \
    && find /opt/venv -depth -name __pycache__ -type d -exec rm -rf {} +
WORKDIR /app
COPY entrypoint.py healthcheck.py ./
COPY migrator/ ./migrator/
# Everything the container runs is byte-compiled here, once: otherwise every start compiles
# psycopg, structlog, tenacity and the runner from source again (the root filesystem is
# read-only and PYTHONDONTWRITEBYTECODE=1, so nothing is ever cached at run time). The
# pycs are "unchecked-hash": valid without looking at the source's mtime (the image never
# changes), and their bytes depend only on the sources, so a rebuild gives the same files.
# The timestamps are pinned too, so that the copied layers do not depend on the build time.
RUN /opt/venv/bin/python -m compileall -q -j 0 --invalidation-mode unchecked-hash /opt/venv/lib /app \
    && find /opt/venv /app -exec touch --no-dereference --date=@0 {} +

FROM ${BASE_IMAGE}
ARG BASE_IMAGE
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
# Where the source lives and its documentation: absolute URLs (set them to your fork's).
ARG SOURCE=https://github.com/example/auth-service-migrate
ARG DOCUMENTATION=${SOURCE}/blob/main/docs/docker.md
LABEL org.opencontainers.image.title="auth-service-migrate" \
      org.opencontainers.image.description="Init container: applies the auth service's PostgreSQL migrations exactly once, then exits" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.url="${SOURCE}" \
      org.opencontainers.image.documentation="${DOCUMENTATION}" \
      org.opencontainers.image.base.name="${BASE_IMAGE}"
# The revision `--version` and run_started report (docker build --build-arg REVISION=$(git rev-parse HEAD)).
ENV MIGRATOR_REVISION=${REVISION} \
    PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MIGRATIONS_DIR=/migrations
# A numeric, unprivileged user with no home and no shell; the code and the
# migrations stay owned by root, so the runner cannot change them.
RUN groupadd --system --gid 10001 migrator \
    && useradd --system --uid 10001 --gid 10001 --no-log-init --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin migrator
COPY --from=builder /opt/venv /opt/venv
COPY --from=builder /app /app
WORKDIR /app
COPY migrations/ /migrations/
USER 10001:10001
ENTRYPOINT ["/opt/venv/bin/python", "/app/entrypoint.py"]
CMD ["migrate"]
