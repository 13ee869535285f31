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

import contextlib
import io
import logging
import tempfile
from pathlib import Path

import numpy as np

CALIBRATION_METHODS = ("minmax", "entropy", "percentile")


@contextlib.contextmanager
def quiet():
    """Keep ONNX Runtime's quantization tools off the user's terminal: they print calibration chatter to stdout and
    log a multi-line warning per tensor they leave float (the guard's int64 slices, by design)."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)


# ONNX Runtime's histogram calibrators (entropy, percentile) keep every calibrated tensor of every image in memory
# until the last image has run: 16.8 GB for the shipped model's onnx-int8 export on its 90 calibration images, 18.5 GB
# peak for README command 1 (AMD EPYC, 2026-12-04, run27). Reading in strides (its CalibStridedMinMax) bounds that but
# merges histograms with other bin edges, which moved the ranges: the shipped model's onnx-int8 then failed its gate
# (benchmarks/HISTORY.md, 2026-12-04). So edgecxr runs the same calibration in two passes over the images, one image
# in memory at a time: first each tensor's extremes, then its histogram over the range one pass would have seen; the
# histograms and hence the ranges are identical to ONNX Runtime's one pass (tested), and go to quantize_static through
# its calibration cache.
_CACHE: tempfile.TemporaryDirectory | None = None
_CALIB_OPTION_KEYS = {"CalibTensorRangeSymmetric": "symmetric", "CalibMovingAverage": "moving_average",
                      "CalibMovingAverageConstant": "averaging_constant", "CalibPercentile": "percentile"}


def _cache_supported() -> bool:
    import inspect

    from onnxruntime.quantization import quantize_static

    return "calibration_cache_path" in inspect.signature(quantize_static).parameters


def calibration_cache(pre: Path, calib: np.ndarray, method: str, form: dict, per_channel: bool,
                      cache_dir: Path | None = None) -> Path:
    """Where the calibrated ranges of this graph, these images and these settings are kept
    (``quantize_static(calibration_cache_path=...)``): builds that differ only in the layers kept float (the
    mixed-precision search) calibrate once. The name hashes everything calibration reads; ``nodes_to_exclude``
    is not among it (ONNX Runtime calibrates every tensor of the quantized op types and excludes later). Default
    folder: a temporary one that lives as long as the process."""
    import hashlib
    import json

    import onnxruntime

    global _CACHE
    if cache_dir is None:
        if _CACHE is None:
            _CACHE = tempfile.TemporaryDirectory(prefix="edgecxr-calib-")
        cache_dir = Path(_CACHE.name)
    h = hashlib.sha256(Path(pre).read_bytes())
    h.update(np.ascontiguousarray(calib).tobytes())
    h.update(json.dumps({"method": method, "shape": list(calib.shape), "dtype": str(calib.dtype),
                         "per_channel": per_channel, "ort": onnxruntime.__version__, "two_pass": 1,
                         "form": {k: (sorted(v) if k == "op_types_to_quantize" else str(v)) for k, v in form.items()}},
                        sort_keys=True).encode())
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    return Path(cache_dir) / f"{method}-{h.hexdigest()[:32]}.json"


def histogram_calibration(pre: Path, calib: np.ndarray, input_name: str, method: str, op_types: list[str],
                          extra_options: dict, tmp: Path):
    """ONNX Runtime's entropy or percentile calibration of ``pre`` on ``calib``, in two passes that hold one
    image's tensors at a time; returns its ``TensorsData`` (what ``compute_data`` returns after one pass), or None
    where ONNX Runtime's own pass must do it."""
    from onnxruntime.quantization.calibrate import CalibrationMethod, HistogramCollector, create_calibrator

    cm = {"entropy": CalibrationMethod.Entropy, "percentile": CalibrationMethod.Percentile}[method]
    options = {v: extra_options[k] for k, v in _CALIB_OPTION_KEYS.items() if k in extra_options}
    cal = create_calibrator(Path(pre), op_types, augmented_model_path=str(Path(tmp) / "augmented.onnx"),
                            calibrate_method=cm, extra_options=options)
    sess = cal.infer_session
    names = [o.name for o in sess.get_outputs()]
    keep = [(i, n) for i, n in enumerate(names) if n in cal.tensors_to_calibrate]
    on_abs = method == "percentile" and cal.symmetric  # what HistogramCollector.collect histograms

    def tensors():
        for k in range(len(calib)):
            outs = sess.run(None, {input_name: calib[k : k + 1]})
            for i, n in keep:
                yield n, np.asarray(outs[i]).ravel()

    lo: dict = {}  # pass 1: each tensor's extremes (of |x| where the histogram is of |x|)
    hi: dict = {}
    span: dict = {}
    for n, a in tensors():
        if not a.size:  # an empty tensor: ONNX Runtime's own pass handles that case
            return None
        mn, mx = np.nanmin(a), np.nanmax(a)
        lo[n], hi[n] = (min(lo[n], mn), max(hi[n], mx)) if n in lo else (mn, mx)
        if on_abs:
            ab = np.abs(a)
            amn, amx = ab.min(), ab.max()
            span[n] = (min(span[n][0], amn), max(span[n][1], amx)) if n in span else (amn, amx)
    if not on_abs:  # collect_value's symmetric range around 0
        span = {n: (-t, t) for n in lo for t in [np.array(max(abs(lo[n]), abs(hi[n])), dtype=np.float32)]}
    hist: dict = {}
    for n, a in tensors():  # pass 2: histograms over the range one pass would have seen; the counts add up exactly
        h, edges = np.histogram(np.abs(a) if on_abs else a, bins=cal.num_bins, range=span[n])
        if n in hist:
            hist[n][0] += h
        else:
            hist[n] = [h, edges]
    collector = HistogramCollector(method=method, symmetric=cal.symmetric, num_bins=cal.num_bins,
                                   num_quantized_bins=cal.num_quantized_bins, percentile=cal.percentile,
                                   scenario=cal.scenario)
    for n, (h, edges) in hist.items():  # the tuples HistogramCollector.collect stores
        collector.histogram_dict[n] = ((h, edges.astype(np.float32), lo[n], hi[n]) if on_abs
                                       else (h, edges, lo[n], hi[n], span[n][1]))
    cal.collector = collector
    with quiet():
        return cal.compute_data()


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

    def __iter__(self):  # qdq_loss_debug iterates readers
        self.rewind()
        return iter(lambda: self.get_next(), None)


