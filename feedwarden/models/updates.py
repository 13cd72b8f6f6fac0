"""The `model.updates` contract: how workers learn that the serving bundle changed.

One JSON object per message, keyed by the bundle name (UTF-8), so every update
of one bundle lands on one partition, in order:

    {"version": "feedwarden-default-r20261122T013000Z",   # a registry version name
     "manifest_sha256": "<64 lowercase hex>",              # digest of that version's manifest.json
     "event": "promote" | "rollback" | "shadow",
     "reason": "free text for humans",
     "at": "2026-11-22T01:30:00+00:00",                    # RFC 3339 with offset
     "request": {...} | null}                             # the RetrainRequest that caused it, if any

A worker resolves `version` in its own registry (`Registry.load(version,
manifest_sha256)`), never a path from the message, and refuses the update if
the digest differs. Events:

- `promote`: serve this version from now on (hot-swap thresholds, calibration,
  and the graph if it changed).
- `rollback`: the same, but the version is an older one the registry went back to.
- `shadow`: keep serving the current version; also score with this one, do
  not act on its decisions, and compare flag rates. `feedwarden promote
  VERSION` then publishes a `promote` for it once the comparison passes.

Unknown fields are ignored (forward compatible); a missing or ill-typed known
field makes the message invalid (`UpdateError`), and a worker should count
and skip it rather than crash.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from feedwarden import times
from feedwarden.models.registry import Promotion, RegistryError, check_version

UPDATES_TOPIC = "model.updates"
EVENTS = ("promote", "rollback", "shadow")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class UpdateError(ValueError):
    """A model.updates message breaks the contract."""


@dataclass(frozen=True)
class ModelUpdate:
    version: str
    manifest_sha256: str
    event: str
    reason: str
    at: str
    request: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        try:
            check_version(self.version)
        except RegistryError as exc:
            raise UpdateError(str(exc)) from exc
        if not isinstance(self.manifest_sha256, str) or not _SHA256.match(self.manifest_sha256):
            raise UpdateError(f"manifest_sha256 {self.manifest_sha256!r} is not 64 lowercase hex digits")
        if self.event not in EVENTS:
            raise UpdateError(f"event {self.event!r} is not one of {EVENTS}")
        if not isinstance(self.reason, str):
            raise UpdateError("reason must be a string")
        _check_time(self.at)
        if self.request is not None and not isinstance(self.request, Mapping):
            raise UpdateError("request must be an object or null")

    @classmethod
    def from_promotion(cls, promotion: Promotion, request: Mapping[str, Any] | None = None) -> ModelUpdate:
        """The message announcing a registry promotion or rollback."""
        return cls(
            promotion.version,
            promotion.manifest_sha256,
            promotion.event,
            promotion.reason,
            promotion.at,
            request,
        )

    @classmethod
    def shadow(
        cls, version: str, manifest_sha256: str, reason: str, request: Mapping[str, Any] | None = None
    ) -> ModelUpdate:
        return cls(version, manifest_sha256, "shadow", reason, times.format_epoch(), request)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["request"] = None if self.request is None else dict(self.request)
        return data

    def encode(self) -> bytes:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":")).encode()


def decode(raw: bytes | str) -> ModelUpdate:
    """Parse and validate one message value."""
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UpdateError(f"not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise UpdateError(f"message is {type(data).__name__}, expected an object")
    known = ("version", "manifest_sha256", "event", "reason", "at")
    missing = [name for name in known if not isinstance(data.get(name), str)]
    if missing:
        raise UpdateError(f"missing or non-string fields {missing}")
    return ModelUpdate(**{name: data[name] for name in known}, request=data.get("request"))


def _check_time(value: object) -> None:
    try:
        times.parse(value)
    except ValueError as exc:
        raise UpdateError(f"at: {exc}") from exc
