"""`feedwarden bench`: engine ceiling vs the worker on the embedded broker, from one run on the same posts.

1. Engine: the serving Scorer in this process (decode is done up front;
   tokenize + graph + policy are timed) over the posts, in chunks of the
   worker's batch size. Measured before AND after the broker phases, because
   on a shared machine the available CPU drifts during a run; the figure used
   for the ratio is the median of every pass.
2. End to end: a worker subprocess on a fresh embedded Tansu meets a backlog
   of the same posts (produced before it joins); throughput is decisions per
   second after the first 10% of them (`steady_rate`), timed by the decision
   records' producer timestamps and read once the worker is done, so no
   consumer competes with it for the CPU.
3. Latency: the same worker, posts produced at a paced rate of half the
   measured end-to-end maximum (or `--paced-rate`); from each post's send to
   its decision record's producer timestamp, p50/p95/p99. The decisions are
   read after the phase, like the backlog's, so no bench consumer and its
   broker fetches share the two cores with the worker meanwhile.

Stage time per batch (decode, tokenize, infer, policy, produce) comes from
the worker's own /metrics; RSS from /proc/<pid>/status during the load.
Progress goes to stderr; the summary (or `--json`) to stdout. `--repeat N`
makes N whole runs and tabulates the headline figures per run and their
medians: on a shared machine one run's ratio is noise, a median is a figure.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import cycle, islice
from pathlib import Path
from typing import Any, TextIO

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from feedwarden.models.engine import ENGINE_THREAD_NAME
from feedwarden.stream.broker import EmbeddedBroker, free_port, start_broker
from feedwarden.stream.runner import local_worker_env, produce_posts, worker_process
from feedwarden.stream.samples import numbered_posts
from feedwarden.stream.settings import Settings
from feedwarden.stream.worker import ensure_topics

READY_TIMEOUT_S = 120.0
DRAIN_TIMEOUT_S = 600.0
# Realistic traffic when the shared data is present: Janitr's validation posts (x.com, mixed labels).
JANITR_VALID = Path(__file__).resolve().parents[3] / "shared" / "data" / "janitr" / "valid.jsonl"
ENGINE_STAGES = ("tokenize", "infer", "policy")
# Decisions are timed per batch (a batch's records share their send time), so the rate
# needs enough batches; --quick drains ~3.
MIN_MEASURED_BATCHES = 10
STARTUP_SHARE = 0.1  # end-to-end throughput is measured after the first 10% of the backlog's decisions
DRAIN_POLL_S = 0.5  # how often the bench reads the worker's committed offsets while it drains the backlog


@dataclass(frozen=True)
class BenchResult:
    batch_size: int
    posts: int
    seconds: float
    batches: int
    stage_seconds: dict[str, float]

    @property
    def posts_per_second(self) -> float:
        return self.posts / self.seconds

    def describe(self) -> str:
        total = sum(self.stage_seconds.values()) or 1.0
        shares = ", ".join(f"{stage} {seconds / total:.0%}" for stage, seconds in
                           sorted(self.stage_seconds.items(), key=lambda kv: -kv[1]))
        return (f"batch {self.batch_size:>4}: {self.posts} posts in {self.seconds:.1f}s = "
                f"{self.posts_per_second:.0f} posts/s; {self.batches} batches, mean "
                f"{self.posts / max(1, self.batches):.1f} posts; time by stage: {shares}")


@dataclass(frozen=True)
class BenchOptions:
    posts: int = 5000
    batch_size: int | None = None  # None: the worker's setting (FEEDWARDEN_BATCH_SIZE or its default)
    paced_seconds: float = 15.0
    paced_rate: float | None = None  # posts/s; None: half the measured end-to-end maximum
    # The paced producer batches like a platform's would: 5 ms is the Kafka producer's default
    # since Apache Kafka 4.0 (KIP-1030; it was 0). With 0, one produce request per post cost
    # the embedded broker 1.4 ms of CPU per post at ~330 posts/s and the two cores ran full
    # (p99 518 ms); with 5, 1.0 ms (p99 173-183 ms). The linger counts in the latency.
    producer_linger_ms: int = 5
    engine_repeats: int = 2
    source: Path | None = None  # JSONL with a "text" field; None: Janitr valid if present, else samples
    as_json: bool = False
    repeat: int = 1  # whole runs (fresh broker and worker each); more than 1 adds medians over them

    def __post_init__(self) -> None:
        if self.repeat < 1:
            raise ValueError(f"repeat must be at least 1, not {self.repeat}")


@dataclass
class Report:
    context: dict[str, Any] = field(default_factory=dict)
    engine: dict[str, Any] = field(default_factory=dict)
    end_to_end: dict[str, Any] = field(default_factory=dict)
    latency: dict[str, Any] = field(default_factory=dict)
    stages: dict[str, Any] = field(default_factory=dict)
    rss: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        e2e, engine = self.end_to_end.get("posts_per_second"), self.engine.get("posts_per_second")
        ratio = round(e2e / engine, 3) if e2e and engine else None
        worker_cpu = self.end_to_end.get("worker_cpu_ms_per_post")
        engine_cpu = self.engine.get("cpu_ms_per_post")
        cpu_ratio = round(engine_cpu / worker_cpu, 3) if worker_cpu and engine_cpu else None
        return {"context": self.context, "engine": self.engine, "end_to_end": self.end_to_end,
                "ratio_end_to_end_to_engine": ratio,
                # Load-independent: the engine's CPU per post over the worker's (1.0: no worker overhead).
                "cpu_ratio_engine_to_worker": cpu_ratio,
                "latency": self.latency, "stages": self.stages, "rss": self.rss}


def bench(options: BenchOptions, out: TextIO = sys.stdout, progress: TextIO = sys.stderr) -> int:
    def say(line: str) -> None:
        print(f"[bench {time.strftime('%H:%M:%S')}] {line}", file=progress, flush=True)

    settings = Settings.from_env()
    payloads, source = _payloads(options, settings.max_text_chars)
    results = []
    for number in range(1, options.repeat + 1):
        if options.repeat > 1:
            say(f"run {number} of {options.repeat}")
        results.append(_run(options, settings, payloads, source, say))
    single = options.repeat == 1
    if options.as_json:
        figures = results[0] if single else {"runs": results, "median": medians(results)}
        print(json.dumps(figures, indent=2), file=out, flush=True)
    else:
        print(describe(results[0]) if single else describe_runs(results), file=out, flush=True)
    return 0


def _run(
    options: BenchOptions, settings: Settings, payloads: list[bytes], source: str, say: Any
) -> dict[str, Any]:
    """One whole run: engine passes, the broker phases on a fresh broker, engine passes again."""
    report = Report()
    batch_size = options.batch_size or settings.batch_size
    report.context = {"posts": len(payloads), "source": source, "batch_size": batch_size,
                      "producer_linger_ms": options.producer_linger_ms,
                      "batch_wait_ms": settings.batch_wait_ms, "threads": settings.threads,
                      "cpus": os.cpu_count(), "load_before": _loadavg(), "started": _utc()}
    say(f"{len(payloads)} posts from {source}; batch {batch_size}; load average {_loadavg()}")
    engine_cpu: list[float] = []
    engine_passes = _engine_passes(payloads, batch_size, settings, options.engine_repeats, say, engine_cpu)
    with start_broker() as broker:
        say(f"broker {broker.bootstrap}")
        _broker_phases(broker, payloads, batch_size, options, report, say)
    engine_passes += _engine_passes(payloads, batch_size, settings, 1, say, engine_cpu,
                                    label="engine (after)")
    report.engine = {"posts_per_second": round(statistics.median(engine_passes), 1),
                     "passes": [round(p, 1) for p in engine_passes],
                     "cpu_ms_per_post": round(statistics.median(engine_cpu), 3),
                     "measures": "tokenize + graph + policy, in-process, chunks of the batch size"}
    report.context["load_after"] = _loadavg()
    return report.to_dict()


# ---------------------------------------------------------------- posts


def _payloads(options: BenchOptions, max_text_chars: int) -> tuple[list[bytes], str]:
    source = options.source or (JANITR_VALID if JANITR_VALID.is_file() else None)
    if source is None:
        return [orjson.dumps(p) for p in numbered_posts(options.posts, prefix="bench-")], "packaged samples"
    texts = _texts(source, max_text_chars)
    posts = ({"id": f"bench-{n:07d}", "text": text, "platform": "x"}
             for n, text in enumerate(islice(cycle(texts), options.posts)))
    return [orjson.dumps(p) for p in posts], f"{source} ({len(texts)} texts, cycled)"


def _texts(path: Path, max_text_chars: int) -> list[str]:
    """The texts the worker would decide: a longer one would be dead-lettered, and the bench
    counts decisions."""
    texts = []
    with path.open("rb") as lines:
        for line in lines:
            if line.strip():
                text = orjson.loads(line).get("text")
                if isinstance(text, str) and text.strip() and len(text) <= max_text_chars:
                    texts.append(text)
    if not texts:
        raise ValueError(f"{path} holds no posts with a text of at most {max_text_chars} characters")
    return texts


# ---------------------------------------------------------------- engine


def _engine_passes(
    payloads: Sequence[bytes], batch_size: int, settings: Settings, repeats: int, say: Any,
    cpu_ms: list[float], label: str = "engine",
) -> list[float]:
    from feedwarden.stream.records import Post, decode_post
    from feedwarden.stream.topology import Scorer

    scorer = Scorer.from_bundle(settings.bundle, threads=settings.threads, providers=settings.providers)
    decoded = [decode_post(p) for p in payloads]
    chunks = [list(decoded[i: i + batch_size]) for i in range(0, len(decoded), batch_size)]
    scorer.decide(list(chunks[0]), {})  # warm-up: first-run allocations
    rates = []
    for _ in range(repeats):
        started, cpu = time.perf_counter(), time.process_time()
        stages: dict[str, float] = {}
        for chunk in chunks:
            timed: dict[str, float] = {}
            scorer.decide(list(chunk), timed)
            for stage, seconds in timed.items():
                stages[stage] = stages.get(stage, 0.0) + seconds
        valid = sum(isinstance(p, Post) for p in decoded)
        rate = valid / (time.perf_counter() - started)
        rates.append(rate)
        cpu_ms.append(1000 * (time.process_time() - cpu) / valid)
        say(f"{label}: {rate:.0f} posts/s, {cpu_ms[-1]:.2f} CPU ms/post ("
            + ", ".join(f"{s} {v:.2f}s" for s, v in stages.items()) + ")")
    del scorer  # its thread pool must not compete with the worker
    return rates


# ---------------------------------------------------------------- worker on the broker


def _broker_phases(
    broker: EmbeddedBroker, payloads: list[bytes], batch_size: int, options: BenchOptions,
    report: Report, say: Any,
) -> None:
    run = uuid.uuid4().hex[:6]
    env = local_worker_env(broker, free_port()) | {
        "FEEDWARDEN_BATCH_SIZE": str(batch_size),
        "FEEDWARDEN_GROUP_ID": f"bench-{run}",
        "FEEDWARDEN_TOPIC_POSTS": f"bench-posts-{run}",
        "FEEDWARDEN_TOPIC_DECISIONS": f"bench-decisions-{run}",
    }
    settings = Settings.from_env(env)
    asyncio.run(ensure_topics(settings))
    backlog = [_with_id(p, f"b{n}") for n, p in enumerate(payloads)]
    asyncio.run(produce_posts(settings, list(backlog)))
    say(f"backlog of {len(backlog)} posts produced; starting the worker")
    url = f"http://127.0.0.1:{settings.web_port}"
    with worker_process(env) as worker, _RssSampler(worker.pid) as rss:
        _wait_ready(url, worker)
        rss.mark("ready")
        say(f"worker pid {worker.pid} ready; RSS {rss.current_mib():.0f} MiB; draining the backlog")
        pids = {"worker": worker.pid, "broker": broker.process.pid}
        cpu_before, engine_before = _cpu_now(pids), _engine_thread_seconds(worker.pid)
        asyncio.run(_wait_committed(settings, len(backlog), say))
        cpu = _cpu_ms_per_post(cpu_before, _cpu_now(pids), len(backlog))
        engine_threads = 1000 * (_engine_thread_seconds(worker.pid) - engine_before) / len(backlog)
        decided, ends = asyncio.run(_read_decisions(settings, len(backlog)))
        arrivals = _arrivals(decided)
        n = arrivals[-1][1]
        before = _counted(url, n)
        rate = steady_rate(arrivals)
        report.end_to_end = {"posts_per_second": round(rate, 1), "posts": n,
                             "seconds_first_to_last": round(arrivals[-1][0] - arrivals[0][0], 3),
                             "worker_cpu_ms_per_post": cpu["worker"], "broker_cpu_ms_per_post": cpu["broker"],
                             "measures": "decisions by their records' producer timestamps, read afterwards",
                             **_in_run_overhead(cpu["worker"], engine_threads)}
        report.stages = _stage_profile(before, None)
        say(f"end to end: {rate:.0f} posts/s; {report.stages['batches']} batches of "
            f"{report.stages['mean_batch']:.1f} posts")
        paced_rate = options.paced_rate or max(1.0, rate / 2)
        count = max(20, int(paced_rate * options.paced_seconds))
        paced = [_with_id(payloads[n % len(payloads)], f"p{n}") for n in range(count)]
        say(f"paced load: {count} posts at {paced_rate:.0f}/s "
            f"({paced_rate / rate:.0%} of the end-to-end maximum)")
        pids["bench"] = os.getpid()
        cpu_before, engine_before = _cpu_now(pids), _engine_thread_seconds(worker.pid)
        sent = asyncio.run(_paced(settings, paced, paced_rate, say, options.producer_linger_ms))
        asyncio.run(_wait_committed(settings, len(backlog) + count, say))
        cpu = _cpu_ms_per_post(cpu_before, _cpu_now(pids), count)
        engine_threads = 1000 * (_engine_thread_seconds(worker.pid) - engine_before) / count
        latencies = _latencies(sent, asyncio.run(_read_decisions(settings, count, ends))[0])
        after = _counted(url, n + count)
        report.latency = _latency_summary(latencies, paced_rate, count) | {
            "share_of_maximum": round(paced_rate / rate, 3),
            # The paced load's CPU per post; the bench's producer shares the cores.
            "cpu_ms_per_post": cpu, **_in_run_overhead(cpu["worker"], engine_threads)}
        report.latency["paced_batches"] = _stage_profile(after, before)
        rss.mark("end")
        report.rss = rss.summary()


def _cpu_now(pids: dict[str, int]) -> dict[str, float]:
    return {who: _cpu_seconds(pid) for who, pid in pids.items()}


def _cpu_ms_per_post(before: dict[str, float], after: dict[str, float], posts: int) -> dict[str, float]:
    return {who: round(1000 * (after[who] - before[who]) / posts, 3) for who in before}


def _cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), from /proc/<pid>/stat."""
    return _stat_seconds(Path(f"/proc/{pid}/stat"))


