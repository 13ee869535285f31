"""benchmarks/campaign.py (training jobs inside a deadline) and benchmarks/device_data.py (dev set under the device
tool's upload limit), with a stand-in job script and a tiny dataset: no training here."""

import csv
import hashlib
import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).parents[1] / "benchmarks"

FAKE_JOB = """#!/usr/bin/env bash
# stands in for train_models.sh: one metrics.csv row per epoch, then the files a finished run leaves
set -e
RUN="runs/$1-$3${TAG:-}-s$2"; mkdir -p "$RUN/eval-test" "$RUN/eval-val"
echo "epoch,val_accuracy" > "$RUN/metrics.csv"
for e in $(seq 1 "$EPOCHS"); do sleep "$EPOCH_S"; echo "$e,0.5" >> "$RUN/metrics.csv"; done
echo '{"val_score": 0.61, "epoch": 2}' > "$RUN/best.json"
for s in test val; do echo '{"image": {"accuracy": 0.75, "n": 4}}' > "$RUN/eval-$s/eval.json"; done
"""


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def test_campaign_finishes_what_fits_and_stops_the_rest_at_the_deadline(tmp_path, monkeypatch, capsys):
    campaign = _load("campaign")
    script = tmp_path / "fake_job.sh"
    script.write_text(FAKE_JOB)
    monkeypatch.chdir(tmp_path)
    campaign.main(["shipped:covid-densenet:0", "research:densenet121:1:EPOCH_S=30,TAG=-slow",
                   "--env", "EPOCHS=3", "EPOCH_S=0.2", "TAG=-e60", "--parallel", "2", "--deadline", "4",
                   "--poll", "0.2", "--eval-s", "0", "--script", str(script), "--collect", "results", "--logs", "logs"])
    summary = (tmp_path / "logs" / "summary.md").read_text()
    assert "| shipped-covid-densenet-e60-s0 | done | 3/3 |" in summary
    assert "0.610 (2) | 75.0% of 4 |" in summary
    assert "| research-densenet121-slow-s1 | unfinished | 0/3 |" in summary  # a job's own TAG wins over --env's
    got = sorted(p.name for p in (tmp_path / "results").iterdir())
    assert got == [f"shipped-covid-densenet-e60-s0-{x}" for x in ("config.json", "eval-test", "eval-val", "metrics.csv")]
    assert json.loads((tmp_path / "results" / "shipped-covid-densenet-e60-s0-config.json").read_text())["epoch"] == 2
    assert "unfinished research-densenet121-slow-s1" in capsys.readouterr().out


def test_campaign_rejects_a_malformed_job():
    campaign = _load("campaign")
    with pytest.raises(SystemExit, match="CONFIG:ARCH:SEED"):
        campaign.parse_job("research:densenet121", {}, 0)
    job = campaign.parse_job("research:densenet121:3:BALANCED=0,TAG=-unbal", {"EPOCHS": "60", "TAG": "-e60"}, 0)
    assert (job.name, job.epochs, job.env["BALANCED"]) == ("research-densenet121-unbal-s3", 60, "0")


