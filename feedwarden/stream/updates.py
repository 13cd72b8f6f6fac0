"""Hot swap on `model.updates`: which messages to act on, and loading a version safely.

The message names a registry version, never a path (`models.updates`). A
version is loaded in a worker thread and fully checked before anything
changes: the announced manifest digest and every file digest
(`Registry.load`), each head's label count against the graph's outputs
(building the `Engine`), and the policy against the labels (`Scorer`). Any
failure raises `SwapRejected` with a bounded reason for
`feedwarden_bundle_rejected{reason}`; the caller keeps serving what it had.

Every worker reads the whole topic from the earliest offset (Tansu's
"latest" offsets are unreliable, and a restarted worker must catch up), so
`triage` skips what is already in effect or superseded: a promote or
rollback is applied only if its version is the registry's current one (the
registry appends to its history before the message is published, so an
older message names an older version), and a shadow only if no promotion
came after it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from feedwarden.models.bundle import BundleError
from feedwarden.models.engine import Engine
from feedwarden.models.registry import Promotion, Registry, RegistryError
from feedwarden.models.updates import ModelUpdate
from feedwarden.policy import Policy
from feedwarden.policy.rules import PolicyError
from feedwarden.stream.settings import Settings, Topics
from feedwarden.stream.topology import Moderator, Scorer

log = logging.getLogger(__name__)

REASONS = ("malformed", "unknown_version", "digest", "labels", "policy", "load")


class SwapRejected(Exception):
    """A model update that must not be applied; `reason` is one of `REASONS`."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Serving:
    """The versions in effect on this worker."""

    version: str
    shadow: str | None = None


def triage(update: ModelUpdate, serving: Serving, current: Promotion | None) -> str | None:
    """Why `update` needs no action (for the log), or None to apply it.

    `current` is the registry's latest promotion, None if the registry has
    no history (then every update is tried, and loading decides).
    """
    if update.version == serving.version:
        return f"{update.version} is already serving"
    if update.event == "shadow":
        if update.version == serving.shadow:
            return f"{update.version} is already the shadow"
        if current is not None and _at(current.at) > _at(update.at):
            return f"shadow {update.version} is stale: {current.version} was promoted after it"
        return None
    if current is not None and current.version != update.version:
        return f"{update.event} of {update.version} is superseded: the registry serves {current.version}"
    return None


def _at(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def current_promotion(registry: Registry) -> Promotion | None:
    """The registry's latest promotion; an unreadable history counts as none (loading still verifies)."""
    try:
        return registry.current()
    except (OSError, ValueError, TypeError) as exc:
        log.warning("cannot read the registry history at %s: %s", registry.root, exc)
        return None


def load_moderator(registry: Registry, update: ModelUpdate, settings: Settings, topics: Topics) -> Moderator:
    """Load and verify `update.version` into a Moderator publishing to `topics`. Blocking: run in a thread."""
    try:
        bundle = registry.load(update.version, update.manifest_sha256)
    except RegistryError as exc:
        raise SwapRejected("unknown_version", str(exc)) from exc
    except (BundleError, OSError) as exc:
        raise SwapRejected("digest", str(exc)) from exc
    try:
        engine = Engine(bundle, threads=settings.threads, providers=settings.providers)
    except BundleError as exc:
        raise SwapRejected("labels", str(exc)) from exc
    except Exception as exc:  # noqa: BLE001 - onnxruntime and tokenizers raise their own types
        raise SwapRejected("load", f"{type(exc).__name__}: {exc}") from exc
    try:
        scorer = Scorer(engine, Policy.from_file(bundle.policy_path))
    except (PolicyError, OSError) as exc:
        raise SwapRejected("policy", str(exc)) from exc
    return Moderator(scorer, topics, max_text_chars=settings.max_text_chars)
