import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch not installed")

from edgecxr.data import load_samples  # noqa: E402
from edgecxr.resources import calibration_dir, eval_dir  # noqa: E402
from edgecxr.train.loop import TrainConfig, train  # noqa: E402


@pytest.fixture(scope="module")
def tiny_sets():
    tr = load_samples(calibration_dir())[::10]
    va = load_samples(eval_dir())[::12]
    return tr, va


def test_train_checkpoint_resume_and_eval(tmp_path, tiny_sets):
    tr, va = tiny_sets
    cfg = TrainConfig(arch="densenet121", epochs=2, batch_size=4, size=32, max_steps=None, balanced=True)
    out = tmp_path / "run"
    s1 = train(cfg, tr, va, out, progress=False)
    assert s1["epochs"] == 2
    for f in ("last.pt", "best.safetensors", "best.json", "metrics.json", "metrics.csv", "curves.png"):
        assert (out / f).is_file(), f
    hist = json.loads((out / "metrics.json").read_text())
    assert [h["epoch"] for h in hist] == [1, 2]
    where = json.loads((out / "best.json").read_text())["trained_on"]  # CPU and GPU seeds differ numerically
    assert where["device"] == "cpu" and where["autocast"] in ("bfloat16", "fp32") and where["torch"] == torch.__version__
    from edgecxr.train.curves import main as curves_main, read_history

    assert [h["epoch"] for h in read_history(out / "metrics.csv")] == [1.0, 2.0]
    assert curves_main([str(out / "metrics.csv"), "--out", str(tmp_path / "c.png")]) == 0
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert curves_main([str(tmp_path / "missing.csv")]) == 2
    # resume: asking for 3 epochs continues from epoch 3 without redoing 1-2
    cfg3 = TrainConfig(**{**cfg.__dict__, "epochs": 3})
    s3 = train(cfg3, tr, va, out, progress=False)
    assert [h["epoch"] for h in s3["history"]] == [1, 2, 3]
    assert s3["history"][:2] == hist

    from edgecxr.train.evaluate import evaluate_checkpoint, write_report

    res = evaluate_checkpoint(out / "best.safetensors", va, n_boot=50)
    assert res["n_images"] == len(va) and 0 <= res["image"]["accuracy"] <= 1
    write_report(res, tmp_path / "rep")
    assert (tmp_path / "rep" / "confusion.png").stat().st_size > 1000
    assert "95% bootstrap" in (tmp_path / "rep" / "eval.md").read_text()


@pytest.mark.parametrize("mixup", [0.0, 0.4])
def test_resume_equals_uninterrupted(tmp_path, tiny_sets, mixup):
    tr, va = tiny_sets
    cfg = TrainConfig(arch="densenet121", epochs=2, batch_size=4, size=32, seed=3, mixup=mixup)
    train(cfg, tr, va, tmp_path / "a", progress=False)
    steps_per_epoch = len(tr) // 4
    # "interrupted" after the first epoch, then resumed
    train(TrainConfig(**{**cfg.__dict__, "max_steps": steps_per_epoch}), tr, va, tmp_path / "b", progress=False)
    assert len(json.loads((tmp_path / "b" / "metrics.json").read_text())) == 1
    train(cfg, tr, va, tmp_path / "b", progress=False)
    a = json.loads((tmp_path / "a" / "metrics.json").read_text())
    b = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert [h["epoch"] for h in b] == [1, 2]
    assert [h["train_loss"] for h in a] == pytest.approx([h["train_loss"] for h in b], rel=1e-4)
    assert [h["val_accuracy"] for h in a] == [h["val_accuracy"] for h in b]
    if mixup:  # the blend is applied: same seed without MixUp trains on other inputs and targets
        plain = train(TrainConfig(**{**cfg.__dict__, "mixup": 0.0}), tr, va, tmp_path / "c", progress=False)
        assert plain["history"][0]["train_loss"] != pytest.approx(a[0]["train_loss"], rel=1e-3)
        assert json.loads((tmp_path / "a" / "best.json").read_text())["train_config"]["mixup"] == mixup


