"""Automatic mixed precision for INT8: when a quantized artifact misses the gate, keep the fewest
layers in float until it passes.

* Cheap knobs first. ONNX Runtime: the other calibration methods (minmax, percentile; entropy only in the Q/DQ
  form: in the QOperator form it builds minmax's model, see :func:`onnx_knobs`). OpenVINO: ONNX
  Runtime's Q/DQ with each other calibration method, and the other quantizer (NNCF / ONNX Runtime's Q/DQ).
* ONNX Runtime: rank the quantized convolutions by how much logit error is left on the *calibration* images when
  each is kept float in ONNX Runtime's Q/DQ twin of the graph (:mod:`edgecxr.export.sensitivity`), re-order its top
  three by real builds in the target's form with each alone float (:func:`_refine_singles`), then exclude the worst
  1, 2, 4, ... nodes, under the best calibration the knobs found and the target's graph form.
* ONNX Runtime, last: BatchNorm the other way (float, or int8 depthwise convolutions). It is a knob of the graph's
  form, not of calibration, and the slow way round costs speed: on the shipped model (AMD EPYC, VNNI) with 8 float
  layers, 24.6 ms at batch 1 with BatchNorm float against 19.1 ms with BatchNorm as int8 depthwise convs
  (41.9 / 27.4 in a slow host phase; ``benchmarks/results/latency-ab-onnx-int8-bn-76fa283b-epyc.txt``). So it
  is tried only when keeping layers float under the target's form has not passed.
* OpenVINO: the same ranking on ONNX Runtime's Q/DQ source, then NNCF's ``quantize_with_accuracy_control``, its
  metric being the judge below on the calibration images, ``max_drop`` half of 1 - the target's minimum agreement.

Every build is judged on the calibration images as the gate judges: top-1 agreement with FP32, and, when the
model has an operating point, how many of the images FP32 calls positive at that point stay positive (one
COVID-19 image slipping under a low threshold fails the gate even at 100% top-1 agreement); the score is the
lower of the two. On 90 images that score saturates (every build agrees fully), so builds that reach the bar
are told apart by their logit error against FP32 there, which orders them as the verification images do. A
knob's build goes to the gate when it scores no worse than the initial build (or reaches the bar) with a lower logit
error than every build gated before it, the initial one included; a float-layer build when its logit error is lower
than every build gated before it. The verification images never choose or rank layers: the gate only decides when
the search stops (the first candidate that passes it; the sidecar records how many gate runs that took). The search
is bounded by
the target's ``[int8] search_minutes`` and ``max_float_layers``; the sidecar records which layers stayed float
and why.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np

from edgecxr.export.sensitivity import logit_error  # noqa: F401  (the search's second judge)


def _calib_reference(ctx) -> np.ndarray:
    """FP32 torch logits on the calibration images (the search's reference; never the verification set)."""
    import torch

    from edgecxr.runtime.batching import chunks

    x = ctx.calib()
    module = ctx.reference_module()
    out = []
    with torch.no_grad():
        for i, j in chunks(len(x), 16):
            o = module(torch.from_numpy(x[i:j]))
            out.append((o[0] if isinstance(o, tuple) else o).numpy())
    return np.concatenate(out)


def judge(ctx, ref_logits: np.ndarray, logits: np.ndarray) -> float:
    """The search's score of a trial on the calibration images: top-1 agreement with FP32, lowered to the share
    of FP32's positive findings at the operating point that the trial keeps when that share is smaller."""
    score = float(np.mean(logits.argmax(1) == ref_logits.argmax(1)))
    op = ctx.operating_point or {}
    if op.get("positive_class") in ctx.classes and op.get("threshold") is not None:
        from edgecxr.runtime.operating_point import findings

        pos = ctx.classes.index(op["positive_class"])
        fa, fb = (findings(z, ctx.classes, op) for z in (ref_logits, logits))
        if np.any(fa == pos):
            score = min(score, float(np.mean(fb[fa == pos] == pos)))
    return score


def _runner_logits(path: Path, engine: dict, x: np.ndarray) -> np.ndarray:
    from edgecxr.runtime.batching import run_batched
    from edgecxr.runtime.runners import make_runner

    with make_runner(path, engine) as r:
        return run_batched(r, x)["logits"]


def _say(ctx, tgt, what: str) -> None:
    """The search's current step, on the caller's progress line (when it has one)."""
    if getattr(ctx, "say", None) is not None:
        ctx.say(f"{getattr(tgt, 'name', 'int8')}: {what}")


def search_float_layers(ctx, tgt, tmp: Path, built: Path, engine: dict, verification):
    """Return (artifact, engine facts, verification) after the search; unchanged when it cannot help.

    The backend's search yields candidates in a fixed order, each more conservative than the last, whenever
    the calibration images say it should pass; each goes to the gate, and the search goes on past one that
    fails there, until one passes or the time is up. The number of gate runs is recorded."""
    from edgecxr.export.core import verify_artifact

    t0 = time.perf_counter()
    budget = tgt.int8.search_minutes * 60
    history = [{"step": "initial", "float_nodes": list(tgt.int8.exclude), "verdict": verification.verdict,
                "agreement": verification.details.get("agreement")}]
    if tgt.backend == "onnx":
        candidates = _onnx_search(ctx, tgt, tmp, engine, t0, budget, history, built)
    elif tgt.backend == "openvino":
        candidates = _openvino_search(ctx, tgt, tmp, engine, history, built)
    else:
        return built, engine, verification  # TensorRT builds on the device; nothing to search here
    best, gate_runs = None, 0
    _say(ctx, tgt, f"gate failed; mixed-precision search, at most {budget / 60:.0g} min")
    for new_built, new_engine, why in candidates:
        _say(ctx, tgt, f"search {time.perf_counter() - t0:.0f} s: gate run {gate_runs + 1} "
                       f"({len(new_engine.get('int8', {}).get('float_nodes') or [])} float layer(s))")
        new_engine.update({k: engine[k] for k in ("backend", "precision", "dynamic_batch", "min_batch", "max_batch",
                                                  "input_shape") if k in engine})
        v = verify_artifact(ctx, new_built, new_engine, tgt)
        gate_runs += 1
        history.append({"step": f"gate {gate_runs}", "float_nodes": new_engine.get("int8", {}).get("float_nodes"),
                        "verdict": v.verdict, "agreement": v.details.get("agreement")})
        if best is None or v.verdict == "passed" or v.details.get("agreement", 0) > best[2].details.get("agreement", 0):
            best = (new_built, new_engine, v, why)
        if v.verdict == "passed" or time.perf_counter() - t0 > budget:
            break
    record = {"seconds": round(time.perf_counter() - t0, 1), "gate_runs": gate_runs, "history": history}
    if best is None:
        engine.setdefault("int8", {})["mixed_precision"] = {"result": "no passing configuration found within bounds",
                                                             **record}
        return built, engine, verification
    new_built, new_engine, v, why = best
    new_engine.setdefault("int8", {})["mixed_precision"] = {"reason": why, **record}
    if v.verdict == "passed" or v.details.get("agreement", 0) > verification.details.get("agreement", 0):
        return new_built, new_engine, v
    engine.setdefault("int8", {})["mixed_precision"] = new_engine["int8"]["mixed_precision"]
    return built, engine, verification


# ------------------------------------------------------------------ ONNX Runtime
def rank_onnx_nodes(fp32_pre: Path, calib: np.ndarray, method: str, exclude: list[str], tmp: Path,
                    deadline: float | None = None, history: list | None = None, reduce_range: bool = False) -> list[str]:
    """Quantized Conv/Gemm node names, the one whose float version removes the most logit error first, measured on
    ONNX Runtime's Q/DQ twin of the graph and a subset of the calibration images (:mod:`edgecxr.export.sensitivity`)."""
    from edgecxr.export.onnx_int8 import quantize_onnx
    from edgecxr.export.sensitivity import rank_by_logits

    qdq = tmp / "rank-qdq.onnx"
    quantize_onnx(fp32_pre, qdq, calib, fmt="qdq", method=method, exclude=exclude, preprocessed=True,
                  reduce_range=reduce_range)
    ranked, records = rank_by_logits(fp32_pre, qdq, calib[: min(len(calib), 16)], deadline=deadline)
    if history is not None:
        best = min((r for r in records if len(r["float"]) == 1), key=lambda r: r["logit_rms"], default=records[0])
        history.append({"step": "ranked by logit error on the Q/DQ twin", "measured": len(records),
                        "all_int8_logit_rms": round(records[0]["logit_rms"], 5),
                        "best_single": {"float": best["float"], "logit_rms": round(best["logit_rms"], 5)},
                        "top": ranked[:4]})
    return [n for n in ranked if n not in exclude]


def quantized_in_form(pre: Path, names: list[str], fmt: str) -> list[str]:
    """``names`` without the nodes the target's INT8 form leaves float anyway: the ranking runs on a Q/DQ twin that
    quantizes Conv and Gemm, while the QOperator form quantizes no Gemm (the attention's scale gate and the
    classifier). Keeping such a node "float" changes nothing in the built model and only spends a float-layer slot
    (seen in a search that ranked under strided entropy calibration: 2 of its first 4 picks were Gemms)."""
    import onnx

    from edgecxr.export.onnx_int8 import QOPERATOR_OPS

    ops = set(QOPERATOR_OPS) if fmt == "qoperator" else {"Conv", "Gemm"}
    kind = {n.name: n.op_type for n in onnx.load(str(pre), load_external_data=False).graph.node}
    return [n for n in names if kind.get(n) in ops]


def _trial(ctx, tgt, tmp: Path, engine: dict, history: list, builder, ref_logits: np.ndarray, opts, label: str):
    """Build ``tgt`` with ``opts`` as its [int8] block in a fresh folder; return (artifact, engine, :func:`judge`'s
    score, :func:`logit_error`), both on the calibration images, and record the step."""
    import shutil

    _say(ctx, tgt, f"search: {label}")
    sub = tmp / f"trial-{len(history)}"
    sub.mkdir()
    shutil.copyfile(ctx.fp32_onnx(tgt, tmp), sub / "fp32.onnx")  # export torch -> ONNX once
    path, eng = builder(ctx, dataclasses.replace(tgt, int8=opts), sub)
    eng = dict(engine, **{k: eng[k] for k in ("int8", "disabled_optimizers") if k in eng},
               version=eng.get("version", engine.get("version")))
    score, err = _scored(ctx, ref_logits, path, eng, history, label, opts)
    return path, eng, score, err


def _scored(ctx, ref_logits: np.ndarray, path: Path, eng: dict, history: list, label: str, opts) -> tuple[float, float]:
    """(:func:`judge`'s score, :func:`logit_error`) of a built artifact on the calibration images, recorded."""
    logits = _runner_logits(path, eng, ctx.calib())
    score, err = judge(ctx, ref_logits, logits), logit_error(ref_logits, logits)
    history.append({"step": label, "float_nodes": list(opts.exclude), "calibration": opts.calibration,
                    "calib_agreement": score, "calib_logit_rms": round(err, 5)})
    return score, err


class _Best:
    """The best build so far on the calibration images: the judge's score up to the bar first, then the lowest
    logit error. ``offer`` says whether a new build should go to the gate: it scores no worse than the initial
    build (or reaches the bar) and has a lower logit error than every build gated before it, the initial one
    included. (On 90 images the bar of 99% allows no flip at all: one borderline calibration image must not keep a
    build with half the logit error from the gate; the gate on the verification images decides.)"""

    def __init__(self, bar: float, score: float, err: float, opts) -> None:
        self.bar, self.score, self.err, self.opts = bar, score, err, opts
        self.floor = min(score, bar)
        self.gated_err = err  # the initial build was gated already
        self.last_tried = None  # the options of the last float-layer trial (the graph-form knob starts from them)

    def offer(self, score: float, err: float, opts, need_score: bool = True) -> bool:
        """``need_score=False`` (float-layer trials): the logit error alone decides. Keeping a layer float moves the
        model towards FP32, and one borderline calibration image at the operating point must not keep such a build
        from the gate (the shipped model's 2-float-layer onnx-int8 lost one of 41 calibration positives and
        passed the gate, where the search had gone on to 8 float layers)."""
        if (min(score, self.bar), -err) > (min(self.score, self.bar), -self.err):
            self.score, self.err, self.opts = score, err, opts
        if (min(score, self.bar) >= self.floor or not need_score) and err < self.gated_err:
            self.gated_err = err
            return True
        return False


def _knob_candidates(knobs: list, run, deadline: float, best: _Best):
    """Build the ``(label, opts)`` knobs in turn until the deadline; yield each that :meth:`_Best.offer` calls
    gate-worthy, as (artifact, engine, why)."""
    for label, opts in knobs:
        if time.perf_counter() > deadline:
            break
        path, eng, score, err = run(opts, label)
        if best.offer(score, err, opts):
            yield path, eng, f"{label} (score {score:.4f}, logit error {err:.4f} on the calibration images)"


def _initial(ctx, tgt, built: Path, engine: dict, ref: np.ndarray, history: list) -> _Best:
    score, err = _scored(ctx, ref, built, engine, history, "initial, on the calibration images", tgt.int8)
    return _Best(tgt.tolerance.min_agreement, score, err, tgt.int8)


def onnx_knobs(o) -> list:
    """The cheap knobs for ONNX Runtime, as (label, [int8] options), fastest first: the other calibration methods
    (minmax builds in a quarter of the time of the histogram methods). They leave the graph's form alone.

    Not entropy for the QOperator form: with ONNX Runtime's default bins (128 histogram = 128 quantized bins) its only
    candidate threshold is the whole range, clipped to each tensor's min and max, i.e. minmax's ranges (the Q/DQ
    form's minmax averages per image instead, so there the two differ); the build cost a minute and could not win
    (same 0.06344 logit RMS as minmax for the shipped model, benchmarks/HISTORY.md)."""
    from edgecxr.export.onnx_int8 import CALIBRATION_METHODS

    same = {"entropy": "minmax"} if o.format == "qoperator" else {}
    tried = {same.get(o.calibration, o.calibration)}
    methods = []
    for m in CALIBRATION_METHODS:
        if same.get(m, m) not in tried:
            tried.add(same.get(m, m))
            methods.append(dataclasses.replace(o, calibration=m))
    return [(f"calibration={k.calibration}, bn_to_conv={k.bn_to_conv}", k) for k in methods]


def onnx_form_knob(o) -> tuple:
    """The last resort for ONNX Runtime, as (label, [int8] options): BatchNorm the other way (kept float, or
    rewritten as int8 depthwise convolutions), with the float layers the ranking chose; see the module docstring
    for why it comes last."""
    flipped = dataclasses.replace(o, bn_to_conv=not o.bn_to_conv)
    return f"bn_to_conv={flipped.bn_to_conv} (graph form), {len(o.exclude)} float conv(s)", flipped


def _onnx_search(ctx, tgt, tmp: Path, engine: dict, t0: float, budget: float, history: list, built: Path):
    from edgecxr.export.onnx_build import build

    ref = _calib_reference(ctx)

    def trial(opts, label):
        return _trial(ctx, tgt, tmp, engine, history, build, ref, opts, label)

    best = _initial(ctx, tgt, built, engine, ref, history)
    # 1. cheap knobs, each judged on the calibration images; one no worse than the initial build there with a lower
    #    logit error than all gated before goes to the gate (top-1 agreement alone saturates on 90 images)
    yield from _knob_candidates(onnx_knobs(tgt.int8), trial, t0 + budget, best)
    # 2. rank nodes under the best calibration so far and the target's graph form, then keep the worst ones float
    yield from _ranked_float(ctx, tgt, tmp, best.opts, trial, t0, budget, history, best)
    # 3. the graph's other form (slower), with the most float layers tried; to the gate whatever the calibration
    #    images say, as the last candidate
    if time.perf_counter() - t0 < budget:
        label, opts = onnx_form_knob(best.last_tried or best.opts)
        path, eng, score, err = trial(opts, label)
        yield path, eng, f"{label} (score {score:.4f}, logit error {err:.4f} on the calibration images)"


def _ranked_float(ctx, tgt, tmp: Path, start, trial, t0: float, budget: float, history: list, best: _Best):
    """Rank the convolutions by their effect on the logits (:func:`rank_onnx_nodes`, under ``start``'s settings),
    then keep the worst 1, 2, 4, ... in float; yield each trial with less logit error on the calibration images than
    every build gated before (:meth:`_Best.offer`), and the last one tried when none was."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from edgecxr.export.onnx_int8 import batchnorm_to_depthwise

    base = list(start.exclude)
    pre = tmp / "rank-pre.onnx"
    quant_pre_process(str(ctx.fp32_onnx(tgt, tmp)), str(pre), skip_symbolic_shape=True)
    if start.bn_to_conv:
        batchnorm_to_depthwise(pre, pre)
    try:
        from edgecxr.export.onnx_build import resolve_reduce_range

        ranked = rank_onnx_nodes(pre, ctx.calib(), start.calibration, base, tmp, deadline=t0 + budget,
                                 history=history, reduce_range=resolve_reduce_range(start.reduce_range, tgt.backend))
    except Exception as exc:  # e.g. an ONNX Runtime change: fall back to graph order from the input (stem first)
        history.append({"step": "ranking failed", "error": f"{type(exc).__name__}: {exc}"})
        import onnx

        ranked = [n.name for n in onnx.load(str(pre)).graph.node if n.op_type == "Conv" and n.name not in base]
    ranked = quantized_in_form(pre, ranked, "qoperator" if tgt.backend == "onnx" and start.format == "qoperator" else "qdq")
    built = {}  # exclude list -> (path, engine, score, error) of a build already made
    ranked = _refine_singles(ranked, base, start, trial, t0, budget, built)
    k, last = 1, None
    while k <= tgt.int8.max_float_layers and time.perf_counter() - t0 < budget:
        opts = dataclasses.replace(start, exclude=base + ranked[:k])
        best.last_tried = opts
        path, eng, score, err = built.get(tuple(opts.exclude)) or trial(opts, f"float top-{k}")
        last = (path, eng, f"kept the {k} conv(s) whose quantization moved the logits most on calibration images "
                           f"in float (score {score:.4f}, logit error {err:.4f} there)")
        if best.offer(score, err, opts, need_score=False):
            yield last  # to the gate; more float layers if it fails there
            last = None
        k *= 2
    if last is not None:
        yield last  # the most float layers tried, although the calibration images did not call it better


REFINE_SINGLES = 3  # the ranking's top convs rebuilt alone in the target's own form before the float top-k trials


def _refine_singles(ranked: list[str], base: list[str], start, trial, t0: float, budget: float, built: dict) -> list[str]:
    """The ranking's first :data:`REFINE_SINGLES` nodes re-ordered by the logit error of a real build with each alone
    kept float, on the calibration images (builds recorded in ``built``). The ranking measures a Q/DQ twin of the
    graph on 16 images; the target's own form can disagree: for the shipped model 76fa283b the twin put
    ``denseblock1/denselayer2/conv2`` first and the stem second, while the QOperator builds gave 0.0391 and 0.0309 logit
    error (stem float alone passes the gate, the other fails it), so top-1 / top-2 trials never tried the stem alone."""
    head = []
    for i, name in enumerate(ranked[:REFINE_SINGLES] if len(ranked) > 1 else []):
        if time.perf_counter() - t0 >= budget:
            break
        opts = dataclasses.replace(start, exclude=base + [name])
        res = trial(opts, f"float {name} alone (refining the ranking)")
        built[tuple(opts.exclude)] = res
        head.append((res[3], i, name))
    order = [name for _, _, name in sorted(head)]
    return order + [n for n in ranked if n not in order]


# ------------------------------------------------------------------ OpenVINO
def openvino_knobs(o) -> list:
    """The cheap knobs, as (label, [int8] options): each changes what the built model is. ORT Q/DQ source: ONNX
    Runtime's other calibration methods, then NNCF; NNCF source: the other NNCF preset (the preset means
    nothing to ORT's Q/DQ), then ONNX Runtime's Q/DQ with each calibration method."""
    from edgecxr.export.onnx_int8 import CALIBRATION_METHODS

    qdq = [dataclasses.replace(o, source="ort-qdq", calibration=m) for m in CALIBRATION_METHODS
           if o.source != "ort-qdq" or m != o.calibration]
    if o.source == "ort-qdq":
        return ([(f"calibration={q.calibration}", q) for q in qdq]
                + [(f"source=nncf, preset={o.preset}", dataclasses.replace(o, source="nncf"))])
    other = "mixed" if o.preset == "performance" else "performance"
    return ([(f"preset={other}", dataclasses.replace(o, preset=other))]
            + [(f"source=ort-qdq, calibration={q.calibration}", q) for q in qdq])


def _openvino_search(ctx, tgt, tmp: Path, engine: dict, history: list, built: Path):
    import nncf
    import openvino as ov

    from edgecxr.export.openvino_ir import build as ov_build

    t0, budget = time.perf_counter(), tgt.int8.search_minutes * 60
    ref_logits = _calib_reference(ctx)
    calib = ctx.calib()

    def trial(opts, label):
        return _trial(ctx, tgt, tmp, engine, history, ov_build, ref_logits, opts, label)

    # 1. cheap knobs, judged on the calibration images as for ONNX Runtime
    best = _initial(ctx, tgt, built, engine, ref_logits, history)
    yield from _knob_candidates(openvino_knobs(tgt.int8), trial, t0 + budget, best)
    # 2. ONNX Runtime's Q/DQ read by OpenVINO with the convolutions that move the logits most kept float (the
    #    ranking of onnx-int8; the Q/DQ graph keeps the guard path as the ORT build does), from the best Q/DQ settings
    start = best.opts if best.opts.source == "ort-qdq" else dataclasses.replace(best.opts, source="ort-qdq",
                                                                                 calibration="percentile")
    yield from _ranked_float(ctx, tgt, tmp, dataclasses.replace(start, bn_to_conv=False), trial, t0, budget, history,
                             best)
    # 3. NNCF accuracy control
    if time.perf_counter() - t0 > budget:
        history.append({"step": "nncf accuracy control skipped: the search's time is up"})
        return
    items = [(calib[i:i + 1], i) for i in range(len(calib))]
    ds = nncf.Dataset(items, lambda item: item[0])

    def agreement(compiled, data) -> float:  # the search's judge, as for the knobs
        out = compiled.outputs[0]
        data = list(data)
        logits = np.concatenate([compiled(x)[out] for x, _ in data])
        return judge(ctx, ref_logits[[i for _, i in data]], logits)

    from edgecxr.export.openvino_ir import guard_ignored_scope

    fp32 = ctx.fp32_onnx(tgt, tmp)
    model = ov.convert_model(str(fp32))
    ignored = guard_ignored_scope(fp32, list(tgt.int8.exclude))
    from nncf.quantization.advanced_parameters import AdvancedAccuracyRestorerParameters

    restorer = AdvancedAccuracyRestorerParameters(  # bounded: rank on a subset, revert at most N groups
        max_num_iterations=tgt.int8.max_float_layers, ranking_subset_size=min(24, len(calib)), num_ranking_workers=2)
    q = nncf.quantize_with_accuracy_control(
        model, ds, ds, agreement, max_drop=max(0.0, 1 - tgt.tolerance.min_agreement) / 2,
        drop_type=nncf.DropType.ABSOLUTE, subset_size=min(tgt.int8.subset_size, len(calib)),
        fast_bias_correction=tgt.int8.fast_bias_correction, ignored_scope=ignored,
        preset=nncf.QuantizationPreset.PERFORMANCE if tgt.int8.preset == "performance" else nncf.QuantizationPreset.MIXED,
        advanced_accuracy_restorer_parameters=restorer)
    float_convs = [op.get_friendly_name() for op in q.get_ordered_ops() if op.get_type_name() == "Convolution"
                   and op.input_value(0).get_node().get_type_name() != "FakeQuantize"]
    for k, v in ctx.metadata().items():
        q.set_rt_info(__import__("json").dumps(v, sort_keys=True), ["edgecxr", k])
    out = tmp / "ac" / "model.xml"
    out.parent.mkdir()
    ov.save_model(q, str(out), compress_to_fp16=False)
    eng = dict(engine, int8=dict(engine.get("int8", {}), float_nodes=float_convs, method="nncf accuracy control"))
    history.append({"step": "nncf.quantize_with_accuracy_control", "float_nodes": float_convs})
    yield out, eng, "NNCF accuracy control on the calibration images"
