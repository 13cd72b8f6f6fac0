"""Prometheus metrics of the worker, all prefixed `feedwarden_`.

One registry per worker so tests can run several apps in one process. Label
values are bounded sets (actions, label names of the bundle, error codes,
stage names); post text and ids never appear in metrics.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
STAGES = ("decode", "tokenize", "infer", "policy", "produce")


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.posts = Counter("feedwarden_posts", "Messages consumed from the posts topic.", registry=r)
        self.decisions = Counter(
            "feedwarden_decisions", "Decisions emitted, by action.", ["action"], registry=r
        )
        self.label_hits = Counter(
            "feedwarden_label_decisions",
            "Labels at or above a threshold, by label and the action they fired.",
            ["label", "action"],
            registry=r,
        )
        self.dead_letters = Counter(
            "feedwarden_dead_letters", "Messages sent to the dead-letter topic, by error code.",
            ["error"], registry=r,
        )
        self.batch_size = Histogram(
            "feedwarden_batch_size", "Posts per micro-batch.", buckets=BATCH_BUCKETS, registry=r
        )
        self.stage_seconds = Histogram(
            "feedwarden_batch_stage_seconds",
            "Time per micro-batch spent in each stage (decode, tokenize, infer, policy, produce).",
            ["stage"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.inference_seconds = Histogram(
            "feedwarden_inference_seconds", "Model inference time per micro-batch.",
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.end_to_end_seconds = Histogram(
            "feedwarden_end_to_end_seconds",
            "From the post's broker timestamp to its decision being acknowledged.",
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.model_info = Info(
            "feedwarden_model", "Serving bundle and policy versions.", registry=r
        )
        self.bundle_rejected = Counter(
            "feedwarden_bundle_rejected",
            "Model updates refused (digest mismatch, label order, failed load), by reason.",
            ["reason"], registry=r,
        )
        self.bundle_swaps = Counter(
            "feedwarden_bundle_swaps", "Model bundles hot-swapped in.", registry=r
        )
        self.ready = Gauge(
            "feedwarden_ready", "1 while the worker is connected and serving, else 0.", registry=r
        )
        self.duplicates = Counter(
            "feedwarden_duplicate_posts",
            "Posts decided again after a redelivery (same post id seen recently).",
            registry=r,
        )
        # Drift (per label of the serving bundle).
        self.drift_observed_rate = Gauge(
            "feedwarden_drift_observed_rate", "Flagged rate in the last closed window.",
            ["label"], registry=r,
        )
        self.drift_reference_rate = Gauge(
            "feedwarden_drift_reference_rate", "Flagged rate on the bundle's calibration set.",
            ["label"], registry=r,
        )
        self.drift_statistic = Gauge(
            "feedwarden_drift_statistic",
            "Drift test statistic over its critical value in the last closed window (>1 drifts).",
            ["label", "test"], registry=r,
        )
        self.drift_alerts = Counter(
            "feedwarden_drift_alerts", "Drift alerts raised, by label and severity.",
            ["label", "severity"], registry=r,
        )
        self.retrain_requests = Counter(
            "feedwarden_retrain_requests", "Retrain requests emitted on sustained drift.", registry=r
        )
        # Shadow scoring of a candidate bundle (never acted on).
        self.shadow_info = Info(
            "feedwarden_shadow_model", "Candidate bundle scored in shadow (version empty: none).", registry=r
        )
        self.shadow_posts = Counter(
            "feedwarden_shadow_posts", "Posts scored by both the serving and the shadow bundle.", registry=r
        )
        self.shadow_flag_rate = Gauge(
            "feedwarden_shadow_flag_rate",
            "Share of shadow-compared posts flagged per label, by role (serving or shadow).",
            ["label", "role"], registry=r,
        )
        self.shadow_action_agreement = Gauge(
            "feedwarden_shadow_action_agreement",
            "Share of shadow-compared posts where both bundles chose the same action.", registry=r,
        )
        self.drift_late_stats = Counter(
            "feedwarden_drift_late_stats",
            "Per-batch drift stats that arrived after their window was evaluated (not counted).",
            registry=r,
        )
