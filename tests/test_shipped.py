"""The project's embedded default: the shipped model and images are intact and usable."""

import csv
import hashlib
import json

import pytest

from edgecxr.resources import calibration_dir, default_checkpoint, eval_dir


def test_shipped_images_match_manifest():
    root = calibration_dir().parent
    rows = list(csv.DictReader((root / "MANIFEST.csv").open()))
    assert len(rows) == 184
    for r in rows:
        assert r["non_commercial_only"] == "no", r["file"]  # we ship permissive licences only
        assert hashlib.sha256((root / r["file"]).read_bytes()).hexdigest() == r["sha256"], r["file"]
    assert sum(1 for _ in eval_dir().rglob("*.png")) == sum(r["split"] == "eval" for r in rows)


def test_shipped_model_is_intact_and_runs():
    ck = default_checkpoint()
    meta = json.loads(ck.with_suffix(".json").read_text())
    assert hashlib.sha256(ck.read_bytes()).hexdigest() == meta["sha256"]
    assert ck.stat().st_size <= 16 * 2**20
    assert meta["data"]["permissive_only"] is True
    torch = pytest.importorskip("torch", reason="torch not installed")
    from edgecxr.checkpoint import load_model
    from edgecxr.imaging import read_image
    from edgecxr.preprocess import PreprocessConfig, preprocess

    model, m = load_model(ck)
    assert m["classes"] == ["COVID-19", "Normal", "Pneumonia"] and m["arch"] == "covid-densenet"
    cfg = PreprocessConfig.from_dict(m["preprocess"])
    files = sorted(eval_dir().rglob("*.png"))[:2]
    with torch.no_grad():
        p = torch.softmax(model(torch.from_numpy(__import__("numpy").stack([preprocess(read_image(f), cfg) for f in files]))), 1)
    assert torch.allclose(p.sum(1), torch.ones(2), atol=1e-5)
