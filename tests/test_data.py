import numpy as np
import pytest
from PIL import Image

from edgecxr.data import load_samples, patient_split, write_manifest
from edgecxr.errors import DatasetError
from edgecxr.resources import calibration_dir


def _img(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(path)


def test_folder_layout_with_and_without_splits(tmp_path):
    for split in ("train", "val"):
        for c in ("COVID-19", "Normal"):
            _img(tmp_path / "a" / split / c / f"{c}-{split}.png")
    s = load_samples(tmp_path / "a")
    assert {(x.split, x.label) for x in s} == {("train", "COVID-19"), ("train", "Normal"), ("val", "COVID-19"), ("val", "Normal")}
    s = load_samples(calibration_dir())
    assert len(s) == 90 and {x.split for x in s} == {None}


def test_covidx_layout(tmp_path):
    _img(tmp_path / "train" / "a.png")
    _img(tmp_path / "train" / "b.png")
    (tmp_path / "train_COVIDx.txt").write_text("p1 a.png COVID-19 cohen\np2 b.png normal rsna\n")
    s = load_samples(tmp_path / "train_COVIDx.txt")
    assert [(x.patient, x.label, x.split) for x in s] == [("p1", "COVID-19", "train"), ("p2", "Normal", "train")]
    assert s[0].path == tmp_path / "train" / "a.png"
    (tmp_path / "bad.txt").write_text("only two\n")
    with pytest.raises(DatasetError, match="bad.txt:1"):
        load_samples(tmp_path / "bad.txt")


def test_csv_layout_and_permissive_filter(tmp_path):
    _img(tmp_path / "x.png")
    (tmp_path / "m.csv").write_text("file,class,split,patient_id,non_commercial_only\n"
                                    "x.png,Normal,train,p1,no\nx.png,COVID-19,test,p2,yes\n")
    assert len(load_samples(tmp_path / "m.csv")) == 2
    s = load_samples(tmp_path / "m.csv", permissive_only=True)
    assert [(x.label, x.patient) for x in s] == [("Normal", "p1")]
    (tmp_path / "n.csv").write_text("path_to,what\n")
    with pytest.raises(DatasetError):
        load_samples(tmp_path / "n.csv")


def test_patient_split_keeps_patients_together(tmp_path):
    from edgecxr.data.layouts import Sample

    rng = np.random.default_rng(0)
    samples = [Sample(tmp_path / f"{p}-{k}.png", ["COVID-19", "Normal", "Pneumonia"][p % 3], None, f"pat{p}")
               for p in range(120) for k in range(rng.integers(1, 4))]
    out = patient_split(samples, (0.7, 0.15, 0.15), seed=1)
    by_patient = {}
    for s in out:
        by_patient.setdefault(s.patient, set()).add(s.split)
    assert all(len(v) == 1 for v in by_patient.values())  # no patient in two splits
    splits = [next(iter(v)) for v in by_patient.values()]
    assert 0.6 < splits.count("train") / len(splits) < 0.8
    assert out == patient_split(samples, (0.7, 0.15, 0.15), seed=1)  # deterministic
    write_manifest(out, tmp_path / "split.csv")
    back = load_samples(tmp_path / "split.csv")
    assert [(b.split, b.patient) for b in back] == [(s.split, s.patient) for s in out]


def test_subsample_keeps_whole_patients_per_stratum(tmp_path):
    from edgecxr.data.layouts import Sample
    from edgecxr.data.splits import subsample

    samples = [Sample(tmp_path / f"{p}-{k}.png", ["COVID-19", "Normal"][p % 2], "train", f"pat{p}",
                      source="a" if p < 80 else "b") for p in range(100) for k in range(1 + p % 3)]
    quarter = subsample(samples, 0.25, seed=3)
    kept = {s.patient for s in quarter}
    assert all(s.patient in kept for s in samples if s.patient in kept)  # patients whole
    for label in ("COVID-19", "Normal"):
        for src, n in (("a", 40), ("b", 10)):
            assert len({s.patient for s in quarter if s.label == label and s.source == src}) == round(n * 0.25)
    assert quarter == subsample(samples, 0.25, seed=3)
    assert kept != {s.patient for s in subsample(samples, 0.25, seed=4)}
    assert subsample(samples, 1.0) == samples
    with pytest.raises(ValueError):
        subsample(samples, 0)


def test_split_cli(tmp_path):
    from typer.testing import CliRunner

    from edgecxr.cli import app

    r = CliRunner().invoke(app, ["split", str(calibration_dir()), "--out", str(tmp_path / "s.csv")])
    assert r.exit_code == 0, r.output
    assert {s.split for s in load_samples(tmp_path / "s.csv")} == {"train", "val", "test"}


def test_border_erase_blanks_only_edge_bands_and_robust_augmentation_stays_in_range():
    import torch

    from edgecxr.data.torchdata import AUGMENTATIONS, RandomBorderErase, cxr_augmentation

    torch.manual_seed(0)
    img = torch.full((1, 100, 80), 0.5)
    img[..., 20:80, 20:60] = 0.9  # the "lungs": never inside a 15% band
    changed_edges = 0
    for _ in range(50):
        out = RandomBorderErase(p=0.5, max_band=0.15)(img)
        assert torch.equal(out[..., 20:80, 20:60], img[..., 20:80, 20:60])
        changed_edges += int(not torch.equal(out, img))
    assert 30 <= changed_edges <= 50  # 1 - 0.5**4 of the draws touch at least one edge
    assert torch.equal(RandomBorderErase(p=0.0)(img), img)
    assert "robust" in AUGMENTATIONS
    aug = cxr_augmentation("robust")
    out = aug(torch.rand(1, 64, 64)).clamp(0, 1)
    assert out.shape == (1, 64, 64) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="unknown augmentation"):
        cxr_augmentation("heavy")