def _engine_thread_seconds(pid: int) -> float:
    """utime + stime of the worker's engine threads (named ENGINE_THREAD_NAME: graph lanes,
    the inference thread, the tokenizer's pool); they all live as long as the worker."""
    total = 0.0
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            if (task / "comm").read_text().strip() == ENGINE_THREAD_NAME:
                total += _stat_seconds(task / "stat")
        except OSError:
            continue  # a thread that ended meanwhile
    return total


def _stat_seconds(stat: Path) -> float:
    try:
        fields = stat.read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _in_run_overhead(worker_ms: float, engine_threads_ms: float) -> dict[str, Any]:
    """The worker's CPU beyond its engine threads, over theirs, in the same phase. Unlike the
    engine passes' CPU (measured before and after, in this process), it does not move when the
    host's speed changes between phases. Decoding posts and encoding decisions run on the
    inference thread, so they count as engine here (~0.015 ms/post, README "Performance")."""
    if engine_threads_ms <= 0:
        return {}
    return {"worker_engine_threads_cpu_ms_per_post": round(engine_threads_ms, 3),
            "worker_overhead_in_run": round(worker_ms / engine_threads_ms - 1, 3)}


def _with_id(payload: bytes, suffix: str) -> bytes:
    post = orjson.loads(payload)
    post["id"] = f"{post['id']}-{suffix}"
    return orjson.dumps(post)


