"""Evaluate a checkpoint on labelled images: metrics with bootstrap intervals, JSON/Markdown, confusion plot."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgecxr.artifact import atomic_write_json, sha256_file
from edgecxr.data.layouts import Sample
from edgecxr.errors import DatasetError
from edgecxr.metrics import evaluate, per_source

CAVEAT = ("In the bundled data, class is confounded with hospital and source: these numbers measure this "
          "dev split, not clinical validity.")


def predict_checkpoint(checkpoint: Path, samples: list[Sample], batch_size: int = 16):
    import torch
    from torch.utils.data import DataLoader

    from edgecxr.checkpoint import load_model
    from edgecxr.data.torchdata import CXRDataset
    from edgecxr.preprocess import PreprocessConfig
    from edgecxr.train.loop import predict_probs

    model, meta = load_model(checkpoint)
    classes = meta["classes"]
    unknown = sorted({s.label for s in samples} - set(classes))
    if unknown:
        raise DatasetError(f"labels {unknown} are not among the model's classes {classes}.")
    ds = CXRDataset(samples, classes, PreprocessConfig.from_dict(meta["preprocess"]), augment=False, cache=False)
    probs, ys = predict_probs(model, DataLoader(ds, batch_size=batch_size), torch.device("cpu"))
    return probs, ys, meta


def evaluate_checkpoint(checkpoint: Path, samples: list[Sample], n_boot: int = 1000) -> dict:
    probs, ys, meta = predict_checkpoint(checkpoint, samples)
    groups = [s.group for s in samples]
    res = evaluate(ys, probs, meta["classes"], groups=groups if any(s.patient for s in samples) else None, n_boot=n_boot)
    res["per_source"] = per_source(ys, probs, meta["classes"], [s.source for s in samples])
    res["licences"] = {"non_commercial_images": sum(s.licence_nc for s in samples), "n": len(samples)}
    res.update({"checkpoint": str(checkpoint), "checkpoint_sha256": sha256_file(checkpoint), "arch": meta["arch"],
                "classes": meta["classes"], "n_images": len(samples), "caveat": CAVEAT,
                "training_data": meta.get("data", {}),
                "predictions": [{"file": str(s.path), "label": s.label, "source": s.source, "prob": p.round(6).tolist()}
                                for s, p in zip(samples, probs)]})
    return res


def _fmt(v: float, ci: list[float] | None) -> str:
    return f"{100 * v:.1f}" + (f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if ci else "")


def markdown_report(res: dict) -> str:
    lines = [f"## {res['arch']} on {res['n_images']} images", "", f"> {res['caveat']}", ""]
    for level in ("image", "patient"):
        if level not in res:
            continue
        m, ci = res[level], res[level]["ci95"]
        lines += [f"**{level}-level** (n={m['n']}; % with 95% bootstrap CI): accuracy {_fmt(m['accuracy'], ci.get('accuracy'))}, "
                  f"macro F1 {_fmt(m['macro_f1'], ci.get('macro_f1'))}, macro AUC {_fmt(m['macro_auc'], ci.get('macro_auc'))}", "",
                  "| class | sensitivity | specificity | PPV | F1 | AUC | n |", "|---|---|---|---|---|---|---|"]
        for c, v in m["per_class"].items():
            lines.append(f"| {c} | {_fmt(v['sensitivity'], ci.get(c + '/sensitivity'))} | "
                         f"{_fmt(v['specificity'], ci.get(c + '/specificity'))} | {100 * v['ppv']:.1f} | {100 * v['f1']:.1f} | "
                         f"{100 * v['auc']:.1f} | {v['support']} |")
        lines.append("")
    if res.get("per_source"):
        lines += ["**per source** (image level; sensitivity k/n with Wilson 95% interval): a model that learned "
                  "hospitals rather than disease shows up here", "",
                  "| source | n | accuracy | " + " | ".join(f"{c} sensitivity" for c in res["classes"]) + " |",
                  "|---|---|---|" + "---|" * len(res["classes"])]
        for src, r in res["per_source"].items():
            cells = []
            for c in res["classes"]:
                v = r["sensitivity"].get(c)
                cells.append(f"{v['k']}/{v['n']} = {100 * v['value']:.0f}% [{100 * v['ci95'][0]:.0f}, {100 * v['ci95'][1]:.0f}]"
                             if v else "")
            lines.append(f"| {src} | {r['n']} | {100 * r['accuracy']:.1f} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def plot_confusion(cm: list[list[int]], classes: list[str], path: Path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm_a = np.asarray(cm)
    fig, ax = plt.subplots(figsize=(4.2, 3.8), dpi=120)
    ax.imshow(cm_a, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes, rotation=30, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(j, i, str(cm_a[i, j]), ha="center", va="center", color="white" if cm_a[i, j] > cm_a.max() / 2 else "black")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_report(res: dict, out: Path) -> None:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "eval.json", res)
    (out / "eval.md").write_text(markdown_report(res) + "\n")
    plot_confusion(res["image"]["confusion"], res["classes"], out / "confusion.png", f"{res['arch']} (image level)")
