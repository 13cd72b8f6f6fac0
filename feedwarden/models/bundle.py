"""Model bundles: an ONNX graph, its tokenizer, a manifest and a policy file.

The manifest is the single source of label order. Loading a bundle verifies
every file against its SHA-256 digest and checks each head's label count
against the graph's output width, so a mislabelled or tampered bundle is
refused before it can score a post.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
HEADS = ("safety", "topic")


class BundleError(ValueError):
    """A bundle is malformed, tampered with or inconsistent with its graph."""


@dataclass(frozen=True)
class Head:
    """One classifier head: an output of the graph and its labels in order."""

    name: str
    output: str
    labels: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.name not in HEADS:
            raise BundleError(f"unknown head {self.name!r}; expected one of {HEADS}")
        if not self.labels:
            raise BundleError(f"head {self.name!r} has no labels")
        if len(set(self.labels)) != len(self.labels):
            raise BundleError(f"head {self.name!r} repeats a label")


@dataclass(frozen=True)
class Reference:
    """A label's score distribution on the realistic base-rate calibration set.

    `rate` is the share of posts flagged at the label's lowest acting
    threshold; `hist` the share of posts per score bin, bins given by `edges`;
    `prior` the mean calibrated probability (the prevalence the scores imply
    on the calibration set), kept for reports: the drift monitor's EM
    prevalence estimate takes its prior from `hist` instead, at the window's
    own bin representatives (see `drift.prevalence`). `n` is the number of
    calibration posts; the drift tests treat the reference as a sample of
    that size (0: unknown, treated as exact).
    """

    rate: float
    edges: tuple[float, ...]
    hist: tuple[float, ...]
    n: int
    prior: float | None = None


@dataclass(frozen=True)
class Manifest:
    name: str
    version: str
    created_at: str
    max_length: int
    heads: tuple[Head, ...]
    # Platt scaling per label: probability = sigmoid(a * logit + b).
    calibration: Mapping[str, tuple[float, float]]
    files: Mapping[str, str]
    model_file: str = "model.onnx"
    tokenizer_file: str = "tokenizer.json"
    policy_file: str = "policy.json"
    reference: Mapping[str, Reference] = field(default_factory=dict)
    metrics: Mapping[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(label for head in self.heads for label in head.labels)

    def head(self, name: str) -> Head:
        for head in self.heads:
            if head.name == name:
                return head
        raise KeyError(name)

    def head_of(self, label: str) -> str:
        for head in self.heads:
            if label in head.labels:
                return head.name
        raise KeyError(label)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["heads"] = [asdict(h) | {"labels": list(h.labels)} for h in self.heads]
        data["calibration"] = {k: list(v) for k, v in self.calibration.items()}
        data["reference"] = {k: asdict(v) for k, v in self.reference.items()}
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Manifest:
        try:
            if data.get("format_version") != FORMAT_VERSION:
                raise BundleError(
                    f"manifest format {data.get('format_version')!r} is not {FORMAT_VERSION}"
                )
            heads = tuple(
                Head(h["name"], h["output"], tuple(h["labels"])) for h in data["heads"]
            )
            calibration = {k: (float(a), float(b)) for k, (a, b) in data["calibration"].items()}
            reference = {
                k: Reference(
                    float(r["rate"]), tuple(r["edges"]), tuple(r["hist"]), int(r["n"]),
                    None if r.get("prior") is None else float(r["prior"]),
                )
                for k, r in data.get("reference", {}).items()
            }
            manifest = cls(
                name=str(data["name"]),
                version=str(data["version"]),
                created_at=str(data["created_at"]),
                max_length=int(data["max_length"]),
                heads=heads,
                calibration=calibration,
                files=dict(data["files"]),
                model_file=data.get("model_file", "model.onnx"),
                tokenizer_file=data.get("tokenizer_file", "tokenizer.json"),
                policy_file=data.get("policy_file", "policy.json"),
                reference=reference,
                metrics=dict(data.get("metrics", {})),
            )
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, BundleError):
                raise
            raise BundleError(f"malformed manifest: {exc!r}") from exc
        labels = manifest.labels
        if len(set(labels)) != len(labels):
            raise BundleError("a label appears in more than one head")
        missing = set(labels) - set(calibration)
        if missing:
            raise BundleError(f"no calibration for labels {sorted(missing)}")
        return manifest


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class Bundle:
    """A verified bundle on disk."""

    path: Path
    manifest: Manifest

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def model_path(self) -> Path:
        return self.path / self.manifest.model_file

    @property
    def tokenizer_path(self) -> Path:
        return self.path / self.manifest.tokenizer_file

    @property
    def policy_path(self) -> Path:
        return self.path / self.manifest.policy_file


def load_bundle(path: str | Path) -> Bundle:
    """Read and verify a bundle: manifest schema and every file's digest.

    Label order against the graph is checked when the engine opens the graph
    (`models.engine.Engine`), where the output shapes are known.
    """
    root = Path(path)
    try:
        data = json.loads((root / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise BundleError(f"{root} has no {MANIFEST}") from exc
    except json.JSONDecodeError as exc:
        raise BundleError(f"{root / MANIFEST} is not JSON: {exc}") from exc
    manifest = Manifest.from_dict(data)
    required = {manifest.model_file, manifest.tokenizer_file, manifest.policy_file}
    unlisted = required - set(manifest.files)
    if unlisted:
        raise BundleError(f"manifest lists no digest for {sorted(unlisted)}")
    for name, expected in manifest.files.items():
        file = (root / name).resolve()
        if root.resolve() not in file.parents:
            raise BundleError(f"bundle file {name!r} escapes the bundle directory")
        if not file.is_file():
            raise BundleError(f"bundle file {name} is missing")
        actual = sha256_file(file)
        if actual != expected:
            raise BundleError(f"bundle file {name} has digest {actual[:12]}…, manifest says {expected[:12]}…")
    return Bundle(root, manifest)


def write_bundle(
    dest: str | Path,
    manifest: Manifest,
    sources: Mapping[str, str | Path],
) -> Bundle:
    """Write a bundle atomically: copy `sources` (bundle file name -> source path),
    digest them into the manifest, then rename the finished directory into place.

    `manifest.files` is ignored and recomputed.
    """
    dest = Path(dest)
    if dest.exists():
        raise BundleError(f"{dest} already exists; bundle versions are immutable")
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        files = {}
        for name, source in sources.items():
            if Path(name).name != name:
                raise BundleError(f"bundle file name {name!r} must be a plain file name")
            shutil.copyfile(source, staging / name)
            files[name] = sha256_file(staging / name)
        final = Manifest(**{**_fields(manifest), "files": files})
        (staging / MANIFEST).write_text(
            json.dumps(final.to_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )
        staging.rename(dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return load_bundle(dest)


def _fields(manifest: Manifest) -> dict[str, Any]:
    return {name: getattr(manifest, name) for name in manifest.__dataclass_fields__}


def default_bundle_path() -> Path:
    """The released default bundle shipped inside the package."""
    return Path(__file__).parent / "default"
