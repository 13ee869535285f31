import numpy as np
import pytest

from edgecxr.metrics import (agreement, auc_binary, bootstrap_ci, evaluate, mcnemar_exact, point_metrics,
                             wilson_ci)


def test_auc_known_values():
    assert auc_binary(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.8, 0.9])) == 1.0
    assert auc_binary(np.array([0, 0, 1, 1]), np.array([0.9, 0.8, 0.2, 0.1])) == 0.0
    assert auc_binary(np.array([0, 1]), np.array([0.5, 0.5])) == 0.5
    assert auc_binary(np.array([0, 1, 0, 1]), np.array([0.1, 0.4, 0.5, 0.8])) == 0.75


def test_point_metrics_confusion():
    y = np.array([0, 0, 1, 1, 2, 2])
    p = np.eye(3)[[0, 1, 1, 1, 2, 0]]
    m = point_metrics(y, p, ["a", "b", "c"])
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["confusion"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert m["per_class"]["a"]["sensitivity"] == 0.5
    assert m["per_class"]["b"]["specificity"] == pytest.approx(3 / 4)
    assert m["per_class"]["b"]["ppv"] == pytest.approx(2 / 3)


def test_bootstrap_interval_brackets_point():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 200)
    p = np.eye(3)[np.where(rng.random(200) < 0.8, y, (y + 1) % 3)] * 0.8 + 0.1
    ci = bootstrap_ci(y, p, ["a", "b", "c"], n_boot=200)
    acc = point_metrics(y, p, ["a", "b", "c"])["accuracy"]
    assert ci["accuracy"][0] < acc < ci["accuracy"][1]
    assert ci["accuracy"][1] - ci["accuracy"][0] < 0.2


def test_per_patient_aggregation():
    y = np.array([0, 0, 1])
    p = np.array([[0.6, 0.4], [0.3, 0.7], [0.2, 0.8]])
    res = evaluate(y, p, ["a", "b"], groups=["g1", "g1", "g2"], n_boot=20)
    assert res["patient"]["n"] == 2
    assert res["patient"]["confusion"] == [[0, 1], [0, 1]]  # mean of g1 = [0.45, 0.55]


def test_mcnemar_and_wilson():
    a = np.array([1] * 10 + [0] * 0 + [1] * 5, bool)
    b = np.array([0] * 10 + [1] * 5, bool)
    r = mcnemar_exact(a, b)
    assert (r["a_only"], r["b_only"]) == (10, 0)
    assert r["p_value"] == pytest.approx(2 / 1024)
    assert mcnemar_exact(a, a)["p_value"] == 1.0
    lo, hi = wilson_ci(90, 100)
    assert 0.82 < lo < 0.9 < hi < 0.95
    assert agreement(np.array([1, 2, 3]), np.array([1, 2, 0])) == pytest.approx(2 / 3)


def test_seed_pairs_pooled_by_image():
    """benchmarks/seeds.py: all seed pairs at once, image by image (bootstrap interval and sign-flip permutation p)."""
    pytest.importorskip("scipy", reason="scipy comes with the openvino extra (NNCF); the pooled test needs it")
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("seeds", Path(__file__).parents[1] / "benchmarks" / "seeds.py")
    seeds = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(seeds)
    same = seeds.pooled(np.zeros(50))
    assert same["mean"] == same["lo"] == same["hi"] == 0 and same["p_value"] == 1.0
    better = seeds.pooled(np.r_[np.ones(20), np.zeros(30)])  # A right on 20 images where B is wrong, never the reverse
    assert better["mean"] == pytest.approx(40.0)
    assert 0 < better["lo"] < 40 < better["hi"] and better["p_value"] < 1e-4
    mixed = seeds.pooled(np.r_[np.ones(10), -np.ones(10), np.zeros(30)])
    assert mixed["lo"] < 0 < mixed["hi"] and mixed["p_value"] > 0.5


def test_seeds_filter_keeps_only_the_named_seeds(tmp_path, monkeypatch):
    """benchmarks/seeds.py --seeds: the runs of the named seeds only (e.g. those trained on one kind of machine)."""
    import importlib.util
    import json
    import sys
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("seeds", Path(__file__).parents[1] / "benchmarks" / "seeds.py")
    seeds = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(seeds)
    for s in (0, 1, 4):
        d = tmp_path / f"research-densenet121-e60-s{s}-eval-test"
        d.mkdir()
        (d / "eval.json").write_text(json.dumps({"seed": s}))
    assert sorted(seeds.runs(tmp_path, "research", "densenet121-e60", "test")) == [0, 1, 4]
    monkeypatch.setattr(sys, "argv", ["seeds.py", str(tmp_path), "research", "test", "-e60", "--seeds", "4,9"])
    monkeypatch.setattr(seeds, "summary", lambda *a, **k: ["stub"])  # main parses, then summarises what runs() finds
    seeds.main()
    assert seeds.SEED_FILTER == {4, 9}
    assert list(seeds.runs(tmp_path, "research", "densenet121-e60", "test")) == [4]


