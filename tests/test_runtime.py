import json
import shutil
import subprocess
import sys
import threading

import numpy as np
import pytest
from PIL import Image

from edgecxr.sidecar import sidecar_path
from edgecxr.errors import ArtifactError
from edgecxr.resources import eval_dir

EVAL = sorted(eval_dir().rglob("*.png"))


def test_runtime_imports_no_torch():
    code = ("import sys, time; t=time.perf_counter(); import edgecxr.runtime; "
            "print(time.perf_counter()-t); assert 'torch' not in sys.modules, 'torch imported'")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def _torch_probs(checkpoint, files):
    torch = pytest.importorskip("torch")
    from edgecxr.checkpoint import load_model
    from edgecxr.imaging import read_image
    from edgecxr.preprocess import PreprocessConfig, preprocess

    model, meta = load_model(checkpoint)
    cfg = PreprocessConfig.from_dict(meta["preprocess"])
    x = torch.from_numpy(np.stack([preprocess(read_image(f), cfg) for f in files]))
    with torch.no_grad():
        return torch.softmax(model(x), 1).numpy()


@pytest.mark.parametrize("artifact", ["onnx_artifact", "openvino_artifact"])
def test_round_trip_matches_torch(request, artifact, tiny_checkpoint):
    from edgecxr.runtime import load

    path = request.getfixturevalue(artifact)
    model = load(path)
    files = EVAL[:24]
    res = model.predict(files, batch=8)
    assert all(r.ok for r in res)
    probs = np.array([[r.probabilities[c] for c in model.classes] for r in res])
    ref = _torch_probs(tiny_checkpoint, files)
    np.testing.assert_allclose(probs, ref, atol=1e-4)
    assert [r.label for r in res] == [model.classes[i] for i in ref.argmax(1)]
    assert res[0].model["sha256"] == json.loads(sidecar_path(path).read_text())["artifact"]["sha256"]


@pytest.mark.parametrize("options", [{}, {"smooth": 1.0}, {"smooth": 0.7, "equalize": True}])
def test_training_and_runtime_tensors_identical(tiny_checkpoint, options):
    pytest.importorskip("torch")
    from edgecxr.data import load_samples
    from edgecxr.data.torchdata import CXRDataset
    from edgecxr.preprocess import PreprocessConfig
    from edgecxr.runtime import Model

    cfg = PreprocessConfig(size=64, **options)
    samples = load_samples(eval_dir())[:3]
    ds = CXRDataset(samples, ["COVID-19", "Normal", "Pneumonia"], cfg, augment=False)
    from edgecxr.sidecar import FileRecord, Sidecar

    side = Sidecar(classes=["COVID-19", "Normal", "Pneumonia"], preprocess=cfg.to_dict(),
                   artifact=FileRecord("model.onnx", 0, "0" * 64), engine={"backend": "onnx", "precision": "fp32"})
    m = Model(EVAL[0], side, runner=None)
    for i, s in enumerate(samples):
        np.testing.assert_array_equal(ds[i][0].numpy(), m.prepare(s.path))


def test_inputs_of_every_kind(onnx_artifact):
    from edgecxr.runtime import load

    model = load(onnx_artifact)
    img = Image.open(EVAL[0])
    a8 = np.asarray(img.convert("L"))
    res = model.predict([EVAL[0], str(EVAL[0]), a8, a8.astype(np.uint16) * 257, a8 / 255.0, img])
    assert all(r.ok for r in res), [r.error for r in res]
    p = np.array([[r.probabilities[c] for c in model.classes] for r in res])
    np.testing.assert_allclose(p, np.repeat(p[:1], len(p), 0), atol=1e-4)
    single = model.predict(EVAL[0])
    assert len(single) == 1 and single[0].label == res[0].label