# What the QOperator form quantizes. Convolutions alone left each dense layer's Concat and the ReLU between its
# BatchNorm-as-conv and its conv in float, each wrapped in DequantizeLinear/QuantizeLinear (202 DQ, 199 Q: a third of
# the INT8 time in ORT's profiler). With the concatenations (QLinearConcat), the pools and the ReLUs (folded into the
# range of the op before them) quantized too, 14 DQ / 16 Q remain, with the same 1 flip of 222 in the gate; the bench
# went from 22.3 to 16.1 ms at batch 1 (benchmarks/results/cpu-amd-epyc-2core-avx512-2026-11-28-run3 vs -run8, AVX-512 VNNI).
QOPERATOR_OPS = ("Conv", "Concat", "AveragePool", "MaxPool", "Relu")


def check_node_names(names: list[str], fp32_onnx: Path) -> None:
    """Refuse ``[int8] exclude`` names the exported graph does not have (a BatchNorm also under its int8-depthwise name,
    ``<name>_as_dwconv``): the quantizers would ignore them and quantize the layer the user meant to keep float."""
    import difflib

    import onnx

    from edgecxr.export.targets import TargetError

    nodes = onnx.load(str(fp32_onnx), load_external_data=False).graph.node
    graph_names = {n.name for n in nodes} | {n.name + "_as_dwconv" for n in nodes if n.op_type == "BatchNormalization"}
    missing = [n for n in names if n not in graph_names]
    if missing:
        hints = {n: difflib.get_close_matches(n, sorted(graph_names), n=2) for n in missing}
        raise TargetError("[int8] exclude: no node named " + "; ".join(
            f"{n!r}" + (f" (did you mean {', '.join(map(repr, h))}?)" if h else "") for n, h in hints.items())
            + " in the exported graph (a target with gray_stem = true names its stem /conv0/conv/Conv). Fix the target file.")