def test_seeds_verdict_counts_pairs_and_sides(tmp_path):
    """benchmarks/seeds.py verdict(): the sentence the model card prints about the two architectures over seeds."""
    pytest.importorskip("scipy", reason="scipy comes with the openvino extra (NNCF); the pooled test needs it")
    import importlib.util
    import json
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("seeds", Path(__file__).parents[1] / "benchmarks" / "seeds.py")
    seeds = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(seeds)
    classes = ["COVID-19", "Normal"]

    def write(arch, seed, split, right):  # 40 images; the first `right` are predicted correctly
        preds = [{"file": f"img{i:02d}.png", "label": "COVID-19", "prob": [0.9, 0.1] if i < right else [0.1, 0.9]}
                 for i in range(40)]
        d = tmp_path / f"research-{arch}-e60-s{seed}-eval-{split}"
        d.mkdir()
        (d / "eval.json").write_text(json.dumps({"classes": classes, "predictions": preds}))

    for seed, (a_test, b_test, a_val, b_val) in enumerate([(30, 30, 30, 20), (32, 30, 25, 25)]):
        write("covid-densenet", seed, "test", a_test)
        write("densenet121", seed, "test", b_test)
        write("covid-densenet", seed, "val", a_val)
        write("densenet121", seed, "val", b_val)
    v = seeds.verdict(tmp_path)
    assert v.startswith("2 seed pairs; dev test means 2.5 points apart (77.5% Covid-DenseNet, 75.0% DenseNet121)")
    assert "1 seed pair at p < 0.05" in v  # val seed 0: 10 images right only with Covid-DenseNet, none the reverse
    assert "Covid-DenseNet ahead in 1, DenseNet121 in 0, tied in 1" in v
    assert "image by image +2.5 points" in v


def test_seeds_by_machine_groups_runs_by_training_device(tmp_path):
    """benchmarks/seeds.py --by-machine: accuracy per training device (config's trained_on; none recorded: CPU)."""
    pytest.importorskip("scipy", reason="scipy comes with the openvino extra (NNCF); the U test needs it")
    import importlib.util
    import json
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("seeds", Path(__file__).parents[1] / "benchmarks" / "seeds.py")
    seeds = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(seeds)
    for seed, acc, dev in [(0, 0.70, None), (1, 0.72, "cpu"), (2, 0.90, "cuda"), (3, 0.92, "cuda")]:
        d = tmp_path / f"research-densenet121-e60-s{seed}-eval-test"
        d.mkdir()
        (d / "eval.json").write_text(json.dumps({"image": {"accuracy": acc}}))
        cfg = {"trained_on": {"device": dev}} if dev else {}
        (tmp_path / f"research-densenet121-e60-s{seed}-config.json").write_text(json.dumps(cfg))
    lines = seeds.by_machine(tmp_path, "research", "test", "-e60")
    assert lines[0].endswith("cpu 71.0 ± 1.4% over 2 runs; cuda 91.0 ± 1.4% over 2 runs")
    assert lines[1].startswith("Mann-Whitney U p = ")


