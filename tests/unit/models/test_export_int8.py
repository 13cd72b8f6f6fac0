"""The int8 export: static activation scales, so the engine may batch it and a post's
scores do not depend on its batch neighbours (a tiny random BERT through the real path:
torch export -> ORT attention fusion -> `quantize_int8`)."""

from __future__ import annotations

import collections
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from feedwarden.models.bundle import MANIFEST, Bundle, load_bundle, sha256_file
from feedwarden.models.engine import Engine, quantizes_per_batch
from tests.tiny_bundle import SAFETY, TOPIC

HIDDEN, HEADS = 32, 2
SHORT = "free crypto giveaway"
LONG = "verify password buy discount hate " * 20  # truncated to the bundle's max_length


@pytest.fixture(scope="module")
def graphs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    torch = pytest.importorskip("torch", reason="the training extra (torch) is not installed")
    transformers = pytest.importorskip("transformers", reason="the training extra is not installed")
    from feedwarden.models.export import export_onnx, fuse_attention, quantize_int8
    from feedwarden.training.model import TwoHeadClassifier

    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=64, hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=HEADS,
        intermediate_size=64, max_position_embeddings=64,
    )
    config._attn_implementation = "eager"  # what ORT's BERT fusion recognizes (as load_encoder asks)
    encoder = transformers.BertModel(config, add_pooling_layer=False)
    model = TwoHeadClassifier(encoder, HIDDEN, len(SAFETY), len(TOPIC))
    out = tmp_path_factory.mktemp("export")
    fp32 = fuse_attention(export_onnx(model, out / "raw.onnx"), out / "fp32.onnx", HEADS, HIDDEN)
    rng = np.random.default_rng(0)
    calibration = [rng.integers(2, 21, size=int(n)).tolist() for n in rng.integers(1, 33, size=48)]
    return {"fp32": fp32, "int8": quantize_int8(fp32, out / "int8.onnx", calibration)}


def _ops(path: Path) -> collections.Counter[str]:
    import onnx

    return collections.Counter(node.op_type for node in onnx.load(str(path)).graph.node)


def _with_graph(bundle: Bundle, graph: Path, dest: Path) -> Bundle:
    shutil.copytree(bundle.path, dest)
    shutil.copyfile(graph, dest / "model.onnx")
    manifest = json.loads((dest / MANIFEST).read_text())
    manifest["files"]["model.onnx"] = sha256_file(dest / "model.onnx")
    (dest / MANIFEST).write_text(json.dumps(manifest))
    return load_bundle(dest)


def test_int8_graph_quantizes_matmuls_and_attention_with_constant_scales(graphs: dict[str, Path]) -> None:
    assert _ops(graphs["fp32"])["Attention"] == 2, "the fusion this test relies on did not happen"
    ops = _ops(graphs["int8"])
    assert ops["QAttention"] == 2 and ops["QEmbedLayerNormalization"] == 1
    assert ops["MatMulIntegerToFloat"] == 6
    assert ops["DynamicQuantizeLinear"] == 0 and ops["MatMul"] == 0 and ops["Attention"] == 0
    # models/export.py: fast_cpu_graph (onnxruntime's faster CPU kernels)
    assert ops["MatMulInteger"] == 0 and ops["SkipLayerNormalization"] == 0
    assert _ops(graphs["fp32"])["SkipLayerNormalization"] == 0
    assert not quantizes_per_batch(graphs["int8"])


def test_engine_batches_the_int8_graph_and_scores_do_not_depend_on_neighbours(
    graphs: dict[str, Path], tiny_bundle: Bundle, tmp_path: Path
) -> None:
    bundle = _with_graph(tiny_bundle, graphs["int8"], tmp_path / "int8")
    engine = Engine(bundle, batch_size=32, providers="cpu")
    assert engine.row_independent and engine.batch_size == 32
    _, alone = engine.logits([SHORT]).flat()
    texts = [LONG] * 15 + [SHORT] + [LONG] * 16
    _, batched = engine.logits(texts).flat()
    assert np.abs(batched[15] - alone[0]).max() < 1e-5
    _, fp32 = Engine(_with_graph(tiny_bundle, graphs["fp32"], tmp_path / "fp32"), providers="cpu").logits(
        texts
    ).flat()
    assert np.abs(batched - fp32).max() < 0.1 * max(1.0, float(np.abs(fp32).max()))  # int8 tracks fp32


def test_a_float_or_dynamic_graph_is_refused_as_int8(graphs: dict[str, Path], tmp_path: Path) -> None:
    from onnx import TensorProto
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from feedwarden.models.export import _check_static

    with pytest.raises(RuntimeError, match="left .* in float"):
        _check_static(graphs["fp32"])
    dynamic = tmp_path / "dynamic.onnx"
    quantize_dynamic(  # the released hybrid's attention: QAttention behind DynamicQuantizeLinear
        str(graphs["fp32"]), str(dynamic), weight_type=QuantType.QInt8, op_types_to_quantize=["Attention"],
        extra_options={"DefaultTensorType": TensorProto.FLOAT},
    )
    with pytest.raises(RuntimeError, match="dynamically"):
        _check_static(dynamic)


def test_quantize_int8_takes_a_path_relative_to_the_working_directory(
    graphs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from feedwarden.models.export import quantize_int8

    shutil.copyfile(graphs["fp32"], tmp_path / "fp32.onnx")
    monkeypatch.chdir(tmp_path)  # `feedwarden train --out artifacts/run` passes relative paths
    calibration = [[2, 5, 7], [3, 4], [9, 10, 11, 12]]
    out = quantize_int8(Path("fp32.onnx"), Path("int8.onnx"), calibration)
    assert (tmp_path / out).is_file() and _ops(tmp_path / out)["QAttention"] == 2
