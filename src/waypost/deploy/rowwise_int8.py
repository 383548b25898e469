"""Dynamic int8 with one activation scale per row: a row's answer never depends on its batch.

onnxruntime's `quantize_dynamic` computes ONE activation scale per tensor at run time
(`DynamicQuantizeLinear`). In a server the tensor is a batch of requests, so one client's outlier
(`body_mass_g: 1e6`) coarsens every other row's quantisation: 83 of 103 penguins changed label in a
batch with one such row (issue #10). Padding tokens and the other texts of a batch do the same to a
Transformer's MatMuls.

This pass rewrites each MatMul / Gemm whose weight is a constant into integer arithmetic with a
scale and offset per row of its input (per token for a Transformer's (batch, sequence, hidden)
activations), computed from that row alone:

    m = min(x_row, 0), s = (max(x_row, 0) - m) / 127, q = round((x_row - m) / s)   (uint8, 0..127)
    x @ W ~= s * (q @ Wq) * w_scale + m * colsum(Wq * w_scale)

`Wq` is int8 per output channel (symmetric, -127..127). The integer product is exact, so a
quantised layer gives a row bit-identical output whatever else is in the batch, given the same input
row. The fp32 layers around it (a Transformer's softmax over the batch's padded length) may round
an input one ulp differently, which can cross one quantisation step: ~3e-5 of a probability seen on
CI, never an outlier's coarsening of every row. Activations use 7 of their
8 bits: x86 CPUs without VNNI multiply u8 x s8 pairs into a saturating int16 (`vpmaddubsw`), and
255 * 127 * 2 overflows it while 127 * 127 * 2 does not (onnxruntime's `reduce_range` exists for
the same reason). A row of zeros (s = 0) takes a tiny scale instead of dividing by zero.

Standard ONNX operators only (ReduceMin/Max, QuantizeLinear, MatMulInteger, Cast, Mul, Add), so any
ONNX runtime runs the result.
"""
from __future__ import annotations

from typing import Any

import numpy as np

ACTIVATION_LEVELS = 127.0  # 7 bits: no int16 saturation on AVX2 (see above)
WEIGHT_LEVELS = 127.0
_TINY = 1e-30


