"""RFC 3339 times: the one format of every timestamp in the message contracts."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime

# RFC 3339 section 5.6 date-time: full date, "T", time with optional fraction, "Z" or an offset.
_DATE_TIME = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")


def parse(value: object) -> datetime:
    """The moment `value` names; ValueError (saying why) unless it is an RFC 3339 date-time string."""
    if not isinstance(value, str):
        raise ValueError(f"a timestamp must be an RFC 3339 string, not {type(value).__name__}")
    if not _DATE_TIME.fullmatch(value):
        raise ValueError(f"{value[:64]!r} is not an RFC 3339 date-time (e.g. 2026-11-22T01:30:00Z)")
    try:
        return datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValueError(f"{value[:64]!r} is not a valid date-time: {exc}") from exc


def format_epoch(epoch_seconds: float | None = None) -> str:
    """`epoch_seconds` (default: now) as RFC 3339 UTC with milliseconds, e.g. 2026-11-22T01:30:00.000Z."""
    moment = datetime.fromtimestamp(time.time() if epoch_seconds is None else epoch_seconds, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
