import json
import shutil

import numpy as np
import pytest

pytest.importorskip("torch", reason="torch not installed")
onnx = pytest.importorskip("onnx", reason="onnx not installed")
ort = pytest.importorskip("onnxruntime")

from typer.testing import CliRunner  # noqa: E402

from edgecxr.sidecar import read_sidecar, sidecar_path  # noqa: E402
from edgecxr.errors import BackendUnavailable, EdgeCXRError  # noqa: E402
from edgecxr.export import core  # noqa: E402
from edgecxr.export.targets import list_targets, load_target  # noqa: E402
from edgecxr.backends import backend_available  # noqa: E402
from edgecxr.export.context import ExportContext  # noqa: E402
from edgecxr.export.tensorrt_engine import prepare_onnx  # noqa: E402


def test_targets_load():
    names = set(list_targets())
    assert {"onnx-fp32", "onnx-int8", "openvino-fp32", "openvino-fp16", "openvino-int8", "tensorrt-fp16",
            "tensorrt-int8", "jetson-orin-int8"} <= names
    t = load_target("tensorrt", precision="int8")
    assert (t.backend, t.precision, t.int8.format) == ("tensorrt", "int8", "qdq")
    assert load_target("onnx-fp32", batch=4).max_batch == 4
    with pytest.raises(EdgeCXRError, match="available"):
        load_target("nope")


@pytest.mark.parametrize("table,key,value,choices", [
    ("openvino", "performance_hint", "FASTEST", "LATENCY, THROUGHPUT or CUMULATIVE_THROUGHPUT"),
    ("int8", "calibration", "kl", "minmax, entropy or percentile"),
    ("tensorrt", "hardware_compatibility", "hopper", "none, ampere_plus or same_compute_capability")])
def test_a_bad_target_value_names_its_file_key_and_choices(tmp_path, table, key, value, choices):
    from edgecxr.export.targets import TargetError

    path = tmp_path / "mine.toml"
    path.write_text(f'backend = "openvino"\nprecision = "fp32"\n[{table}]\n{key} = "{value}"\n')
    with pytest.raises(TargetError) as err:
        load_target(str(path))
    assert str(path) in str(err.value) and f"[{table}]: {key} '{value}' must be {choices}" in str(err.value)


def test_onnx_sidecar_and_cache(onnx_artifact, tiny_checkpoint):
    side = read_sidecar(onnx_artifact)
    assert side.classes == ["COVID-19", "Normal", "Pneumonia"]
    assert side.preprocess["size"] == 64
    assert side.backend == "onnx" and side.engine["input_shape"][0] == -1
    assert side.verified and side.verification["agreement"] >= 0.995
    assert side.verification["images"] == 222  # permissive dev val + test, disjoint from calib/
    assert side.total_bytes == onnx_artifact.stat().st_size
    res = core.export(tiny_checkpoint, "onnx-fp32", out=onnx_artifact.parent)
    assert res.cached
    from edgecxr.export.onnx_fp32 import get_metadata

    md = get_metadata(onnx_artifact)
    assert md["classes"] == side.classes and md["verification"] == {"verdict": "passed"}


def test_failed_build_leaves_nothing_valid(tiny_checkpoint, tmp_path, monkeypatch):
    def broken(ctx, target, tmp):
        (tmp / "model.onnx").write_bytes(b"half")
        raise RuntimeError("interrupted")

    import edgecxr.export.onnx_build as ob

    monkeypatch.setattr(ob, "build", broken)
    with pytest.raises(RuntimeError, match="interrupted"):
        core.export(tiny_checkpoint, "onnx-fp32", out=tmp_path)
    assert not (tmp_path / "model.onnx").exists()
    assert not sidecar_path(tmp_path / "model.onnx").exists()
    assert not list(tmp_path.glob(".tmp-*"))


def test_bad_target_values_name_file_and_key(tmp_path):
    from edgecxr.cli import app

    cases = {'[tolerance]\nmin_agreement = 1.01\n': "min_agreement", '[int8]\ncalibraton = "minmax"\n': "calibraton",
             '[openvino]\nperformance_hint = 3\n': "performance_hint", '[tensorrt]\nworkspace = 1\n': "workspace"}
    for i, (extra, key) in enumerate(cases.items()):
        bad = tmp_path / f"bad{i}.toml"
        bad.write_text('backend = "onnx"\nprecision = "fp32"\n' + extra)
        with pytest.raises(EdgeCXRError, match=key) as exc:
            load_target(str(bad))
        assert str(bad) in str(exc.value)
    trt = tmp_path / "trt.toml"
    trt.write_text('backend = "tensorrt"\nprecision = "int8"\n[int8]\nformat = "qoperator"\n')
    with pytest.raises(EdgeCXRError, match="qdq"):
        load_target(str(trt))
    r = CliRunner().invoke(app, ["export", "--target", str(tmp_path / "bad0.toml"), "--out", str(tmp_path / "x")])
    assert r.exit_code == 4 and "Traceback" not in r.output


def test_tolerance_is_part_of_the_cache_key(tiny_checkpoint, onnx_artifact, tmp_path):
    from edgecxr.resources import calibration_dir, verification_dirs

    a = load_target("onnx-fp32")
    b = load_target("onnx-fp32")
    b.tolerance.min_agreement = 0.999
    keys = [core.cache_key("0" * 64, t, [calibration_dir()], verification_dirs(), None) for t in (a, b)]
    assert keys[0] != keys[1]


def test_gate_refuses_calibration_images_in_verification(tiny_checkpoint, tmp_path):
    from edgecxr.resources import calibration_dir

    with pytest.raises(EdgeCXRError, match="also calibration images"):
        core.export(tiny_checkpoint, "onnx-int8", out=tmp_path, verify_on=[calibration_dir()])


def test_stale_export_temp_folders_removed(tiny_checkpoint, tmp_path):
    dead = tmp_path / f"{core.TMP_PREFIX}999999999-abc"
    dead.mkdir(parents=True)
    (dead / "fp32.onnx").write_bytes(b"x" * 100)
    core.export(tiny_checkpoint, "onnx-fp32", out=tmp_path)
    assert not dead.exists()


def test_verification_failure_marks_unverified(tiny_checkpoint, tmp_path, monkeypatch):
    strict = tmp_path / "strict.toml"
    strict.write_text('backend = "onnx"\nprecision = "fp32"\n[tolerance]\nmin_agreement = 1.0\n')
    from edgecxr.cli import app
    from edgecxr.export import verify

    real = verify.compare

    def one_flip(ref, outs, y, tol, **kw):  # as if the artifact disagreed on one image
        outs = dict(outs, logits=outs["logits"].copy())
        outs["logits"][0] = outs["logits"][0][::-1] if outs["logits"][0].argmax() != 1 else np.roll(outs["logits"][0], 1)
        return real(ref, outs, y, tol, **kw)

    monkeypatch.setattr(verify, "compare", one_flip)
    r = CliRunner().invoke(app, ["export", str(tiny_checkpoint), "--target", str(strict), "--out", str(tmp_path / "o")])
    assert r.exit_code == 5
    side = read_sidecar(tmp_path / "o" / "model.onnx")
    assert side.verification.verdict == "failed"
    from edgecxr.errors import ArtifactError
    from edgecxr.runtime import load

    with pytest.raises(ArtifactError, match="verification failed"):
        load(tmp_path / "o" / "model.onnx")
    assert load(tmp_path / "o" / "model.onnx", allow_unverified=True).classes == side.classes


def test_int8_qoperator_for_ort(tiny_checkpoint, tmp_path):
    res = core.export(tiny_checkpoint, "onnx-int8", out=tmp_path, verify=False)
    ops = [n.op_type for n in onnx.load(str(res.artifact)).graph.node]
    assert "QLinearConv" in ops
    assert "BatchNormalization" not in ops  # rewritten as depthwise conv, so it is quantized too
    # the dense blocks' concatenations and the ReLUs stay int8: few (de)quantizations left (one per float region)
    assert "QLinearConcat" in ops and ops.count("Relu") < ops.count("QLinearConv") / 4  # float stem and head only
    assert ops.count("DequantizeLinear") < ops.count("QLinearConv") / 4, ops.count("DequantizeLinear")
    assert res.sidecar.engine["int8"]["bn_to_conv"] is True
    assert res.sidecar.verification.verdict == "skipped"
    assert res.sidecar.engine["int8"]["calibration_images"] == 90