def test_resume_on_another_machine_keeps_where_the_first_epochs_ran(tmp_path, tiny_sets):
    tr, va = tiny_sets
    cfg = TrainConfig(arch="densenet121", epochs=2, batch_size=4, size=32, seed=1)
    out = tmp_path / "run"
    train(TrainConfig(**{**cfg.__dict__, "max_steps": len(tr) // 4}), tr, va, out, progress=False)
    st = torch.load(out / "last.pt", weights_only=False)
    assert st["meta"]["trained_on"]["device"] == "cpu"
    st["meta"]["trained_on"] = {"device": "cuda", "name": "NVIDIA H200", "autocast": "float16"}  # as if epoch 1 ran there
    torch.save(st, out / "last.pt")
    train(cfg, tr, va, out, progress=False)
    where = torch.load(out / "last.pt", weights_only=False)["meta"]["trained_on"]
    assert where["device"] == "cpu" and where["earlier_epochs_on"]["name"] == "NVIDIA H200"


def _split_folder(root: Path) -> Path:
    for split, src in (("train", calibration_dir()), ("val", eval_dir())):
        for c in ("COVID-19", "Normal", "Pneumonia"):
            d = root / split / c
            d.mkdir(parents=True)
            for f in sorted((src / c).glob("*.png"))[:3]:
                shutil.copy(f, d / f.name)
    return root


@pytest.mark.skipif(shutil.which("torchrun") is None and not (Path(sys.executable).parent / "torchrun").exists(),
                    reason="torchrun not found")
def test_ddp_two_cpu_processes_gloo(tmp_path):
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [torchrun, "--standalone", "--nproc_per_node", "2", "-m", "edgecxr.cli", "train", str(_split_folder(tmp_path / "data")),
           "--arch", "densenet121", "--size", "32", "--batch", "2", "--epochs", "1", "--max-steps", "1",
           "--out", str(tmp_path / "ddp")]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert (tmp_path / "ddp" / "best.safetensors").is_file()


def _val_probs(seed: int, n: int, separation: float) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Labels and softmax probabilities of a noisy 3-class classifier, standing in for val outputs."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    logits = rng.normal(size=(n, 3)) + separation * np.eye(3)[y]
    return ["COVID-19", "Normal", "Pneumonia"], y, np.exp(logits) / np.exp(logits).sum(1, keepdims=True)


def test_operating_point_lies_between_val_scores():
    """The operating point keeps the target val sensitivity with no val score on the threshold itself (a score
    there would flip under any numeric change of an exported engine)."""
    from edgecxr.train.calibrate import finding_at, fit_operating_point

    classes, y, probs = _val_probs(seed=0, n=200, separation=1.5)
    op = fit_operating_point(probs, y, classes, "COVID-19", 0.95)
    t = op["threshold"]
    assert op["val_sensitivity"] >= 0.95 and not np.any(np.isclose(probs[:, 0], t, rtol=0, atol=1e-9))
    assert op["val_score_below"] < t < op["val_score_kept"]
    f = finding_at(probs, classes, "COVID-19", t)
    assert np.mean(f[y == 0] == 0) == op["val_sensitivity"]
    # the highest such threshold: keeping one positive fewer misses the target
    assert np.mean(probs[y == 0, 0] > op["val_score_kept"]) < 0.95


def test_operating_point_margin_leaves_room_for_every_kept_positive():
    """With a margin, every val positive the threshold keeps sits that many log-odds above it, and the threshold
    is never higher than without one (it only trades specificity for room)."""
    from edgecxr.train.calibrate import _logit, fit_operating_point

    classes, y, probs = _val_probs(seed=1, n=300, separation=1.2)
    plain = fit_operating_point(probs, y, classes, "COVID-19", 0.95)
    op = fit_operating_point(probs, y, classes, "COVID-19", 0.95, margin=0.3)
    t = op["threshold"]
    kept = probs[(y == 0) & (probs[:, 0] >= t), 0]
    assert t < plain["threshold"] and op["without_margin"]["threshold"] == plain["threshold"]
    assert min(_logit(p) - _logit(t) for p in kept) >= 0.3 - 1e-6
    assert op["val_sensitivity"] >= plain["val_sensitivity"] and op["val_specificity"] <= plain["val_specificity"]
    # tight: the lowest kept positive sits exactly at the margin
    assert abs(_logit(op["val_score_kept"]) - _logit(t) - 0.3) < 1e-6


def test_finding_flips_catch_a_threshold_crossing_that_argmax_misses():
    from edgecxr.train.evaluate import finding_flips

    classes = ["COVID-19", "Normal", "Pneumonia"]
    op = {"positive_class": "COVID-19", "threshold": 0.05, "temperature": 1.0}
    ref = np.log(np.array([[0.06, 0.34, 0.60], [0.80, 0.10, 0.10], [0.01, 0.90, 0.09]]))
    new = np.log(np.array([[0.04, 0.34, 0.62], [0.79, 0.11, 0.10], [0.01, 0.88, 0.11]]))  # same argmax everywhere
    assert (ref.argmax(1) == new.argmax(1)).all()
    r = finding_flips(ref, new, classes, op, ["a", "b", "c"])
    assert r["flips"] == 1 and r["flipped"] == [{"file": "a", "reference": "COVID-19", "this": "Pneumonia"}]
    assert abs(r["finding_agreement"] - 2 / 3) < 1e-12 and r["flip_rate_ci95"][0] > 0
    # the temperature is applied before the threshold: sharpened (T = 0.5), 0.06 falls below 0.05 too, no flip left
    assert finding_flips(ref, new, classes, dict(op, temperature=0.5), list("abc"))["flips"] == 0


def test_report_lists_the_flips_against_the_reference_at_argmax_and_operating_point():
    import json
    from pathlib import Path

    from edgecxr.train.evaluate import markdown_report

    res = json.loads((Path(__file__).parents[1] / "benchmarks/results/eval-onnx-int8-76fa283b-vs-fp32-epyc/eval.json")
                     .read_text())
    ref = res["reference"]
    ref["flipped"] = [{"file": "x.png", "reference": "Normal", "this": "COVID-19"}]
    ref["operating_point"]["flipped"] = [{"file": "y.dcm", "reference": "COVID-19", "this": "Pneumonia"}]
    md = markdown_report(res)
    argmax, op = md.split("**vs reference at the operating point**")
    assert f"agreement {100 * ref['agreement']:.2f}% ({ref['flips']} flips" in argmax
    assert "- x.png: Normal -> COVID-19" in argmax
    assert "- y.dcm: COVID-19 -> Pneumonia" in op and "x.png" not in op
    assert f"agreement {100 * ref['operating_point']['finding_agreement']:.2f}%" in op


def test_shortcut_masks_keep_and_remove_the_right_pixels():
    from edgecxr.train.shortcuts import masked

    g = np.random.default_rng(0).random((50, 50)).astype(np.float32)
    b = 5
    nb, lo, bl, zo = (masked(g, m, 0.1) for m in ("no-border", "lungs-out", "blank", "zoom"))
    assert np.array_equal(nb[b:-b, b:-b], g[b:-b, b:-b]) and np.allclose(nb[:b], g.mean())
    assert np.array_equal(lo[:b], g[:b]) and np.allclose(lo[b:-b, b:-b], g.mean())
    assert np.allclose(bl, g.mean()) and zo.shape == g.shape
    assert np.array_equal(masked(g, "whole"), g)
    with pytest.raises(ValueError, match="unknown mask"):
        masked(g, "lungs-only")


class _RegionReader(torch.nn.Module):
    """Logits from the mean of one region of the input only: the lungs (centre) or the film's edge (band)."""

    def __init__(self, region: str, b: int) -> None:
        super().__init__()
        self.region, self.b = region, b

    def forward(self, x):
        c = x[:, 0]
        inner = torch.zeros_like(c, dtype=torch.bool)
        inner[:, self.b : -self.b, self.b : -self.b] = True
        keep = inner if self.region == "centre" else ~inner
        m = (c * keep).sum((1, 2)) / keep.sum((1, 2))
        return torch.stack([torch.sin(9 * m), torch.cos(9 * m), torch.sin(5 * m + 1)], 1)


@pytest.mark.parametrize("region", ["centre", "band"])
def test_shortcut_probe_tells_a_lung_reader_from_a_border_reader(monkeypatch, region):
    import edgecxr.checkpoint
    from edgecxr.preprocess import PreprocessConfig
    from edgecxr.train.shortcuts import shortcut_probe

    meta = {"arch": "test", "classes": ["COVID-19", "Normal", "Pneumonia"], "preprocess": PreprocessConfig(size=40).to_dict()}
    monkeypatch.setattr(edgecxr.checkpoint, "load_model", lambda path: (_RegionReader(region, 4), dict(meta)))
    samples = load_samples(eval_dir())[::6]
    res = shortcut_probe(Path("unused.safetensors"), samples, band=0.1)
    pred = {m: [p[m] for p in res["predictions"]] for m in res["masks"]}
    assert set(res["masks"]) == {"whole", "zoom", "no-border", "lungs-out", "blank"}
    assert len(set(pred["whole"])) > 1  # the reader is not constant, so the equalities below say something
    if region == "centre":  # a model that reads the lungs ignores what is done to the border
        assert pred["no-border"] == pred["whole"] and pred["lungs-out"] == pred["blank"]
    else:
        assert pred["lungs-out"] == pred["whole"] and pred["no-border"] == pred["blank"]
    assert res["masks"]["whole"]["accuracy"] == pytest.approx(
        np.mean([p["whole"] == p["label"] for p in res["predictions"]]))


def test_eval_shortcut_probe_cli(tmp_path, tiny_checkpoint, onnx_artifact):
    from typer.testing import CliRunner

    from edgecxr.cli import app

    r = CliRunner().invoke(app, ["eval", str(tiny_checkpoint), str(eval_dir()), "--split", "all", "--shortcut-probe",
                                 "--n-boot", "20", "--out", str(tmp_path / "e")])
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "e" / "eval.json").read_text())
    whole = [p["whole"] for p in res["shortcut_probe"]["predictions"]]
    assert whole == [res["classes"][int(np.argmax(p["prob"]))] for p in res["predictions"]]  # same input as eval's
    assert "shortcut probe" in (tmp_path / "e" / "eval.md").read_text()
    r = CliRunner().invoke(app, ["eval", str(onnx_artifact), str(eval_dir()), "--shortcut-probe"])
    assert r.exit_code != 0 and "needs a checkpoint" in r.output


def test_train_exclude_source_drops_only_training_images_of_that_source(tmp_path):
    """--exclude-source leaves one source out of training (val keeps it) and records it; an unknown one is refused."""
    from typer.testing import CliRunner

    from edgecxr.cli import app

    rows = ["file,split,class,source,patient_id"]
    for split, src in (("train", calibration_dir()), ("val", eval_dir())):
        for c in ("COVID-19", "Normal", "Pneumonia"):
            for i, f in enumerate(sorted((src / c).glob("*.png"))[:4]):
                rows.append(f"{f},{split},{c},{'b' if c == 'COVID-19' and i % 2 else 'a'},{split}-{c}-{i}")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    base = ["train", str(tmp_path / "m.csv"), "--arch", "densenet121", "--size", "32", "--batch", "4", "--epochs", "1",
            "--max-steps", "1"]
    r = CliRunner().invoke(app, base + ["--exclude-source", "nope", "--out", str(tmp_path / "bad")])
    assert r.exit_code != 0 and "nope" in r.output and not (tmp_path / "bad").exists()
    r = CliRunner().invoke(app, base + ["--exclude-source", "a", "--exclude-source", "b", "--out", str(tmp_path / "none")])
    assert r.exit_code != 0 and "no training image of" in r.output and not (tmp_path / "none").exists()
    r = CliRunner().invoke(app, base + ["--exclude-source", "b", "--out", str(tmp_path / "run")])
    assert r.exit_code == 0, r.output
    best = json.loads((tmp_path / "run" / "best.json").read_text())
    data = best["data"]
    assert data["excluded_training_sources"] == ["b"]
    assert best["train_config"]["select_without"] == ["b"]  # the left-out source does not choose the checkpoint
    assert data["n_train"] == 10 and data["n_val"] == 12  # two of the twelve training images were source b
    # every val image from the left-out source: nothing left to choose the checkpoint on, refused before training
    (tmp_path / "m2.csv").write_text("\n".join(
        r if r.startswith("file") or ",train," in r else ",".join(r.split(",")[:3] + ["b"] + r.split(",")[4:])
        for r in rows) + "\n")
    base2 = [str(tmp_path / "m2.csv") if a == str(tmp_path / "m.csv") else a for a in base]
    r = CliRunner().invoke(app, base2 + ["--exclude-source", "b", "--out", str(tmp_path / "noval")])
    assert r.exit_code != 0 and "leaves no val image" in r.output and not (tmp_path / "noval").exists()


def test_class_weighted_loss_weights_are_inverse_frequencies(tmp_path, tiny_sets):
    from collections import Counter

    from edgecxr.train.loop import TrainConfig, build_run

    tr, va = tiny_sets
    classes = ["COVID-19", "Normal", "Pneumonia"]
    run = build_run(TrainConfig(arch="densenet121", size=32, class_weighted_loss=True, classes=classes), tr, va, tmp_path)
    n = Counter(s.label for s in tr)
    want = torch.tensor([len(tr) / (3 * n[c]) for c in classes])
    assert torch.allclose(run.loss_fn.weight.cpu(), want)
    assert (run.loss_fn.weight * torch.tensor([float(n[c]) for c in classes])).std() < 1e-4  # each class weighs the same
    assert build_run(TrainConfig(arch="densenet121", size=32, classes=classes), tr, va, tmp_path / "b").loss_fn.weight is None
    with pytest.raises(ValueError, match="Pneumonia"):
        build_run(TrainConfig(arch="densenet121", size=32, class_weighted_loss=True, classes=classes),
                  [s for s in tr if s.label != "Pneumonia"], va, tmp_path / "c")


def test_selection_score_leaves_out_the_sources_named_in_select_without(tmp_path, tiny_sets):
    """A source left out of training must not choose the checkpoint: validate() scores the other val images only,
    and still logs every val image."""
    from dataclasses import replace

    from edgecxr.metrics import point_metrics
    from edgecxr.train.loop import build_run, predict_probs, selection_score, validate

    tr, va = tiny_sets
    va = [replace(s, source="b" if i % 3 == 0 else "a") for i, s in enumerate(va)]
    classes = ["COVID-19", "Normal", "Pneumonia"]
    run = build_run(TrainConfig(arch="densenet121", size=32, classes=classes, select_without=["b"]), tr, va, tmp_path)
    probs, ys = predict_probs(run.eval_model, run.val_dl, run.device)
    keep = np.array([s.source == "a" for s in va])
    vm, score, sens = validate(run)
    assert vm["n"] == len(va) and vm["accuracy"] == point_metrics(ys, probs, classes)["accuracy"]  # every val image
    assert any(k.endswith("_b") for k in sens)
    want = selection_score("macro_f1", point_metrics(ys[keep], probs[keep], classes), ys[keep], probs[keep], classes,
                           ["a"] * int(keep.sum()))
    assert score == pytest.approx(want)
    assert score != pytest.approx(selection_score("macro_f1", vm, ys, probs, classes, [s.source for s in va]))
