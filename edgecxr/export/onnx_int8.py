"""INT8 ONNX with ONNX Runtime's static post-training quantization.

Two forms, because the fast form differs by engine:

* ``qdq`` for TensorRT: QuantizeLinear/DequantizeLinear pairs, int8 activations and weights, both
  symmetric (TensorRT accepts zero-point 0 only), per-channel weights, Conv/Gemm inputs only.
* ``qoperator`` for ONNX Runtime on CPU: QLinearConv & co., uint8 activations (asymmetric) with
  int8 per-channel weights (U8S8). On CPU the Q/DQ form is slow for DenseNet: every dense layer
  starts with BatchNorm-ReLU on the concatenated features, which cannot be folded into the
  following convolution, so ORT leaves DequantizeLinear -> BatchNorm -> Relu -> QuantizeLinear
  chains in float around each QLinearConv; QOperator keeps the tensors in uint8 between kernels.

``quant_pre_process`` (shape inference + ORT graph optimisation) always runs first.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

CALIBRATION_METHODS = ("minmax", "entropy", "percentile")


class _Reader:
    """onnxruntime CalibrationDataReader over a preprocessed (N, 3, H, W) array, one image per batch."""

    def __init__(self, x: np.ndarray, input_name: str) -> None:
        self._x, self._name, self._i = x, input_name, 0

    def get_next(self):
        if self._i >= len(self._x):
            return None
        self._i += 1
        return {self._name: self._x[self._i - 1 : self._i]}

    def rewind(self) -> None:
        self._i = 0


def quantize_onnx(fp32: Path, out: Path, calib: np.ndarray, fmt: str = "qoperator", method: str = "minmax",
                  per_channel: bool = True, reduce_range: bool = False) -> Path:
    from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType, quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if method not in CALIBRATION_METHODS:
        raise ValueError(f"calibration method {method!r} is not one of {CALIBRATION_METHODS}")
    if fmt not in ("qdq", "qoperator"):
        raise ValueError(f"INT8 format {fmt!r} must be qdq or qoperator")
    cm = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
          "percentile": CalibrationMethod.Percentile}[method]
    with tempfile.TemporaryDirectory() as td:
        pre = Path(td) / "pre.onnx"
        quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
        import onnx

        input_name = onnx.load(str(pre), load_external_data=False).graph.input[0].name
        if fmt == "qdq":
            quantize_static(str(pre), str(out), _Reader(calib, input_name), quant_format=QuantFormat.QDQ,
                            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, per_channel=per_channel,
                            calibrate_method=cm, op_types_to_quantize=["Conv", "Gemm"],
                            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True,
                                           "CalibMovingAverage": method == "minmax"})
        else:
            quantize_static(str(pre), str(out), _Reader(calib, input_name), quant_format=QuantFormat.QOperator,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=per_channel,
                            reduce_range=reduce_range, calibrate_method=cm)
    return Path(out)


def qdq_zero_points(path: Path) -> list[int]:
    """Every zero-point of every Q/DQ node (TensorRT needs all of them to be 0)."""
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    zps = []
    for n in m.graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear") and len(n.input) > 2 and n.input[2] in inits:
            zps += np.ravel(inits[n.input[2]]).astype(int).tolist()
    return zps