def test_onnx_int8_float_nodes_stay_float_at_runtime(tiny_checkpoint, tmp_path, monkeypatch):
    """A conv the search keeps float sits between a DequantizeLinear and a QuantizeLinear; ONNX Runtime's session
    optimizer would quantize it again. The sidecar names the rewrite to turn off and the runner turns it off: the
    graph that runs holds the conv as a float Conv, the others as QLinearConv."""
    import dataclasses

    from edgecxr.export.onnx_build import build
    from edgecxr.runtime.runners import OnnxRunner

    ctx, tgt = _ctx_and_target(tiny_checkpoint, "onnx-int8")
    name = "/denseblock2/denselayer1/conv2/Conv"
    assert name in [n.name for n in onnx.load(str(ctx.fp32_onnx(tgt, tmp_path))).graph.node]
    tgt = dataclasses.replace(tgt, int8=dataclasses.replace(tgt.int8, exclude=[name]))
    path, engine = build(ctx, tgt, tmp_path)
    assert "WeightBiasQuantization" in engine["disabled_optimizers"]
    seen = {}
    real = ort.InferenceSession

    def spy(model, so, **kw):  # the runner's own session options, asked to write the graph it runs
        so.optimized_model_filepath = str(tmp_path / "ran.onnx")
        seen.update(kw)
        return real(model, so, **kw)

    monkeypatch.setattr(ort, "InferenceSession", spy)
    OnnxRunner(path, dict(engine, backend="onnx", precision="int8"))
    assert seen["disabled_optimizers"] == engine["disabled_optimizers"]
    ran = onnx.load(str(tmp_path / "ran.onnx")).graph.node
    kind = {n.op_type for n in ran if n.name.startswith(name)}
    assert kind and "QLinearConv" not in kind, kind
    assert any(n.op_type == "QLinearConv" and n.name.startswith("/denseblock2/denselayer2/conv2/Conv") for n in ran)


def test_onnx_int8_stem_pool_stays_float_and_exact(tiny_checkpoint, tmp_path):
    """With the stem conv float, ONNX Runtime would move the QuantizeLinear after the stem's max-pool up through it and
    run a slow uint8 max-pool; the sidecar turns that off. The graph that runs pools floats, and the outputs are
    bit-identical to the propagated graph's (quantizing commutes with max), so turning it off changes speed only."""
    import dataclasses

    from edgecxr.export.onnx_build import build
    from edgecxr.runtime.runners import onnx_session_kwargs

    ctx, tgt = _ctx_and_target(tiny_checkpoint, "onnx-int8")
    tgt = dataclasses.replace(tgt, int8=dataclasses.replace(tgt.int8, exclude=["/conv0/Conv"]))
    path, engine = build(ctx, tgt, tmp_path)
    kw = onnx_session_kwargs(engine)
    assert "QDQPropagationTransformer" in kw["disabled_optimizers"]
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)
    outs = {}
    for label, off in (("sidecar", kw["disabled_optimizers"]), ("propagated", ["WeightBiasQuantization"])):
        so = ort.SessionOptions()
        so.optimized_model_filepath = str(tmp_path / f"{label}.onnx")
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"], disabled_optimizers=off)
        outs[label] = sess.run(None, {sess.get_inputs()[0].name: x})
        g = onnx.load(str(tmp_path / f"{label}.onnx")).graph
        producer = {o: n for n in g.node for o in n.output}
        pool = next(n for n in g.node if n.op_type == "MaxPool")
        src = producer.get(pool.input[0])
        outs[label + "-pool-input"] = src.op_type if src is not None else None
    assert outs["propagated-pool-input"] == "QuantizeLinear"  # what the sidecar's setting avoids
    assert outs["sidecar-pool-input"] != "QuantizeLinear"
    for a, b in zip(outs["sidecar"], outs["propagated"]):
        np.testing.assert_array_equal(a, b)


def test_onnx_int8_build_applies_shared_concat_scales_when_asked(tiny_checkpoint, tmp_path, monkeypatch):
    import dataclasses

    from edgecxr.export import onnx_int8
    from edgecxr.export.onnx_build import build

    calls = []
    monkeypatch.setattr(onnx_int8, "share_concat_scales", lambda p: calls.append(p) or 0)
    ctx, tgt = _ctx_and_target(tiny_checkpoint, "onnx-int8")
    path, engine = build(ctx, dataclasses.replace(tgt, int8=dataclasses.replace(tgt.int8, shared_concat_scales=True)),
                         tmp_path)
    assert engine["int8"]["shared_concat_scales"] is True and calls == [path]


def test_onnx_int8_shared_concat_scales(tiny_checkpoint, tmp_path):
    """shared_concat_scales: the tensors a QLinearConcat joins get one scale and zero point (so ONNX Runtime copies
    instead of requantizing), except that a tensor whose range starts at 0 never gets a negative range (a ReLU
    folded into it stays folded); the model still runs and stays close to the unshared one."""
    import dataclasses

    from onnx import numpy_helper

    from edgecxr.export.onnx_build import build

    from edgecxr.export.onnx_int8 import share_concat_scales

    ctx, tgt = _ctx_and_target(tiny_checkpoint, "onnx-int8")
    path, engine = build(ctx, dataclasses.replace(tgt, int8=dataclasses.replace(tgt.int8, shared_concat_scales=False)),
                         tmp_path)
    assert engine["int8"]["shared_concat_scales"] is False
    models = {False: path, True: tmp_path / "shared.onnx"}
    shutil.copyfile(path, models[True])
    assert share_concat_scales(models[True]) > 0  # what build() runs after quantizing when the option is on

    def concat_params(path):
        m = onnx.load(str(path))
        init = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
        out = []
        for n in m.graph.node:
            if n.op_type == "QLinearConcat":
                ins = [(n.input[0], n.input[1])] + [(n.input[i + 1], n.input[i + 2]) for i in range(2, len(n.input), 3)]
                out.append([(sc, float(init[sc]), int(init[z])) for sc, z in ins])
        return out

    before, after = concat_params(models[False]), concat_params(models[True])
    assert before and len(before) == len(after)
    copies = lambda ps: sum(p[1:] == c[0][1:] for c in ps for p in c[1:])  # noqa: E731
    assert copies(after) > copies(before)
    zp0 = {sc for c in before for sc, _, z in c if z == 0}
    assert all(z == 0 for c in after for sc, _, z in c if sc in zp0)
    x = np.random.default_rng(0).standard_normal((4, 3, 64, 64)).astype(np.float32)
    logits = [ort.InferenceSession(str(models[k])).run(None, {"input": x})[0] for k in (False, True)]
    assert np.isfinite(logits[1]).all()
    assert np.abs(logits[1] - logits[0]).max() < 0.5 * np.abs(logits[0]).max() + 1e-3
    # only=: one block's concatenations shared, the others' parameters untouched (benchmarks/concat_scale_probe.py)
    blocks = sorted({n.name.split("/")[1] for n in onnx.load(str(path)).graph.node
                     if n.op_type == "QLinearConcat" and n.name.startswith("/denseblock")})
    one = tmp_path / "one.onnx"
    shutil.copyfile(path, one)
    assert share_concat_scales(one, only=(f"/{blocks[0]}/",)) > 0
    names = [n.name for n in onnx.load(str(path)).graph.node if n.op_type == "QLinearConcat"]
    inside = [n.startswith(f"/{blocks[0]}/") for n in names]
    assert len(blocks) > 1 and any(inside) and not all(inside)
    pairs = list(zip(inside, before, concat_params(one)))
    assert all(b == a for ins, b, a in pairs if not ins)  # other blocks untouched
    assert any(b != a for ins, b, a in pairs if ins)


def test_int8_quantization_keeps_the_terminal_quiet_and_says_its_steps(tiny_checkpoint, tmp_path, capsys, caplog):
    """ONNX Runtime's quantization chatter (calibration prints, a warning per tensor left float) stays off the
    terminal, the root logger is left as it was, and the export reports its steps to the caller instead."""
    import logging

    level = logging.getLogger().level
    steps: list[str] = []
    res = core.export(tiny_checkpoint, "onnx-int8", out=tmp_path / "q", verify=False, step=steps.append)
    assert res.artifact.is_file()
    out = capsys.readouterr()
    assert "Collecting tensor data" not in out.out and "histogram" not in out.out
    assert not [r for r in caplog.records if "unsupported type to quantize" in r.getMessage()]
    assert logging.getLogger().level == level
    assert any("building" in s for s in steps)


