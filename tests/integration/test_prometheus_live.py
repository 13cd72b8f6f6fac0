"""A real Prometheus scrapes a real worker and evaluates deploy/prometheus/rules.yml.

Broker (the session's `kafka_bootstrap`: embedded Tansu by default) + `feedwarden worker` as a
subprocess on private topics + Debian's `prometheus` server on a free loopback port with a
1 s scrape and evaluation interval. Checks, through the Prometheus HTTP API: the target is up,
the worker's metrics arrive with the labels and bucket bounds the rules rely on, every rule
evaluates with health "ok" and nothing fires on a healthy worker; and `promtool check metrics`
accepts the worker's exposition.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from feedwarden.stream.runner import stop_process
from tests.deploy.support import RULES, alerts, rules

pytestmark = pytest.mark.integration

if importlib.util.find_spec("feedwarden.stream.app") is None:  # pragma: no cover - until the worker lands
    pytest.skip("feedwarden.stream.app is not importable yet: no worker to scrape", allow_module_level=True)

PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
if PROMETHEUS is None or PROMTOOL is None:
    pytest.skip("the Prometheus server and promtool are not installed (Debian package `prometheus`; "
                "`make test` installs it)", allow_module_level=True)

T = TypeVar("T")
VALID_POSTS = 24
MALFORMED = 3  # not JSON: dead-lettered as invalid_json


def _free_port() -> int:
    from feedwarden.stream.broker import free_port

    return free_port()


def _wait_for(what: str, probe: Callable[[], T | None], timeout: float, on_timeout: Callable[[], str]) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = probe()
        if result is not None and result is not False:
            return result
        time.sleep(0.5)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}\n{on_timeout()}")


def _get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - loopback
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (urllib.error.URLError, OSError):
        return 0, b""


def _tail(path: Path, chars: int = 3000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else "(no log)"


@dataclass
class Worker:
    port: int
    log: Path
    topics: dict[str, str]
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def metrics(self) -> str:
        status, body = _get(f"{self.url}/metrics")
        assert status == 200, f"/metrics answered {status}"
        return body.decode()


def _worker_command() -> list[str]:
    script = Path(sys.executable).with_name("feedwarden")  # the `feedwarden` console script
    return [str(script), "worker"] if script.is_file() else [sys.executable, "-m", "feedwarden.cli", "worker"]


@pytest.fixture(scope="module")
def worker(
    kafka_bootstrap: str, tiny_bundle: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Worker]:
    """`feedwarden worker` on private topics and a private group, ready to consume."""
    scratch = tmp_path_factory.mktemp("prometheus-live-worker")
    tag = f"promlive-{uuid.uuid4().hex[:8]}"
    # Every topic private, so nothing this worker emits reaches other tests on the same broker.
    topics = {"POSTS": f"{tag}.posts", "DECISIONS": f"{tag}.decisions", "HIDE": f"{tag}.decisions.hide",
              "WARN": f"{tag}.decisions.warn", "BADGE": f"{tag}.decisions.badge", "DLQ": f"{tag}.posts.dlq",
              "DRIFT_STATS": f"{tag}.drift.stats", "DRIFT_ALERTS": f"{tag}.drift.alerts",
              "RETRAIN_REQUESTS": f"{tag}.retrain.requests", "MODEL_UPDATES": f"{tag}.model.updates",
              "SHADOW": f"{tag}.decisions.shadow"}
    port = _free_port()
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP": kafka_bootstrap,
        "FEEDWARDEN_BUNDLE": str(tiny_bundle.path),
        "FEEDWARDEN_WEB_PORT": str(port),
        "FEEDWARDEN_WEB_BIND": "127.0.0.1",
        "FEEDWARDEN_GROUP_ID": tag,
        "FEEDWARDEN_SESSION_TIMEOUT_S": "6",  # Tansu answers JoinGroup after half of it
        "FEEDWARDEN_BATCH_WAIT_MS": "20",
        "FEEDWARDEN_PROVIDERS": "cpu",
        "FEEDWARDEN_REGISTRY": str(scratch / "registry"),
        **{f"FEEDWARDEN_TOPIC_{key}": name for key, name in topics.items()},
    }
    log = scratch / "worker.log"
    with log.open("wb") as out:
        process = subprocess.Popen(_worker_command(), env=env, cwd=scratch, stdin=subprocess.DEVNULL,
                                   stdout=out, stderr=subprocess.STDOUT)
    handle = Worker(port, log, topics, process)
    try:
        def ready() -> bool:
            assert process.poll() is None, f"worker exited with {process.returncode}\n{_tail(log)}"
            return _get(f"{handle.url}/readyz")[0] == 200

        _wait_for("the worker to be ready", ready, 120, lambda: _tail(log))
        yield handle
    finally:
        stop_process(process, 30.0)


async def _produce(bootstrap: str, topic: str) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")  # no idempotence on Tansu
    await producer.start()
    try:
        texts = ("free crypto scam giveaway", "hello lovely world", "verify your password", "the match")
        for number in range(VALID_POSTS):
            post = {"id": f"p-{number}", "text": texts[number % len(texts)], "platform": "test"}
            await producer.send(topic, json.dumps(post).encode(), key=post["id"].encode())
        for number in range(MALFORMED):
            await producer.send(topic, b"{not json", key=f"bad-{number}".encode())
        await producer.flush()
    finally:
        await producer.stop()


def _posts_consumed(text: str) -> float:
    for line in text.splitlines():
        if line.startswith("feedwarden_posts_total "):
            return float(line.split()[1])
    return 0.0


@pytest.fixture(scope="module")
def busy_worker(worker: Worker, kafka_bootstrap: str) -> Worker:
    """The worker after it has decided some posts and dead-lettered some payloads."""
    asyncio.run(_produce(kafka_bootstrap, worker.topics["POSTS"]))
    total = VALID_POSTS + MALFORMED
    _wait_for(f"{total} posts consumed", lambda: _posts_consumed(worker.metrics()) >= total, 60,
              lambda: worker.metrics()[:2000] + "\n" + _tail(worker.log))
    return worker


@dataclass
class Prometheus:
    url: str
    log: Path

    def api(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        status, body = _get(f"{self.url}/api/v1/{path}{query}")
        assert status == 200, f"{path} answered {status}: {body[:500]!r}\n{_tail(self.log)}"
        payload = json.loads(body)
        assert payload["status"] == "success", payload
        return payload["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector"
        return data["result"]


@pytest.fixture(scope="module")
def prometheus(busy_worker: Worker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    scratch = tmp_path_factory.mktemp("prometheus-live")
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [{"job_name": "feedwarden",
                            "static_configs": [{"targets": [f"127.0.0.1:{busy_worker.port}"]}]}],
    }
    (scratch / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = _free_port()
    log = scratch / "prometheus.log"
    assert PROMETHEUS is not None
    with log.open("wb") as out:
        process = subprocess.Popen(
            [PROMETHEUS, f"--config.file={scratch / 'prometheus.yml'}",
             f"--storage.tsdb.path={scratch / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
             "--log.level=warn"],
            cwd=scratch, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
        )
    handle = Prometheus(f"http://127.0.0.1:{port}", log)
    try:
        def ready() -> bool:
            assert process.poll() is None, f"prometheus exited with {process.returncode}\n{_tail(log)}"
            return _get(f"{handle.url}/-/ready")[0] == 200

        _wait_for("Prometheus to be ready", ready, 60, lambda: _tail(log))
        yield handle
    finally:
        stop_process(process, 30.0)


def _value(sample: dict[str, Any]) -> float:
    return float(sample["value"][1])


def test_target_is_up_and_metrics_arrive(prometheus: Prometheus) -> None:
    up = _wait_for("a successful scrape", lambda: prometheus.query('up{job="feedwarden"} == 1') or None, 30,
                   lambda: json.dumps(prometheus.api("targets"), indent=1)[:3000])
    assert len(up) == 1
    scraped = prometheus.query('{__name__=~"feedwarden_.+", job="feedwarden"}')
    names = {s["metric"]["__name__"] for s in scraped}
    for name in ("feedwarden_posts_total", "feedwarden_decisions_total", "feedwarden_dead_letters_total",
                 "feedwarden_end_to_end_seconds_bucket", "feedwarden_batch_stage_seconds_bucket",
                 "feedwarden_model_info", "feedwarden_ready"):
        assert name in names, f"{name} not scraped; got {sorted(names)}"


def test_scraped_values_match_what_the_rules_expect(prometheus: Prometheus) -> None:
    _wait_for("a successful scrape", lambda: prometheus.query('up{job="feedwarden"} == 1') or None, 30, str)
    [posts] = prometheus.query("feedwarden_posts_total")
    assert _value(posts) >= VALID_POSTS + MALFORMED
    decided = sum(_value(s) for s in prometheus.query("feedwarden_decisions_total"))
    assert decided >= VALID_POSTS
    assert {s["metric"]["action"] for s in prometheus.query("feedwarden_decisions_total")} <= {
        "hide", "warn", "badge", "allow"}
    [dead] = prometheus.query('feedwarden_dead_letters_total{error="invalid_json"}')
    assert _value(dead) >= MALFORMED
    [ready] = prometheus.query("feedwarden_ready")
    assert _value(ready) == 1
    # The bucket bounds the SLO and backlog rules select, as the real exposition spells them.
    [count] = prometheus.query("feedwarden_end_to_end_seconds_count")
    assert _value(count) >= VALID_POSTS
    for le in ("0.3", "10.0"):
        [bucket] = prometheus.query(f'feedwarden_end_to_end_seconds_bucket{{le="{le}"}}')
        assert 0 <= _value(bucket) <= _value(count), prometheus.query("feedwarden_end_to_end_seconds_bucket")
    [info] = prometheus.query("feedwarden_model_info")
    assert info["metric"]["version"] == "tiny-1"


def test_every_rule_evaluates(prometheus: Prometheus) -> None:
    expected = {r.get("alert") or r.get("record") for r in rules()}

    def evaluated() -> list[dict[str, Any]] | None:
        loaded = [r for g in prometheus.api("rules")["groups"] for r in g["rules"]]
        broken = [(r["name"], r.get("lastError")) for r in loaded if r["health"] == "err"]
        assert not broken, f"rules failing to evaluate: {broken}"
        return loaded if all(r["health"] == "ok" for r in loaded) else None

    loaded = _wait_for("every rule to be evaluated", evaluated, 30,
                       lambda: json.dumps(prometheus.api("rules"), indent=1)[:3000])
    assert {r["name"] for r in loaded} == expected


def test_recording_rules_produce_series(prometheus: Prometheus) -> None:
    recorded = 'feedwarden:end_to_end_slo_errors:ratio_rate5m{job="feedwarden"}'
    _wait_for("the 5m SLO error ratio to be recorded", lambda: prometheus.query(recorded) or None, 30,
              lambda: _tail(prometheus.log))


def test_nothing_fires_on_a_healthy_worker(prometheus: Prometheus) -> None:
    _wait_for("a successful scrape", lambda: prometheus.query('up{job="feedwarden"} == 1') or None, 30, str)
    time.sleep(3)  # a few evaluation rounds
    firing = [a["labels"]["alertname"] for a in prometheus.api("alerts")["alerts"] if a["state"] == "firing"]
    assert not firing, f"alerts firing on a healthy worker: {firing}"
    assert {a["alert"] for a in alerts()}  # rules were loaded for this to mean something


def test_promtool_accepts_the_exposition(busy_worker: Worker) -> None:
    assert PROMTOOL is not None
    result = subprocess.run([PROMTOOL, "check", "metrics"], input=busy_worker.metrics(), capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_stopped_worker_is_seen_down(prometheus: Prometheus, busy_worker: Worker) -> None:
    """Last in this module: stops the worker. `up` drops to 0 and FeedwardenWorkerDown goes
    pending (it fires after its `for: 2m`)."""
    stop_process(busy_worker.process, 30.0)
    _wait_for("up == 0", lambda: prometheus.query('up{job="feedwarden"} == 0') or None, 30,
              lambda: json.dumps(prometheus.api("targets"), indent=1)[:3000])

    def pending() -> bool:
        return any(a["labels"]["alertname"] == "FeedwardenWorkerDown" and a["state"] == "pending"
                   for a in prometheus.api("alerts")["alerts"])

    _wait_for("FeedwardenWorkerDown to be pending", pending, 30,
              lambda: json.dumps(prometheus.api("alerts"), indent=1)[:3000])
