"""Input guard: DICOM header rules and the content score exported as a second graph output."""

import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from edgecxr.resources import calibration_dir, eval_dir, val_dir
from edgecxr.runtime.header_rules import HeaderRules

pydicom = pytest.importorskip("pydicom")
EVAL = sorted(eval_dir().rglob("*.png"))


def _ds(**tags):
    ds = pydicom.Dataset()
    for k, v in tags.items():
        setattr(ds, k, v)
    return ds


@pytest.mark.parametrize("tags,expect", [
    (dict(Modality="DX", BodyPartExamined="CHEST", ViewPosition="PA"), None),
    (dict(Modality="CR", BodyPartExamined="THORAX", ViewPosition="AP"), None),
    (dict(Modality="CR"), None),  # absent body part and view: not refused by the header
    (dict(Modality="CR", BodyPartExamined="HAND"), "BodyPartExamined HAND"),
    (dict(Modality="MG", BodyPartExamined="BREAST"), "Modality MG"),
    (dict(Modality="CT"), "Modality CT"),
    (dict(Modality="DX", BodyPartExamined="CHEST", ViewPosition="LL"), "lateral view"),
    (dict(Modality="SC"), "Modality SC"),
    (dict(Modality="DX", BodyPartExamined="CHEST", PresentationIntentType="FOR PROCESSING"), "For Processing"),
    (dict(Modality="DX", SOPClassUID="1.2.840.10008.5.1.4.1.1.1.1.1"), "For Processing"),  # DX For Processing
    (dict(Modality="DX", SOPClassUID="1.2.840.10008.5.1.4.1.1.1.1", PresentationIntentType="FOR PRESENTATION"), None),
])
def test_header_rules(tags, expect):
    reason = HeaderRules().check(_ds(**tags))
    assert (reason is None) if expect is None else (expect in reason), reason


def test_header_rules_configurable():
    rules = HeaderRules.from_dict({"modalities": ["CR", "DX", "SC"]})
    assert rules.check(_ds(Modality="SC")) is None
    with pytest.raises(ValueError, match="unknown"):
        HeaderRules.from_dict({"modality": ["CR"]})