def _ctx_and_target(tiny_checkpoint, name):
    from edgecxr.resources import calibration_dir, verification_dirs

    return ExportContext(tiny_checkpoint, [calibration_dir()], verification_dirs(), None), load_target(name)


def test_tensorrt_fp16_onnx(tiny_checkpoint, tmp_path):
    ctx, tgt = _ctx_and_target(tiny_checkpoint, "tensorrt-fp16")
    path = prepare_onnx(ctx, tgt, tmp_path)
    m = onnx.load(str(path))
    assert m.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # I/O kept FP32
    assert m.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    conv_w = {n.input[1] for n in m.graph.node if n.op_type == "Conv"}
    init_types = {i.name: i.data_type for i in m.graph.initializer}
    assert conv_w and all(init_types.get(w) == onnx.TensorProto.FLOAT16 for w in conv_w if w in init_types)
    x, _, ref = ctx.verify_set()
    ref = ref["logits"]
    out = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x[:32]})[0]
    np.testing.assert_allclose(out, ref[:32], atol=5e-2 * max(1.0, np.abs(ref).max()))


def test_tensorrt_int8_qdq_onnx(tiny_checkpoint, tmp_path):
    from edgecxr.export.onnx_int8 import qdq_zero_points

    ctx, tgt = _ctx_and_target(tiny_checkpoint, "tensorrt-int8")
    path = prepare_onnx(ctx, tgt, tmp_path)
    m = onnx.load(str(path))
    ops = [n.op_type for n in m.graph.node]
    assert ops.count("QuantizeLinear") > 50 and ops.count("DequantizeLinear") > 50
    zps = qdq_zero_points(path)
    assert zps and all(z == 0 for z in zps)  # TensorRT accepts symmetric quantization only
    x, _, ref = ctx.verify_set()
    ref = ref["logits"]
    out = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x[:32]})[0]
    assert np.corrcoef(out.ravel(), ref[:32].ravel())[0, 1] > 0.95


@pytest.mark.skipif(backend_available("tensorrt")[0], reason="TensorRT is installed here: the GPU suite covers it")
def test_tensorrt_missing_exit_code_2(tiny_checkpoint, tmp_path):
    from edgecxr.cli import app

    r = CliRunner().invoke(app, ["export", str(tiny_checkpoint), "--target", "tensorrt-int8", "--out", str(tmp_path)])
    assert r.exit_code == 2
    assert "TensorRT" in r.output and "pip install" in r.output
    assert (tmp_path / "model.trt-int8.onnx").is_file()  # what the device would build from
    assert not (tmp_path / "model.engine").exists()
    with pytest.raises(BackendUnavailable):
        core.export(tiny_checkpoint, "tensorrt-fp16", out=tmp_path / "b")


def test_openvino_fp16_records_precision(tiny_checkpoint, tmp_path):
    pytest.importorskip("openvino", reason="OpenVINO not installed")
    res = core.export(tiny_checkpoint, "openvino-fp16", out=tmp_path)
    assert res.verified
    runs = res.sidecar.engine["runs"]
    assert runs["inference_precision"] in ("f32", "bf16", "f16")
    assert res.sidecar.extra_files[0].file == "model.bin"


def test_batchnorm_to_depthwise_is_exact(tiny_checkpoint, tmp_path):
    from edgecxr.export.onnx_int8 import batchnorm_to_depthwise

    ctx, tgt = _ctx_and_target(tiny_checkpoint, "onnx-fp32")
    fp32 = ctx.fp32_onnx(tgt, tmp_path)
    # the exporter folds BN that follows a conv; the pre-activation ones remain
    n = batchnorm_to_depthwise(fp32, tmp_path / "dw.onnx")
    assert n > 50
    ops = {x.op_type for x in onnx.load(str(tmp_path / "dw.onnx")).graph.node}
    assert "BatchNormalization" not in ops
    x, _, _ = ctx.verify_set()
    a = ort.InferenceSession(str(fp32), providers=["CPUExecutionProvider"]).run(None, {"input": x[:8]})[0]
    b = ort.InferenceSession(str(tmp_path / "dw.onnx"), providers=["CPUExecutionProvider"]).run(None, {"input": x[:8]})[0]
    np.testing.assert_allclose(a, b, atol=1e-4)


def test_onnx_search_gates_the_knob_with_less_logit_error_on_calibration(tiny_checkpoint, tmp_path, monkeypatch):
    """The search judges knobs on the calibration images only. Builds that all agree fully there are told apart by
    their logit error: only a knob with less error than every build before it (the initial one included) is
    gated; minmax, the cheapest to build, is tried first. (The Q/DQ form, where all three methods differ; in the
    QOperator form entropy builds minmax's model and is not tried: see the test below.)"""
    import dataclasses
    import time

    from edgecxr.export import mixed

    ctx, tgt = _ctx_and_target(tiny_checkpoint, "onnx-int8")
    tgt = dataclasses.replace(tgt, int8=dataclasses.replace(tgt.int8, calibration="percentile", bn_to_conv=True,
                                                            format="qdq"))
    ref = mixed._calib_reference(ctx)
    noise = {"percentile": 0.05, "minmax": 0.08, "entropy": 0.01}  # every one keeps the top-1 class
    seen = []

    def fake_logits(path, engine, x):
        seen.append(engine["int8"]["calibration"])
        return ref + noise[engine["int8"]["calibration"]] * np.array([1.0, -1.0, 0.0])[: ref.shape[1]]

    monkeypatch.setattr(mixed, "_runner_logits", fake_logits)
    history: list = []
    initial = {"backend": "onnx", "int8": {"calibration": "percentile", "bn_to_conv": True}}
    search = mixed._onnx_search(ctx, tgt, tmp_path, initial, time.perf_counter(), 600, history, tmp_path / "x.onnx")
    path, eng, why = next(search)
    assert eng["int8"]["calibration"] == "entropy" and path.exists()
    assert seen[:3] == ["percentile", "minmax", "entropy"]  # initial, then the knobs, fastest first
    assert "logit error" in why
    assert all("calib_agreement" in h and "calib_logit_rms" in h for h in history)
    assert history[1]["calib_agreement"] == 1.0 and history[1]["calib_logit_rms"] > history[0]["calib_logit_rms"]


def test_onnx_search_keeps_the_fast_graph_form_until_float_layers_fail(tiny_checkpoint, tmp_path, monkeypatch):
    """BatchNorm kept float is a slower graph, not a calibration knob: the search keeps the target's form through
    the calibration knobs and the float-layer trials, and offers the other form only as the last candidate, with
    the float layers it tried last."""
    import dataclasses
    import time

    import onnx

    from edgecxr.export import mixed

    ctx, tgt = _ctx_and_target(tiny_checkpoint, "onnx-int8")
    tgt = dataclasses.replace(tgt, int8=dataclasses.replace(tgt.int8, bn_to_conv=True, max_float_layers=2, exclude=[]))
    ref = mixed._calib_reference(ctx)
    convs = [n.name for n in onnx.load(str(ctx.fp32_onnx(tgt, tmp_path))).graph.node if n.op_type == "Conv"]
    monkeypatch.setattr(mixed, "rank_onnx_nodes", lambda *a, **k: convs)

    def fake_logits(path, engine, x):  # every float layer halves the error; the other form looks best of all
        i8 = engine["int8"]
        err = 0.0 if not i8["bn_to_conv"] else 0.05 / 2 ** len(i8.get("float_nodes") or [])
        return ref + err * np.array([1.0, -1.0, 0.0])[: ref.shape[1]]

    monkeypatch.setattr(mixed, "_runner_logits", fake_logits)
    initial = {"backend": "onnx", "int8": {"calibration": tgt.int8.calibration, "bn_to_conv": True}}
    got = [eng["int8"] for _, eng, _ in mixed._onnx_search(ctx, tgt, tmp_path, initial, time.perf_counter(), 600, [],
                                                           tmp_path / "x.onnx")]
    assert [g["bn_to_conv"] for g in got] == [True, True, False]
    assert [len(g["float_nodes"]) for g in got] == [1, 2, 2]


