"""ONNX export of the two-head classifier, attention fusion and int8 quantization.

Graph contract: inputs `input_ids`, `attention_mask` (int64 [batch, seq], both
axes dynamic), outputs `safety_logits` and `topic_logits` (raw logits).
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

INPUTS = ("input_ids", "attention_mask")
OUTPUTS = ("safety_logits", "topic_logits")
OPSET = 17


def export_onnx(model: Any, dest: Path, seq_len: int = 16) -> Path:
    """Trace `model` (input_ids, attention_mask -> safety, topic) to ONNX with dynamic axes."""
    import torch

    model.eval()
    ids = torch.ones((2, seq_len), dtype=torch.long)
    mask = torch.ones((2, seq_len), dtype=torch.long)
    axes = {name: {0: "batch", 1: "seq"} for name in INPUTS} | {name: {0: "batch"} for name in OUTPUTS}
    dest.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        torch.onnx.export(
            model,
            (ids, mask),
            str(dest),
            input_names=list(INPUTS),
            output_names=list(OUTPUTS),
            dynamic_axes=axes,
            opset_version=OPSET,
            dynamo=False,
        )
    return dest


def fuse_attention(source: Path, dest: Path, num_heads: int, hidden_size: int) -> Path:
    """Run ORT's transformer optimizer (BERT fusions: attention, layer norm, GELU), then
    undo its SkipLayerNormalization (`fast_cpu_graph`)."""
    from onnxruntime.transformers.optimizer import optimize_model

    optimized = optimize_model(
        str(source), model_type="bert", num_heads=num_heads, hidden_size=hidden_size, opt_level=1
    )
    log.info("fused operators: %s", optimized.get_fused_operator_statistics())
    optimized.save_model_to_file(str(dest))
    return fast_cpu_graph(dest, dest)


def fast_cpu_graph(source: Path, dest: Path) -> Path:
    """The same graph on onnxruntime's faster CPU kernels.

    Only float rounding changes, which an int8 graph can carry one quantization step
    further (the released graph on valid: max |Δp| 0.033, 11 of 4303 posts changed a
    decision on some label).

    Measured on the released int8 graph, one thread, Janitr valid in length-sorted
    runs of 8 (onnxruntime 1.31): the contrib SkipLayerNormalization kernel took 30%
    of the time, 5.4x slower than Add + Add + LayerNormalization on the same
    [8, 40, 384] input (626 vs 117 us), so it is split into those (the engine keeps
    onnxruntime from fusing them back, `engine.DISABLED_OPTIMIZERS`): 342 -> 460
    posts per CPU-second. The static int8 MatMuls (MatMulInteger -> Cast -> Mul by
    the product of both scales, then the bias Add) become one MatMulIntegerToFloat
    with the bias folded in: 460 -> 498. Idempotent."""
    import onnx

    model = onnx.load(str(source))
    nodes = _split_skip_layer_norms(list(model.graph.node))
    nodes = _fuse_integer_matmuls(nodes, model)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    onnx.checker.check_model(model)
    onnx.save(model, str(dest))
    return dest


def _split_skip_layer_norms(nodes: list[Any]) -> list[Any]:
    """SkipLayerNormalization(x, skip, gamma, beta[, bias]) -> Add(x, bias), Add(., skip),
    LayerNormalization(gamma, beta) over the last axis, same epsilon."""
    from onnx import helper

    out = []
    for node in nodes:
        if node.op_type != "SkipLayerNormalization":
            out.append(node)
            continue
        if any(node.output[1:]):
            raise ValueError(f"{node.name}: SkipLayerNormalization with extra outputs is not split")
        x, skip, gamma, beta = node.input[:4]
        bias = node.input[4] if len(node.input) > 4 else ""
        epsilon = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "epsilon"), 1e-12)
        name = node.name or node.output[0]
        if bias:
            out.append(helper.make_node("Add", [x, bias], [f"{name}/biased"], name=f"{name}/AddBias"))
            x = f"{name}/biased"
        out.append(helper.make_node("Add", [x, skip], [f"{name}/residual"], name=f"{name}/AddSkip"))
        out.append(helper.make_node("LayerNormalization", [f"{name}/residual", gamma, beta], [node.output[0]],
                                    name=f"{name}/LayerNorm", axis=-1, epsilon=epsilon))
    return out


def _fuse_integer_matmuls(nodes: list[Any], model: Any) -> list[Any]:
    """MatMulInteger(a, b, a_zp, b_zp) -> Cast -> Mul(Mul(a_scale, b_scale)) [-> Add(bias)]
    becomes MatMulIntegerToFloat(a, b, a_scale, b_scale, a_zp, b_zp[, bias])."""
    from onnx import helper

    producer = {output: node for node in nodes for output in node.output}
    consumers: dict[str, list[Any]] = {}
    for node in nodes:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    graph_outputs = {o.name for o in model.graph.output}
    shapes = {init.name: tuple(init.dims) for init in model.graph.initializer}
    replaced: dict[int, Any] = {}
    dropped: set[int] = set()
    for node in nodes:
        if node.op_type != "MatMulInteger":
            continue
        cast = _only_consumer(node.output[0], consumers, graph_outputs)
        mul = cast and _only_consumer(cast.output[0], consumers, graph_outputs)
        if cast is None or cast.op_type != "Cast" or mul is None or mul.op_type != "Mul":
            continue
        scale = next(name for name in mul.input if name != cast.output[0])
        scales = producer.get(scale)
        if scales is None or scales.op_type != "Mul" or not set(scales.input) <= shapes.keys():
            continue
        # the activation's scale is the scalar one; the weight's may be per output column
        a_scale, b_scale = sorted(scales.input, key=lambda name: len(shapes[name]))
        columns = shapes.get(node.input[1], (0,))[-1:]
        if shapes[a_scale] not in ((), (1,)):
            continue
        inputs = [*node.input[:2], a_scale, b_scale, *node.input[2:4]]
        output = mul.output[0]
        add = _only_consumer(output, consumers, graph_outputs)
        bias = add and next((name for name in add.input if name != output), None)
        if add is not None and add.op_type == "Add" and bias in shapes and shapes[bias] == columns:
            inputs.append(bias)
            output = add.output[0]
            dropped.add(id(add))
        replaced[id(node)] = helper.make_node("MatMulIntegerToFloat", inputs, [output],
                                              name=f"{node.name}/ToFloat", domain="com.microsoft")
        dropped |= {id(cast), id(mul)}
        if len(consumers[scale]) == 1:
            dropped.add(id(scales))
    return [replaced.get(id(node), node) for node in nodes if id(node) not in dropped]


def _only_consumer(name: str, consumers: Mapping[str, list[Any]], graph_outputs: set[str]) -> Any:
    users = consumers.get(name, [])
    return users[0] if len(users) == 1 and name not in graph_outputs else None


# Operators the int8 graph quantizes, all with constant (calibrated) activation scales:
# MatMul -> MatMulInteger, Attention -> QAttention, EmbedLayerNormalization ->
# QEmbedLayerNormalization (weights only). Nothing is quantized per batch.
INT8_OPS = ("MatMul", "Attention", "EmbedLayerNormalization")
# Post-GELU activations are long-tailed (max 7-25 against a bulk under 1 in MiniLM);
# a min/max range there wastes most of the 256 steps, so the FFN output MatMuls get a
# percentile range instead (cuts 0.0025% per side; other inputs keep min/max).
GELU_OPS = ("Gelu", "BiasGelu", "FastGelu")
GELU_PERCENTILE = 99.995


def quantize_int8(source: Path, dest: Path, calibration_ids: Sequence[Sequence[int]]) -> Path:
    """Static int8, batch-independent: a post scores the same alone or in any batch.

    MatMuls and the fused Attention take uint8 activations at a constant scale
    calibrated on `calibration_ids` (one unpadded post per run, so padding never
    widens a range), int8 per-channel weights; EmbedLayerNormalization keeps
    int8 embedding tables. The previous hybrid quantized Attention dynamically (one
    scale per batch tensor), so the engine had to run it one post at a time; its
    "static" MatMul step was in fact weight-only, because the quantizer saw no
    types for the fused operators' outputs. Here symbolic shape inference types
    them, and `_check_static` refuses a graph with a dynamic or missing activation
    quantization."""
    import onnx
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization.onnx_quantizer import ONNXQuantizer
    from onnxruntime.quantization.quant_utils import QuantizationMode, load_model_with_shape_infer
    from onnxruntime.quantization.shape_inference import quant_pre_process

    source = source.resolve()  # before the chdir below, which would re-anchor a relative path
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        with contextlib.chdir(tmp):  # its shape inference writes scratch files into the working directory
            quant_pre_process(str(source), str(prepared), auto_merge=True, guess_output_rank=True)
        ranges = _activation_ranges(prepared, calibration_ids)
        quantizer = ONNXQuantizer(
            load_model_with_shape_infer(prepared),
            True,  # per-channel weights
            False,  # full 8-bit weights, as the hybrid had (u8s8 may saturate on x86 without VNNI)
            QuantizationMode.IntegerOps,
            True,  # static: activation scales from `ranges`, no DynamicQuantizeLinear
            QuantType.QInt8,
            QuantType.QUInt8,
            ranges,
            [],
            [],
            list(INT8_OPS),
            {"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
        quantizer.quantize_model()
        quantizer.model.save_model_to_file(str(dest))
    _check_static(dest)
    return fast_cpu_graph(dest, dest)


def _activation_ranges(model_path: Path, calibration_ids: Sequence[Sequence[int]]) -> Any:
    """Calibrated (lowest, highest) of every activation input the quantizer will scale."""
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization.calibrate import CalibrationMethod, TensorData, TensorsData

    model = onnx.load(str(model_path))
    producer = {out: node.op_type for node in model.graph.node for out in node.output}
    tensors = sorted({node.input[0] for node in _weighted_float_ops(model)})
    tail = {name for name in tensors if producer.get(name) in GELU_OPS}
    known = {out.name for out in model.graph.output}
    model.graph.output.extend(
        onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
        for name in tensors
        if name not in known
    )
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    low = dict.fromkeys(tensors, np.inf)
    high = dict.fromkeys(tensors, -np.inf)
    # For the percentile tensors: the largest values seen from each end, and how many values there were.
    ends: dict[str, tuple[np.ndarray, np.ndarray]] = {name: (np.empty(0), np.empty(0)) for name in tail}
    counts = dict.fromkeys(tail, 0)
    for row in calibration_ids:
        ids = np.array([list(row) or [0]], np.int64)
        outputs = session.run(tensors, {"input_ids": ids, "attention_mask": np.ones_like(ids)})
        for name, value in zip(tensors, outputs, strict=True):
            low[name] = min(low[name], float(value.min()))
            high[name] = max(high[name], float(value.max()))
            if name in tail:
                flat = value.ravel().astype(np.float32)
                counts[name] += flat.size
                top, bottom = ends[name]
                ends[name] = (
                    _largest(np.concatenate([top, flat])),
                    _largest(np.concatenate([bottom, -flat])),
                )
    # Exact while the cut is under _KEEP values (about 3,000 MiniLM posts); past that the range only widens.
    for name in tail:
        cut = int(counts[name] * (100.0 - GELU_PERCENTILE) / 200.0)
        top, bottom = (np.sort(end)[::-1] for end in ends[name])
        high[name] = float(top[min(cut, top.size - 1)])
        low[name] = -float(bottom[min(cut, bottom.size - 1)])
    data = {
        name: TensorData(lowest=np.array(low[name], np.float32), highest=np.array(high[name], np.float32))
        for name in tensors
    }
    return TensorsData(CalibrationMethod.MinMax, data)


_KEEP = 4096


def _largest(values: np.ndarray) -> np.ndarray:
    return values if values.size <= _KEEP else np.partition(values, values.size - _KEEP)[-_KEEP:]


def _weighted_float_ops(model: Any) -> list[Any]:
    """The float MatMul and Attention nodes with a weight (initializer) as second input:
    the nodes the int8 graph quantizes, so none may be left after quantization."""
    weights = {init.name for init in model.graph.initializer}
    return [
        node for node in model.graph.node
        if node.op_type in ("MatMul", "Attention") and len(node.input) > 1 and node.input[1] in weights
    ]


def _check_static(path: Path) -> None:
    """The int8 graph must quantize every activation with a constant scale: no
    DynamicQuantizeLinear, and no weight-only (dequantize-then-float) MatMul left."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    ops = {node.op_type for node in model.graph.node}
    if "DynamicQuantizeLinear" in ops:
        raise RuntimeError(f"{path}: int8 graph quantizes activations dynamically (per batch)")
    float_matmuls = [node.name for node in _weighted_float_ops(model)]
    if float_matmuls:
        raise RuntimeError(f"{path}: int8 graph left {float_matmuls} in float (activations untyped?)")