def quantize_onnx(fp32: Path, out: Path, calib: np.ndarray, fmt: str = "qoperator", method: str = "minmax",
                  per_channel: bool = True, reduce_range: bool = False, bn_to_conv: bool = False,
                  exclude: list[str] | None = None, preprocessed: bool = False, shared_concat_scales: bool = False,
                  split_weights: list[str] | None = None, cache_dir: Path | None = None) -> Path:
    """Quantize ``fp32`` into ``out`` with ONNX Runtime's static quantization, calibrated on ``calib``; the
    calibrated ranges are cached (:func:`calibration_cache`, in ``cache_dir`` or a per-process temporary folder)."""
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
        if preprocessed:
            pre = Path(fp32)
        else:
            with quiet():
                quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
            if bn_to_conv:
                batchnorm_to_depthwise(pre, pre)
        if split_weights:
            split = Path(td) / "split.onnx"
            halves = split_conv_weights(pre, split, list(split_weights), qmax=64 if reduce_range else 127)
            pre = split
        import onnx

        input_name = onnx.load(str(pre), load_external_data=False).graph.input[0].name
        exclude = list(exclude or []) + output_only_nodes(pre)
        if fmt == "qdq":
            form = dict(quant_format=QuantFormat.QDQ, activation_type=QuantType.QInt8, op_types_to_quantize=["Conv", "Gemm"],
                        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True,
                                       "CalibMovingAverage": method == "minmax"})
        else:
            # the classifier and the guard's MatMuls stay float (quantizing the guard's distance computation
            # collapsed its score to a constant); see QOPERATOR_OPS for what is quantized
            form = dict(quant_format=QuantFormat.QOperator, activation_type=QuantType.QUInt8,
                        op_types_to_quantize=list(QOPERATOR_OPS))
        kw = {}
        if _cache_supported():  # ONNX Runtime with quantize_static(calibration_cache_path=...) (1.32 here); older
            # ones calibrate in one pass, every build
            cache = calibration_cache(pre, calib, method, form, per_channel, cache_dir)
            if method != "minmax" and not cache.is_file():  # minmax holds only reduced values: ONNX Runtime's own pass
                from onnxruntime.quantization.calibrate import save_tensors_data

                try:
                    ranges = histogram_calibration(pre, calib, input_name, method, form["op_types_to_quantize"],
                                                   form.get("extra_options", {}), Path(td))
                except (AttributeError, TypeError, KeyError) as exc:  # ONNX Runtime's calibrators changed
                    import warnings

                    warnings.warn(f"two-pass calibration unavailable ({type(exc).__name__}: {exc}); ONNX Runtime's "
                                  "one pass holds every calibration image's tensors in memory", stacklevel=2)
                    ranges = None
                if ranges is not None:
                    save_tensors_data(ranges, cache)
            kw["calibration_cache_path"] = str(cache)  # absent: ONNX Runtime calibrates in one pass and writes it
        with quiet():
            quantize_static(str(pre), str(out), _Reader(calib, input_name), weight_type=QuantType.QInt8,
                            per_channel=per_channel, reduce_range=reduce_range, calibrate_method=cm,
                            nodes_to_exclude=exclude, **kw, **form)
        if fmt == "qdq" and split_weights:
            drop_output_qdq(Path(out), halves)
        if fmt == "qoperator" and shared_concat_scales:
            share_concat_scales(Path(out))
    return Path(out)


def share_concat_scales(path: Path, only: tuple[str, ...] = ()) -> int:
    """Give the tensors that meet in QLinearConcats one scale and zero point per group (the union of their calibrated
    ranges); return how many tensors changed. ``only``: node-name prefixes of the concatenations to consider (e.g.
    ``("/denseblock4/",)``; empty: all).

    DenseNet concatenates every earlier feature map again in each dense layer; with its own scale per tensor, ONNX
    Runtime's QLinearConcat requantizes every input through a lookup table, with equal parameters it copies bytes.
    A tensor whose range starts at 0 (a ReLU may be folded into it) joins only a group whose range starts at 0 too,
    so no folded ReLU is undone. The ranges widen, so precision drops: the export gate decides.

    Off by default: for the shipped model 76fa283b it made batch-1 inference 9% faster (19.5 vs 21.4 ms, AMD EPYC
    AVX-512 VNNI, slow host phase; benchmarks/results/latency-ab-onnx-int8-shared-concat-76fa283b-epyc.txt) but
    failed the gate with 8 flips of 222, and the mixed-precision search did not mend it (8 float layers; `edgecxr
    export --target` a copy of export/onnx-int8.toml with ``shared_concat_scales = true``)."""
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(path))
    inits = {i.name: i for i in m.graph.initializer}

    def params(scale: str, zp: str):
        if scale not in inits or zp not in inits:
            return None
        s, z = numpy_helper.to_array(inits[scale]), numpy_helper.to_array(inits[zp])
        if s.size != 1 or z.dtype != np.uint8:
            return None
        return float(s), int(z)

    parent: dict[tuple, tuple] = {}

    def find(x):
        while parent.setdefault(x, x) != x:
            x = parent[x]
        return x

    for n in m.graph.node:
        if n.op_type != "QLinearConcat" or (only and not n.name.startswith(tuple(only))):
            continue
        pairs = [(n.input[0], n.input[1])] + [(n.input[i + 1], n.input[i + 2]) for i in range(2, len(n.input), 3)]
        pairs = [p for p in pairs if params(*p) is not None]
        for p in pairs[1:]:
            parent[find(p)] = find(pairs[0])
    groups: dict[tuple, list] = {}
    for p in list(parent):
        groups.setdefault(find(p), []).append(p)
    changed = 0
    for members in groups.values():
        rng = {p: ((0 - z) * s, (255 - z) * s) for p in members for s, z in [params(*p)]}
        lo = min(r[0] for r in rng.values())
        members = [p for p in members if lo == 0 or rng[p][0] < 0]  # see the docstring: folded ReLUs stay folded
        if len(members) < 2:
            continue
        lo, hi = min(rng[p][0] for p in members), max(rng[p][1] for p in members)
        scale = (hi - lo) / 255.0
        zp = int(np.clip(np.round(-lo / scale), 0, 255))
        for sc, z in members:
            if params(sc, z) != (np.float32(scale).item(), zp):
                changed += 1
            inits[sc].CopyFrom(numpy_helper.from_array(np.array(scale, dtype=np.float32), sc))
            inits[z].CopyFrom(numpy_helper.from_array(np.array(zp, dtype=np.uint8), z))
    onnx.save(m, str(path))
    return changed