def test_onnx_search_refines_the_ranking_with_real_builds(tiny_checkpoint, tmp_path, monkeypatch):
    """The Q/DQ twin's ranking is a proxy: its top convs are rebuilt alone in the target's form and re-ordered by
    their logit error on the calibration images, so a single float conv that the proxy ranked second is tried (and
    gated) before any pair; the best single's build is reused, not rebuilt (as for the shipped model 76fa283b, whose
    stem alone passes where the proxy's first pick fails)."""
    import dataclasses
    import time

    import onnx

    from edgecxr.export import mixed

    ctx, tgt = _ctx_and_target(tiny_checkpoint, "onnx-int8")
    tgt = dataclasses.replace(tgt, int8=dataclasses.replace(tgt.int8, exclude=[], max_float_layers=2))
    ref = mixed._calib_reference(ctx)
    convs = [n.name for n in onnx.load(str(ctx.fp32_onnx(tgt, tmp_path))).graph.node if n.op_type == "Conv"]
    assert len(convs) >= 3
    monkeypatch.setattr(mixed, "rank_onnx_nodes", lambda *a, **k: list(convs))
    err_alone = {convs[0]: 0.04, convs[1]: 0.01, convs[2]: 0.03}  # the proxy's second is the real best single
    builds = []

    def fake_logits(path, engine, x):
        fl = engine["int8"].get("float_nodes") or []
        builds.append(tuple(fl))
        err = 0.05 if not fl else min(err_alone.get(n, 0.045) for n in fl) / len(fl)
        return ref + err * np.array([1.0, -1.0, 0.0])[: ref.shape[1]]

    monkeypatch.setattr(mixed, "_runner_logits", fake_logits)
    monkeypatch.setattr(mixed, "onnx_knobs", lambda o: [])
    history: list = []
    initial = {"backend": "onnx", "int8": {"calibration": tgt.int8.calibration, "bn_to_conv": tgt.int8.bn_to_conv}}
    search = mixed._onnx_search(ctx, tgt, tmp_path, initial, time.perf_counter(), 600, history, tmp_path / "x.onnx")
    path, eng, why = next(search)
    assert eng["int8"]["float_nodes"] == [convs[1]] and path.exists()  # the real best single goes to the gate first
    assert builds[1:4] == [(convs[0],), (convs[1],), (convs[2],)]  # after the initial: the three singles
    assert len(builds) == 4  # the best single was not built twice
    path, eng, why = next(search)  # it failed the gate: the pair of the two best singles
    assert eng["int8"]["float_nodes"] == [convs[1], convs[2]]
    assert any("refining the ranking" in h.get("step", "") for h in history)


def test_logit_error_orders_builds_that_agree():
    from edgecxr.export.mixed import _Best, logit_error

    ref = np.array([[2.0, 0.0, -1.0], [0.0, 1.0, 0.5]])
    assert logit_error(ref, ref) == 0.0
    assert logit_error(ref, ref + 0.1) == pytest.approx(0.1)
    best = _Best(0.99, 1.0, 0.05, "initial")
    assert not best.offer(1.0, 0.06, "worse")  # agrees, but more error than the gated initial
    assert not best.offer(0.9, 0.01, "flips")  # less error, but below the bar
    assert best.offer(1.0, 0.04, "better") and best.opts == "better"
    assert not best.offer(1.0, 0.045, "between") and best.opts == "better"
    # an initial build below the bar (one borderline calibration image flipped): a build no worse on the judge with
    # less logit error goes to the gate, one that scores worse does not
    below = _Best(0.99, 0.9889, 0.066, "initial")
    assert not below.offer(0.9767, 0.037, "loses a positive")
    assert below.offer(0.9889, 0.028, "stem float") and below.opts == "stem float"
    # a float-layer build is judged by its logit error alone: one positive lost on the calibration images does not
    # keep it from the gate, more error than a gated build does
    assert below.offer(0.9756, 0.020, "2 float", need_score=False) and below.opts == "stem float"
    assert not below.offer(0.9756, 0.025, "1 float", need_score=False)


def test_int8_cache_key_depends_on_the_cpu_isa():
    from edgecxr.resources import calibration_dir, verification_dirs

    vnni = {"arch": "x86_64", "isa": ["AVX-512 VNNI", "AVX-512F", "AVX2"]}
    avx2 = {"arch": "x86_64", "isa": ["AVX2"]}
    args = ("0" * 64,)
    for name, differs in (("onnx-int8", True), ("openvino-int8", True), ("openvino-fp16", True), ("onnx-fp32", False),
                          ("openvino-fp32", False)):
        t = load_target(name)
        k = [core.cache_key(*args, t, [calibration_dir()], verification_dirs(), None, isa=i) for i in (vnni, avx2)]
        assert (k[0] != k[1]) == differs, name


def test_onnx_int8_cache_key_depends_on_the_session_rewrites_turned_off(monkeypatch):
    """A cached ONNX INT8 verdict was measured with its sidecar's session settings: changing them rebuilds."""
    from edgecxr.export import onnx_build
    from edgecxr.resources import calibration_dir, verification_dirs

    def keys():
        return {n: core.cache_key("0" * 64, load_target(n), [calibration_dir()], verification_dirs(), None)
                for n in ("onnx-int8", "openvino-int8", "onnx-fp32")}

    before = keys()
    monkeypatch.setattr(onnx_build, "KEEP_FLOAT_OFF", ["WeightBiasQuantization"])
    after = keys()
    assert before["onnx-int8"] != after["onnx-int8"]
    assert before["openvino-int8"] == after["openvino-int8"] and before["onnx-fp32"] == after["onnx-fp32"]


def test_openvino_int8_from_ort_qdq(tiny_checkpoint, tmp_path):
    """OpenVINO INT8 built from ONNX Runtime's Q/DQ quantization: OpenVINO reads the Q/DQ pairs as FakeQuantize."""
    if not backend_available("openvino"):
        pytest.skip("OpenVINO is not installed (extra 'openvino')")
    toml = tmp_path / "ov-qdq.toml"
    toml.write_text("backend = \"openvino\"\nprecision = \"int8\"\n[int8]\nsource = \"ort-qdq\"\ncalibration = \"minmax\"\n")
    res = core.export(tiny_checkpoint, str(toml), out=tmp_path / "o", verify=False)
    import openvino as ov

    ops = {op.get_type_name() for op in ov.Core().read_model(str(res.artifact)).get_ordered_ops()}
    assert "FakeQuantize" in ops
    assert res.sidecar.engine["int8"]["source"] == "ort-qdq" and res.sidecar.engine["int8"]["calibration"] == "minmax"
    assert not list((tmp_path / "o").glob("*.qdq.onnx"))


def test_gate_checks_sensitivity_at_the_operating_point():
    """An artifact whose argmax agrees everywhere but which moves a COVID-19 image below the operating-point
    threshold fails the gate (issue 14: sensitivity at the operating point within 1 point of FP32)."""
    from edgecxr.export.targets import Tolerance
    from edgecxr.export.verify import compare

    classes = ["COVID-19", "Normal", "Pneumonia"]
    op = {"positive_class": "COVID-19", "threshold": 0.2, "temperature": 1.0}
    # 20 COVID-19 images whose COVID-19 probability sits just above 0.2 while Normal stays the argmax
    ref = np.tile(np.log(np.array([[0.22, 0.5, 0.28]], np.float32)), (20, 1))
    y = np.zeros(20, int)
    same = compare({"logits": ref}, {"logits": ref.copy()}, y, Tolerance(), classes=classes, operating_point=op)
    assert same["verdict"] == "passed" and same["operating_point"]["sensitivity"] == 1.0
    moved = ref.copy()
    moved[0] = np.log([0.18, 0.52, 0.30])  # same argmax (Normal), below the threshold now
    res = compare({"logits": ref}, {"logits": moved}, y, Tolerance(), classes=classes, operating_point=op)
    assert res["agreement"] == 1.0 and res["operating_point"]["finding_agreement"] == 0.95
    assert res["verdict"] == "failed" and any("operating point" in r for r in res["reasons"])
    loose = compare({"logits": ref}, {"logits": moved}, y, Tolerance(max_op_sensitivity_drop=0.1, min_finding_agreement=0.9),
                    classes=classes, operating_point=op)
    assert loose["verdict"] == "passed"
    # a Normal image pushed above the threshold: sensitivity unchanged, but the runtime's finding changed
    normals = np.tile(np.log(np.array([[0.15, 0.6, 0.25]], np.float32)), (20, 1))
    up = normals.copy()
    up[0] = np.log([0.21, 0.55, 0.24])
    fa = compare({"logits": normals}, {"logits": up}, np.ones(20, int), Tolerance(), classes=classes, operating_point=op)
    assert fa["agreement"] == 1.0 and fa["operating_point"]["finding_agreement"] == 0.95
    assert fa["verdict"] == "failed" and any("finding agreement" in r for r in fa["reasons"])
    assert "operating_point" not in compare({"logits": ref}, {"logits": ref}, y, Tolerance(), classes=classes)


