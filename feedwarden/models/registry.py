"""A file-system registry of bundle versions with a promotion history.

Layout under the root: one directory per version (immutable once written),
and `history.jsonl`, one line per promotion or rollback. The serving version
is the last line's; rollback appends the version served before it. Workers
are told a version (never a path) on `model.updates` and resolve it here, so
an update message cannot point a worker outside the registry.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from feedwarden.models.bundle import MANIFEST, Bundle, BundleError, load_bundle, sha256_file

VERSION_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
HISTORY = "history.jsonl"


class RegistryError(ValueError):
    """A version is unknown, malformed, or cannot be promoted."""


@dataclass(frozen=True)
class Promotion:
    version: str
    manifest_sha256: str
    event: str  # "promote" | "rollback"
    reason: str
    at: str


def check_version(version: str) -> str:
    if not VERSION_PATTERN.match(version):
        raise RegistryError(f"{version!r} is not a valid bundle version name")
    return version


class Registry:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path_of(self, version: str) -> Path:
        return self.root / check_version(version)

    def versions(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / MANIFEST).is_file())

    def load(self, version: str, manifest_sha256: str | None = None) -> Bundle:
        """Load a version, verifying its files and, if given, its manifest digest."""
        path = self.path_of(version)
        if not (path / MANIFEST).is_file():
            raise RegistryError(f"version {version} is not in the registry at {self.root}")
        if manifest_sha256 is not None and sha256_file(path / MANIFEST) != manifest_sha256:
            raise BundleError(f"manifest of {version} does not match the announced digest")
        bundle = load_bundle(path)
        if bundle.version != version:
            raise BundleError(f"directory {version} holds a bundle that says it is {bundle.version}")
        return bundle

    def history(self) -> list[Promotion]:
        file = self.root / HISTORY
        if not file.is_file():
            return []
        return [Promotion(**json.loads(line)) for line in file.read_text().splitlines() if line.strip()]

    def current(self) -> Promotion | None:
        history = self.history()
        return history[-1] if history else None

    def promote(self, version: str, reason: str = "") -> Promotion:
        bundle = self.load(version)
        return self._append(bundle, "promote", reason)

    def rollback(self, reason: str = "") -> Promotion:
        """Serve again the version that was serving before the current one."""
        served = [p.version for p in self.history()]
        if len(served) < 2:
            raise RegistryError("nothing to roll back to: fewer than two versions were ever served")
        current = served[-1]
        previous = next((v for v in reversed(served[:-1]) if v != current), None)
        if previous is None:
            raise RegistryError(f"every earlier promotion was {current} itself")
        return self._append(self.load(previous), "rollback", reason or f"rollback from {current}")

    def _append(self, bundle: Bundle, event: str, reason: str) -> Promotion:
        promotion = Promotion(
            version=bundle.version,
            manifest_sha256=sha256_file(bundle.path / MANIFEST),
            event=event,
            reason=reason,
            at=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / HISTORY).open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(promotion.__dict__) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        return promotion
