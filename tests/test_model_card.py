"""benchmarks/model_card.py: the leave-one-source-out table and the Cohen-collection note read the runs they name."""
import json
from pathlib import Path

CLASSES = ["COVID-19", "Normal", "Pneumonia"]


def _run(root: Path, name: str, covid_right: dict[str, int], select_without=None) -> None:
    """A collected run: eval.json with 4 COVID-19 images per source (the first `covid_right[src]` called COVID-19,
    with a COVID-19 score above every non-COVID-19 image's) and 4 Normal NIH images called Normal; config.json."""
    preds = []
    for src, k in covid_right.items():
        for i in range(4):
            prob = [0.8, 0.1, 0.1] if i < k else [0.3, 0.05, 0.65]
            preds.append({"file": f"{src}-{i}.png", "label": "COVID-19", "prob": prob, "source": src})
    preds += [{"file": f"nih-{i}.png", "label": "Normal", "prob": [0.05, 0.9, 0.05], "source": "nih"} for i in range(4)]
    out = root / f"{name}-eval-test"
    out.mkdir(parents=True)
    (out / "eval.json").write_text(json.dumps({"classes": CLASSES, "predictions": preds}))
    cfg = {"train_config": {"select_without": select_without} if select_without else {}}
    (root / f"{name}-config.json").write_text(json.dumps(cfg))


def test_unseen_source_table_pairs_each_leave_out_run_with_its_seed_and_names_its_checkpoint_rule(bench, tmp_path, monkeypatch):
    mc = bench("model_card")
    monkeypatch.setattr(mc, "TRAINING", tmp_path)
    _run(tmp_path, "research-densenet121-e60-s1", {"sbu": 4, "mhh": 4, "ieee8023": 2})
    _run(tmp_path, "research-densenet121-e60-nosbu-sel-s1", {"sbu": 1, "mhh": 4, "ieee8023": 3}, ["sbu"])
    _run(tmp_path, "research-densenet121-e60-nosbu-s1", {"sbu": 0, "mhh": 4, "ieee8023": 2})
    _run(tmp_path, "research-densenet121-e60-nomhh-s7", {"sbu": 4, "mhh": 0, "ieee8023": 2})  # no seed-7 base: left out
    rows = [r for r in mc.unseen_source_table().splitlines() if r.startswith("| densenet121")]
    assert len(rows) == 2
    sel = next(r for r in rows if "chosen without it" in r)
    old = next(r for r in rows if "every val image" in r)
    assert "| 1/4 = 25% (with it: 4/4 = 100%) |" in sel and "| 3/4 = 75% vs 2/4 = 50% |" in sel
    assert "| 0/4 = 0% (with it: 4/4 = 100%) |" in old


def test_cohen_note_pools_seeds_per_configuration(bench, tmp_path, monkeypatch):
    mc = bench("model_card")
    monkeypatch.setattr(mc, "TRAINING", tmp_path)
    manifest = tmp_path / "MANIFEST.csv"  # the collection's training images: 3 COVID-19 (1 permissive), 2 others (0)
    manifest.write_text("file,split,class,source,non_commercial_only\n" + "".join(
        f"train/{c}/{i}.png,train,{c},ieee8023,{nc}\n"
        for i, (c, nc) in enumerate([("COVID-19", "no"), ("COVID-19", "yes"), ("COVID-19", "yes"),
                                     ("Pneumonia", "yes"), ("Normal", "yes")])) + "train/Normal/n.png,train,Normal,nih,no\n")
    monkeypatch.setattr(mc, "MANIFEST", manifest)
    assert mc.cohen_unseen_note() == ""  # nothing recorded: no note
    for seed, k in ((0, 1), (1, 2)):
        _run(tmp_path, f"shipped-covid-densenet-e60-s{seed}", {"ieee8023": k, "mhh": 4})
        _run(tmp_path, f"research-covid-densenet-e60-s{seed}", {"ieee8023": 4, "mhh": 4})
    _run(tmp_path, "shipped-covid-densenet-e60-smooth1-s1", {"ieee8023": 4, "mhh": 4})  # a variant, not a seed
    note = mc.cohen_unseen_note()
    assert "Covid-DenseNet: shipped 3/8 = 38% over 2 seeds, AUC 100.0; research 8/8 = 100% over 2 seeds" in note
    assert "(1 of its 3 COVID-19 training images and 0 of its 2 others)" in note and "Its 4 COVID-19 test images" in note
    assert "DenseNet121" not in note  # no DenseNet121 runs: no row for it


def test_statistics_section_reads_both_probes_and_counts_what_smoothing_costs(bench, tmp_path, monkeypatch):
    mc = bench("model_card")
    monkeypatch.setattr(mc, "SOURCE_PROBE", tmp_path / "sp")
    monkeypatch.setattr(mc, "NOISE_PROBE", tmp_path / "np.json")
    preds = lambda right: [{"file": f"f{i}", "label": "COVID-19", "source": "mhh",  # noqa: E731
                            "prob": [0.9, 0.05, 0.05] if i < right else [0.1, 0.8, 0.1]} for i in range(10)]
    shipped = {"classes": CLASSES, "predictions": preds(6)}
    assert mc.statistics_section(shipped) == ""  # nothing recorded: nothing said
    task = {"source_accuracy": 0.8, "class_accuracy": 0.9, "val_class_accuracy": 0.7, "left_out": {}}
    (tmp_path / "sp").mkdir()
    (tmp_path / "sp" / "results.json").write_text(json.dumps({"tasks": {
        f"{c} / {k}": dict(task, left_out={"sbu": {"auc": 0.9}} if c == "research" else {})
        for c in ("shipped", "research") for k in ("logistic regression", "random forest")}}))
    for k in ("logistic-regression", "random-forest"):
        (tmp_path / "sp" / f"shipped-{k}-eval-test").mkdir()
        (tmp_path / "sp" / f"shipped-{k}-eval-test" / "eval.json").write_text(
            json.dumps({"classes": CLASSES, "predictions": preds(9)}))
    row = lambda w, s, g: {"whole": {"noisy_covid_found": [w, 30], "other_covid_found": [50, 56],  # noqa: E731
                                     "non_covid_called_covid": [2, 173]},
                           "smoothed": {"noisy_covid_found": [s, 30], "other_covid_found": [48, 56],
                                        "mcnemar": {"noisy_covid_found": 0.01, "other_covid_found": 0.5}},
                           "grained": {"non_covid_called_covid": [g, 173], "mcnemar": {"non_covid_called_covid": 0.001}}}
    (tmp_path / "np.json").write_text(json.dumps({
        "levels": {"median_noise_noisy": 0.02, "median_noise_clean": 0.01, "sigma": 0.5, "sd": 0.02},
        "models": {"covid-densenet-cxr3": row(29, 20, 24), "shipped-densenet121-e60-s1": row(28, 22, 10),
                   "research-densenet121-e60-nosbu-sel-s1": row(0, 0, 3)}}))
    text = " ".join(mc.statistics_section(shipped).split())
    assert "a logistic regression 90.0% (McNemar against the shipped model p = 0.25" in text  # 3 right only by it
    assert "the shipped model 60.0%" in text and "(AUC 90-90)" in text
    assert "finds **20/30** of Stony Brook's val and test COVID-19 images instead of 29/30" in text
    assert "it calls 24/173 non-COVID-19 images COVID-19 instead of 2/173" in text
    # only the model trained with Stony Brook counts among the others, not the one trained without it
    assert "The other 1 model probed that were trained with Stony Brook lose 6 of their 28" in text
    assert "findings 2 of 50, 4%" in text
