"""Model integrity at start: a bundle that does not match its manifest is refused with one clear line.

`feedwarden worker` must exit non-zero (2, a configuration error) before it
touches the broker, print what is wrong in one line, and no traceback: an
orchestrator restarting it then shows the same short reason each time
instead of pages of trace. The hot-swap side (refused, previous bundle keeps
serving, feedwarden_bundle_rejected) is in test_live_worker.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from feedwarden.models.bundle import Bundle, BundleError, Head, load_bundle, write_bundle
from feedwarden.models.engine import Engine
from feedwarden.models.export import name_labels
from feedwarden.stream.broker import free_port
from tests.unit.stream.loop_support import write_version

pytestmark = pytest.mark.faults

EXIT_CONFIG = 2


def _copy(bundle: Bundle, dest: Path) -> Path:
    shutil.copytree(bundle.path, dest)
    return dest


def tampered_policy(bundle: Bundle, tmp: Path) -> Path:
    path = _copy(bundle, tmp / "tampered-policy")
    with (path / "policy.json").open("a") as fh:
        fh.write(" ")
    return path


def tampered_graph(bundle: Bundle, tmp: Path) -> Path:
    path = _copy(bundle, tmp / "tampered-graph")
    data = bytearray((path / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit
    (path / "model.onnx").write_bytes(bytes(data))
    return path


def missing_tokenizer(bundle: Bundle, tmp: Path) -> Path:
    path = _copy(bundle, tmp / "missing-tokenizer")
    (path / "tokenizer.json").unlink()
    return path


def more_labels_than_outputs(bundle: Bundle, tmp: Path) -> Path:
    return write_version(tmp / "registry", "extra-label", extra_label=True).path


def permuted_labels(bundle: Bundle, tmp: Path) -> Path:
    """The graph names its safety labels; the manifest lists two of them swapped (same width)."""
    source = tmp / "permuted-src"
    safety = bundle.manifest.head("safety")
    name_labels(bundle.model_path, source / "model.onnx", {safety.output: safety.labels})
    swapped = (safety.labels[1], safety.labels[0], *safety.labels[2:])
    heads = tuple(h if h.name != "safety" else Head(h.name, h.output, swapped) for h in bundle.manifest.heads)
    manifest = replace(bundle.manifest, heads=heads)
    sources = {"model.onnx": source / "model.onnx", "tokenizer.json": bundle.tokenizer_path,
               "policy.json": bundle.policy_path}
    return write_bundle(tmp / "permuted", manifest, sources).path


CASES: dict[str, tuple[Callable[[Bundle, Path], Path], str]] = {
    "tampered policy": (tampered_policy, "policy.json has digest"),
    "tampered graph": (tampered_graph, "model.onnx has digest"),
    "missing tokenizer": (missing_tokenizer, "tokenizer.json is missing"),
    "more labels than outputs": (more_labels_than_outputs, "graph gives 6 scores, manifest lists 7 labels"),
    "permuted labels": (permuted_labels, "disagree with the manifest"),
}


@pytest.mark.parametrize("case", CASES)
def test_a_bad_bundle_is_refused_at_start_with_one_clear_line(
    case: str, tiny_bundle: Bundle, tmp_path: Path
) -> None:
    make, reason = CASES[case]
    bundle = make(tiny_bundle, tmp_path)
    env = os.environ | {
        "FEEDWARDEN_BUNDLE": str(bundle),
        "KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}",  # nothing listens: refusal comes first
        "FEEDWARDEN_WEB_PORT": str(free_port()),
        "FEEDWARDEN_PROVIDERS": "cpu",
    }
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "feedwarden.cli", "worker"], env=env, capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL)
    took = time.monotonic() - started
    output = (done.stdout + done.stderr).strip()
    assert done.returncode == EXIT_CONFIG, output
    assert reason in output, output
    assert output.startswith("feedwarden worker:") and len(output.splitlines()) == 1, output
    assert "Traceback" not in output
    print(f"\n{case}: exit {done.returncode} in {took:.1f}s: {output}")


def test_graph_label_names_in_manifest_order_load(tiny_bundle: Bundle, tmp_path: Path) -> None:
    """The label-order check accepts a graph whose names agree (and graphs that name none)."""
    source = name_labels(tiny_bundle.model_path, tmp_path / "model.onnx",
                         {h.output: h.labels for h in tiny_bundle.manifest.heads})
    sources = {"model.onnx": source, "tokenizer.json": tiny_bundle.tokenizer_path,
               "policy.json": tiny_bundle.policy_path}
    named = write_bundle(tmp_path / "named", tiny_bundle.manifest, sources)
    Engine(named, providers="cpu")
    Engine(tiny_bundle, providers="cpu")
    with pytest.raises(BundleError, match="disagree"):
        Engine(load_bundle(permuted_labels(tiny_bundle, tmp_path)), providers="cpu")
