"""`fast_cpu_graph`: the same outputs from onnxruntime's faster CPU kernels, on a hand-built
graph shaped like a layer of the released int8 BERT: a static int8 MatMul as the quantizer
writes it (MatMulInteger, Cast, Mul by the product of both scales) feeding a
SkipLayerNormalization whose bias input is the dense layer's bias."""

from __future__ import annotations

import collections
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from feedwarden.models.engine import DISABLED_OPTIMIZERS
from feedwarden.models.export import fast_cpu_graph

H = 16


def _graph(path: Path) -> Path:
    rng = np.random.default_rng(0)
    weights = {
        "w_q": rng.integers(-127, 128, size=(H, H)).astype(np.int8),
        "w_zp": np.zeros(H, np.int8),
        "a_scale": np.array(0.05, np.float32),
        "a_zp": np.array(128, np.uint8),
        "w_scale": rng.uniform(0.001, 0.01, H).astype(np.float32),
        "gamma": rng.uniform(0.5, 1.5, H).astype(np.float32),
        "beta": rng.normal(size=H).astype(np.float32),
        "bias": rng.normal(size=H).astype(np.float32),
    }
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "a_scale", "a_zp"], ["x_q"]),
        helper.make_node("MatMulInteger", ["x_q", "w_q", "a_zp", "w_zp"], ["mm"]),
        helper.make_node("Cast", ["mm"], ["mm_f"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["a_scale", "w_scale"], ["scales"]),
        helper.make_node("Mul", ["mm_f", "scales"], ["dense"]),
        helper.make_node("SkipLayerNormalization", ["dense", "x", "gamma", "beta", "bias"], ["y"],
                         domain="com.microsoft", epsilon=1e-12),
    ]
    graph = helper.make_graph(
        nodes, "layer", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", "s", H])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", "s", H])],
        [numpy_helper.from_array(value, name) for name, value in weights.items()],
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    model = helper.make_model(graph, opset_imports=opsets, ir_version=8)
    onnx.save(model, str(path))
    return path


def _run(path: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"],
                                   disabled_optimizers=list(DISABLED_OPTIMIZERS))
    return session.run(None, {"x": x})[0]


def _ops(path: Path) -> collections.Counter[str]:
    return collections.Counter(node.op_type for node in onnx.load(str(path)).graph.node)


def test_both_patterns_are_rewritten_and_the_outputs_kept(tmp_path: Path) -> None:
    source = _graph(tmp_path / "source.onnx")
    fast = fast_cpu_graph(source, tmp_path / "fast.onnx")
    # the dense bias moves into MatMulIntegerToFloat; the residual Add and the LayerNormalization stay
    assert _ops(fast) == {"QuantizeLinear": 1, "MatMulIntegerToFloat": 1, "Add": 1, "LayerNormalization": 1}
    x = np.random.default_rng(1).normal(size=(3, 5, H)).astype(np.float32)
    np.testing.assert_allclose(_run(fast, x), _run(source, x), atol=1e-5)


def test_the_rewrite_is_idempotent(tmp_path: Path) -> None:
    once = fast_cpu_graph(_graph(tmp_path / "source.onnx"), tmp_path / "once.onnx")
    twice = fast_cpu_graph(once, tmp_path / "twice.onnx")
    assert once.read_bytes() == twice.read_bytes()
