"""FP16-cast ONNX (float16 weights and compute, float32 input/output) for TensorRT's strongly typed FP16."""

from __future__ import annotations

from pathlib import Path


def cast_fp16(fp32: Path, out: Path) -> Path:
    import onnx
    from onnxconverter_common import float16

    m = onnx.load(str(fp32))
    # Resize must be converted too: left in float32 (the converter's default block list), the casts it
    # inserts around it get the wrong type and the graph does not load.
    block = [op for op in float16.DEFAULT_OP_BLOCK_LIST if op != "Resize"]
    m16 = float16.convert_float_to_float16(m, keep_io_types=True, op_block_list=block)
    onnx.checker.check_model(m16)
    onnx.save(m16, str(out))
    return Path(out)