def quantize_int8_rowwise(model: Any) -> Any:
    """A new ModelProto in which every MatMul/Gemm with a constant 2-D weight runs in int8 with
    per-row activation scales; other nodes (attention products, trees, softmax) stay as they are."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    inits = {i.name: i for i in graph.initializer}
    consumers: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            consumers[name] = consumers.get(name, 0) + 1

    new_nodes: list[Any] = []
    new_inits: list[Any] = []
    quantized: dict[str, tuple[str, str, str]] = {}  # activation -> (q, scale, offset), shared by its MatMuls
    dropped: set[str] = set()
    count = 0

    def const(name: str, array: np.ndarray) -> str:
        new_inits.append(numpy_helper.from_array(array, name))
        return name

    def quantize_rows(x: str) -> tuple[str, str, str]:
        if x in quantized:
            return quantized[x]
        p = f"rowq/{len(quantized)}/"
        axes = const(p + "axes", np.array([-1], dtype=np.int64))
        zero = const(p + "zero", np.array(0.0, dtype=np.float32))
        nodes = [
            helper.make_node("ReduceMin", [x, axes], [p + "min"], keepdims=1, name=p + "reduce_min"),
            helper.make_node("ReduceMax", [x, axes], [p + "max"], keepdims=1, name=p + "reduce_max"),
            helper.make_node("Min", [p + "min", zero], [p + "offset"], name=p + "offset"),
            helper.make_node("Max", [p + "max", zero], [p + "top"], name=p + "top"),
            helper.make_node("Sub", [p + "top", p + "offset"], [p + "range"], name=p + "range"),
            helper.make_node("Div", [p + "range", const(p + "levels", np.array(ACTIVATION_LEVELS, np.float32))],
                             [p + "raw_scale"], name=p + "raw_scale"),
            helper.make_node("Max", [p + "raw_scale", const(p + "tiny", np.array(_TINY, np.float32))],
                             [p + "scale"], name=p + "scale"),
            helper.make_node("Sub", [x, p + "offset"], [p + "shifted"], name=p + "shift"),
            helper.make_node("Div", [p + "shifted", p + "scale"], [p + "levels_f"], name=p + "to_levels"),
            helper.make_node("QuantizeLinear", [p + "levels_f", const(p + "one", np.array(1.0, np.float32)),
                                                const(p + "zp", np.array(0, np.uint8))], [p + "q"],
                             name=p + "quantize"),
        ]
        new_nodes.extend(nodes)
        quantized[x] = (p + "q", p + "scale", p + "offset")
        return quantized[x]

    for node in graph.node:
        weight = _constant_weight(node, inits)
        if weight is None:
            new_nodes.append(node)
            continue
        w, bias, alpha, beta = weight
        count += 1
        p = f"rowq/w{count}/"
        col_max = np.abs(w).max(axis=0)
        w_scale = np.where(col_max > 0, col_max / WEIGHT_LEVELS, 1.0).astype(np.float32)
        wq = np.clip(np.rint(w / w_scale), -WEIGHT_LEVELS, WEIGHT_LEVELS).astype(np.int8)
        colsum = (wq.astype(np.float64).sum(axis=0) * w_scale).astype(np.float32)
        q, scale, offset = quantize_rows(node.input[0])
        y = node.output[0]
        steps = [
            helper.make_node("MatMulInteger", [q, const(p + "wq", wq)], [p + "int"], name=p + "matmul"),
            helper.make_node("Cast", [p + "int"], [p + "float"], to=TensorProto.FLOAT, name=p + "cast"),
            helper.make_node("Mul", [scale, const(p + "w_scale", w_scale * np.float32(alpha))], [p + "row_scale"],
                             name=p + "row_scale"),
            helper.make_node("Mul", [p + "float", p + "row_scale"], [p + "scaled"], name=p + "scale"),
            helper.make_node("Mul", [offset, const(p + "colsum", colsum * np.float32(alpha))], [p + "shift"],
                             name=p + "offset"),
        ]
        last = p + "scaled"
        if bias is not None:
            steps.append(helper.make_node("Add", [last, p + "shift"], [p + "sum"], name=p + "add_offset"))
            steps.append(helper.make_node("Add", [p + "sum", const(p + "bias", (bias * beta).astype(np.float32))],
                                          [y], name=p + "add_bias"))
        else:
            steps.append(helper.make_node("Add", [last, p + "shift"], [y], name=p + "add_offset"))
        new_nodes.extend(steps)
        for name in node.input[1:]:
            if name in inits and consumers.get(name, 0) <= 1:
                dropped.add(name)

    kept = [i for i in graph.initializer if i.name not in dropped]
    del graph.node[:]
    graph.node.extend(new_nodes)
    del graph.initializer[:]
    graph.initializer.extend(kept + new_inits)
    _require_opset(out, 18)  # ReduceMin/ReduceMax take their axes as an input from opset 18
    onnx.checker.check_model(out)
    return out


def _constant_weight(node: Any, inits: dict[str, Any]) -> tuple[np.ndarray, np.ndarray | None, float, float] | None:
    """(W as (K, N) float32, bias or None, alpha, beta) for a MatMul/Gemm with a constant 2-D weight."""
    from onnx import numpy_helper

    if node.op_type not in ("MatMul", "Gemm") or len(node.input) < 2 or node.input[1] not in inits:
        return None
    w = numpy_helper.to_array(inits[node.input[1]])
    if w.ndim != 2 or w.dtype != np.float32:
        return None
    if node.op_type == "MatMul":
        return w, None, 1.0, 1.0
    attrs = {a.name: a for a in node.attribute}
    if "transA" in attrs and attrs["transA"].i:
        return None
    if "transB" in attrs and attrs["transB"].i:
        w = w.T
    alpha = attrs["alpha"].f if "alpha" in attrs else 1.0
    beta = attrs["beta"].f if "beta" in attrs else 1.0
    bias = None
    if len(node.input) > 2 and node.input[2]:
        if node.input[2] not in inits:
            return None
        bias = numpy_helper.to_array(inits[node.input[2]]).astype(np.float32)
    return np.ascontiguousarray(w), bias, float(alpha), float(beta)


def _require_opset(model: Any, minimum: int) -> None:
    for op in model.opset_import:
        if op.domain in ("", "ai.onnx") and op.version < minimum:
            raise ValueError(f"row-wise int8 needs ONNX opset >= {minimum}; the graph has {op.version}")