def test_image_rules_refuse_strips_and_featureless_images():
    from edgecxr.imaging import load_gray
    from edgecxr.runtime.image_rules import ImageRules

    rules = ImageRules()
    g = load_gray(EVAL[0])
    assert rules.check(g) is None
    assert "width/height" in rules.check(g[:, : g.shape[1] // 4])  # a quarter-width strip
    assert "width/height" in rules.check(np.hstack([g, g, g]))  # a strip three chest widths wide
    ramp = np.tile(np.linspace(0, 1, 200, dtype=np.float32)[:, None], (1, 240))  # a display test gradient
    assert "no fine structure" in rules.check(ramp)
    assert rules.check(np.rot90(g).copy()) is None  # orientation is the content check's job, not the rules'
    assert ImageRules.from_dict({"enabled": False}).check(ramp) is None
    assert ImageRules.from_dict({"max_aspect": 4.0}).check(np.hstack([g, g, g])) is None
    with pytest.raises(ValueError, match="unknown"):
        ImageRules.from_dict({"aspect": 2})


def test_image_rules_pass_every_shipped_cxr():
    from edgecxr.imaging import load_gray
    from edgecxr.runtime.image_rules import ImageRules

    files = sorted(calibration_dir().parent.rglob("*.png"))
    assert len(files) > 300
    refused = [(f.name, r) for f in files if (r := ImageRules().check(load_gray(f)))]
    assert not refused, refused[:3]


@pytest.fixture(scope="session")
def guarded_checkpoint(tiny_checkpoint, tmp_path_factory):
    pytest.importorskip("torch")
    from edgecxr.data import load_samples
    from edgecxr.train.calibrate import calibrate

    out = tmp_path_factory.mktemp("guarded") / "tiny-guarded.safetensors"
    report = calibrate(tiny_checkpoint, load_samples(calibration_dir()), load_samples(val_dir()), out,
                       ood=sorted((calibration_dir().parents[1] / "ood_data" / "synthetic").glob("*.png")))
    assert report["guard"]["val_accept_rate"] >= 0.99  # the threshold is chosen so that val CXRs pass
    assert 0.25 <= report["operating_point"]["temperature"] <= 8
    return out


@pytest.fixture(scope="session")
def guarded_onnx(guarded_checkpoint, tmp_path_factory):
    from edgecxr.export.core import export

    res = export(guarded_checkpoint, "onnx-fp32", out=tmp_path_factory.mktemp("gonnx"), heatmaps=True)
    assert res.verified and res.sidecar.outputs == ["logits", "guard", "maps0", "maps1", "maps2"]
    assert res.sidecar.verification["heatmap_correlation_min"] > 0.999
    assert res.sidecar.verification["guard_agreement"] == 1.0
    return res.artifact


def test_guard_score_matches_torch_and_travels(guarded_checkpoint, guarded_onnx):
    from edgecxr.data import load_samples
    from edgecxr.runtime import load
    from edgecxr.sidecar import read_sidecar
    from edgecxr.train.evaluate import checkpoint_outputs

    samples = load_samples(eval_dir())[:8]
    ref, meta = checkpoint_outputs(guarded_checkpoint, samples)
    with load(guarded_onnx) as m:
        res = m.predict([s.path for s in samples])
    scores = np.array([r.guard_score for r in res])
    np.testing.assert_allclose(scores, ref["guard"].reshape(-1), rtol=1e-3)
    side = read_sidecar(guarded_onnx)
    assert side.guard["threshold"] == pytest.approx(meta["guard"]["threshold"])
    assert "mean" not in side.guard  # statistics live in the graph, not the sidecar
    assert side.operating_point["positive_class"] == "COVID-19"


def test_rejected_inputs_get_no_finding_and_exit_3(guarded_onnx, tmp_path):
    from edgecxr.cli import app

    for f in guarded_onnx.parent.iterdir():
        shutil.copy(f, tmp_path / f.name)
    art = tmp_path / guarded_onnx.name
    from edgecxr.runtime import load

    with load(art) as m:
        m.sidecar.guard = dict(m.sidecar.guard, threshold=-1.0)  # everything is "unlike the training X-rays"
        r = m.predict(EVAL[:2])
    assert [x.status for x in r] == ["rejected", "rejected"]
    assert all(x.finding is None and not x.probabilities and "unlike the training X-rays" in x.reason for x in r)
    with load(art) as m:  # half a radiograph is refused by the image rules before the model runs
        from edgecxr.imaging import load_gray

        g = load_gray(EVAL[0])
        r = m.predict([g[:, : g.shape[1] // 3], EVAL[0]])
    assert r[0].status == "rejected" and "width/height" in r[0].reason and r[0].guard_score is None
    assert r[1].status == "ok"
    assert m.sidecar.guard["image_rules"]["min_aspect"] == 0.6  # the sidecar records the rules that run
    # a DICOM of a hand is refused by its header, whatever the pixels
    from PIL import Image

    ds = pydicom.dcmread(pydicom.data.get_testdata_file("CT_small.dcm", download=False))
    ds.Modality, ds.BodyPartExamined = "CR", "HAND"
    hand = tmp_path / "hand[dicom].dcm"
    ds.save_as(hand)
    res = CliRunner().invoke(app, ["predict", str(hand), str(EVAL[0]), "--model", str(art), "--no-isolate"])
    assert res.exit_code == 3, res.output
    assert "BodyPartExamined HAND" in res.output and "hand[dicom].dcm" in res.output  # no markup eaten
    words = " ".join(res.output.split())  # the table says how its findings are made (rich wraps the caption)
    assert "finding: COVID-19 whenever its probability reaches" in words and "the operating point" in words
    res = CliRunner().invoke(app, ["predict", str(hand), str(EVAL[0]), "--model", str(art), "--no-guard", "--json",
                                   "--no-isolate"])
    assert res.exit_code in (0, 1) and "guard off" in res.output
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(tmp_path / "blank.png")
    for extra in ([], ["--isolate-all"]):  # the same answer when PNG decoding runs in the worker process too
        res = CliRunner().invoke(app, ["predict", str(tmp_path / "blank.png"), "--model", str(art), "--json", *extra])
        assert res.exit_code == 1
        line = json.loads([x for x in res.output.splitlines() if x.startswith("{")][0])
        assert line["status"] == "error" and line["schema_version"] == 1 and "blank" in line["reason"]


def test_eval_reports_rejected_share_for_artifact(guarded_onnx, guarded_checkpoint, tmp_path):
    from PIL import Image

    from edgecxr.data import load_samples
    from edgecxr.train.evaluate import evaluate_model

    samples = [s for s in load_samples(calibration_dir().parent / "val")][:12]
    a = evaluate_model(guarded_onnx, samples, n_boot=10, reference=guarded_checkpoint)
    assert "rejected_share" in a["guard"] and a["reference"]["agreement"] == 1.0
    folder = evaluate_model(guarded_onnx.parent, samples[:4], n_boot=10)  # `edgecxr eval exports/<model>/onnx-fp32`
    assert folder["n_images"] == 4 and folder["kind"] == a["kind"]
    assert a["reference"]["operating_point"]["finding_agreement"] == 1.0  # FP32 ONNX: same findings too
    assert a["guard"]["rejected_by_image_rules"] == 0  # every shipped CXR passes them
    from edgecxr.data.layouts import Sample
    from edgecxr.imaging import load_gray

    g = load_gray(samples[0].path)
    strip = tmp_path / "strip.png"
    Image.fromarray((g[:, : g.shape[1] // 3] * 255).astype(np.uint8)).save(strip)
    b = evaluate_model(guarded_checkpoint, samples[:3] + [Sample(strip, samples[0].label)], n_boot=10)
    assert b["guard"]["rejected_by_image_rules"] == 1 and str(strip) in b["guard"]["rejected_files"]
    assert a["per_source"] and a["kind"].startswith("artifact")


def test_heatmaps_match_torch_gradcam(guarded_onnx, guarded_checkpoint, tmp_path):
    """The numpy CAM from the artifact's map outputs against a torch Grad-CAM of the same checkpoint."""
    torch = pytest.importorskip("torch")
    from edgecxr.checkpoint import load_model
    from edgecxr.imaging import read_image
    from edgecxr.preprocess import PreprocessConfig, preprocess
    from edgecxr.runtime import load
    from edgecxr.runtime.heatmap import correlation

    model, meta = load_model(guarded_checkpoint)
    cfg = PreprocessConfig.from_dict(meta["preprocess"])
    files = sorted(val_dir().rglob("*.png"))[:6]
    with load(guarded_onnx) as m:
        res = m.predict(files, heatmaps=True)
    corrs = []
    for f, r in zip(files, res):
        x = torch.from_numpy(preprocess(read_image(f), cfg)[None])
        _, _, maps = model.forward_maps(x)
        maps = [mp.detach().requires_grad_(True) for mp in maps]  # Grad-CAM on the last feature layer(s)
        logit = model.classifier(torch.cat([mp.mean((2, 3)) for mp in maps], 1))[0, m.classes.index(r.finding)]
        logit.backward()
        size = maps[0].shape[-2:]
        # Grad-CAM per scale (channel weight = gradient summed over the map, i.e. d logit / d pooled value, so
        # that scales of different resolution are on one footing), scales summed, then ReLU
        grad_cam = torch.relu(sum(torch.nn.functional.interpolate(
            (mp.grad.sum((2, 3), keepdim=True) * mp).sum(1, keepdim=True), size=size, mode="nearest")
            for mp in maps))[0, 0].detach().numpy()
        corrs.append(correlation(grad_cam, r.heatmap))
    assert np.mean(corrs) >= 0.9, corrs
    from typer.testing import CliRunner as _R

    from edgecxr.cli import app

    out = _R().invoke(app, ["predict", str(files[0]), "--model", str(guarded_onnx), "--heatmaps", str(tmp_path / "h"),
                            "--no-guard"])
    assert out.exit_code == 0, out.output
    assert len(list((tmp_path / "h").glob("*.png"))) == 1 and len(list((tmp_path / "h").glob("*.npy"))) == 1


def _chest_dx_source():
    """pydicom's CT_small relabelled as a chest DX holding a shipped eval CXR: a DICOM source for the SR tests."""
    from PIL import Image

    src = pydicom.dcmread(pydicom.data.get_testdata_file("CT_small.dcm", download=False))
    src.Modality, src.BodyPartExamined, src.ViewPosition = "DX", "CHEST", "PA"
    g = np.asarray(Image.open(EVAL[0]).convert("L").resize((128, 128)), np.uint16) * 16
    src.PixelData, src.BitsStored, src.HighBit, src.PixelRepresentation = g.tobytes(), 12, 11, 0
    src.RescaleSlope, src.RescaleIntercept = 1, 0
    return src


def test_dicom_sr_round_trips(guarded_onnx, tmp_path):
    pytest.importorskip("highdicom", reason="highdicom not installed (pip install 'edgecxr[sr]')")
    import highdicom as hd
    from edgecxr.cli import app

    src = _chest_dx_source()
    p = tmp_path / "cxr.dcm"
    src.save_as(p)
    r = CliRunner().invoke(app, ["predict", str(p), "--model", str(guarded_onnx), "--sr", str(tmp_path / "sr"),
                                 "--json", "--no-guard"])
    assert r.exit_code == 0, r.output
    pred = json.loads([x for x in r.output.splitlines() if x.startswith("{")][0])
    out = tmp_path / "sr" / f"{src.SOPInstanceUID}.sr.dcm"
    sr = pydicom.dcmread(out)
    assert (sr.PatientID, sr.StudyInstanceUID) == (src.PatientID, src.StudyInstanceUID)
    assert sr.SeriesInstanceUID != src.SeriesInstanceUID and sr.Modality == "SR"
    assert src.SOPInstanceUID in str(sr)  # the source image is referenced
    hd.sr.srread(out)  # highdicom parses it back as an SR document

    def values(ds, acc):
        for item in ds.get("ContentSequence", []):
            name = item.ConceptNameCodeSequence[0].CodeMeaning
            if "TextValue" in item:
                acc.setdefault(name, []).append(str(item.TextValue))
            if "MeasuredValueSequence" in item:
                acc.setdefault(name, []).append(float(item.MeasuredValueSequence[0].NumericValue))
            if "ConceptCodeSequence" in item:
                acc.setdefault(name, []).append(item.ConceptCodeSequence[0].CodeMeaning)
            values(item, acc)
        return acc

    v = values(sr, {})
    assert pred["model"]["sha256"] in v["Algorithm Parameters"] and v["Input guard verdict"] == ["Input accepted"]
    assert v["Finding"] == [pred["finding"]]
    for cls, prob in pred["probabilities"].items():
        assert v[f"Probability of {cls}"][0] == pytest.approx(prob, abs=1e-5)


def test_dicom_sr_from_an_anonymised_source(guarded_onnx, tmp_path):
    """Anonymised and test-suite DICOM often lack Type 2 patient/study attributes or hold values highdicom refuses:
    every file got "no SR" before. Now the SR carries them empty (unknown) and keeps what is valid; a source without
    its Type 1 UIDs gets no SR and one line saying why, and the run still succeeds."""
    pytest.importorskip("highdicom", reason="highdicom not installed (pip install 'edgecxr[sr]')")
    from edgecxr.cli import app

    src = _chest_dx_source()
    for k in ("PatientBirthDate", "StudyTime", "AccessionNumber", "StudyID", "ReferringPhysicianName"):
        if k in src:
            delattr(src, k)
    src.PatientSex, src.StudyDate = "U", "2026-12-03"  # not DICOM values: "U" is no code, the date has dashes
    p = tmp_path / "anon.dcm"
    src.save_as(p)
    r = CliRunner().invoke(app, ["predict", str(p), "--model", str(guarded_onnx), "--sr", str(tmp_path / "sr"), "--no-guard"])
    assert r.exit_code == 0 and "no SR" not in r.output, r.output
    sr = pydicom.dcmread(tmp_path / "sr" / f"{src.SOPInstanceUID}.sr.dcm")
    assert sr.PatientID == src.PatientID and sr.PatientName == src.PatientName
    assert sr.PatientSex == "" and sr.StudyDate == "" and sr.PatientBirthDate == ""
    from edgecxr.runtime.sr import sr_source

    fixed = sr_source(src)  # and not the dataset in memory either
    assert fixed.PatientSex == "" and src.PatientSex == "U" and "PatientBirthDate" not in src
    assert "PixelData" in src and "PixelData" not in fixed

    del src.StudyInstanceUID
    q = tmp_path / "no-study-uid.dcm"
    src.save_as(q)
    r = CliRunner().invoke(app, ["predict", str(q), "--model", str(guarded_onnx), "--sr", str(tmp_path / "sr2"), "--no-guard"])
    assert r.exit_code == 0 and "no SR" in r.output and "StudyInstanceUID" in r.output, r.output


def test_op_target_trades_sensitivity_for_specificity():
    """A lower val sensitivity target keeps at least that sensitivity and never lowers the threshold or the
    specificity (synthetic scores: positives spread over the negatives' range)."""
    from edgecxr.train.calibrate import fit_operating_point

    rng = np.random.default_rng(0)
    classes = ["COVID-19", "Normal", "Pneumonia"]
    y = np.r_[np.zeros(40, int), np.ones(30, int), np.full(30, 2)]
    pos = np.r_[rng.uniform(0.05, 0.95, 40), rng.uniform(0.0, 0.6, 60)]
    probs = np.c_[pos, (1 - pos) / 2, (1 - pos) / 2]
    ops = {t: fit_operating_point(probs, y, classes, target_sensitivity=t) for t in (0.95, 0.8, 0.6)}
    for t, op in ops.items():
        assert op["target_sensitivity"] == t and op["val_sensitivity"] >= t
    assert ops[0.6]["threshold"] > ops[0.8]["threshold"] > ops[0.95]["threshold"]
    assert ops[0.6]["val_specificity"] > ops[0.95]["val_specificity"]


def test_calibrate_passes_op_target_to_the_fit(tiny_checkpoint, tmp_path, monkeypatch):
    """``edgecxr calibrate --op-target`` reaches the operating-point fit and the checkpoint; out-of-range targets are
    refused before any work."""
    import edgecxr.train.calibrate as cal
    from edgecxr.cli import app
    from edgecxr.data import load_samples

    seen = []
    real = cal.fit_operating_point
    monkeypatch.setattr(cal, "fit_operating_point", lambda *a, **k: seen.append(k["target_sensitivity"]) or real(*a, **k))
    ck = tmp_path / "t.safetensors"
    op = cal.calibrate(tiny_checkpoint, load_samples(calibration_dir())[::3], load_samples(val_dir())[::4], ck,
                       method="knn", op_target=0.8)["operating_point"]
    assert seen == [0.8] and op["target_sensitivity"] == 0.8
    from edgecxr.checkpoint import read_meta

    assert read_meta(ck)["operating_point"]["target_sensitivity"] == 0.8
    r = CliRunner().invoke(app, ["calibrate", str(tiny_checkpoint), str(tmp_path), "--out", str(tmp_path / "x.safetensors"),
                                 "--op-target", "0.3"])
    assert r.exit_code != 0 and "op-target" in r.output


@pytest.mark.parametrize("method", ["knn", "mahalanobis", "energy", "outlier", "combined"])
def test_every_guard_method_exports_and_matches_torch(tiny_checkpoint, tmp_path, method):
    from edgecxr.data import load_samples
    from edgecxr.export.core import export
    from edgecxr.runtime import load
    from edgecxr.train.calibrate import calibrate
    from edgecxr.train.evaluate import checkpoint_outputs

    ck = tmp_path / f"{method}.safetensors"
    calibrate(tiny_checkpoint, load_samples(calibration_dir())[:40], load_samples(val_dir())[:30], ck, method=method)
    res = export(ck, "onnx-fp32", out=tmp_path / "o")
    assert res.verified and res.sidecar.guard["method"] == method
    samples = load_samples(eval_dir())[:6]
    ref, _ = checkpoint_outputs(ck, samples)
    with load(res.artifact) as m:
        got = np.array([r.guard_score for r in m.predict([s.path for s in samples], )])
    np.testing.assert_allclose(got, ref["guard"].reshape(-1), rtol=1e-3, atol=1e-4)


def test_int8_keeps_the_guard_score(guarded_checkpoint, tmp_path):
    """INT8 quantizes the convolutions only: the guard's distance stays float and tracks FP32 (a quantized guard
    once collapsed to one constant score that still 'agreed' on CXRs)."""
    from edgecxr.export.core import export

    res = export(guarded_checkpoint, "onnx-int8", out=tmp_path)
    v = res.sidecar.verification
    assert v["guard_score_correlation"] >= 0.95, v.get("guard_score_correlation")
    import onnx

    ops = {n.op_type for n in onnx.load(str(res.artifact)).graph.node}
    assert "QLinearConv" in ops and "QLinearMatMul" not in ops


def test_int8_guard_nodes_stay_float(guarded_checkpoint, tmp_path):
    """The guard-only nodes are found from the graph (they feed no other output) and NNCF leaves them float (its
    mixed preset once quantized them: the shipped model's guard score then kept a correlation of 0.16 with FP32).
    Only the backbone feeding the guard is quantized."""
    from edgecxr.backends import backend_available
    from edgecxr.export.context import ExportContext
    from edgecxr.export.core import export
    from edgecxr.export.onnx_int8 import output_only_nodes
    from edgecxr.export.targets import load_target
    from edgecxr.resources import calibration_dir, verification_dirs

    ctx = ExportContext(guarded_checkpoint, [calibration_dir()], verification_dirs())
    fp32 = ctx.fp32_onnx(load_target("onnx-fp32"), tmp_path)
    import onnx

    g = onnx.load(str(fp32)).graph
    guard_nodes = set(output_only_nodes(fp32))
    kinds = {n.op_type for n in g.node if n.name in guard_nodes}
    assert next(n.name for n in g.node if "guard" in n.output) in guard_nodes
    assert len(guard_nodes) >= 3 and "Conv" not in kinds, kinds
    assert "Gemm" in {n.op_type for n in g.node if n.name in set(output_only_nodes(fp32, ("logits",)))}  # classifier
    if not backend_available("openvino"):
        pytest.skip("OpenVINO is not installed (extra 'openvino')")
    res = export(guarded_checkpoint, "openvino-int8", out=tmp_path / "ov", verify=False)
    import openvino as ov

    m = ov.Core().read_model(str(res.artifact))
    todo = [r.input_value(0).get_node() for r in m.get_results() if "guard" in r.input_value(0).get_names()]
    seen, quantized = set(), []
    while todo:  # walk back from the guard output to the first quantizer on each path
        n = todo.pop()
        if n.get_friendly_name() in seen:
            continue
        seen.add(n.get_friendly_name())
        if n.get_type_name() == "FakeQuantize":
            quantized.append(n.input_value(0).get_node().get_friendly_name())
            continue
        todo += [n.input_value(i).get_node() for i in range(n.get_input_size())]
    assert quantized, "no quantizer upstream of the guard: the backbone was not quantized"
    assert not guard_nodes & set(quantized), sorted(guard_nodes & set(quantized))


def test_mahalanobis_score_survives_bf16():
    """OpenVINO runs float parts in bf16 on AVX-512 BF16 CPUs: the graph's distance must not cancel there
    (|z|^2 - |p|^2 did: score correlation with FP32 0.24 on the shipped model)."""
    import torch

    from edgecxr.guard_torch import GuardedClassifier, fit_statistics, mahalanobis

    rng = np.random.default_rng(0)
    d, n = 512, 400
    basis = rng.standard_normal((16, d))
    def feats(k):  # features far from the origin, most variance in a few directions, as a CNN's are
        return 4.0 + rng.standard_normal((k, 16)) @ basis * 0.5 + 0.01 * rng.standard_normal((k, d))
    tr, y = feats(n), rng.integers(0, 3, n)
    st = fit_statistics(tr, y, 3, shrinkage=0.001, rank=16)  # the residual is small: |z|^2 ~ |p|^2
    test = np.concatenate([feats(100), feats(20) + 0.02 * rng.standard_normal((20, d))])
    ref = mahalanobis(test, st)
    g = GuardedClassifier(torch.nn.Identity(), {"method": "mahalanobis", "feature": "penultimate", **st})
    got = g.to(torch.bfloat16).score(torch.from_numpy(test).to(torch.bfloat16), None, None).float().numpy()
    assert np.corrcoef(ref, got)[0, 1] > 0.99


def test_damaged_copies_and_outlier_head():
    """The outlier-exposure head: its folded (center, weight, bias) score equals the logistic regression's logit,
    and damaged copies are what they say (rotated, flipped, inverted, cut)."""
    pytest.importorskip("sklearn", reason="scikit-learn not installed (extra 'train')")
    from edgecxr.guard_torch import fit_outlier_head, outlier_score
    from edgecxr.train.calibrate import DAMAGES, damaged_copy

    rng = np.random.default_rng(0)
    g = rng.random((40, 30)).astype(np.float32)
    r = damaged_copy(g, "rotate", rng)
    assert any(r.shape == np.rot90(g, k).shape and np.array_equal(r, np.rot90(g, k)) for k in (1, 2, 3))
    np.testing.assert_array_equal(damaged_copy(g, "flip", rng), g[::-1])
    np.testing.assert_allclose(damaged_copy(g, "invert", rng) + g, g.max() + g.min())
    for kind in ("half", "crop"):
        c = damaged_copy(g, kind, rng)
        assert c.size < g.size and c.shape[0] >= 8 and c.shape[1] >= 8
    with pytest.raises(ValueError):
        damaged_copy(g, "blur", rng)
    assert set(DAMAGES) == {"rotate", "flip", "invert", "half", "crop"}
    pos = rng.normal(0, 1, (80, 12)) + 5
    neg = rng.normal(0, 1, (80, 12)) + 5 + np.r_[2.0, np.zeros(11)]
    head = fit_outlier_head(pos[:60], neg[:60], pos[60:], neg[60:])
    assert head["val_auroc_damaged"] > 0.8
    s_pos, s_neg = outlier_score(pos[60:], head), outlier_score(neg[60:], head)
    assert s_neg.mean() > s_pos.mean()
    assert head["C"] in (0.01, 0.03, 0.1, 0.3, 1.0)


def test_combined_guard_limits_come_from_cross_fitted_scores():
    """``combined``: each part rescaled so its limit is 1; the distance's limit is the largest pooled in-distribution
    score, so no val image is refused by the distance alone, and a far-away input is refused by it."""
    from edgecxr.guard_torch import combined_score, fit_combined, mahalanobis, outlier_score

    rng = np.random.default_rng(0)
    tr, val = rng.normal(size=(120, 8)), rng.normal(size=(40, 8))
    y = np.arange(120) % 3
    damaged = rng.normal(size=(60, 8)) + np.r_[3.0, np.zeros(7)]  # damaged copies shift along one axis
    g = fit_combined(tr, y, damaged, np.arange(0, 120, 2), val, rng.normal(size=(40, 8)) + np.r_[3.0, np.zeros(7)], 3)
    assert g["pooled_scores"] == 160
    m_val = (mahalanobis(val, g) - g["m_ref"]) / g["m_scale"]
    assert m_val.max() <= 1.0 + 1e-9
    o = (outlier_score(val, g) - g["o_ref"]) / g["o_scale"]
    np.testing.assert_allclose(combined_score(val, g), np.maximum(o, m_val))
    assert np.mean(combined_score(val, g) <= 1.0) >= 0.95
    far = rng.normal(size=(5, 8)) * 20
    assert np.all(combined_score(far, g) > 1.0)
