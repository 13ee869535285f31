"""Write edgecxr/weights/MODEL_CARD.md from two `edgecxr eval` results (Covid-DenseNet and the baseline).

Usage: python benchmarks/model_card.py runs/covid-densenet-s0/eval-test/eval.json runs/densenet121-s0/eval-test/eval.json
Adds a paired exact McNemar test on the same test images.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from edgecxr.metrics import mcnemar_exact

OUT = Path(__file__).resolve().parents[1] / "edgecxr" / "weights" / "MODEL_CARD.md"


def _pct(v: float, ci: list[float] | None) -> str:
    return f"{100 * v:.1f} [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if ci else f"{100 * v:.1f}"


def main() -> None:
    a, b = (json.loads(Path(p).read_text()) for p in sys.argv[1:3])
    classes = a["classes"]
    rows = []
    for level in ("image", "patient"):
        if level not in a:
            continue
        for key, name in (("accuracy", "accuracy"), ("macro_f1", "macro F1"), ("macro_auc", "macro AUC")):
            rows.append(f"| {level} | {name} | {_pct(a[level][key], a[level]['ci95'].get(key))} | "
                        f"{_pct(b[level][key], b[level]['ci95'].get(key))} |")
        for c in classes:
            for m in ("sensitivity", "specificity"):
                k = f"{c}/{m}"
                rows.append(f"| {level} | {c} {m} | {_pct(a[level]['per_class'][c][m], a[level]['ci95'].get(k))} | "
                            f"{_pct(b[level]['per_class'][c][m], b[level]['ci95'].get(k))} |")
    ya = np.array([classes.index(p["label"]) for p in a["predictions"]])
    assert [p["file"] for p in a["predictions"]] == [p["file"] for p in b["predictions"]], "not the same images"
    ca = np.argmax([p["prob"] for p in a["predictions"]], 1) == ya
    cb = np.argmax([p["prob"] for p in b["predictions"]], 1) == ya
    mc = mcnemar_exact(ca, cb)
    train = json.loads(Path(a["checkpoint"]).with_suffix(".json").read_text())
    text = f"""# Model card: Covid-DenseNet (edgecxr default model, `covid-densenet-cxr3`)

**Not a medical device. Not clinically validated.** In the training and test data, class is
confounded with hospital and source (every Normal and most Pneumonia images come from the NIH
Clinical Center; COVID-19 images from Hannover Medical School). A model can score well here by
recognising the source, not the disease. These numbers describe this dev split only.

## What it is
- Architecture: Covid-DenseNet (our design from the abstract of the Digital Health 2025 paper; see
  `edgecxr/models/covid_densenet.py`): DenseNet121 backbone, three-scale taps, CBAM-style attention
  per scale, top-down fusion with learned scale weights. 7.33 M parameters, 5.83 GFLOPs at 224x224.
- Classes: {", ".join(classes)}. Input: one grayscale radiograph, preprocessed by
  `edgecxr.preprocess` ({json.dumps(train["preprocess"])}).
- Weights: fp16 safetensors (`covid-densenet-cxr3.safetensors`), sha256 in `covid-densenet-cxr3.json`.
- Trained **from scratch** (no ImageNet weights could be fetched on the build machine) on the
  permissive-licence images of `../shared/cxr/dev` train ({train["data"].get("n_train")} images), model
  selection on val ({train["data"].get("n_val")} images) by macro F1; best epoch {train["epoch"]} of
  {train["train_config"]["epochs"]}. Training config: `{json.dumps(train["train_config"])}`.

## Results on dev test (permissive-licence images, {a["n_images"]} images)

Point estimate and 95% percentile bootstrap interval, in %. Per-patient rows average the
probabilities of a patient's images.

| level | metric | Covid-DenseNet | DenseNet121 baseline |
|---|---|---|---|
{chr(10).join(rows)}

Paired exact McNemar test on the same images (one seed each): Covid-DenseNet right and baseline
wrong on {mc["a_only"]} images, the reverse on {mc["b_only"]}; p = {mc["p_value"]:.3g}.
**One seed per model is not enough to claim that either model is better**; the paper's reported
gains (+3.33 / +4.17 points on an external set) are not reproduced or refuted here. The test set
is small and drawn from the same sources as training, so it can overstate what holds elsewhere.

## Reproduce

```bash
benchmarks/train_models.sh 0          # trains and evaluates both models (needs ../shared/cxr)
python benchmarks/model_card.py runs/covid-densenet-s0/eval-test/eval.json runs/densenet121-s0/eval-test/eval.json
```

## Data and licences
Training images: NIH ChestX-ray14 subset (no restrictions; attribution: NIH Clinical Center, Wang
et al. CVPR 2017), Hannover Medical School COVID-19 repository (CC BY 3.0), and CC BY / CC BY 4.0
images of the COVID-19 image data collection (Cohen et al. 2020). Non-commercial-only images were
excluded. See `../shared/cxr/SOURCES.md` and `calibration_data/README.md`.
"""
    OUT.write_text(text)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