def test_reduce_range_override_gives_7bit_weights(tiny_checkpoint, tmp_path):
    """--reduce-range: 7-bit weights (no u8 x s8 saturation on CPUs without VNNI), in a folder of its own."""
    from onnx import numpy_helper

    with pytest.raises(EdgeCXRError, match="int8 targets only"):
        load_target("onnx-fp32", reduce_range=True)
    t = load_target("onnx-int8", reduce_range=True)
    assert t.name == "onnx-int8-7bit" and t.int8.reduce_range is True
    peak = {}
    for rr, tgt in ((True, t), (False, load_target("onnx-int8", reduce_range=False))):
        res = core.export(tiny_checkpoint, tgt, out=tmp_path / str(rr), verify=False)
        assert res.sidecar.engine["int8"]["reduce_range"] is rr
        w = [numpy_helper.to_array(i) for i in onnx.load(str(res.artifact)).graph.initializer
             if i.data_type == onnx.TensorProto.INT8]
        peak[rr] = max(int(np.abs(a.astype(np.int32)).max()) for a in w)
    assert peak[True] <= 64 < peak[False], peak


def test_qdq_honours_reduce_range(onnx_artifact, tmp_path):
    """OpenVINO INT8 is built from ORT's Q/DQ model: its weights must be 7-bit when asked too."""
    from onnx import numpy_helper

    from edgecxr.export.onnx_int8 import quantize_onnx

    calib = np.random.default_rng(0).normal(size=(8, 3, 64, 64)).astype(np.float32)
    peak = {}
    for rr in (True, False):
        out = quantize_onnx(onnx_artifact, tmp_path / f"q{rr}.onnx", calib, fmt="qdq", reduce_range=rr)
        w = [numpy_helper.to_array(i) for i in onnx.load(str(out)).graph.initializer if i.data_type == onnx.TensorProto.INT8]
        peak[rr] = max(int(np.abs(a.astype(np.int32)).max()) for a in w)
    assert peak[True] <= 64 < peak[False], peak


def test_search_judge_sees_a_positive_finding_lost_at_the_operating_point():
    """Top-1 agreement alone scores 1.0; a COVID-19 finding that slips under the operating threshold lowers it."""
    from types import SimpleNamespace

    from edgecxr.export.mixed import judge

    classes = ["COVID-19", "Normal", "Pneumonia"]
    op = {"positive_class": "COVID-19", "threshold": 0.2, "temperature": 1.0}
    ctx = SimpleNamespace(classes=classes, operating_point=op)
    # FP32: 4 images with COVID-19 probability above 0.2 (two of them not the argmax), 4 below
    ref = np.log(np.array([[0.30, 0.60, 0.10]] * 2 + [[0.70, 0.20, 0.10]] * 2 + [[0.05, 0.90, 0.05]] * 4))
    same_top1 = ref.copy()
    same_top1[0] = np.log([0.15, 0.75, 0.10])  # still Normal at argmax, but no longer a COVID-19 finding
    assert np.all(same_top1.argmax(1) == ref.argmax(1))
    assert judge(ctx, ref, ref) == 1.0
    assert judge(ctx, ref, same_top1) == 0.75  # 3 of FP32's 4 positive findings kept
    assert judge(SimpleNamespace(classes=classes, operating_point=None), ref, same_top1) == 1.0


def test_openvino_knobs_each_change_the_built_model():
    """Every cheap knob differs from the target's own [int8] options in something its quantizer reads (an NNCF
    preset on an ORT Q/DQ build would rebuild the same model and waste the search's time)."""
    import dataclasses

    from edgecxr.export.mixed import openvino_knobs

    base = load_target("openvino-int8").int8
    for o in (base, dataclasses.replace(base, source="nncf"), dataclasses.replace(base, source="ort-qdq", calibration="entropy")):
        knobs = openvino_knobs(o)
        assert knobs
        for label, k in knobs:
            if k.source == "ort-qdq" and o.source == "ort-qdq":
                assert k.calibration != o.calibration, label
            elif k.source == "nncf" and o.source == "nncf":
                assert k.preset != o.preset, label
            else:
                assert k.source != o.source, label


def test_search_goes_past_a_candidate_that_fails_the_gate(tmp_path, monkeypatch):
    """A candidate that looked right on the calibration images but fails the gate does not end the search: the next,
    more conservative one is gated; the search stops at the first pass and records how many gate runs it took."""
    from types import SimpleNamespace

    from edgecxr.export import core, mixed
    from edgecxr.sidecar import Verification

    built = []

    def candidates(ctx, tgt, tmp, engine, t0, budget, history, initial):
        for k in (1, 2, 4):
            built.append(k)
            yield tmp / f"c{k}", {"int8": {"float_nodes": [f"n{i}" for i in range(k)]}}, f"{k} float"

    def gate(ctx, path, engine, tgt):
        ok = len(engine["int8"]["float_nodes"]) >= 2
        return Verification("passed" if ok else "failed", [] if ok else ["agreement"],
                            {"agreement": 0.995 if ok else 0.98})

    monkeypatch.setattr(mixed, "_onnx_search", candidates)
    monkeypatch.setattr(core, "verify_artifact", gate)
    tgt = SimpleNamespace(backend="onnx", int8=SimpleNamespace(search_minutes=5, exclude=[]))
    initial = Verification("failed", ["agreement"], {"agreement": 0.97})
    path, eng, v = mixed.search_float_layers(None, tgt, tmp_path, tmp_path / "c0", {"backend": "onnx"}, initial)
    assert v.verdict == "passed" and path == tmp_path / "c2"
    assert built == [1, 2]  # the third candidate was never built
    mp = eng["int8"]["mixed_precision"]
    assert mp["gate_runs"] == 2 and mp["reason"] == "2 float"
    assert [h["verdict"] for h in mp["history"]] == ["failed", "failed", "passed"]