def _dataset(root: Path, pool: Path) -> None:
    """Three PNG-named files under a manifest with sha256, two of them also (renamed) in the pool."""
    rows = []
    for i, (split, body) in enumerate([("train", b"a" * 50), ("val", b"b" * 60), ("test", b"c" * 70)]):
        f = root / "dev" / split / "COVID-19" / f"x{i}.png"
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(body)
        rows.append({"file": f"{split}/COVID-19/x{i}.png", "sha256": hashlib.sha256(body).hexdigest()})
        if i < 2:
            (pool / "c").mkdir(parents=True, exist_ok=True)
            (pool / "c" / f"other-name-{i}.png").write_bytes(body)
    with (root / "dev" / "MANIFEST.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["file", "sha256"])
        w.writeheader()
        w.writerows(rows)


def test_device_data_packs_only_what_the_pool_lacks_and_restores_it(tmp_path, capsys):
    dd = _load("device_data")
    src, pool, dest = tmp_path / "cxr", tmp_path / "pool", tmp_path / "packed"
    _dataset(src, pool)
    dd.pack(src, dest, pool)
    packed = sorted(str(p.relative_to(dest)) for p in dest.rglob("*.png"))
    assert packed == [os.path.join("dev", "test", "COVID-19", "x2.png")]
    dd.restore(dest, pool)
    for p in src.rglob("*.png"):
        assert (dest / p.relative_to(src)).read_bytes() == p.read_bytes()
    assert "every image matches its sha256" in capsys.readouterr().out
    (dest / "dev" / "val" / "COVID-19" / "x1.png").write_bytes(b"tampered")
    with pytest.raises(SystemExit, match="do not match"):
        dd.restore(dest, pool)
    (dest / "dev" / "test" / "COVID-19" / "x2.png").unlink()
    with pytest.raises(SystemExit, match="not in the pool"):
        dd.restore(dest, pool)


def test_selection_rules_reads_each_rules_epoch_off_the_metrics(tmp_path, capsys):
    rules = _load("selection_rules")
    rows = [  # epoch 1 calls much COVID-19 (the worst source high, macro-F1 low); epoch 3 has the best macro-F1
        {"epoch": 1, "val_macro_f1": 0.50, "val_sens_COVID-19_a": 0.9, "val_sens_COVID-19_b": 0.8, "val_sens_Normal_c": 0.1},
        {"epoch": 2, "val_macro_f1": 0.78, "val_sens_COVID-19_a": 0.9, "val_sens_COVID-19_b": 0.5, "val_sens_Normal_c": 0.9},
        {"epoch": 3, "val_macro_f1": 0.80, "val_sens_COVID-19_a": 1.0, "val_sens_COVID-19_b": 0.3, "val_sens_Normal_c": 0.9},
    ]
    path = tmp_path / "research-x-e60-s0-metrics.csv"
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    r = rules.picks(path)
    assert r["macro_f1"] == (3, 0.80, 0.3)
    assert r["worst_source"] == (1, 0.50, 0.8)  # 0.5 * (0.50 + 0.8) = 0.65 beats 0.64 and 0.55: a degenerate pick
    assert rules.main([str(path)]) == 0
    assert "Same epoch in 0 of 1 runs." in capsys.readouterr().out


def test_collect_runs_copies_a_finished_run_and_refuses_an_unfinished_one(tmp_path, capsys):
    cr = _load("collect_runs")
    run = tmp_path / "runs" / "research-densenet121-e40-x-s1"
    for split in ("test", "val"):
        (run / f"eval-{split}").mkdir(parents=True)
        (run / f"eval-{split}" / "eval.json").write_text(json.dumps({"split": split}))
    (run / "metrics.csv").write_text("epoch,val_score\n1,0.5\n")
    dest = tmp_path / "results"
    with pytest.raises(FileNotFoundError, match="best.json"):  # training not finished: nothing is copied
        cr.collect_run(run, dest)
    assert not dest.exists()
    (run / "best.json").write_text('{"epoch": 1}')
    assert cr.main([str(run), "--dest", str(dest)]) == 0
    name = run.name
    assert json.loads((dest / f"{name}-config.json").read_text()) == {"epoch": 1}
    assert (dest / f"{name}-metrics.csv").read_text().endswith("1,0.5\n")
    assert json.loads((dest / f"{name}-eval-val" / "eval.json").read_text()) == {"split": "val"}
    assert not (dest / f"{name}-curves.png").exists()  # a run without curves is collected without them
    assert f"{name}-eval-test" in capsys.readouterr().out


def test_train_models_passes_the_recipe_options_to_edgecxr(tmp_path):
    """benchmarks/train_models.sh: environment variables become `edgecxr train` options (a stand-in records them)."""
    import subprocess

    fake = tmp_path / "edgecxr"
    fake.write_text(f'#!/usr/bin/env bash\necho "$@" >> {tmp_path}/calls\n')
    fake.chmod(0o755)
    script = Path(__file__).parents[1] / "benchmarks" / "train_models.sh"
    for extra in ({}, {"SMOOTH": "1.0", "EQUALIZE": "1", "EXCLUDE": "sbu mhh"}):
        env = dict(os.environ, EDGECXR=str(fake), **extra)
        subprocess.run(["bash", str(script), "shipped", "3", "covid-densenet"], check=True, env=env, cwd=tmp_path)
    calls = (tmp_path / "calls").read_text().splitlines()
    train = [c for c in calls if c.startswith("train ")]
    assert len(train) == 2 and len(calls) == 6  # train, eval test, eval val per run
    assert "--smooth 0 " in train[0] and "--equalize" not in train[0] and "--permissive-only" in train[0]
    assert "--smooth 1.0 " in train[1] and "--equalize" in train[1] and "--seed 3" in train[1]
    assert "--exclude-source sbu --exclude-source mhh" in train[1]