def output_only_nodes(path: Path, outputs: tuple[str, ...] = ("guard",)) -> list[str]:
    """Names of the nodes that feed only ``outputs`` (by default the input guard's distance computation).

    Every INT8 form keeps them in float: the guard compares a feature vector with training statistics
    through subtractions, products and a square root, and quantizing those collapsed its score (ORT: a
    constant; NNCF's mixed preset: correlation 0.16 with FP32)."""
    import onnx

    g = onnx.load(str(path), load_external_data=False).graph
    producer = {o: n for n in g.node for o in n.output}

    def ancestors(tensor: str) -> set[str]:
        seen, todo = set(), [tensor]
        while todo:
            n = producer.get(todo.pop())
            if n is not None and n.name not in seen:
                seen.add(n.name)
                todo += list(n.input)
        return seen

    wanted, others = set(), set()
    for o in g.output:
        (wanted if o.name in outputs else others).update(ancestors(o.name))
    return sorted(wanted - others)


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


def _save_with_nodes(m, nodes: list, dst: Path) -> None:
    """Give ``m`` these nodes, drop the initializers nothing reads any more, check and save it."""
    import onnx

    del m.graph.node[:]
    m.graph.node.extend(nodes)
    used = {i for n in m.graph.node for i in n.input}
    keep = [i for i in m.graph.initializer if i.name in used]
    del m.graph.initializer[:]
    m.graph.initializer.extend(keep)
    onnx.checker.check_model(m)
    onnx.save(m, str(dst))


def batchnorm_to_depthwise(src: Path, dst: Path) -> int:
    """Rewrite every BatchNormalization as an equivalent 1x1 depthwise Conv; return how many.

    DenseNet's pre-activation BatchNorm sits on a concatenation and before a ReLU, so no converter
    can fold it into a neighbouring convolution. Left as BatchNormalization it stays float32 in
    ONNX Runtime's quantized graph, and every dense layer pays Dequantize -> BN -> Quantize plus
    NCHW/NHWC transposes. As a depthwise Conv it is quantized like any other conv (a per-channel
    int8 weight with one value per channel is exact) and the graph stays in int8.
    """
    import onnx
    from onnx import helper, numpy_helper

    m = onnx.load(str(src))
    inits = {i.name: i for i in m.graph.initializer}
    new_nodes, count = [], 0
    for n in m.graph.node:
        if n.op_type != "BatchNormalization" or not all(x in inits for x in n.input[1:5]):
            new_nodes.append(n)
            continue
        scale, bias, mean, var = (numpy_helper.to_array(inits[x]).astype(np.float64) for x in n.input[1:5])
        eps = next((a.f for a in n.attribute if a.name == "epsilon"), 1e-5)
        k = scale / np.sqrt(var + eps)
        c = len(k)
        w_name, b_name = f"{n.name or n.output[0]}_dw_w", f"{n.name or n.output[0]}_dw_b"
        m.graph.initializer.extend([numpy_helper.from_array(k.reshape(c, 1, 1, 1).astype(np.float32), w_name),
                                    numpy_helper.from_array((bias - mean * k).astype(np.float32), b_name)])
        new_nodes.append(helper.make_node("Conv", [n.input[0], w_name, b_name], [n.output[0]],
                                          name=f"{n.name}_as_dwconv", group=c, kernel_shape=[1, 1]))
        count += 1
    _save_with_nodes(m, new_nodes, dst)
    return count