def test_logit_sensitivity_floats_layers_without_recalibration(tiny_checkpoint, tmp_path):
    """Keeping every quantized conv float in the Q/DQ graph gives back the FP32 logits (the rewiring is exact, so
    the ranking measures what floating a layer would do); the ranking is a permutation of the quantized convs."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from edgecxr.export.onnx_int8 import quantize_onnx
    from edgecxr.export.sensitivity import _logits, float_in_qdq, quantized_nodes, rank_by_logits

    ctx, tgt = _ctx_and_target(tiny_checkpoint, "onnx-int8")
    pre = tmp_path / "pre.onnx"
    quant_pre_process(str(ctx.fp32_onnx(tgt, tmp_path)), str(pre), skip_symbolic_shape=True)
    x = ctx.calib()[:8]
    qdq = quantize_onnx(pre, tmp_path / "qdq.onnx", x, fmt="qdq", preprocessed=True)
    fp32, q = onnx.load(str(pre)), onnx.load(str(qdq))
    nodes = quantized_nodes(q, fp32)
    assert len(nodes) > 10
    ref = _logits(fp32, x, "logits")
    assert np.abs(_logits(q, x, "logits") - ref).max() > 1e-4  # quantized: not FP32
    readers = quantized_nodes(q, fp32, op_types=None)  # the convs and every float op reading a dequantized tensor
    np.testing.assert_allclose(_logits(float_in_qdq(q, fp32, set(readers)), x, "logits"), ref, atol=1e-4)
    ranked, records = rank_by_logits(pre, qdq, x, group=16, refine=1)
    assert sorted(ranked) == sorted(nodes)
    singles = [r for r in records if len(r["float"]) == 1]
    assert singles and ranked[0] == min(singles, key=lambda r: r["logit_rms"])["float"][0]


@pytest.mark.parametrize("arch", ["covid-densenet", "densenet121"])
def test_gray_stem_is_exact_on_replicated_gray_and_reads_channel_0_only(arch):
    """The folded stem equals the 3-channel stem on what the runtime feeds (one gray image normalised per channel),
    border included, and ignores channels 1-2 (the contract the sidecar records)."""
    import torch

    from edgecxr.export.gray_stem import fold_gray_stem
    from edgecxr.models import build_model
    from edgecxr.preprocess import PreprocessConfig, preprocess

    torch.manual_seed(0)
    model = build_model(arch).eval()
    for m in model.modules():  # non-trivial BatchNorm statistics, so a wrong border term shows in the logits
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    cfg = PreprocessConfig(size=64)
    folded = fold_gray_stem(model, cfg.mean, cfg.std, cfg.size)
    rng = np.random.default_rng(1)
    x = torch.from_numpy(np.stack([preprocess(rng.random((80, 70), dtype=np.float32), cfg) for _ in range(2)]))
    with torch.no_grad():
        a, b = model.backbone.conv0(x), folded.backbone.conv0(x)
        np.testing.assert_allclose(b.numpy(), a.numpy(), atol=1e-4 * float(a.abs().max()))
        np.testing.assert_allclose(folded(x).numpy(), model(x).numpy(), rtol=1e-4, atol=1e-4)
        y = x.clone()
        y[:, 1:] = 0.0
        np.testing.assert_array_equal(folded(y).numpy(), folded(x).numpy())


def test_gray_stem_refuses_a_stem_it_cannot_fold():
    import torch

    from edgecxr.export.gray_stem import GrayStem, fold_gray_stem

    with pytest.raises(EdgeCXRError, match="without gray_stem"):
        GrayStem(torch.nn.Conv2d(1, 8, 3, padding=1), [0.5] * 3, [0.2] * 3, 32)
    with pytest.raises(EdgeCXRError, match="without gray_stem"):
        fold_gray_stem(torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3)), [0.5] * 3, [0.2] * 3, 32)


def test_gray_stem_target_exports_a_one_channel_stem_that_the_runtime_verifies(tiny_checkpoint, onnx_artifact, tmp_path):
    """A target with ``gray_stem = true``: its own cache key, a graph whose only Conv reading the input has 1 input
    channel, the flag in sidecar and embedded metadata, the gate passed against the unfolded FP32 model, and the same
    findings through the runtime as the plain artifact."""
    from edgecxr.export.onnx_fp32 import get_metadata
    from edgecxr.preprocess import PreprocessConfig, preprocess
    from edgecxr.runtime import load

    toml = tmp_path / "gs.toml"
    toml.write_text('backend = "onnx"\nprecision = "fp32"\ngray_stem = true\n')
    res = core.export(tiny_checkpoint, str(toml), out=tmp_path / "gs")
    assert res.verified, res.sidecar.verification
    assert res.sidecar.engine["gray_stem"] is True and get_metadata(res.artifact)["gray_stem"] is True
    assert res.sidecar.cache_key != read_sidecar(onnx_artifact).cache_key
    from rich.console import Console

    from edgecxr.cli import sidecar_table

    shown = []
    for side in (res.sidecar, read_sidecar(onnx_artifact)):  # `edgecxr export` says which rewrites an artifact has
        con = Console(record=True, width=200)
        con.print(sidecar_table(side, "t"))
        shown.append(con.export_text())
    assert "gray stem (reads channel 0 only)" in shown[0] and "gray stem" not in shown[1]
    g = onnx.load(str(res.artifact)).graph
    w = {i.name: i for i in g.initializer}
    stem = next(n for n in g.node if n.op_type == "Conv")
    assert list(w[stem.input[1]].dims)[1] == 1
    rng = np.random.default_rng(2)
    x = np.stack([preprocess(rng.random((90, 80), dtype=np.float32), PreprocessConfig(size=64)) for _ in range(3)])
    y = x.copy()
    y[:, 2] += 0.5  # not what preprocessing makes: the folded artifact would answer for channel 0 alone
    with load(res.artifact, guard=False) as folded, load(onnx_artifact, guard=False) as plain:
        p, q = folded.predict_preprocessed(x), plain.predict_preprocessed(x)
        with pytest.raises(ValueError, match="gray_stem"):
            folded.predict_preprocessed(y)
        assert len(plain.predict_preprocessed(y)) == 3  # the 3-channel artifact takes any tensor
    for a, b in zip(p, q):
        assert a.label == b.label
        np.testing.assert_allclose(list(a.probabilities.values()), list(b.probabilities.values()), atol=1e-5)


@pytest.mark.parametrize("arch", ["covid-densenet", "densenet121"])
def test_pool_first_keeps_the_function_and_quarters_the_transition_convs(arch):
    """Pooling before each transition's 1x1 conv gives the same logits (float rounding aside), with the conv reading
    a quarter of the pixels and keeping its name and weights."""
    import torch

    from edgecxr.export.pool_first import pool_first
    from edgecxr.models import build_model

    torch.manual_seed(0)
    model = build_model(arch).eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    swapped = pool_first(model)
    x = torch.randn(2, 3, 64, 64)
    seen = {}
    for name in ("transition1", "transition2", "transition3"):
        block = getattr(swapped.backbone, name)
        assert [n for n, _ in block.named_children()] == ["norm", "relu", "pool", "conv"]
        assert block.conv.weight.data_ptr() != getattr(model.backbone, name).conv.weight.data_ptr()  # a copy
        torch.testing.assert_close(block.conv.weight, getattr(model.backbone, name).conv.weight)
        block.conv.register_forward_hook(lambda m, i, o, name=name: seen.update({name: i[0].shape[-1]}))
    with torch.no_grad():
        np.testing.assert_allclose(swapped(x).numpy(), model(x).numpy(), rtol=1e-4, atol=1e-4)
    assert seen == {"transition1": 8, "transition2": 4, "transition3": 2}  # 64 px: 16, 8, 4 before pooling
    assert [n for n, _ in model.backbone.transition1.named_children()][-1] == "pool"  # the original is untouched


def test_pool_first_refuses_a_model_without_transitions():
    import torch

    from edgecxr.export.pool_first import pool_first

    with pytest.raises(EdgeCXRError, match="without pool_first"):
        pool_first(torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3)))


def test_pool_first_target_is_verified_keeps_names_and_records_it(tiny_checkpoint, tmp_path):
    """``pool_first = true``: its own cache key, the flag in the sidecar, the transitions' conv nodes keep their
    names but read pooled tensors, the gate passed against the unchanged model."""
    res = {}
    for flag in ("true", "false"):
        toml = tmp_path / f"pf-{flag}.toml"
        toml.write_text(f'backend = "onnx"\nprecision = "fp32"\npool_first = {flag}\n')
        res[flag] = core.export(tiny_checkpoint, str(toml), out=tmp_path / flag)
        assert res[flag].verified, res[flag].sidecar.verification
    assert res["true"].sidecar.engine["pool_first"] is True and "pool_first" not in res["false"].sidecar.engine
    assert res["true"].sidecar.cache_key != res["false"].sidecar.cache_key
    for flag, before_conv in (("true", "AveragePool"), ("false", "Relu")):
        g = onnx.load(str(res[flag].artifact)).graph
        by_name = {n.name: n for n in g.node}
        producer = {o: n for n in g.node for o in n.output}
        for t in (1, 2, 3):
            assert producer[by_name[f"/transition{t}/conv/Conv"].input[0]].op_type == before_conv


def test_int8_exclude_names_a_node_that_is_not_there_is_refused(tiny_checkpoint, tmp_path):
    """ONNX Runtime and NNCF ignore unknown names and would quantize the layer meant to stay float: refuse, and hint."""
    toml = tmp_path / "typo.toml"
    toml.write_text('backend = "onnx"\nprecision = "int8"\n[int8]\nexclude = ["/conv0/Cnv"]\nmixed_precision = false\n')
    with pytest.raises(EdgeCXRError, match=r"no node named '/conv0/Cnv' \(did you mean '/conv0/Conv'"):
        core.export(tiny_checkpoint, str(toml), out=tmp_path / "o")
    assert not list((tmp_path / "o").glob("model.onnx"))


@pytest.mark.parametrize("name", sorted(n for n in list_targets() if "int8" in n))
def test_shipped_int8_targets_exclude_only_nodes_the_graph_has(tiny_checkpoint, tmp_path, name):
    """Every float layer a shipped INT8 target names exists in the graph that target exports (gray_stem renames the
    stem), for the tiny model of the same architecture."""
    from edgecxr.export.onnx_int8 import check_node_names

    from edgecxr.export.targets import resolve_target

    for isa in (VNNI_CPU, AVX2_CPU):  # gray_stem = "auto" builds another stem on each
        ctx, tgt = _ctx_and_target(tiny_checkpoint, name)
        t = resolve_target(tgt, isa=isa)
        ctx.gray_stem, ctx.pool_first = t.gray_stem, t.pool_first
        check_node_names(list(t.int8.exclude), ctx.fp32_onnx(t, tmp_path / str(t.gray_stem)))


VNNI_CPU = {"arch": "x86_64", "isa": ["AVX-512 BF16", "AVX-512 VNNI"]}
AVX2_CPU = {"arch": "x86_64", "isa": []}


def test_gray_stem_auto_follows_the_cpu_and_renames_the_stems_float_layers(tmp_path, monkeypatch):
    """``gray_stem = "auto"``: the gray stem on x86 with VNNI or AMX (where it was measured faster and passed the gate),
    the 3-channel stem on AVX2-only x86, on ARM and for TensorRT; with it on, the stem conv the target keeps float is
    named as the folded graph names it; other values are refused, and export() resolves before keying its cache."""
    from edgecxr.export.targets import GRAY_STEM_NODES, load_target, resolve_target

    p = tmp_path / "t.toml"
    p.write_text('backend = "openvino"\nprecision = "int8"\ngray_stem = "auto"\n[int8]\nexclude = ["/conv0/Conv", "/x"]\n')
    t = load_target(str(p))
    assert t.gray_stem == "auto"
    on = resolve_target(t, isa=VNNI_CPU)
    assert on.gray_stem is True and on.int8.exclude == [*GRAY_STEM_NODES["/conv0/Conv"], "/x"]
    assert resolve_target(t, isa={"arch": "x86_64", "isa": ["AMX-INT8"]}).gray_stem is True
    for isa in (AVX2_CPU, {"arch": "aarch64", "isa": []}):
        off = resolve_target(t, isa=isa)
        assert off.gray_stem is False and off.int8.exclude == ["/conv0/Conv", "/x"]
    assert t.int8.exclude == ["/conv0/Conv", "/x"]  # the loaded target is left as it was
    p.write_text('backend = "tensorrt"\nprecision = "fp16"\ngray_stem = "auto"\n')
    assert resolve_target(load_target(str(p)), isa=VNNI_CPU).gray_stem is False
    p.write_text('backend = "onnx"\nprecision = "fp32"\ngray_stem = "yes"\n')
    with pytest.raises(EdgeCXRError, match='gray_stem: expected true, false or "auto"'):
        load_target(str(p))
    p.write_text('backend = "onnx"\nprecision = "fp32"\ngray_stem = "auto"\nstem_s2d = true\n')
    with pytest.raises(EdgeCXRError, match="stem_s2d needs the gray stem"):
        resolve_target(load_target(str(p)), isa=AVX2_CPU)
    assert resolve_target(load_target(str(p)), isa=VNNI_CPU).stem_s2d
    seen = []  # the target export() keys its cache with
    monkeypatch.setattr(core, "cache_key", lambda ck_sha, tgt, *a, **k: seen.append(tgt) or "key")
    monkeypatch.setattr(core, "find_cached", lambda artifact, key, verify: "cached")
    monkeypatch.setattr("edgecxr.checkpoint.read_meta", lambda path: {})
    ck = tmp_path / "ck.safetensors"
    ck.write_bytes(b"x")
    p.write_text('backend = "onnx"\nprecision = "fp32"\ngray_stem = "auto"\n')
    for isa, gray in ((VNNI_CPU, True), (AVX2_CPU, False)):
        monkeypatch.setattr("edgecxr.hardware.isa_class", lambda *a, _isa=isa, **k: _isa)
        assert core.export(ck, str(p), out=tmp_path / "o").cached
        assert seen[-1].gray_stem is gray


def test_split_conv_weights_is_exact_in_fp32_and_keeps_float_precision_in_int8(tiny_checkpoint, tmp_path):
    """A split conv computes the same function in FP32 (W_hi + W_lo = W, W_hi on the int8 grid); quantized, the pair's
    logits stay closer to FP32 than the conv quantized whole, and no Q/DQ sits between the halves and their sum."""
    from edgecxr.export.onnx_int8 import quantize_onnx, split_conv_weights
    from onnx import numpy_helper

    ctx, tgt = _ctx_and_target(tiny_checkpoint, "onnx-fp32")
    fp32 = ctx.fp32_onnx(tgt, tmp_path)
    halves = split_conv_weights(fp32, tmp_path / "split.onnx", ["/conv0/Conv"], qmax=127)
    assert halves == ["/conv0/Conv_output_0_hi", "/conv0/Conv_output_0_lo"]
    m = onnx.load(str(tmp_path / "split.onnx"))
    w = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    hi, lo = w["/conv0/Conv_w_hi"], w["/conv0/Conv_w_lo"]
    step = np.abs(hi).reshape(len(hi), -1).max(1) / 127
    k = hi / step[:, None, None, None]
    np.testing.assert_allclose(k, np.round(k), atol=1e-3)  # on the per-channel int8 grid the quantizer will use
    assert np.all(np.abs(lo) <= step[:, None, None, None] / 2 + 1e-7)
    x, _, _ = ctx.verify_set()
    run = lambda p: ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(["logits"], {"input": x[:8]})[0]
    ref = run(fp32)
    np.testing.assert_allclose(run(tmp_path / "split.onnx"), ref, atol=1e-4)
    whole = quantize_onnx(fp32, tmp_path / "whole.onnx", ctx.calib(), fmt="qdq", method="minmax")
    split = quantize_onnx(fp32, tmp_path / "q-split.onnx", ctx.calib(), fmt="qdq", method="minmax",
                          split_weights=["/conv0/Conv"])
    g = onnx.load(str(split)).graph
    assert not [n for n in g.node if n.op_type == "QuantizeLinear" and n.input[0] in halves]
    assert {n.name for n in g.node if n.op_type == "Conv"} >= {"/conv0/Conv", "/conv0/Conv_lo"}
    # the rest of the graph quantized as before: only the stem's weight error differs
    err = lambda p: float(np.sqrt(((run(p) - ref) ** 2).mean()))
    assert err(split) < err(whole)
    with pytest.raises(EdgeCXRError, match="split_weights"):
        split_conv_weights(fp32, tmp_path / "x.onnx", ["/no/such/Conv"], qmax=127)


def test_split_weights_and_stem_s2d_target_validation(tmp_path):
    from edgecxr.export.targets import load_target

    def target(body: str):
        p = tmp_path / "t.toml"
        p.write_text(body)
        return load_target(str(p))

    t = target('backend = "onnx"\nprecision = "int8"\n[int8]\nsplit_weights = ["/conv0/Conv"]\n')
    assert t.int8.split_weights == ["/conv0/Conv"] and "split_weights" in json.dumps(t.key)
    with pytest.raises(EdgeCXRError, match="either kept float or split"):
        target('backend = "onnx"\nprecision = "int8"\n[int8]\nsplit_weights = ["/a"]\nexclude = ["/a"]\n')
    with pytest.raises(EdgeCXRError, match="gray_stem = true"):
        target('backend = "onnx"\nprecision = "fp32"\nstem_s2d = true\n')
    assert target('backend = "onnx"\nprecision = "fp32"\ngray_stem = true\nstem_s2d = true\n').stem_s2d


@pytest.mark.parametrize("arch", ["covid-densenet", "densenet121"])
def test_space_to_depth_stem_is_exact(arch):
    """The gray stem as a 4x4 conv of 2x2 pixel blocks equals the 3-channel 7x7 stem on replicated gray, border
    included; a stem it cannot rewrite is refused."""
    import torch

    from edgecxr.export.gray_stem import SpaceToDepthStem, fold_gray_stem
    from edgecxr.models import build_model
    from edgecxr.preprocess import PreprocessConfig, preprocess

    torch.manual_seed(0)
    model = build_model(arch).eval()
    cfg = PreprocessConfig(size=64)
    s2d = fold_gray_stem(model, cfg.mean, cfg.std, cfg.size, s2d=True)
    assert s2d.backbone.conv0.conv.conv.in_channels == 4
    rng = np.random.default_rng(2)
    x = torch.from_numpy(np.stack([preprocess(rng.random((70, 90), dtype=np.float32), cfg) for _ in range(2)]))
    with torch.no_grad():
        a, b = model.backbone.conv0(x), s2d.backbone.conv0(x)
        np.testing.assert_allclose(b.numpy(), a.numpy(), atol=1e-4 * float(a.abs().max()))
    with pytest.raises(EdgeCXRError, match="without stem_s2d"):
        SpaceToDepthStem(torch.nn.Conv2d(1, 8, 3, 2, 1), 64)
    with pytest.raises(EdgeCXRError, match="without stem_s2d"):
        SpaceToDepthStem(torch.nn.Conv2d(1, 8, 7, 2, 3), 63)


def _spy_reader(monkeypatch):
    """Count the calibration images ONNX Runtime's own calibration pass reads."""
    import edgecxr.export.onnx_int8 as oi

    seen = {"read": 0}
    get_next = oi._Reader.get_next

    def spy_next(self):
        item = get_next(self)
        seen["read"] += item is not None
        return item

    monkeypatch.setattr(oi._Reader, "get_next", spy_next)
    return seen