def _padded(rows: Sequence[Sequence[int]]) -> dict[str, np.ndarray]:
    width = max(1, max(len(r) for r in rows))
    input_ids = np.zeros((len(rows), width), np.int64)
    attention = np.zeros_like(input_ids)
    for i, row in enumerate(rows):
        input_ids[i, : len(row)] = row
        attention[i, : len(row)] = 1
    return {"input_ids": input_ids, "attention_mask": attention}


def run_logits(model_path: Path, ids: list[list[int]], batch_size: int = 64) -> np.ndarray:
    """Raw logits [rows, safety+topic] from an ONNX graph, rows in input order."""
    import onnxruntime as ort

    from feedwarden.models.engine import DISABLED_OPTIMIZERS

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"],
                                   disabled_optimizers=list(DISABLED_OPTIMIZERS))
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    chunks: dict[int, np.ndarray] = {}
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        feed = _padded([ids[i] for i in rows])
        safety, topic = session.run(list(OUTPUTS), feed)
        for r, i in enumerate(rows):
            chunks[i] = np.concatenate([safety[r], topic[r]])
    return np.stack([chunks[i] for i in range(len(ids))]).astype(np.float32)


def name_labels(source: Path, dest: Path, labels: Mapping[str, Sequence[str]]) -> Path:
    """Copy the graph, naming each output's labels in its metadata (`feedwarden.labels.<output>`),
    so the engine refuses a manifest that lists the same labels in another order."""
    import onnx

    from feedwarden.models.engine import LABELS_METADATA

    model = onnx.load(str(source))
    names = {f"{LABELS_METADATA}.{output}": ",".join(names) for output, names in labels.items()}
    kept = [p for p in model.metadata_props if p.key not in names]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in names.items():
        model.metadata_props.add(key=key, value=value)
    dest.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(dest))
    return dest
