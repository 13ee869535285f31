"""Which quantized layers move the logits: keep a group of them float in a Q/DQ graph and measure what is left of
the logit error against FP32, on calibration images.

Why not the quantization noise of each layer's own output (SQNR)? In the shipped model's 7-bit Q/DQ graph the lowest
SQNR belongs to the attention MLPs' 1x1 convolutions, whose tiny outputs barely reach the logits (keeping them float
left 4 flips at the gate), while the stem convolution, last of 140 by SQNR, holds half the logit error (RMS 0.093 ->
0.046 with it float; ``benchmarks/results/int8-sensitivity-fee380fb-7bit.md``).

Floating a layer needs no re-calibration: its inputs are rewired from ``DequantizeLinear(QuantizeLinear(x))`` to ``x``
and its weights to the FP32 initializers. Every layer alone would cost one session each (about 140 for DenseNet121,
5 minutes on 2 cores), so groups of consecutive layers are measured first and only the best groups layer by layer.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np


def logit_error(ref_logits: np.ndarray, logits: np.ndarray) -> float:
    """Root-mean-square logit difference from FP32. On 90 calibration images top-1 agreement saturates while this
    still orders builds as the gate does (60-epoch candidate, onnx-int8: percentile 0.053 and 5 flips at the gate,
    minmax 0.044 and 1 flip)."""
    return float(np.sqrt(np.mean((np.asarray(logits, np.float64) - ref_logits) ** 2)))


def float_in_qdq(qdq, fp32, names: set[str]):
    """A copy of the Q/DQ ``onnx.ModelProto`` with the nodes ``names`` reading float inputs and FP32 weights (from
    ``fp32``, the graph ``qdq`` was quantized from, same node names)."""
    import onnx

    m = onnx.ModelProto()
    m.CopyFrom(qdq)
    src = {n.name: n for n in fp32.graph.node}
    inits = {i.name: i for i in fp32.graph.initializer}
    producer = {o: n for n in m.graph.node for o in n.output}
    added: set[str] = set()
    for node in m.graph.node:
        if node.name not in names or node.name not in src:
            continue
        new = []
        for q_in, f_in in zip(node.input, src[node.name].input):
            if f_in in inits:  # weight or bias: the FP32 initializer, copied once under a new name
                name = f"{f_in}__float"
                if name not in added:
                    t = onnx.TensorProto()
                    t.CopyFrom(inits[f_in])
                    t.name = name
                    m.graph.initializer.append(t)
                    added.add(name)
                new.append(name)
                continue
            dq = producer.get(q_in)
            q = producer.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
            new.append(q.input[0] if q is not None and q.op_type == "QuantizeLinear" else q_in)
        del node.input[:]
        node.input.extend(new)
    # a floated node's output that leaves the graph through Q/DQ (the classifier's logits) leaves it in float
    outputs = {o.name for o in m.graph.output}
    floated = {t for n in m.graph.node if n.name in names for t in n.output}
    for i, n in enumerate(m.graph.node):
        q = producer.get(n.input[0]) if n.op_type == "DequantizeLinear" and n.output[0] in outputs else None
        if q is not None and q.op_type == "QuantizeLinear" and q.input[0] in floated:
            m.graph.node[i].CopyFrom(onnx.helper.make_node("Identity", [q.input[0]], [n.output[0]], name=n.name))
    return m


def quantized_nodes(qdq, fp32, op_types: tuple[str, ...] | None = ("Conv", "Gemm")) -> list[str]:
    """Names of the ``op_types`` nodes (None: any) that read at least one dequantized tensor, in graph order. ONNX
    Runtime rewires every reader of a quantized tensor to its DequantizeLinear, float ops (Concat, ReLU) included."""
    producer = {o: n.op_type for n in qdq.graph.node for o in n.output}
    names = {n.name for n in fp32.graph.node}
    return [n.name for n in qdq.graph.node if (op_types is None or n.op_type in op_types) and n.name in names
            and any(producer.get(i) == "DequantizeLinear" for i in n.input)]


def _logits(model, x: np.ndarray, output: str) -> np.ndarray:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    s = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    return np.concatenate([s.run([output], {name: x[i:i + 8]})[0] for i in range(0, len(x), 8)])


def rank_by_logits(fp32_path: Path, qdq_path: Path, x: np.ndarray, group: int = 8, refine: int = 2,
                   output: str = "logits", deadline: float | None = None) -> tuple[list[str], list[dict]]:
    """Quantized Conv/Gemm nodes of ``qdq_path``, the one whose float version leaves the least logit error first.

    Consecutive groups of ``group`` nodes are floated together; the ``refine`` best groups are then measured node by
    node. The ranking is: those nodes by their own result, then the other nodes group by group (best group first).
    Returns (ranking, records of what was measured). Stops refining at ``deadline`` (``time.perf_counter()``)."""
    import onnx

    fp32, qdq = onnx.load(str(fp32_path)), onnx.load(str(qdq_path))
    ref = _logits(fp32, x, output)

    def error(names: set[str]) -> float:
        return logit_error(ref, _logits(float_in_qdq(qdq, fp32, names) if names else qdq, x, output))

    nodes = quantized_nodes(qdq, fp32)
    base = error(set())
    records = [{"float": [], "logit_rms": base}]
    groups = [nodes[i:i + group] for i in range(0, len(nodes), group)]
    scored = []
    for g in groups:
        scored.append((error(set(g)), g))
        records.append({"float": g, "logit_rms": scored[-1][0]})
    scored.sort(key=lambda r: r[0])
    single = []
    for _, g in scored[:refine]:
        for n in g:
            if deadline is not None and time.perf_counter() > deadline:
                break
            single.append((error({n}), n))
            records.append({"float": [n], "logit_rms": single[-1][0]})
    first = [n for _, n in sorted(single)]
    rest = [n for _, g in scored for n in g if n not in first]
    return first + rest, records
