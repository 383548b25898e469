"""Post-training optimisation of the bundle's ONNX graph.

- int8 (dynamic, row-wise): weights of MatMul/Gemm stored as int8 per output channel, activations
  quantised per row at run time from that row alone (`waypost.deploy.rowwise_int8`), so a row's
  answer never depends on its batch. No calibration data needed; the right default for MLP / RNN /
  Transformer graphs, whose cost is in matrix multiplies. Tree ensembles are left in fp32.
- int8 static (QDQ) with calibration rows: for CNNs, where activations dominate (used by the image
  work through `quantize_static_qdq`); fixed scales, so batch-independent too.
- fp16: for GPUs. Inputs/outputs stay fp32 and tree ensembles stay fp32 (onnxruntime has no fp16
  kernel for them).
"""
from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

FP16_BLOCK = ["TreeEnsembleRegressor", "TreeEnsembleClassifier", "TreeEnsemble", "Softmax", "Sigmoid"]


def quantize_static_qdq(model: Any, calibration: Iterable[dict[str, Any]]) -> Any:
    """Static int8 with QDQ nodes; `calibration` yields input feeds (name -> array)."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    feeds = list(calibration)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(feeds)

        def get_next(self) -> dict[str, Any] | None:
            return next(self.it, None)

    with tempfile.TemporaryDirectory() as tmp, _quiet_root_logger():
        src, dst = Path(tmp) / "in.onnx", Path(tmp) / "out.onnx"
        onnx.save_model(model, src)
        quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True)
        return onnx.load_model(str(dst))


@contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """onnxruntime.quantization logs advice ("consider pre-processing", per-channel axis notes on
    1-d weights) through the root logger at WARNING; the export report is where results belong."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def to_fp16(model: Any) -> Any:
    # onnxruntime's own copy of the converter: onnxconverter-common 1.16's crashes on graphs where
    # one output feeds several nodes (ours: the blend).
    from onnxruntime.transformers.float16 import convert_float_to_float16

    # Trees and the blend stay fp32: no fp16 tree kernels, and the blend is a handful of adds.
    keep = [n.name for n in model.graph.node if n.name.startswith(("gbm/", "blend/"))]
    return convert_float_to_float16(model, keep_io_types=True, op_block_list=FP16_BLOCK,
                                    node_block_list=keep, disable_shape_infer=True)


def optimize_model(model: Any, optimize: str) -> Any:
    """A new, optimised ModelProto; `model` itself is left untouched (the fp32 reference)."""
    if optimize == "none":
        return model
    import onnx

    original, model = model, onnx.ModelProto()
    model.CopyFrom(original)
    if optimize == "int8":
        from waypost.deploy.rowwise_int8 import quantize_int8_rowwise

        return quantize_int8_rowwise(model)
    if optimize == "fp16":
        return to_fp16(model)
    from waypost.errors import ConfigError

    raise ConfigError(f"optimize: expected none, int8 or fp16, got {optimize!r}")
