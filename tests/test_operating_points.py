"""benchmarks/operating_points.py: a research run's operating point fitted on its val predictions, applied to test."""
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from edgecxr.train.calibrate import fit_operating_point, fit_temperature

CLASSES = ["COVID-19", "Normal", "Pneumonia"]


def _module():
    spec = importlib.util.spec_from_file_location(
        "operating_points", Path(__file__).parents[1] / "benchmarks" / "operating_points.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _eval(path: Path, rows: list[tuple[str, str, list[float]]]) -> Path:
    """An eval.json as `edgecxr eval` writes it, reduced to what the script reads."""
    path.mkdir(parents=True)
    preds = [{"file": f"x/{i:03d}-{src}.png", "label": label, "prob": prob, "source": src}
             for i, (label, src, prob) in enumerate(rows)]
    (path / "eval.json").write_text(json.dumps({"classes": CLASSES, "predictions": preds}))
    return path / "eval.json"


def _split(rng: np.random.Generator, n: int = 12) -> list[tuple[str, str, list[float]]]:
    """COVID-19 images from two sources, one of which ("hard") the argmax misses as Pneumonia, though its COVID-19
    score still ranks above every non-COVID-19 image's; Normal and Pneumonia called right."""
    rows = []
    for _ in range(n):
        rows.append(("COVID-19", "easy", list(rng.dirichlet([30, 2, 2]))))
        p = rng.uniform(0.25, 0.3)
        rows.append(("COVID-19", "hard", [p, 0.05, 0.95 - p]))
        rows.append(("Normal", "nih", list(rng.dirichlet([1, 30, 3]))))
        rows.append(("Pneumonia", "nih", list(rng.dirichlet([1, 3, 30]))))
    return rows


def test_operating_point_is_the_calibrate_rule_and_finds_what_the_argmax_misses(tmp_path):
    op = _module()
    rng = np.random.default_rng(0)
    val_rows, test_rows = _split(rng), _split(rng)
    val = _eval(tmp_path / "val", val_rows)
    test = _eval(tmp_path / "test", test_rows)
    argmax, at_op, fit, correct = op.one_run(val, test, target=0.95, margin=0.15)
    # the same temperature and threshold as `edgecxr calibrate` fits on these val probabilities
    _, yv, pv, _ = op.load(val)
    t = fit_temperature(np.log(pv), yv)
    from edgecxr.runtime.batching import softmax
    ref = fit_operating_point(softmax(np.log(pv) / t), yv, CLASSES, margin=0.15)
    assert fit["temperature"] == pytest.approx(t)
    assert fit["threshold"] == pytest.approx(ref["threshold"])
    # the argmax misses every hard COVID-19 image; the operating point finds them, and calls no Normal COVID-19
    assert argmax["COVID-19 sensitivity hard"] == 0.0
    assert at_op["COVID-19 sensitivity hard"] == 1.0
    assert at_op["Normal sensitivity"] == 1.0
    assert at_op["accuracy"] == pytest.approx(correct.mean()) and at_op["accuracy"] > argmax["accuracy"]
    assert fit["test_auc"] == pytest.approx(1.0)
    assert sorted(fit["test_auc_by_source"]) == ["easy", "hard"]  # sources with COVID-19 images only
    assert op.auc_by_source(np.array([0, 0, 1, 1]), np.array([[0.9, 0.1, 0], [0.2, 0.8, 0], [0.5, 0.5, 0],
                                                                [0.1, 0.9, 0]]), ["a", "b", "n", "n"], 0) == \
        {"a": 1.0, "b": 0.5}  # b's one COVID-19 image outranks one of the two non-COVID-19 images


def test_a_target_only_a_zero_threshold_reaches_and_permissive_test_drops_images(tmp_path):
    op = _module()
    rng = np.random.default_rng(1)
    rows = _split(rng)
    # a val COVID-19 image scored below every other image: 95% sensitivity needs a threshold of 0 on val
    val = _eval(tmp_path / "val", rows + [("COVID-19", "hard", [0.0, 0.5, 0.5])] * 30)
    test = _eval(tmp_path / "test", rows)
    argmax, at_op, fit, _ = op.one_run(val, test, target=0.99, margin=0.0)
    assert fit["threshold"] < 0.05 and at_op["non-COVID-19 called COVID-19"] == 1.0  # its price, reported
    assert argmax["non-COVID-19 called COVID-19"] == 0.0
    _, y_all, _, _ = op.load(test)
    _, y_kept, _, src = op.load(test, drop={f"{i:03d}-hard.png" for i in range(200)})
    assert len(y_kept) == len(y_all) - 12 and "hard" not in src
    manifest = tmp_path / "MANIFEST.csv"
    manifest.write_text("file,non_commercial_only\ntrain/a/001-hard.png,yes\ntrain/b/002-nih.png,no\n")
    assert op.non_commercial(manifest) == {"001-hard.png"}


def test_offset_bound_finds_the_prior_shift_that_fixes_a_biased_model(tmp_path):
    """Every Pneumonia image scored a little below Normal: the argmax misses them all, one offset fixes every one."""
    op = _module()
    rows = [("Normal", "nih", [0.1, 0.6, 0.3])] * 5 + [("Pneumonia", "nih", [0.1, 0.5, 0.4])] * 5 \
        + [("COVID-19", "x", [0.7, 0.2, 0.1])] * 5
    test = _eval(tmp_path / "test", rows)
    _, y, p, _ = op.load(test)
    assert np.mean(p.argmax(1) == y) == pytest.approx(2 / 3)
    assert op.offset_bound(y, p) == pytest.approx(1.0)
    assert op.offset_bound(y, p, span=0.1, steps=3) == pytest.approx(2 / 3)  # log(0.5/0.4) = 0.22 is out of reach


def test_fit_without_keeps_a_left_out_source_from_setting_the_threshold(tmp_path):
    """A source left out of training must not set the threshold it is tested at: without its val images the
    threshold is fitted on the others alone, and sits higher when that source scores lowest."""
    op = _module()
    rng = np.random.default_rng(2)
    val = _eval(tmp_path / "val", _split(rng))
    test = _eval(tmp_path / "test", _split(rng))
    _, _, with_it, _ = op.one_run(val, test, target=0.95, margin=0.0)
    _, at_op, without, _ = op.one_run(val, test, target=0.95, margin=0.0, fit_without={"hard"})
    assert without["threshold"] > 0.3 > with_it["threshold"]  # the "easy" COVID-19 images score >= 0.5 or so
    assert at_op["COVID-19 sensitivity hard"] == 0.0 and at_op["COVID-19 sensitivity easy"] == 1.0
