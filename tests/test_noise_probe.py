"""benchmarks/noise_probe.py: noise levels fitted on training images, and the per-group summary."""
from pathlib import Path

import numpy as np

from edgecxr.data.layouts import Sample


def test_fitted_levels_move_each_group_to_the_others_noise(bench):
    npb = bench("noise_probe")
    rng = np.random.default_rng(0)
    ramp = np.tile(np.linspace(0.2, 0.8, 64, dtype=np.float32), (64, 1))
    noisy = [np.clip(ramp + rng.normal(0, 0.03, ramp.shape), 0, 1).astype(np.float32) for _ in range(6)]
    clean = [np.clip(ramp + rng.normal(0, 0.006, ramp.shape), 0, 1).astype(np.float32) for _ in range(8)]
    lv = npb.fit_levels(noisy, clean)
    assert lv["median_noise_noisy"] > 3 * lv["median_noise_clean"]
    smoothed = np.median([npb.noise(npb.smooth(g, lv["sigma"])) for g in noisy])
    grained = np.median([npb.noise(npb.grain(g, lv["sd"], np.random.default_rng(1))) for g in clean])
    assert abs(smoothed - lv["median_noise_clean"]) < 0.25 * lv["median_noise_clean"]
    assert abs(grained - lv["median_noise_noisy"]) < 0.15 * lv["median_noise_noisy"]
    inputs = npb.conditions(clean[:2], lv)
    assert list(inputs) == list(npb.CONDITIONS) and inputs["whole"][0] is clean[0]


def test_summary_counts_right_and_covid_calls_per_group(bench):
    npb = bench("noise_probe")
    classes = ["COVID-19", "Normal", "Pneumonia"]
    samples = [Sample(Path("a.png"), "COVID-19", "test", source="sbu"), Sample(Path("b.png"), "COVID-19", "test", source="sbu"),
               Sample(Path("c.png"), "Normal", "test", source="nih")]
    pred = {"whole": np.array([0, 0, 1]), "smoothed": np.array([1, 0, 1]), "grained": np.array([0, 0, 0])}
    r = npb.summarise(pred, classes, samples)
    assert r["whole"]["right"] == {"nih/Normal": [1, 1], "sbu/COVID-19": [2, 2]}
    assert r["smoothed"]["right"]["sbu/COVID-19"] == [1, 2] and r["grained"]["called_covid"]["nih/Normal"] == 1
    assert "mcnemar_vs_whole" not in r["whole"] and 0 < r["grained"]["mcnemar_vs_whole"] <= 1
    assert r["smoothed"]["noisy_covid_found"] == [1, 2] and r["whole"]["non_covid_called_covid"] == [0, 1]
    assert r["grained"]["non_covid_called_covid"] == [1, 1] and r["smoothed"]["mcnemar"]["noisy_covid_found"] == 1.0
    rows = npb.compact({"m": r, "n": r}, "sbu")
    assert rows[2].startswith("| m | 2/2 -> 1/2 (1) | 0/0 -> 0/0 (1) | 0/1 -> 1/1 (1) | 2/2 -> 2/2 (1) |")
    assert rows[-1] == "| all 2 models, pooled | 4/4 -> 2/4 | 0/0 -> 0/0 | 0/2 -> 2/2 | 4/4 -> 4/4 |"
    table = npb.markdown("m", r)
    assert table[5].startswith("| smoothed | 66.7% |") and table[5].endswith("| 1/1 (0) | 1/2 (1) |")
