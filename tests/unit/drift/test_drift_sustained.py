"""SustainedDrift: exact k-of-m sequences, cooldown, model changes, replays."""

from __future__ import annotations

import orjson
import pytest

from feedwarden.drift import DriftAlert, DriftError, Statistic, SustainedDrift, WindowResult, WindowStats
from feedwarden.drift.simulate import demo_references

MINUTE = 60.0


def alert(label: str, i: int) -> DriftAlert:
    return DriftAlert(
        label=label, window_start=i * MINUTE, window_end=(i + 1) * MINUTE, n=1000,
        observed_rate=0.05, reference_rate=0.02,
        statistic=Statistic("fisher_exact_rate", 40.0, 12.0, 1e-10, 1e-9, 1),
        severity="critical", estimated_prevalence=0.05, psi=0.3,
    )


def window(i: int, drifting: str = "", tested: str = "ab", version: str = "v1") -> WindowResult:
    return WindowResult(
        window_start=i * MINUTE, window_end=(i + 1) * MINUTE, model_version=version,
        tested=frozenset(tested), alerts=tuple(alert(label, i) for label in drifting),
    )


def run(machine: SustainedDrift, pattern: str, label: str = "a", first: int = 0) -> list[int]:
    """Feed windows where 'D' means the label alerted, '.' tested quietly, '-' untested."""
    fired = []
    for i, mark in enumerate(pattern, start=first):
        tested = "" if mark == "-" else label
        request = machine.observe(window(i, label if mark == "D" else "", tested))
        if request is not None:
            fired.append(i)
    return fired


@pytest.mark.parametrize(
    ("pattern", "fired"),
    [
        ("DDD", [2]),
        ("D.D.D", [4]),
        ("DD...D", []),  # window 5's last five hold only two drifting windows
        ("D..D..D", []),
        ("D-D--D", [5]),  # untested windows neither count nor push evidence out
        ("DD.", []),  # the current window must itself drift
        ("DD.D", [3]),
    ],
)
def test_k_of_m_sequences(pattern, fired):
    assert run(SustainedDrift(k=3, m=5, cooldown_seconds=1e9), pattern) == fired


def test_cooldown_in_window_time():
    machine = SustainedDrift(k=3, m=5, cooldown_seconds=5 * MINUTE)
    # requested at window 2 (end 3 min); windows 3..6 end 4..7 min: within cooldown; window 7 ends at 8 min.
    assert run(machine, "D" * 10) == [2, 7]


def test_model_change_clears_history_and_cooldown():
    machine = SustainedDrift(k=2, m=3, cooldown_seconds=1e9)
    assert run(machine, "DD") == [1]
    assert machine.observe(window(2, "a", version="v1")) is None  # cooling down
    assert machine.observe(window(3, "a", version="v2")) is None  # fresh history under v2
    request = machine.observe(window(4, "a", version="v2"))
    assert request is not None and request.model_version == "v2"
    assert request.windows == ((3 * MINUTE, 4 * MINUTE), (4 * MINUTE, 5 * MINUTE))


def test_replayed_and_out_of_order_windows_are_ignored():
    machine = SustainedDrift(k=2, m=3)
    assert machine.observe(window(5, "a")) is None
    assert machine.observe(window(5, "a")) is None  # replay after a restart
    assert machine.observe(window(4, "a")) is None  # late
    assert machine.observe(window(6, "a")) is not None


def test_labels_that_trip_together_share_one_request_with_their_evidence():
    machine = SustainedDrift(k=2, m=3)
    assert machine.observe(window(0, "ab")) is None
    assert machine.observe(window(1, "b")) is not None  # b trips alone at 2 of 2
    request = machine.observe(window(2, "a"))
    assert request is not None and request.labels == ("a",)
    assert [(e.label, e.window_start) for e in request.evidence] == [("a", 0.0), ("a", 2 * MINUTE)]
    machine = SustainedDrift(k=2, m=3)
    machine.observe(window(0, "ab"))
    both = machine.observe(window(1, "ab"))
    assert both is not None and both.labels == ("a", "b") and len(both.evidence) == 4
    payload = orjson.loads(orjson.dumps(both.to_dict()))
    assert payload["requested_at"] == "1970-01-01T00:02:00.000Z"
    assert payload["windows"][0] == {"start": "1970-01-01T00:00:00.000Z", "end": "1970-01-01T00:01:00.000Z"}
    assert payload["evidence"][0]["label"] == "a"


def test_window_result_from_stats():
    refs = demo_references()
    stats = {
        "hate": WindowStats("hate", 0.0, 60.0, 500, 10, (500,) + (0,) * 9),
        "spam": WindowStats("spam", 0.0, 60.0, 100, 10, (100,) + (0,) * 9),
        "unknown": WindowStats("unknown", 0.0, 60.0, 500, 10, (500,) + (0,) * 9),
    }
    result = WindowResult.of(stats, refs, [], model_version="v1")
    assert result.tested == frozenset({"hate"})
    assert (result.window_start, result.window_end) == (0.0, 60.0)
    with pytest.raises(DriftError):
        WindowResult.of({}, refs, [], model_version="v1")
    with pytest.raises(DriftError):
        SustainedDrift(k=4, m=3)
