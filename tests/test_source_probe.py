"""benchmarks/source_probe.py: low-level statistics of the model's input, and the classifiers fitted on them."""
from pathlib import Path

import numpy as np
import pytest

from edgecxr.data.layouts import Sample


def test_features_name_every_statistic_and_see_the_border_and_the_noise(bench):
    sp = bench("source_probe")
    rng = np.random.default_rng(0)
    g = np.full((224, 224), 0.5, np.float32)
    f = sp.features(g)
    assert len(f) == len(sp.FEATURES)
    named = dict(zip(sp.FEATURES, f))
    assert named["hist8"] == 1.0 and named["noise"] < 1e-6  # a flat mid-grey image: one bin, no noise
    g2 = g.copy()
    g2[:22] = 1.0  # a white band along the top, as a burnt-in label would make
    assert dict(zip(sp.FEATURES, sp.features(g2)))["top_mean"] > 0.99
    noisy = dict(zip(sp.FEATURES, sp.features(np.clip(g + rng.normal(0, 0.05, g.shape), 0, 1).astype(np.float32))))
    assert noisy["noise"] > 0.03 and noisy["laplacian"] > named["laplacian"]


def _synthetic(sp):
    rng = np.random.default_rng(1)
    samples, rows = [], []
    # three sources; the source shifts feature 0, the class nothing: class is then readable only through the source
    for split, n in (("train", 20), ("val", 6), ("test", 6)):
        for src, label, shift in (("a", "COVID-19", 0.0), ("b", "COVID-19", 3.0), ("c", "Normal", 6.0),
                                  ("c", "Pneumonia", 6.0)):
            for i in range(n):
                samples.append(Sample(path=Path(f"{split}/{src}-{label}-{i}.png"), label=label, split=split,
                                      source=src, licence_nc=(src == "b")))
                rows.append(np.r_[shift + rng.normal(0, 0.3), rng.normal(0, 1, 3)])
    return sp.run(np.asarray(rows), samples, trees=25)


def test_compare_puts_the_statistics_beside_a_cnn_on_the_same_images(bench, tmp_path):
    sp = bench("source_probe")
    r = _synthetic(sp)
    for split in ("val", "test"):  # a CNN right on every image
        preds = [dict(p, prob=[float(i == sp.CLASSES.index(p["label"])) for i in range(3)])
                 for p in r["tasks"]["research / logistic regression"]["predictions"][split]]
        (tmp_path / f"cnn-{split}.json").write_text(__import__("json").dumps({"classes": sp.CLASSES, "predictions": preds}))
    rows = sp.compare(r, [f"research={tmp_path}/cnn-{{split}}.json"])
    logit = [row for row in rows if "| test | logistic regression |" in row][0].split(" | ")
    own = 100 * r["tasks"]["research / logistic regression"]["class_accuracy"]
    assert logit[3] == "100.0%" and logit[4] == f"{own:.1f}%" and logit[5] == f"{own:.1f}%"  # agreement = its accuracy
    assert len(rows) == 2 + 2 * 2  # header, and val / test for each research classifier
    (tmp_path / "cnn-test.json").write_text('{"classes": [], "predictions": []}')
    with pytest.raises(SystemExit, match="not the same test images"):
        sp.compare(r, [f"research={tmp_path}/cnn-{{split}}.json"])


def test_run_reads_a_source_that_the_statistics_carry_and_leaves_each_covid_source_out(bench):
    sp = bench("source_probe")
    r = _synthetic(sp)
    logit = r["tasks"]["research / logistic regression"]
    assert logit["source_accuracy"] == 1.0  # separable by feature 0
    assert logit["class_found"]["a"]["COVID-19"] == [6, 6] and logit["class_found"]["b"]["COVID-19"] == [6, 6]
    assert set(logit["left_out"]) == {"a", "b"}  # each COVID-19 source left out of fitting in turn
    assert r["tasks"]["shipped / logistic regression"]["source_found"]["b"] == [0, 6]  # never fitted on b
    assert len(logit["predictions"]["test"]) == 24 and logit["predictions"]["test"][0]["source"] == "a"
    assert r["top_features_for_source"][0][0] == sp.FEATURES[0]  # the one statistic that carries the source
