"""Registry: immutable versions, promotion history, rollback, digest checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from feedwarden.models.bundle import MANIFEST, BundleError, load_bundle
from feedwarden.models.registry import Registry, RegistryError
from tests.tiny_bundle import build_tiny_bundle


def _publish(registry: Registry, version: str, tmp_path: Path) -> None:
    """Copy the tiny bundle into the registry under another version name."""
    source = build_tiny_bundle(tmp_path / f"src-{version}")
    manifest = json.loads((source.path / MANIFEST).read_text())
    manifest["version"] = version
    dest = registry.path_of(version)
    dest.mkdir(parents=True)
    for name in manifest["files"]:
        (dest / name).write_bytes((source.path / name).read_bytes())
    (dest / MANIFEST).write_text(json.dumps(manifest))


def test_promote_then_rollback_serves_previous(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "reg")
    for version in ("v1", "v2"):
        _publish(registry, version, tmp_path)
    registry.promote("v1")
    registry.promote("v2")
    assert registry.current().version == "v2"  # type: ignore[union-attr]
    back = registry.rollback()
    assert (back.version, back.event) == ("v1", "rollback")
    assert [p.version for p in registry.history()] == ["v1", "v2", "v1"]
    assert registry.versions() == ["v1", "v2"]


def test_rollback_needs_an_earlier_version(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "reg")
    _publish(registry, "v1", tmp_path)
    registry.promote("v1")
    with pytest.raises(RegistryError, match="nothing to roll back"):
        registry.rollback()


@pytest.mark.parametrize("version", ["../etc", "a/b", "", ".hidden", "x" * 200])
def test_versions_are_names_never_paths(tmp_path: Path, version: str) -> None:
    with pytest.raises(RegistryError):
        Registry(tmp_path).path_of(version)


def test_announced_manifest_digest_is_checked(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "reg")
    _publish(registry, "v1", tmp_path)
    with pytest.raises(BundleError, match="announced digest"):
        registry.load("v1", manifest_sha256="0" * 64)


def test_tampered_file_is_refused(tmp_path: Path) -> None:
    bundle = build_tiny_bundle(tmp_path / "b")
    with (bundle.path / "policy.json").open("a") as fh:
        fh.write(" ")
    with pytest.raises(BundleError, match="policy.json has digest"):
        load_bundle(bundle.path)


def test_unknown_version_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="not in the registry"):
        Registry(tmp_path).load("v9")