def drop_output_qdq(path: Path, tensors: list[str]) -> int:
    """Remove the QuantizeLinear -> DequantizeLinear pair on each of ``tensors`` (Q/DQ form): their consumers read the
    float values. For split convs (:func:`split_conv_weights`): quantizing each half's output would add back the
    error the split removed; the engine runs the convs int8 with float outputs and adds them. Return pairs removed."""
    import onnx

    m = onnx.load(str(path))
    g, want = m.graph, set(tensors)
    qs = {n.output[0]: n for n in g.node if n.op_type == "QuantizeLinear" and n.input[0] in want}
    dqs = [n for n in g.node if n.op_type == "DequantizeLinear" and n.input[0] in qs]
    rename = {dq.output[0]: qs[dq.input[0]].input[0] for dq in dqs}
    if len(rename) != len(qs) or any(o in rename for o in (x.name for x in g.output)):
        return 0  # a quantized half with other consumers (or a graph output): leave the graph as it is
    gone = {id(n) for n in list(qs.values()) + dqs}
    keep = [n for n in g.node if id(n) not in gone]
    for n in keep:
        for i, x in enumerate(n.input):
            if x in rename:
                n.input[i] = rename[x]
    del g.node[:]
    g.node.extend(keep)
    onnx.save(m, str(path))
    return len(dqs)


def split_conv_weights(src: Path, dst: Path, names: list[str], qmax: int) -> list[str]:
    """Run each named Conv as two convolutions of the same input whose weights add up to the original: W_hi, the
    weights on the quantizer's own per-channel int8 grid (scale max|W|/qmax, so quantizing them is exact), and
    W_lo = W - W_hi, the rounding rest (at most half a step), quantized on a grid of its own. In FP32 the sum is the
    same conv; in INT8 the pair keeps ~15 bits of weight precision at twice an int8 conv's cost, where a float conv
    costs about four. For the layers whose int8 weights move the logits most (the stem conv of a network trained from
    scratch: ``benchmarks/int8_sensitivity.py``). ``qmax``: 127, or 64 with 7-bit weights (ONNX Runtime's ranges).
    Return the split convs' output tensors (the two halves of each sum)."""
    import onnx
    from onnx import helper, numpy_helper

    m = onnx.load(str(src))
    inits = {i.name: i for i in m.graph.initializer}
    wanted, new_nodes, halves = set(names), [], []
    for n in m.graph.node:
        new_nodes.append(n)
        if n.name not in wanted or n.op_type != "Conv" or n.input[1] not in inits:
            continue
        w = numpy_helper.to_array(inits[n.input[1]]).astype(np.float64)
        step = np.abs(w).reshape(len(w), -1).max(axis=1).reshape(-1, *[1] * (w.ndim - 1)) / qmax
        hi = np.round(w / np.where(step > 0, step, 1.0)) * step
        hi_name, lo_name, out = f"{n.name}_w_hi", f"{n.name}_w_lo", n.output[0]
        m.graph.initializer.extend([numpy_helper.from_array(hi.astype(np.float32), hi_name),
                                    numpy_helper.from_array((w - hi).astype(np.float32), lo_name)])
        n.input[1] = hi_name
        n.output[0] = f"{out}_hi"
        lo = helper.make_node("Conv", [n.input[0], lo_name], [f"{out}_lo"], name=f"{n.name}_lo")
        lo.attribute.extend(a for a in n.attribute)
        new_nodes += [lo, helper.make_node("Add", [f"{out}_hi", f"{out}_lo"], [out], name=f"{n.name}_sum")]
        halves += [f"{out}_hi", f"{out}_lo"]
    if len(halves) != 2 * len(wanted):
        from edgecxr.export.targets import TargetError

        found = {n.name for n in m.graph.node if n.op_type == "Conv"}
        raise TargetError(f"[int8] split_weights: no Conv named {sorted(wanted - found)} in the graph; fix the target file")
    _save_with_nodes(m, new_nodes, dst)
    return halves