def _initializers(path):
    g = onnx.load(str(path)).graph
    return [n.op_type for n in g.node], {i.name: i.SerializeToString() for i in g.initializer}


@pytest.mark.parametrize("fmt,method", [("qoperator", "percentile"), ("qdq", "percentile"), ("qoperator", "entropy")])
def test_two_pass_histogram_calibration_equals_onnxruntimes_one_pass(onnx_artifact, tmp_path, monkeypatch, fmt, method):
    """ONNX Runtime's histogram calibration kept every tensor of every image in memory (16.8 GB for the shipped
    model); edgecxr's two passes hold one image at a time and must build the very same model."""
    import edgecxr.export.onnx_int8 as oi

    if not oi._cache_supported():
        pytest.skip("this ONNX Runtime has no calibration_cache_path: edgecxr uses its one-pass calibration")
    calib = np.random.default_rng(1).normal(size=(6, 3, 64, 64)).astype(np.float32)
    seen = _spy_reader(monkeypatch)
    two = oi.quantize_onnx(onnx_artifact, tmp_path / "two.onnx", calib, fmt=fmt, method=method, cache_dir=tmp_path / "c")
    assert seen["read"] == 0  # ONNX Runtime's own (all images in memory) pass did not run
    monkeypatch.setattr(oi, "_cache_supported", lambda: False)
    one = oi.quantize_onnx(onnx_artifact, tmp_path / "one.onnx", calib, fmt=fmt, method=method)
    assert seen["read"] == 6
    assert _initializers(two) == _initializers(one)