def _decisions_consumer(settings: Settings) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(settings.topics.decisions, bootstrap_servers=settings.bootstrap, group_id=None,
                            auto_offset_reset="earliest", fetch_max_wait_ms=20)


async def _wait_committed(settings: Settings, expected: int, say: Any) -> None:
    """Until the worker's consumer group has committed `expected` posts (it commits a post's
    offset once the broker has acknowledged its decision records).

    Asked of the broker, not of the worker (a /metrics scrape cost it ~8 ms of its event loop),
    and nothing reads the decisions meanwhile: a downstream consumer runs elsewhere, and on this
    shared 2-core box the bench's own took CPU from the worker while it drained the backlog.
    """
    group = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap, group_id=settings.group_id,
                             enable_auto_commit=False)  # never subscribes: it only reads the group's offsets
    await group.start()
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    next_report = time.monotonic() + 5
    try:
        partitions = [TopicPartition(settings.topics.posts, p) for p in range(settings.partitions)]
        while (committed := sum([await group.committed(tp) or 0 for tp in partitions])) < expected:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{committed} of {expected} posts committed after {DRAIN_TIMEOUT_S:.0f}s")
            if time.monotonic() > next_report:
                say(f"  {committed}/{expected} committed")
                next_report += 5
            await asyncio.sleep(DRAIN_POLL_S)
    finally:
        await group.stop()


