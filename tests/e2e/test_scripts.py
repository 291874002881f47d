"""deploy-docker-production.sh and scripts/run-migrations.sh, as an operator runs them."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import time
from pathlib import Path

from .conftest import POSTGRES_IMAGE, PROD_FILE, REPO, Stack, repo_migration_versions, run
from .test_compose import BROKEN, wait_for_event

DEPLOY = REPO / "deploy-docker-production.sh"
RUN_MIGRATIONS = REPO / "scripts" / "run-migrations.sh"


def deploy(
    stack: Stack, *args: str, image: str | None = None, build: bool = False, **extra: str
) -> subprocess.CompletedProcess[str]:
    """The production files (TLS verified with verify-full) over the test's host network.

    ``image`` is the release (MIGRATE_IMAGE and APP_IMAGE; "" leaves both unset, as an
    operator who names no image); ``extra`` adds variables."""
    if not (stack.secrets_dir / "db_ca.crt").exists():
        stack.enable_tls()
    env = {**stack.env, "DEPLOY_STATE_DIR": str(stack.root / "deploy-state"), **extra}
    if image == "":
        del env["MIGRATE_IMAGE"], env["APP_IMAGE"]
    elif image:
        env["MIGRATE_IMAGE"] = env["APP_IMAGE"] = image
    env["COMPOSE_FILE"] = os.pathsep.join(map(str, [*stack.files[:1], PROD_FILE, *stack.files[1:]]))
    options = [] if build else ["--no-build"]
    result = subprocess.run([str(DEPLOY), *options, *args], env=env, capture_output=True,
                            text=True, timeout=300)  # fmt: skip
    stack.assert_no_secret(result.stdout + result.stderr)
    return result


def test_deploy_migrates_then_starts_the_application(stack: Stack) -> None:
    plan = deploy(stack, "--dry-run")
    assert plan.returncode == 0, plan.stderr
    assert "run migrate to completion" in plan.stdout
    assert stack.containers("postgres") == [], "--dry-run started something"

    result = deploy(stack)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "deployed" in result.stdout
    assert stack.wait_exited("migrate") == [0]
    assert wait_for_event(stack, "app", "schema_ok")
    assert stack.applied_versions() == [(v, 1) for v in repo_migration_versions()]
    (migrate,) = stack.containers("migrate")
    assert migrate["HostConfig"]["RestartPolicy"]["Name"] in {"", "no"}

    again = deploy(stack, "--dry-run")
    assert again.returncode == 0, again.stderr
    assert '"pending": []' in again.stdout
    stack.check_logs()


def test_deploy_runs_the_post_phase_after_the_health_gate(stack: Stack) -> None:
    stack.migrations_dir({
        "900_contract.sql": "-- migrate:phase post\nALTER TABLE phase_probe DROP COLUMN old;",
        "901_expand.sql": "CREATE TABLE phase_probe (id int, old text);",
    })  # fmt: skip
    plan = deploy(stack, "--dry-run")
    assert "6. run migrate --phase post" in plan.stdout

    result = deploy(stack)

    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert out.index("app is healthy") < out.index("running post-rollout migrations")
    assert "post-rollout migrations applied" in out
    assert stack.wait_exited("migrate") == [0] and stack.wait_exited("migrate-post") == [0]
    assert ("900_contract", 1) in stack.applied_versions()
    stack.check_logs()


def test_a_failing_post_phase_leaves_the_application_deployed(stack: Stack) -> None:
    stack.migrations_dir({"900_contract.sql": "-- migrate:phase post\nDROP TABLE no_such_table;"})

    result = deploy(stack)

    # Its own code (not the runner's 65, which step 3 passes on): the application IS deployed.
    assert result.returncode == 71, result.stdout + result.stderr
    assert "post-rollout migrations failed with exit code 65" in result.stderr
    assert "IS deployed and healthy" in result.stderr
    assert stack.containers("app")[0]["State"]["Running"]
    assert "900_contract" not in dict(stack.applied_versions())


def test_deploy_stops_before_the_application_when_a_migration_fails(stack: Stack) -> None:
    stack.migrations_dir({"900_broken.sql": BROKEN})

    result = deploy(stack)

    assert result.returncode == 65, result.stdout + result.stderr
    assert "exit code 65" in result.stderr
    assert "NOT started" in result.stderr
    assert "900_broken.sql:6" in result.stderr
    assert stack.wait_exited("migrate") == [65]
    assert stack.containers("app") == []
    stack.check_logs()


def test_a_failed_build_says_so_and_names_its_base_image(stack: Stack) -> None:
    missing_base = f"local/no-such-base-{stack.project}"
    image = f"local/auth-service-migrate:never-{stack.project}"

    result = deploy(stack, build=True, image=image, BASE_IMAGE=missing_base)

    assert result.returncode == 1, result.stdout + result.stderr
    error = result.stderr.splitlines()[-1]
    assert error.startswith("[deploy] ERROR: building the migration image failed"), error
    assert f"BASE_IMAGE={missing_base}" in error, "the base image it was given was not used"
    assert stack.containers("postgres") == [], "started something after a failed build"


# Releases for the rollback test, built on the image under test (N): N+1 has one more
# (expand-only) migration; N+2, built on N+1, another one, and its application runs but its
# health check fails (`python` on its PATH answers `--check` with an error; the runner's
# entrypoint is an absolute path).
NEXT_RELEASE_DOCKERFILE = """\
FROM {image}
USER 0
RUN echo 'CREATE TABLE rollout_probe (id int);' > /migrations/900_rollout_probe.sql
USER 10001:10001
"""
UNHEALTHY_RELEASE_DOCKERFILE = """\
FROM {image}
USER 0
RUN echo 'CREATE TABLE rollout_probe_2 (id int);' > /migrations/901_rollout_probe_2.sql \
    && mkdir /broken && printf '#!/bin/sh\\ncase " $* " in *" --check "*) echo "probe says: \
release N+2 cannot serve" >&2; exit 1;; esac\\nexec /opt/venv/bin/python "$@"\\n' > /broken/python \
    && chmod 755 /broken/python