def test_model_card_unseen_source_table_pairs_each_left_out_run_with_its_seed(tmp_path, monkeypatch):
    """benchmarks/model_card.py: a run trained without one source beside the same seed trained with every source."""
    import importlib.util
    import json
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("model_card", Path(__file__).parents[1] / "benchmarks" / "model_card.py")
    card = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(card)
    classes = ["COVID-19", "Normal"]

    def write(name, right):  # 10 COVID-19 images of source "x", 10 Normal of "n"; `right` lists the correct ones
        preds = [{"file": f"i{i}.png", "label": classes[i // 10], "source": "x" if i < 10 else "n",
                  "prob": [0.9, 0.1] if (i in right) == (i < 10) else [0.1, 0.9]} for i in range(20)]
        (tmp_path / name).mkdir()
        (tmp_path / name / "eval.json").write_text(json.dumps({"classes": classes, "predictions": preds}))

    monkeypatch.setattr(card, "TRAINING", tmp_path)
    assert card.unseen_source_table() == "(no leave-one-source-out runs recorded)"
    write("research-densenet121-e60-nox-s3-eval-test", right=set(range(2)) | set(range(10, 20)))
    assert card.unseen_source_table() == "(no leave-one-source-out runs recorded)"  # no seed-3 run with every source
    write("research-densenet121-e60-s3-eval-test", right=set(range(9)) | set(range(10, 15)))
    table = card.unseen_source_table().splitlines()
    assert len(table) == 3
    # the AUC cell, by hand: without x, 2 of its COVID-19 images score 0.9 and 8 tie with every Normal image at 0.1:
    # (2 * 10 + 0.5 * 8 * 10) / 100 = 0.60; with x, 9 at 0.9 against 5 Normal at 0.1 and 5 at 0.9, 1 at 0.1:
    # (45 + 0.5 * 45 + 0.5 * 5) / 100 = 0.70
    assert table[2] == "| densenet121, seed 3, without x (checkpoint chosen on every val image) | 2/10 = 20% (with it: 9/10 = 90%) | 60.0 (70.0) | 100.0 vs 50.0 (n=10), p = 0.062 | - vs - |"


def test_seeds_subset_restricts_the_paired_images(monkeypatch):
    """benchmarks/seeds.py --only SOURCE[:CLASS] / --without SOURCE: the paired tests see only those images."""
    import importlib.util
    import sys
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("seeds", Path(__file__).parents[1] / "benchmarks" / "seeds.py")
    seeds = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(seeds)
    preds = [{"file": "a1", "source": "a", "label": "COVID-19", "prob": [0.9, 0.1]},
             {"file": "a2", "source": "a", "label": "Normal", "prob": [0.9, 0.1]},
             {"file": "b1", "source": "b", "label": "COVID-19", "prob": [0.2, 0.8]}]
    res = {"classes": ["COVID-19", "Normal"], "predictions": preds}
    assert seeds.correct(res)[0] == ["a1", "a2", "b1"]
    monkeypatch.setattr(sys, "argv", ["seeds.py", "d", "research", "test", "--only", "a:COVID-19", "--without", "b"])
    monkeypatch.setattr(seeds, "summary", lambda *a, **k: ["stub"])
    seeds.main()
    files, ok = seeds.correct(res)
    assert files == ["a1"] and ok.tolist() == [True]
    assert seeds.subset_label() == "a COVID-19 images only; without b"
    monkeypatch.setattr(seeds, "ONLY", None)
    files, ok = seeds.correct(res)
    assert files == ["a1", "a2"] and ok.tolist() == [True, False]
    monkeypatch.setattr(seeds, "ONLY", ("c", None))
    with pytest.raises(SystemExit, match="no images left"):
        seeds.correct(res)


def test_model_card_shipped_at_operating_point_reports_the_runtime_finding(tmp_path):
    """benchmarks/model_card.py: the shipped model's test results at the argmax and at its operating point, on all
    images and on the permissive ones; the threshold's price (non-COVID-19 images called COVID-19) is shown."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("model_card", Path(__file__).parents[1] / "benchmarks" / "model_card.py")
    card = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(card)
    classes = ["COVID-19", "Normal", "Pneumonia"]
    # 4 COVID-19 (two of source "nc", non-commercial, scored 0.2 for COVID-19), 4 Pneumonia scored 0.1 or 0.3
    preds = ([{"file": f"a/c{i}.png", "label": "COVID-19", "source": "ok", "prob": [0.8, 0.1, 0.1]} for i in range(2)]
             + [{"file": f"a/n{i}.png", "label": "COVID-19", "source": "nc", "prob": [0.2, 0.1, 0.7]} for i in range(2)]
             + [{"file": f"a/p{i}.png", "label": "Pneumonia", "source": "ok", "prob": [0.1 + 0.2 * (i % 2), 0.1, 0.8 - 0.2 * (i % 2)]}
                for i in range(4)])
    res = {"classes": classes, "predictions": preds,
           "operating_point": {"rule": {"positive_class": "COVID-19", "threshold": 0.15, "temperature": 1.0}}}
    nc = {"n0.png": True, "n1.png": True}
    rows = {r.split(" | ")[0].strip("| "): r.split(" | ")[1:] for r in card.shipped_at_operating_point(res, nc).splitlines()[2:]}
    assert rows["accuracy"][0] == "75.0 -> **75.0**"  # argmax misses the nc COVID-19; the threshold finds them but takes 2 Pneumonia
    assert rows["non-COVID-19 called COVID-19"][0] == "0.0 -> **50.0**"
    assert rows["accuracy"][1].startswith("100.0 -> **66.7**")  # permissive: 2 COVID-19 + 4 Pneumonia, 2 Pneumonia lost
    assert rows["COVID-19 sensitivity nc"][1].strip(" |") == "-"
    assert card.shipped_at_operating_point({**res, "operating_point": None}, nc) == ""


def test_model_card_shipped_architecture_comparison_agrees_with_seeds_py(monkeypatch):
    """benchmarks/model_card.py's shipped-configuration comparison (permissive test images, by licence) gives the same
    image-by-image interval as `seeds.py shipped test -e60 --without ieee8023` (the test split's non-commercial images
    are exactly the Cohen collection's), on the committed runs."""
    import importlib.util
    import sys
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("model_card", Path(__file__).parents[1] / "benchmarks" / "model_card.py")
    card = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(card)
    if not card.MANIFEST.is_file():
        pytest.skip(f"needs {card.MANIFEST} (which images are non-commercial)")
    text = card.shipped_architecture_comparison(card._nc_flags())
    seeds = sys.modules["seeds"]
    monkeypatch.setattr(seeds, "WITHOUT", {"ieee8023"})
    ps = seeds.pairs(card.TRAINING, "shipped", "test", "covid-densenet-e60", "densenet121-e60")
    if len(ps) < 2:
        pytest.skip("fewer than two shipped-configuration seed pairs recorded")
    p = seeds.pooled(np.mean([x["diff"] for x in ps], 0))
    assert f"({len(ps)} seed pairs" in text
    assert f"= {p['mean']:+.1f} points [{p['lo']:+.1f}, {p['hi']:+.1f}] at the argmax" in text