async def _read_decisions(
    settings: Settings, expected: int, start: dict[TopicPartition, int] | None = None
) -> tuple[list[tuple[float, str]], dict[TopicPartition, int]]:
    """Read `expected` decisions from `start` (None: the beginning; never "latest", which Tansu
    gets wrong): (producer timestamp, post id) per decision in time order, and the next offset
    per partition. The worker's producer stamps each record when it sends it (CreateTime), so
    the timestamps time the decisions, not this read."""
    consumer = _decisions_consumer(settings)
    await consumer.start()
    for tp, offset in (start or {}).items():
        consumer.seek(tp, offset)
    decisions: list[tuple[float, str]] = []
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    try:
        while len(decisions) < expected:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(decisions)} of {expected} decisions after {DRAIN_TIMEOUT_S:.0f}s")
            batches = await consumer.getmany(timeout_ms=200)
            # a decision record's key is its post's id (stream/topology.py): no value to decode
            decisions += [(m.timestamp / 1000, (m.key or b"").decode()) for messages in batches.values()
                          for m in messages]
        ends = {tp: await consumer.position(tp) for tp in consumer.assignment()}
    finally:
        await consumer.stop()
    return sorted(decisions), ends


def _arrivals(decisions: Sequence[tuple[float, str]]) -> list[tuple[float, int]]:
    """(timestamp, decisions so far) per decision of a time-ordered list."""
    return [(stamp, n) for n, (stamp, _post) in enumerate(decisions, start=1)]