ENV PATH=/broken:$PATH
USER 10001:10001
"""
# The shipped check, every second instead of every 10 s: only the waits get shorter.
FAST_APP_HEALTH = {"test": ["CMD", "python", "/srv/app/app.py", "--check"], "interval": "1s",
                   "timeout": "5s", "retries": 3}  # fmt: skip


def image_id(name: str) -> str:
    return str(run(["docker", "image", "inspect", "-f", "{{.Id}}", name]).stdout.strip())


def test_previous_changes_with_the_images_and_rollback_needs_no_image_names(stack: Stack) -> None:
    stack.override("fast-health.yml", {"app": {"healthcheck": FAST_APP_HEALTH}})
    release = f"local/auth-service-release-{stack.project}"  # another repository than N's
    next_image, unhealthy_image = f"{release}:next", f"{release}:unhealthy"
    previous = f"{release}:previous-{stack.project}"
    for tag, dockerfile, base in ((next_image, NEXT_RELEASE_DOCKERFILE, stack.image),
                                  (unhealthy_image, UNHEALTHY_RELEASE_DOCKERFILE, next_image)):  # fmt: skip
        run(["docker", "build", "--quiet", "--network", "none", "-t", tag, "-"],
            input=dockerfile.format(image=base), timeout=300)  # fmt: skip
    try:
        first = deploy(stack)  # release N
        assert first.returncode == 0, first.stdout + first.stderr

        upgrade = deploy(stack, image=next_image)
        assert upgrade.returncode == 0, upgrade.stdout + upgrade.stderr
        assert f"kept the running app image as {previous}" in upgrade.stdout
        assert ("900_rollout_probe", 1) in stack.applied_versions()

        # The same release again: what runs does not become its own "previous".
        again = deploy(stack, image=next_image)
        assert again.returncode == 0, again.stdout + again.stderr
        assert "kept the running" not in again.stdout
        assert image_id(previous) == image_id(stack.image)

        start = time.monotonic()
        broken = deploy(stack, image=unhealthy_image)
        assert broken.returncode == 70, broken.stdout + broken.stderr
        assert time.monotonic() - start < 120
        assert "did not become healthy" in broken.stderr
        assert "--rollback" in broken.stderr
        assert f"kept the running app image as {previous}" in broken.stdout
        assert image_id(previous) == image_id(next_image)
        # Why it is unhealthy: the health check's own output, which the app's log lacks.
        assert "last health check results" in broken.stderr
        assert "1: probe says: release N+2 cannot serve" in broken.stderr
        (app,) = stack.containers("app")
        assert "probe says" not in stack.logs(app)

        # The operator names no image: the deploy recorded which ones to go back to.
        back = deploy(stack, "--rollback", image="")
        assert back.returncode == 0, back.stdout + back.stderr
        assert f"rolling back to {previous} (migrate) and {previous} (app)" in back.stdout
        assert "app is healthy" in back.stdout
        for service in ("migrate", "app"):
            (container,) = stack.containers(service)
            assert container["Image"] == image_id(next_image), service
        warnings = [e for e in stack.events("migrate") if e["event"] == "future_migrations"]
        assert warnings and warnings[-1]["versions"] == ["901_rollout_probe_2"]
        stack.check_logs()
    finally:
        subprocess.run(["docker", "rmi", "-f", next_image, unhealthy_image, previous],
                       capture_output=True, check=False, timeout=120)  # fmt: skip


def script_env(stack: Stack, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in stack.env.items() if not k.startswith(("DB_", "APP_DB_"))}
    return {**env, "MIGRATE_RUNNER": "docker", "MIGRATE_IMAGE": stack.image,
            "DB_PORT": str(stack.port), **extra}  # fmt: skip


def run_script(stack: Stack, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(RUN_MIGRATIONS), *args], env=script_env(stack, **env),
                            capture_output=True, text=True, timeout=120,
                            stdin=subprocess.DEVNULL)  # fmt: skip
    stack.assert_no_secret(result.stdout + result.stderr)
    return result


def test_run_migrations_in_docker_init_dry_run_then_migrate(stack: Stack) -> None:
    stack.up("postgres")
    stack.wait_healthy()
    owner = stack.passwords["db_password"]
    admin = {"DB_ADMIN_USER": "postgres", "DB_ADMIN_PASSWORD": stack.passwords["postgres_password"],
             "APP_DB_PASSWORD": stack.passwords["app_db_password"]}  # fmt: skip

    init = run_script(stack, "--init-only", "--host", "127.0.0.1", DB_PASSWORD=owner, **admin)
    assert init.returncode == 0, init.stdout + init.stderr
    assert [v for v, _ in stack.applied_versions()] == ["000_init_database"]

    plan = run_script(stack, "--dry-run", "--host", "127.0.0.1", "--database", "auth_service",
                      DB_PASSWORD=owner)  # fmt: skip
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert '"001_initial_production_schema"' in plan.stdout
    assert [v for v, _ in stack.applied_versions()] == ["000_init_database"]

    applied = run_script(stack, "--host", "127.0.0.1", DB_PASSWORD=owner, DRY_RUN="false")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert stack.applied_versions() == [(v, 1) for v in repo_migration_versions()]

    local = run_script(stack, "--host", "127.0.0.1", DB_PASSWORD=owner, MIGRATE_RUNNER="local")
    assert local.returncode == 0, local.stdout + local.stderr
    assert '"applied": []' in local.stdout


def test_run_migrations_fails_clearly_without_a_password_or_terminal(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DB_", "DATABASE_URL"))}
    result = subprocess.run([str(RUN_MIGRATIONS)], env={**env, "MIGRATE_RUNNER": "local"},
                            stdin=subprocess.DEVNULL, capture_output=True, text=True,
                            timeout=30)  # fmt: skip
    assert result.returncode == 78
    assert "DB_PASSWORD is not set and no terminal is attached" in result.stderr


def test_run_migrations_prompts_for_the_password_without_echo(stack: Stack) -> None:
    stack.up()  # the full stack: roles exist with their passwords
    assert stack.wait_exited("migrate") == [0]
    password = stack.passwords["db_password"]
    env = script_env(stack, DB_HOST="127.0.0.1")
    pid, fd = pty.fork()
    if pid == 0:  # the child: the script on a terminal
        os.execve(str(RUN_MIGRATIONS), [str(RUN_MIGRATIONS), "--dry-run"], env)  # noqa: S606
    output = b""
    deadline = time.monotonic() + 120
    sent = False
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 1)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            output += chunk
        if not sent and b"Password for auth_service@127.0.0.1" in output:
            os.write(fd, password.encode() + b"\n")
            sent = True
    _, status = os.waitpid(pid, 0)
    text = output.decode(errors="replace")
    assert sent, text
    assert os.waitstatus_to_exitcode(status) == 0, text
    assert password not in text, "the password was echoed"
    assert "0 pending" in text


def test_validate_migrations_docker_path(migrate_image: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DB_", "APP_DB_"))}
    env.update(MIGRATE_IMAGE=migrate_image, POSTGRES_IMAGE=POSTGRES_IMAGE)
    result = subprocess.run([str(REPO / "scripts" / "validate-migrations.sh"), "--docker"],
                            env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    for step in ("bootstrap and migrations", "second run is a no-op", "health check"):
        assert f"ok      {step}" in result.stdout
