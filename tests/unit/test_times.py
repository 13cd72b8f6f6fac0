"""RFC 3339: what the contracts accept and how they write times."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from feedwarden import times


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-22T01:30:00Z", datetime(2026, 11, 22, 1, 30, tzinfo=UTC)),
        ("2026-11-22t01:30:00.25z", datetime(2026, 11, 22, 1, 30, 0, 250000, tzinfo=UTC)),
        ("2026-11-22T02:30:00+01:00", datetime(2026, 11, 22, 2, 30, tzinfo=timezone(timedelta(hours=1)))),
    ],
)
def test_parse_accepts_rfc3339_date_times(text: str, expected: datetime) -> None:
    assert times.parse(text) == expected


@pytest.mark.parametrize(
    "value",
    [
        "2026-11-22",  # a date is not a date-time
        "2026-11-22T01:30:00",  # no offset: local time of nobody knows where
        "20261122T013000Z",  # ISO 8601 basic format, which Python accepts
        "2026-11-22 01:30:00Z",
        "2026-02-30T01:30:00Z",  # the format is right, the day does not exist
        " 2026-11-22T01:30:00Z",
        1764000000,
        None,
    ],
)
def test_parse_refuses_everything_else_with_a_reason(value: object) -> None:
    with pytest.raises(ValueError, match="RFC 3339|valid date-time"):
        times.parse(value)


def test_format_epoch_round_trips_through_parse() -> None:
    text = times.format_epoch(1_764_000_000.123)
    assert text == "2025-11-24T16:00:00.123Z"
    assert times.parse(text).timestamp() == pytest.approx(1_764_000_000.123)