def test_calibration_cache_is_reused_across_float_layers_and_builds_the_same(onnx_artifact, tmp_path, monkeypatch):
    """The mixed-precision search rebuilds with more layers float: calibration runs once per graph, images and
    method, and a cached build equals one calibrated afresh."""
    import edgecxr.export.onnx_int8 as oi

    if not oi._cache_supported():
        pytest.skip("this ONNX Runtime has no calibration_cache_path: every build calibrates")
    calib = np.random.default_rng(2).normal(size=(8, 3, 64, 64)).astype(np.float32)
    conv = next(n.name for n in onnx.load(str(onnx_artifact)).graph.node if n.op_type == "Conv")
    seen = _spy_reader(monkeypatch)
    oi.quantize_onnx(onnx_artifact, tmp_path / "a.onnx", calib, method="minmax", cache_dir=tmp_path / "c")
    assert seen["read"] == 8 and len(list((tmp_path / "c").glob("*.json"))) == 1
    cached = oi.quantize_onnx(onnx_artifact, tmp_path / "b.onnx", calib, method="minmax", exclude=[conv],
                              cache_dir=tmp_path / "c")
    assert seen["read"] == 8  # ranges from the cache
    fresh = oi.quantize_onnx(onnx_artifact, tmp_path / "f.onnx", calib, method="minmax", exclude=[conv],
                             cache_dir=tmp_path / "fresh")
    assert seen["read"] == 16
    assert _initializers(cached) == _initializers(fresh)
    assert _initializers(cached) != _initializers(tmp_path / "a.onnx")  # the excluded conv changed the graph
    # other images, another method or another form: another entry
    oi.quantize_onnx(onnx_artifact, tmp_path / "d.onnx", calib[:4], method="minmax", cache_dir=tmp_path / "c")
    oi.quantize_onnx(onnx_artifact, tmp_path / "e.onnx", calib, method="percentile", cache_dir=tmp_path / "c")
    oi.quantize_onnx(onnx_artifact, tmp_path / "g.onnx", calib, fmt="qdq", method="minmax", cache_dir=tmp_path / "c")
    assert len(list((tmp_path / "c").glob("*.json"))) == 4


def test_search_ranks_only_layers_the_int8_form_quantizes(onnx_artifact):
    """The QOperator form leaves every Gemm float: the float-layer search must not spend its slots on them."""
    from edgecxr.export.mixed import quantized_in_form

    nodes = onnx.load(str(onnx_artifact)).graph.node
    conv = [n.name for n in nodes if n.op_type == "Conv"][:2]
    gemm = [n.name for n in nodes if n.op_type == "Gemm"][:1]
    assert conv and gemm, "the tiny model should have both"
    ranked = [gemm[0], conv[0], "no-such-node", conv[1]]
    assert quantized_in_form(onnx_artifact, ranked, "qoperator") == [conv[0], conv[1]]
    assert quantized_in_form(onnx_artifact, ranked, "qdq") == [gemm[0], conv[0], conv[1]]


def test_calibration_falls_back_to_onnxruntimes_pass_when_its_calibrators_change(onnx_artifact, tmp_path, monkeypatch):
    """If ONNX Runtime's calibrator internals move, the export still builds (with its one pass) and says why."""
    import edgecxr.export.onnx_int8 as oi

    if not oi._cache_supported():
        pytest.skip("this ONNX Runtime has no calibration_cache_path: edgecxr uses its one-pass calibration")
    calib = np.random.default_rng(3).normal(size=(4, 3, 64, 64)).astype(np.float32)

    def moved(*a, **k):
        raise AttributeError("'PercentileCalibrater' object has no attribute 'infer_session'")

    monkeypatch.setattr(oi, "histogram_calibration", moved)
    seen = _spy_reader(monkeypatch)
    with pytest.warns(UserWarning, match="two-pass calibration unavailable"):
        out = oi.quantize_onnx(onnx_artifact, tmp_path / "q.onnx", calib, method="percentile", cache_dir=tmp_path / "c")
    assert seen["read"] == 4 and out.exists()
    monkeypatch.setattr(oi, "_cache_supported", lambda: False)
    one = oi.quantize_onnx(onnx_artifact, tmp_path / "one.onnx", calib, method="percentile")
    assert _initializers(out) == _initializers(one)


def test_two_pass_calibration_memory_does_not_grow_with_the_images(onnx_artifact, tmp_path):
    """What the two passes are for: Python-side peak memory (tracemalloc sees numpy's buffers, ONNX Runtime's outputs
    among them) stays flat from 4 to 32 calibration images; ONNX Runtime's one pass grew 3.8x on a small conv net."""
    import tracemalloc

    from onnxruntime.quantization.shape_inference import quant_pre_process

    import edgecxr.export.onnx_int8 as oi

    pre = tmp_path / "pre.onnx"
    quant_pre_process(str(onnx_artifact), str(pre), skip_symbolic_shape=True)
    name = onnx.load(str(pre)).graph.input[0].name
    peaks = []
    for n in (4, 32):
        calib = np.random.default_rng(n).normal(size=(n, 3, 64, 64)).astype(np.float32)
        tracemalloc.start()
        try:
            ranges = oi.histogram_calibration(pre, calib, name, "percentile", list(oi.QOPERATOR_OPS), {}, tmp_path)
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
        assert ranges is not None and len(ranges.data) > 5
    assert peaks[1] < 1.5 * peaks[0], peaks


def test_entropy_equals_minmax_in_the_qoperator_form_so_the_search_skips_it(onnx_artifact, tmp_path):
    """ONNX Runtime's entropy calibration with its default bins has one candidate threshold, clipped to min/max: in the
    QOperator form it builds minmax's model, so the search's knobs try only one of them."""
    from edgecxr.export.mixed import onnx_knobs
    from edgecxr.export.onnx_int8 import quantize_onnx
    from edgecxr.export.targets import load_target

    calib = np.random.default_rng(4).normal(size=(6, 3, 64, 64)).astype(np.float32)
    built = {m: quantize_onnx(onnx_artifact, tmp_path / f"{m}.onnx", calib, method=m, cache_dir=tmp_path / "c")
             for m in ("minmax", "entropy", "percentile")}
    assert _initializers(built["entropy"]) == _initializers(built["minmax"])
    assert _initializers(built["percentile"]) != _initializers(built["minmax"])
    import dataclasses

    o = load_target("onnx-int8").int8
    for cal, expect in (("percentile", ["minmax"]), ("minmax", ["percentile"]), ("entropy", ["percentile"])):
        assert [k.calibration for _, k in onnx_knobs(dataclasses.replace(o, calibration=cal))] == expect
    qdq = dataclasses.replace(o, format="qdq", calibration="percentile")
    assert [k.calibration for _, k in onnx_knobs(qdq)] == ["minmax", "entropy"]
