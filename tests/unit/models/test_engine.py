"""The engine: output shape and label order follow the manifest; bad bundles are refused."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from feedwarden.models.bundle import MANIFEST, Bundle, BundleError, load_bundle
from feedwarden.models.engine import ENGINE_THREAD_NAME, Engine, choose_providers
from tests.tiny_bundle import SAFETY, TOPIC

TEXTS = ["free scam", "hello world", "", "bitcoin match election", "verify password " * 40, "idiot"]


@pytest.fixture(scope="module")
def engine(tiny_bundle: Bundle) -> Engine:
    return Engine(tiny_bundle, batch_size=2, providers="cpu")


def test_scores_have_one_row_per_text_and_manifest_label_order(engine: Engine, tiny_bundle: Bundle) -> None:
    scores = engine.score(TEXTS)
    labels, probs = scores.flat()
    assert labels == tiny_bundle.manifest.labels == SAFETY + TOPIC
    assert probs.shape == (len(TEXTS), len(labels))
    assert scores.probs["safety"].shape == (len(TEXTS), len(SAFETY))
    assert scores.probs["topic"].shape == (len(TEXTS), len(TOPIC))
    assert len(scores) == len(TEXTS)
    assert np.all((probs >= 0) & (probs <= 1))


def test_rows_come_back_in_input_order_whatever_the_batching(engine: Engine, tiny_bundle: Bundle) -> None:
    _, probs = engine.score(TEXTS).flat()
    _, one_batch = Engine(tiny_bundle, batch_size=64, providers="cpu").score(TEXTS).flat()
    np.testing.assert_allclose(probs, one_batch, atol=1e-6)
    row = dict(zip(SAFETY + TOPIC, probs[0], strict=True))
    assert row["scam"] > 0.99 and row["hate"] < 0.01
    assert engine.score(["bitcoin"]).row(0)["topic_crypto"] > 0.99


def test_scores_alone_do_not_depend_on_the_batch(released_bundle: Bundle) -> None:
    # onnxruntime runs a one-row input through other kernels than two or more rows, and
    # with two or more the padding width can move a score by ~1e-7: `alone` is the shape
    # no neighbour can move, what a post scores on its own.
    texts = ["gm frens, new airdrop is live, claim now", "the council voted on the bike lanes", *TEXTS]
    engine = Engine(released_bundle, batch_size=4, providers="cpu")
    alone = engine.score_encoded(engine.tokenize(texts), alone=True).flat()[1]
    batched = engine.score(texts).flat()[1]
    for i, text in enumerate(texts):
        assert np.array_equal(alone[i], engine.score([text]).flat()[1][0])
    assert np.abs(alone - batched).max() < 1e-6


def test_long_texts_are_truncated_to_max_length(engine: Engine, tiny_bundle: Bundle) -> None:
    encodings = engine.tokenize(["hello " * 500])
    assert len(encodings[0].ids) == tiny_bundle.manifest.max_length


def _copy(bundle: Bundle, dest: Path) -> Path:
    shutil.copytree(bundle.path, dest)
    return dest


def test_label_count_mismatch_with_graph_is_refused(tiny_bundle: Bundle, tmp_path: Path) -> None:
    path = _copy(tiny_bundle, tmp_path / "b")
    manifest = json.loads((path / MANIFEST).read_text())
    manifest["heads"][1]["labels"].append("topic_extra")
    manifest["calibration"]["topic_extra"] = [1.0, 0.0]
    (path / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="graph gives 3 scores, manifest lists 4"):
        Engine(load_bundle(path), providers="cpu")


def test_tampered_graph_is_refused(tiny_bundle: Bundle, tmp_path: Path) -> None:
    path = _copy(tiny_bundle, tmp_path / "b")
    with (path / "model.onnx").open("ab") as fh:
        fh.write(b"\0")
    with pytest.raises(BundleError, match="digest"):
        load_bundle(path)


def test_provider_choice() -> None:
    assert choose_providers("cpu") == ["CPUExecutionProvider"]
    assert choose_providers("auto")[-1] == "CPUExecutionProvider"
    with pytest.raises(ValueError, match="unknown provider"):
        choose_providers("tpu")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="OS thread names are read from /proc")
def test_graph_lanes_carry_the_engine_thread_name(released_bundle: Bundle) -> None:
    """`feedwarden bench` tells the engine's CPU from the rest of the worker by this name."""
    def named() -> int:
        return [task.read_text().strip() for task in Path("/proc/self/task").glob("*/comm")].count(
            ENGINE_THREAD_NAME)

    before = named()
    engine = Engine(released_bundle, threads=2, providers="cpu")
    engine.score(["first post", "second post", "third post", "fourth post", "fifth post"])
    assert named() - before >= 2  # this engine's two lanes (and any tokenizer threads they start)