def test_bad_inputs_do_not_spoil_the_batch(onnx_artifact, tmp_path):
    from edgecxr.runtime import load

    model = load(onnx_artifact)
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.png").write_bytes(b"not an image" * 10)
    data = EVAL[0].read_bytes()
    (tmp_path / "trunc.png").write_bytes(data[: len(data) // 3])
    Image.fromarray(np.zeros((1, 1), np.uint8)).save(tmp_path / "tiny.png")
    nan = np.zeros((64, 64), np.float32)
    nan[0, 0] = np.nan
    huge = np.zeros((1, 1), np.uint8)
    import edgecxr.imaging as im

    huge = np.broadcast_to(np.uint8(0), (im.MAX_PIXELS // 1000 + 1, 1001))  # > limit, no real memory
    inputs = [EVAL[0], tmp_path / "empty.png", tmp_path / "text.png", tmp_path / "trunc.png", tmp_path / "tiny.png",
              nan, huge, tmp_path / "missing.png", EVAL[1]]
    res = model.predict(inputs)
    assert res[0].ok and res[-1].ok
    errors = [r.error for r in res[1:-1]]
    for e, word in zip(errors, ["empty", "not an image", "truncated", "too small", "NaN", "decompression-bomb",
                                "no such file"]):
        assert e is not None and word in e, (word, e)


def test_batches_split(onnx_artifact):
    from edgecxr.runtime import load

    model = load(onnx_artifact)
    calls = []
    run = model.runner.run
    model.runner.run = lambda x: calls.append(len(x)) or run(x)
    res = model.predict(EVAL[:7], batch=3)
    assert calls == [3, 3, 1] and len(res) == 7


def test_threads_agree_with_single_thread(onnx_artifact):
    from edgecxr.runtime import load

    model = load(onnx_artifact)
    files = EVAL[:6]
    ref = [r.probabilities for r in model.predict(files)]
    out, errors = {}, []

    def work(k):
        try:
            out[k] = [r.probabilities for r in model.predict(files, batch=2)]
        except Exception as exc:  # pragma: no cover
            errors.append(exc)

    ts = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    assert not errors and len(out) == 4
    for v in out.values():
        for a, b in zip(v, ref):
            for c in a:
                assert a[c] == pytest.approx(b[c], abs=1e-5)


def test_tampered_artifact_refused(onnx_artifact, tmp_path):
    from edgecxr.runtime import load

    shutil.copy(onnx_artifact, tmp_path / "model.onnx")
    shutil.copy(sidecar_path(onnx_artifact), sidecar_path(tmp_path / "model.onnx"))
    load(tmp_path / "model.onnx")  # an intact copy loads
    data = bytearray((tmp_path / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0x01
    (tmp_path / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="sha256"):
        load(tmp_path / "model.onnx")
    (tmp_path / "model.onnx").unlink()
    with pytest.raises(ArtifactError, match="no such artifact"):
        load(tmp_path / "model.onnx")


@pytest.mark.parametrize("field,value", [("classes", ["Normal", "COVID-19", "Pneumonia"]),
                                         ("preprocess", {"size": 64, "resize": "pad", "mean": [0.485, 0.456, 0.406],
                                                         "std": [0.229, 0.224, 0.225]})])
@pytest.mark.parametrize("artifact", ["onnx_artifact", "openvino_artifact"])
def test_sidecar_mismatch_refused(request, artifact, field, value, tmp_path):
    from edgecxr.runtime import load

    src = request.getfixturevalue(artifact)
    for f in src.parent.iterdir():
        shutil.copy(f, tmp_path / f.name)
    dst = tmp_path / src.name
    side = json.loads(sidecar_path(dst).read_text())
    side[field] = value
    sidecar_path(dst).write_text(json.dumps(side))
    with pytest.raises(ArtifactError, match=field):
        load(dst)


@pytest.mark.parametrize("artifact", ["onnx_artifact", "openvino_artifact"])
def test_export_folder_loads_its_one_artifact(request, artifact, tmp_path):
    from edgecxr.runtime import load

    src = request.getfixturevalue(artifact)
    with load(src.parent) as m:  # what `edgecxr export` leaves: exports/<model>/<target>/
        assert m.path == src
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ArtifactError, match="no exported artifact"):
        load(empty)


def test_export_folder_with_two_artifacts_refused(onnx_artifact, tmp_path):
    from edgecxr.runtime import load

    for name in ("a.onnx", "b.onnx"):
        shutil.copy(onnx_artifact, tmp_path / name)
        shutil.copy(sidecar_path(onnx_artifact), sidecar_path(tmp_path / name))
    with pytest.raises(ArtifactError, match="2 artifacts"):
        load(tmp_path)


def test_missing_sidecar_refused(onnx_artifact, tmp_path):
    from edgecxr.runtime import load

    shutil.copy(onnx_artifact, tmp_path / "model.onnx")
    with pytest.raises(ArtifactError, match="sidecar"):
        load(tmp_path / "model.onnx")


def test_cli_predict(onnx_artifact, tmp_path):
    from typer.testing import CliRunner

    from edgecxr.cli import app

    folder = tmp_path / "imgs"
    folder.mkdir()
    for f in EVAL[:3]:
        shutil.copy(f, folder / f.name)
    r = CliRunner().invoke(app, ["predict", str(folder), "--model", str(onnx_artifact), "--json"])
    assert r.exit_code == 0, r.output
    lines = [json.loads(x) for x in r.output.strip().splitlines()]
    assert len(lines) == 3 and all(x["label"] in ("COVID-19", "Normal", "Pneumonia") for x in lines)
    (folder / "bad.png").write_bytes(b"")
    r = CliRunner().invoke(app, ["predict", str(folder), "--model", str(onnx_artifact)])
    assert r.exit_code == 1 and "bad.png" in r.output


def test_openvino_static_shapes_per_batch(openvino_artifact):
    """The OpenVINO runner compiles a static-shape model per batch size it sees (a few at most) and returns what
    the dynamic model returns."""
    from edgecxr.runtime import load
    from edgecxr.runtime.runners import MAX_STATIC_BATCHES

    rng = np.random.default_rng(0)
    side = json.loads(sidecar_path(openvino_artifact).read_text())
    assert not side["engine"].get("static_shapes")  # off in openvino-fp32: the gate verified the dynamic model
    with load(openvino_artifact) as m:
        assert not m.runner._static
    from edgecxr.runtime.runners import OpenVINORunner

    with load(openvino_artifact) as m:
        m.runner = OpenVINORunner(openvino_artifact, dict(side["engine"], static_shapes=True))
        s = m.preprocess_config.size
        xs = {b: rng.standard_normal((b, 3, s, s)).astype(np.float32) for b in (1, 3, 2, 5, 4, 6)}
        got = {b: m.runner.run(x)["logits"] for b, x in xs.items()}
        assert sorted(m.runner._by_batch) == [1, 2, 3, 5][:MAX_STATIC_BATCHES]  # batch 1 at load, then the first sizes seen
        m.runner._static = False
        for b, x in xs.items():
            np.testing.assert_allclose(got[b], m.runner.run(x)["logits"], rtol=1e-4, atol=1e-4)


def test_openvino_runner_under_the_onednn_cap_runs_f32_and_reports_compile_errors(openvino_artifact, monkeypatch, tmp_path):
    """Under ONEDNN_MAX_CPU_ISA=AVX2 the plugin still reads bf16 from CPUID but oneDNN has no bf16 kernels, so an
    FP16 target's "default" precision failed to compile (no primitive for its max-pool); the runner now asks for f32,
    what an AVX2-only CPU runs. A model the plugin cannot compile is one ArtifactError line, not a RuntimeError stack."""
    import json

    from edgecxr.errors import ArtifactError
    from edgecxr.runtime.runners import OpenVINORunner
    from edgecxr.sidecar import sidecar_path

    engine = dict(json.loads(sidecar_path(openvino_artifact).read_text())["engine"], inference_precision="default")
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    r = OpenVINORunner(openvino_artifact, engine)
    assert r.info["inference_precision"] == "f32"
    r.close()
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    with pytest.raises(ArtifactError, match="could not compile"):
        OpenVINORunner(openvino_artifact, dict(engine, inference_precision="no-such-precision"))
