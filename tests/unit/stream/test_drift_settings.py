"""The model loop's settings: defaults, environment names, refusals naming the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from feedwarden.models.bundle import Bundle
from feedwarden.stream.loop import loop_topics
from feedwarden.stream.settings import DriftSettings, Settings, SettingsError


def test_defaults_match_the_documented_ones(tiny_bundle: Bundle) -> None:
    drift = Settings.from_env({"FEEDWARDEN_BUNDLE": str(tiny_bundle.path)}).drift
    assert drift == DriftSettings()
    assert (drift.window_s, drift.min_posts, drift.alpha, drift.sustain_k, drift.sustain_m) == (
        300.0, 200, 0.01, 3, 5)
    assert drift.registry == Path("registry")
    assert drift.topics() == ("drift.stats", "drift.alerts", "retrain.requests", "model.updates",
                              "decisions.shadow")


def test_environment_overrides(tiny_bundle: Bundle, tmp_path: Path) -> None:
    env = {
        "FEEDWARDEN_BUNDLE": str(tiny_bundle.path),
        "FEEDWARDEN_PARTITIONS": "12",
        "FEEDWARDEN_REGISTRY": str(tmp_path),
        "FEEDWARDEN_DRIFT_WINDOW_SECONDS": "60",
        "FEEDWARDEN_DRIFT_MIN_POSTS": "50",
        "FEEDWARDEN_DRIFT_ALPHA": "0.05",
        "FEEDWARDEN_DRIFT_SUSTAIN_K": "2",
        "FEEDWARDEN_DRIFT_SUSTAIN_M": "4",
        "FEEDWARDEN_DRIFT_COOLDOWN_SECONDS": "600",
        "FEEDWARDEN_TOPIC_DRIFT_STATS": "ds",
        "FEEDWARDEN_TOPIC_MODEL_UPDATES": "mu",
    }
    settings = Settings.from_env(env)
    drift = settings.drift
    assert (drift.window_s, drift.min_posts, drift.alpha, drift.sustain_k, drift.sustain_m) == (
        60.0, 50, 0.05, 2, 4)
    assert (drift.cooldown_s, drift.registry, drift.stats_topic, drift.updates_topic) == (
        600.0, tmp_path, "ds", "mu")
    # One partition for the drift stats (one worker owns every label) and the updates (ordered).
    assert loop_topics(settings) == {"ds": 1, "mu": 1, "drift.alerts": 1, "retrain.requests": 1,
                                     "decisions.shadow": 12}


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("FEEDWARDEN_DRIFT_WINDOW_SECONDS", "0", "FEEDWARDEN_DRIFT_WINDOW_SECONDS"),
        ("FEEDWARDEN_DRIFT_MIN_POSTS", "0", "FEEDWARDEN_DRIFT_MIN_POSTS"),
        ("FEEDWARDEN_DRIFT_ALPHA", "1", "FEEDWARDEN_DRIFT_ALPHA"),
        ("FEEDWARDEN_DRIFT_SUSTAIN_K", "6", "FEEDWARDEN_DRIFT_SUSTAIN_K"),
        ("FEEDWARDEN_DRIFT_COOLDOWN_SECONDS", "-1", "FEEDWARDEN_DRIFT_COOLDOWN_SECONDS"),
        ("FEEDWARDEN_DRIFT_SUSTAIN_M", "x", "FEEDWARDEN_DRIFT_SUSTAIN_M"),
        ("FEEDWARDEN_TOPIC_DRIFT_ALERTS", "a b", "not a valid Kafka topic"),
        ("FEEDWARDEN_TOPIC_SHADOW", "model.updates", "distinct"),
        ("FEEDWARDEN_TOPIC_SHADOW", "decisions", "must differ from the moderation topics"),
    ],
)
def test_bad_values_are_refused_naming_the_problem(
    tiny_bundle: Bundle, name: str, value: str, message: str
) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env({"FEEDWARDEN_BUNDLE": str(tiny_bundle.path), name: value})
