"""The deployment files, checked without a cluster or a Docker daemon: the Kubernetes manifests
against the API schemas of Kubernetes 1.30 (kubernetes-validate, strict: no unknown fields),
the compose file by Docker Compose itself (`docker-compose config`), the Dockerfile parsed;
and across files, that every command a container runs is one the genloom CLI takes, every
probe hits a port the container opens, every Secret key and ConfigMap referenced exists, and
every selector finds its pods."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from dockerfile_parse import DockerfileParser
from typer.testing import CliRunner

from genloom.cli.main import app
from genloom.config import load_settings

ROOT = Path(__file__).parents[2]
K8S = ROOT / "deploy" / "kubernetes"
COMPOSE = ROOT / "deploy" / "docker-compose.yml"
KUBERNETES_VERSION = "1.30.0"


def manifests() -> list[dict]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    docs = []
    for name in kustomization["resources"]:
        docs += [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]
    return docs


def by_kind(kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in manifests() if d["kind"] == kind}


def containers() -> list[dict]:
    pods = [d["spec"]["template"]["spec"] for d in manifests() if d["kind"] in ("Deployment", "Job")]
    return [c for pod in pods for c in pod["containers"]]


def cli_accepts(args: list[str]) -> None:
    """The genloom CLI parses these arguments (run with --help so nothing starts)."""
    result = CliRunner().invoke(app, [*args, "--help"])
    assert result.exit_code == 0, f"genloom {' '.join(args)}: {result.output}"


def test_every_kubernetes_manifest_matches_the_api_schema():
    builtin = [d for d in manifests() if "keda.sh" not in d["apiVersion"]]
    assert {d["kind"] for d in builtin} >= {
        "Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Secret", "ConfigMap", "Job",
    }
    for doc in builtin:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_a_broken_manifest_is_caught():
    api = by_kind("Deployment")["genloom-api"]
    broken = yaml.safe_load(yaml.safe_dump(api))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["prot"] = 8000
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_containers_run_real_genloom_commands_and_probe_their_own_ports():
    for container in containers():
        cli_accepts(container["args"])
        ports = {p["name"]: p["containerPort"] for p in container.get("ports", ())}
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            if probe in container:
                assert container[probe]["httpGet"]["port"] in ports, (container["name"], probe)
                assert container[probe]["httpGet"]["path"] == ("/readyz" if probe == "readinessProbe" else "/healthz")
        if "--port" in container["args"]:
            assert int(container["args"][container["args"].index("--port") + 1]) in ports.values()


def test_secrets_and_config_referenced_exist_and_the_config_loads(tmp_path, monkeypatch):
    secret = by_kind("Secret")["genloom"]
    config_maps = by_kind("ConfigMap")
    for container in containers():
        for env in container.get("env", ()):
            ref = env.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                assert ref["name"] == "genloom" and ref["key"] in secret["stringData"], ref
    config = config_maps["genloom-config"]["data"]["genloom.yaml"]
    (tmp_path / "genloom.yaml").write_text(config)
    monkeypatch.setenv("GENLOOM_REDIS_URL", secret["stringData"]["redis-url"])
    settings = load_settings(tmp_path / "genloom.yaml", **{"server.role": "api"})
    assert settings.store.blobs.value == "s3" and settings.queue.lease_s == 30


def test_selectors_find_their_pods_and_autoscalers_their_deployments():
    deployments = by_kind("Deployment")
    pod_labels = {name: d["spec"]["template"]["metadata"]["labels"] for name, d in deployments.items()}
    for name, d in deployments.items():
        assert d["spec"]["selector"]["matchLabels"].items() <= pod_labels[name].items()
    for kind in ("Service", "PodDisruptionBudget"):
        for name, doc in by_kind(kind).items():
            selector = doc["spec"]["selector"]
            selector = selector.get("matchLabels", selector)
            assert any(selector.items() <= labels.items() for labels in pod_labels.values()), (kind, name)
    hpa = by_kind("HorizontalPodAutoscaler")["genloom-api"]
    assert hpa["spec"]["scaleTargetRef"]["name"] in deployments
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    [scaled] = by_kind("ScaledObject").values()
    assert scaled["spec"]["scaleTargetRef"]["name"] == "genloom-worker" and "genloom-worker" in deployments
    [trigger] = scaled["spec"]["triggers"]
    service = by_kind("Service")["genloom-api"]
    assert trigger["type"] == "metrics-api" and trigger["metadata"]["valueLocation"] == "queued"
    assert trigger["metadata"]["url"] == f"http://{service['metadata']['name']}.genloom.svc.cluster.local/readyz"


def test_compose_file_is_valid_for_docker_compose_and_runs_real_commands():
    assert shutil.which("docker-compose"), "docker-compose is needed (Debian package docker-compose; .ci/run installs it)"
    env = {**os.environ, "GENLOOM_ADMIN_KEY": "gl-" + "a" * 30}
    checked = subprocess.run(["docker-compose", "-f", str(COMPOSE), "config"], env=env, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    resolved = yaml.safe_load(checked.stdout)
    services = resolved["services"]
    assert {"postgres", "redis", "migrate", "api-1", "api-2", "worker"} <= set(services)
    for name in ("postgres", "redis", "api-1", "api-2", "worker"):
        assert services[name]["healthcheck"]["test"], name
    for name in ("migrate", "api-1", "api-2", "worker"):
        cli_accepts(services[name]["command"])
        assert services[name]["environment"]["GENLOOM_REDIS_URL"] == "redis://redis:6379/0"
    assert services["api-1"]["command"][:3] == ["serve", "--role", "api"]
    assert services["api-1"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    missing_key = subprocess.run(["docker-compose", "-f", str(COMPOSE), "config", "-q"], env={**os.environ, "GENLOOM_ADMIN_KEY": ""},
                                 capture_output=True, text=True)
    assert missing_key.returncode != 0 and "GENLOOM_ADMIN_KEY" in missing_key.stderr


def test_a_broken_compose_file_is_caught(tmp_path):
    broken = yaml.safe_load(COMPOSE.read_text())
    broken["services"]["redis"]["healthcheck"]["intervall"] = "5s"
    (tmp_path / "docker-compose.yml").write_text(yaml.safe_dump(broken))
    env = {**os.environ, "GENLOOM_ADMIN_KEY": "gl-" + "a" * 30}
    checked = subprocess.run(["docker-compose", "-f", str(tmp_path / "docker-compose.yml"), "config", "-q"], env=env,
                             capture_output=True, text=True)
    assert checked.returncode != 0 and "intervall" in checked.stderr


def test_dockerfile_builds_both_variants_as_a_non_root_genloom_image():
    parser = DockerfileParser(path=str(ROOT / "Dockerfile"))
    instructions = parser.structure
    args = {i["value"].split("=")[0]: i["value"] for i in instructions if i["instruction"] == "ARG"}
    assert args["VARIANT"] == "VARIANT=cpu" and "TORCH_VERSION" in args
    torch_line = next(i["value"] for i in instructions if i["instruction"] == "RUN" and "torch==" in i["value"])
    assert "cpu) index=https://download.pytorch.org/whl/cpu" in torch_line and "cuda)" in torch_line
    assert "exit 1" in torch_line  # any other variant fails the build
    for copy in (i["value"].split()[:-1] for i in instructions if i["instruction"] == "COPY"):
        for source in copy:
            assert (ROOT / source).exists(), source
    assert next(i["value"] for i in instructions if i["instruction"] == "USER") == "10001"
    assert any(i["instruction"] == "HEALTHCHECK" and "/healthz" in i["value"] for i in instructions)
    assert parser.baseimage.startswith("python:")
    entrypoint = next(i["value"] for i in instructions if i["instruction"] == "ENTRYPOINT")
    assert entrypoint == '["genloom"]'
    cli_accepts(yaml.safe_load(next(i["value"] for i in instructions if i["instruction"] == "CMD")))