def test_input_grain_moves_pixel_noise_both_ways_at_the_model_resolution(bench):
    import torch

    from edgecxr.data.torchdata import InputGrain, input_augmentation
    from edgecxr.preprocess import gaussian_smooth

    _pixel_noise = bench("source_probe").high_pass_noise  # the noise the probes measure
    torch.manual_seed(0)
    yy, xx = np.mgrid[0:64, 0:64] / 64.0
    clean = (0.3 + 0.4 * xx * yy).astype(np.float32)
    noisy = np.clip(clean + np.random.default_rng(0).normal(0, 0.02, clean.shape), 0, 1).astype(np.float32)
    grained = InputGrain(p_noise=1.0, noise_sd=0.03, p_blur=0.0)
    outs = [grained(clean) for _ in range(20)]
    assert all(o.dtype == np.float32 and o.shape == clean.shape and 0 <= o.min() and o.max() <= 1 for o in outs)
    levels = [_pixel_noise(o) for o in outs]
    assert max(levels) > 10 * _pixel_noise(clean) + 0.005  # white noise up to sd 0.03 reaches Stony Brook's level
    blurred = InputGrain(p_noise=0.0, p_blur=1.0, blur=(0.8, 0.8))(noisy)
    assert np.allclose(blurred, gaussian_smooth(noisy, 0.8), atol=1e-6)
    assert _pixel_noise(blurred) < 0.5 * _pixel_noise(noisy)
    assert np.array_equal(InputGrain(p_noise=0.0, p_blur=0.0)(noisy), noisy)
    assert input_augmentation("strong") is None and isinstance(input_augmentation("grain"), InputGrain)
    with pytest.raises(ValueError, match="unknown augmentation"):
        input_augmentation("heavy")


@pytest.mark.parametrize("policy", ["crop", "pad", "stretch"])
def test_grain_dataset_resizes_once_and_spreads_the_noise_of_one_image(policy, bench):
    """The dataset resizes before the input-scale augmentation; preprocess must then leave the size alone, so that
    without augmentation the tensor is the runtime's."""
    import torch

    from edgecxr.data.torchdata import CXRDataset
    from edgecxr.preprocess import PreprocessConfig, preprocess, resize_policy

    cfg = PreprocessConfig(size=48, resize=policy)
    g = np.random.default_rng(1).random((90, 70), dtype=np.float32)
    assert np.array_equal(preprocess(resize_policy(g, cfg.size, cfg.resize), cfg), preprocess(g, cfg))

    _pixel_noise = bench("source_probe").high_pass_noise
    sample = load_samples(calibration_dir())[0]
    ds = CXRDataset([sample], [sample.label], cfg, augment="grain")
    ds.augment = None  # only the input-scale part: the full-resolution one changes noise too
    torch.manual_seed(0)
    std, mean = cfg.std[0], cfg.mean[0]
    levels = [_pixel_noise(ds[0][0][0].numpy() * std + mean) for _ in range(40)]
    plain = _pixel_noise(CXRDataset([sample], [sample.label], cfg, augment="none")[0][0][0].numpy() * std + mean)
    assert ds[0][0].shape == (3, 48, 48)
    assert min(levels) < plain < max(levels)  # blurred below, grained above the image's own level