def steady_rate(arrivals: Sequence[tuple[float, int]], skip: float = STARTUP_SHARE) -> float:
    """Decisions per second after the first `skip` share of them, to the last.

    From the first decision instead, the figure depended on how small the worker's
    first batch was: a worker that takes a few posts at once decides them before
    its first full batch, which pays the engine's first-run allocations (measured:
    750 ms vs ~400 ms for later batches of 256), and the drain is only ~8 s.
    """
    total = arrivals[-1][1]
    start = next((t, count) for t, count in arrivals if count >= skip * total)
    end_time = arrivals[-1][0]
    return (total - start[1]) / max(1e-9, end_time - start[0])


async def _paced(
    settings: Settings, payloads: Sequence[bytes], rate: float, say: Any, linger_ms: int
) -> dict[str, float]:
    """Produce at `rate` posts/s; the wall-clock time each post was sent, by post id."""
    ids = [orjson.loads(payload)["id"] for payload in payloads]
    sent: dict[str, float] = {}
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap, acks="all", linger_ms=linger_ms)
    await producer.start()
    try:
        started = time.monotonic()
        next_report = started + 5
        for n, (post_id, payload) in enumerate(zip(ids, payloads, strict=True)):
            delay = started + n / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            sent[post_id] = time.time()
            await producer.send(settings.topics.posts, payload)
            if time.monotonic() > next_report:
                say(f"  paced: {n + 1}/{len(payloads)} sent")
                next_report += 5
        await producer.flush()
    finally:
        await producer.stop()
    return sent


def _latencies(sent: dict[str, float], decisions: Sequence[tuple[float, str]]) -> list[float]:
    """Seconds from each post's send to its first decision record's producer timestamp."""
    first: dict[str, float] = {}
    for stamp, post_id in decisions:
        if post_id in sent:
            first[post_id] = min(stamp, first.get(post_id, stamp))
    return [stamp - sent[post_id] for post_id, stamp in first.items()]


def _latency_summary(latencies: list[float], rate: float, count: int) -> dict[str, Any]:
    ms = sorted(x * 1000 for x in latencies)

    def pct(p: float) -> float | None:
        return round(ms[min(len(ms) - 1, int(p / 100 * len(ms)))], 1) if ms else None

    return {"rate_posts_per_second": round(rate, 1), "posts": count, "decided": len(ms),
            "p50_ms": pct(50), "p95_ms": pct(95), "p99_ms": pct(99),
            "max_ms": round(ms[-1], 1) if ms else None,
            "measures": "post sent (bench) -> its decision record sent (the worker's producer "
                        "timestamp), decisions read after the phase"}


# ---------------------------------------------------------------- worker metrics and memory


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode())


def _wait_ready(url: str, process: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the worker exited with code {process.returncode} before it was ready")
        try:
            _get(url + "/readyz")
            return
        except (urllib.error.URLError, OSError):
            time.sleep(0.2)
    raise TimeoutError(f"worker at {url} not ready in {READY_TIMEOUT_S:.0f}s")


def _batch_metrics(exposition: str) -> tuple[int, dict[str, float]]:
    batches, stages = 0, {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == "feedwarden_batch_size_count":
                batches = int(sample.value)
            elif sample.name == "feedwarden_batch_stage_seconds_sum":
                stages[sample.labels["stage"]] = sample.value
    return batches, stages


@dataclass(frozen=True)
class _Snapshot:
    batches: int
    posts: float
    stages: dict[str, float]


def _counted(url: str, posts: int, timeout_s: float = 10.0) -> _Snapshot:
    """The worker's metrics once they count `posts`: it observes a batch just after the broker
    acks its decisions, so a reader of those decisions can be ahead of the metrics."""
    deadline = time.monotonic() + timeout_s
    while True:
        snapshot = _metrics(_get(url + "/metrics"))
        if snapshot.posts >= posts or time.monotonic() > deadline:
            return snapshot
        time.sleep(0.05)


def _metrics(exposition: str) -> _Snapshot:
    batches, stages = _batch_metrics(exposition)
    posts = 0.0
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == "feedwarden_batch_size_sum":
                posts = sample.value
    return _Snapshot(batches, posts, stages)


def _stage_profile(now: _Snapshot, before: _Snapshot | None) -> dict[str, Any]:
    """Per-stage seconds, ms per batch and share; `engine_share`: tokenize+infer+policy of the total."""
    b = before or _Snapshot(0, 0.0, {})
    batches = now.batches - b.batches
    seconds = {s: now.stages[s] - b.stages.get(s, 0.0) for s in now.stages}
    total = sum(seconds.values()) or 1.0
    return {
        "batches": batches,
        "mean_batch": round((now.posts - b.posts) / max(1, batches), 1),
        "seconds": {s: round(v, 3) for s, v in seconds.items()},
        "ms_per_batch": {s: round(1000 * v / max(1, batches), 2) for s, v in seconds.items()},
        "share": {s: round(v / total, 3) for s, v in seconds.items()},
        "engine_share": round(sum(seconds.get(s, 0.0) for s in ENGINE_STAGES) / total, 3),
    }


class _RssSampler:
    """VmRSS of a process every 0.25 s in a thread, plus VmHWM at the end."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples: list[float] = []
        self.marks: dict[str, float] = {}
        self.hwm = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> _RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _status(self) -> dict[str, float]:
        try:
            text = Path(f"/proc/{self.pid}/status").read_text()
        except OSError:
            return {}
        return {line.split(":")[0]: float(line.split()[1]) / 1024 for line in text.splitlines()
                if line.startswith(("VmRSS", "VmHWM"))}

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            status = self._status()
            if "VmRSS" in status:
                self.samples.append(status["VmRSS"])
                self.hwm = max(self.hwm, status.get("VmHWM", 0.0))

    def current_mib(self) -> float:
        return self._status().get("VmRSS", 0.0)

    def mark(self, name: str) -> None:
        status = self._status()
        self.marks[name] = status.get("VmRSS", 0.0)
        self.hwm = max(self.hwm, status.get("VmHWM", 0.0))

    def summary(self) -> dict[str, Any]:
        return {"ready_mib": round(self.marks.get("ready", 0.0), 1),
                "max_under_load_mib": round(max(self.samples, default=0.0), 1),
                "end_mib": round(self.marks.get("end", 0.0), 1), "hwm_mib": round(self.hwm, 1)}


# ---------------------------------------------------------------- output


def _percent(share: float | None) -> str:
    return "?" if share is None else f"{share:.1%}"


def describe(result: dict[str, Any]) -> str:
    c, engine, e2e, lat, st, rss = (result[k] for k in ("context", "engine", "end_to_end", "latency",
                                                         "stages", "rss"))
    lines = [
        f"posts: {c['posts']} from {c['source']}; batch {c['batch_size']}, wait {c['batch_wait_ms']} ms; "
        f"{c['cpus']} CPUs; load average {c['load_before']} -> {c['load_after']}",
        f"engine (tokenize+graph+policy, no broker): {engine['posts_per_second']:.0f} posts/s "
        f"(passes {', '.join(f'{p:.0f}' for p in engine['passes'])})",
        f"end to end (produce -> decision, backlog after its first 10%): "
        f"{e2e['posts_per_second']:.0f} posts/s",
        f"ratio end to end / engine: {result['ratio_end_to_end_to_engine']} (wall clock; shared-CPU noise)"
        + (f" -- from {st['batches']} batches: a smoke test, not a measurement"
           if st["batches"] < MIN_MEASURED_BATCHES else ""),
        f"CPU per post: engine {engine['cpu_ms_per_post']} ms, worker {e2e['worker_cpu_ms_per_post']} ms "
        f"(+ broker {e2e['broker_cpu_ms_per_post']} ms); "
        f"engine/worker {result['cpu_ratio_engine_to_worker']}; in the worker, threads other than "
        f"the engine's used {_percent(e2e.get('worker_overhead_in_run'))} of the engine threads' CPU",
        f"latency at {lat['rate_posts_per_second']:.0f} posts/s ({lat['share_of_maximum']:.0%} of max; "
        f"producer linger {c.get('producer_linger_ms')} ms), "
        f"{lat['decided']}/{lat['posts']} "
        f"decided: p50 {lat['p50_ms']} ms, p95 {lat['p95_ms']} ms, p99 {lat['p99_ms']} ms, "
        f"max {lat['max_ms']} ms",
        f"worker RSS: {rss['ready_mib']:.0f} MiB ready, {rss['max_under_load_mib']:.0f} MiB max under load, "
        f"VmHWM {rss['hwm_mib']:.0f} MiB",
        f"stages under backlog ({st['batches']} batches, mean {st['mean_batch']} posts; "
        f"engine stages {st['engine_share']:.0%} of staged time):",
    ]
    lines += [f"  {stage:<9} {st['ms_per_batch'][stage]:8.2f} ms/batch  {st['share'][stage]:6.1%}"
              for stage in sorted(st["seconds"], key=lambda s: -st["seconds"][s])]
    paced = lat.get("paced_batches") or {}
    if paced:
        cpu = lat.get("cpu_ms_per_post") or {}
        lines.append(f"paced: {paced['batches']} batches, mean {paced['mean_batch']} posts; CPU ms/post "
                     + ", ".join(f"{who} {ms}" for who, ms in cpu.items()))
    return "\n".join(lines)


# What `--repeat` tabulates per run and as a median over the runs: the targets first.
HEADLINE = (
    ("ratio_end_to_end_to_engine", "ratio end to end / engine"),
    ("end_to_end.posts_per_second", "end to end, posts/s"),
    ("engine.posts_per_second", "engine, posts/s"),
    ("end_to_end.worker_overhead_in_run", "worker overhead in the run"),
    ("cpu_ratio_engine_to_worker", "CPU engine / worker"),
    ("latency.rate_posts_per_second", "paced load, posts/s"),
    ("latency.p50_ms", "latency p50, ms"),
    ("latency.p99_ms", "latency p99, ms"),
    ("rss.max_under_load_mib", "RSS max under load, MiB"),
)


def _figure(result: dict[str, Any], path: str) -> float | None:
    value: Any = result
    for key in path.split("."):
        value = value.get(key) if isinstance(value, dict) else None
    return float(value) if isinstance(value, int | float) else None


def medians(results: Sequence[dict[str, Any]]) -> dict[str, float]:
    """The median of each headline figure over the runs that have it."""
    found = {path: [v for r in results if (v := _figure(r, path)) is not None] for path, _ in HEADLINE}
    return {path: round(statistics.median(values), 3) for path, values in found.items() if values}


def describe_runs(results: Sequence[dict[str, Any]]) -> str:
    """One row per headline figure: each run, then the median."""
    middle = medians(results)
    header = " | ".join(["figure", *(f"run {n}" for n in range(1, len(results) + 1)), "median"])
    rows = [header, " | ".join(["---"] * (len(results) + 2))]
    for path, name in HEADLINE:
        cells = [_cell(_figure(r, path)) for r in results]
        rows.append(" | ".join([name, *cells, _cell(middle.get(path))]))
    fewest = min(r.get("stages", {}).get("batches", MIN_MEASURED_BATCHES) for r in results)
    if fewest < MIN_MEASURED_BATCHES:
        rows.append(f"-- end to end from as few as {fewest} batches: a smoke test, not a measurement")
    first = results[0]["context"]
    return (f"{len(results)} runs; posts: {first['posts']} from {first['source']}; batch "
            f"{first['batch_size']}; load average {first['load_before']} -> "
            f"{results[-1]['context']['load_after']}\n" + "\n".join(rows))


def _cell(value: float | None) -> str:
    return "?" if value is None else f"{value:g}"


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def _utc() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


