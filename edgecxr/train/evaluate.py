"""Evaluate a checkpoint on labelled images: metrics with bootstrap intervals, JSON/Markdown, confusion plot."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgecxr.artifact import atomic_write_json, sha256_file
from edgecxr.data.layouts import Sample
from edgecxr.errors import DatasetError
from edgecxr.metrics import evaluate, per_source, point_metrics, wilson_ci

CAVEAT = ("In the bundled data, class is confounded with hospital and source: these numbers measure this "
          "dev split, not clinical validity.")


def select_split(samples: list[Sample], split: str, data) -> list[Sample]:
    """The samples of ``split`` ('all' keeps every one); an error naming the dataset when none is left."""
    out = samples if split == "all" else [s for s in samples if s.split == split]
    if not out:
        raise DatasetError(f"{data}: no images in split {split!r}.")
    return out


def checkpoint_outputs(checkpoint: Path, samples: list[Sample], batch_size: int = 16) -> tuple[dict, dict]:
    """Named outputs of a checkpoint in torch, and its metadata: logits and, when a guard is fitted, the content
    score ``guard`` and ``image_rules_ok`` (the runtime's image rules on the same decoded pixels)."""
    import torch

    from edgecxr.checkpoint import load_model
    from edgecxr.imaging import read_image
    from edgecxr.preprocess import PreprocessConfig, preprocess
    from edgecxr.runtime.batching import chunks

    model, meta = load_model(checkpoint)
    _check_labels(samples, meta["classes"])
    names, rules = ["logits"], None
    if meta.get("guard"):
        from edgecxr.guard_torch import GuardedClassifier
        from edgecxr.runtime.image_rules import ImageRules

        model, names = GuardedClassifier(model, meta["guard"]).eval(), ["logits", "guard"]
        rules = ImageRules.from_dict(meta["guard"].get("image_rules"))
    pcfg = PreprocessConfig.from_dict(meta["preprocess"])
    parts: dict[str, list] = {}
    with torch.no_grad():
        for i, j in chunks(len(samples), batch_size):
            grays = [read_image(s.path) for s in samples[i:j]]
            if rules is not None:
                parts.setdefault("image_rules_ok", []).append(np.array([rules.check(g) is None for g in grays]))
            out = model(torch.from_numpy(np.stack([preprocess(g, pcfg) for g in grays])))
            for k, v in zip(names, out if isinstance(out, tuple) else (out,)):
                parts.setdefault(k, []).append(v.numpy())
    meta["guard"] = {k: v for k, v in (meta.get("guard") or {}).items() if k not in ("mean", "components", "inv_lambda", "bank")} or None
    return {k: np.concatenate(v) for k, v in parts.items()}, meta


def artifact_outputs(artifact: Path, samples: list[Sample], allow_unverified: bool = False) -> tuple[dict, dict]:
    """Named outputs of an exported artifact through the runtime's own decoder, image rules, preprocessing and
    runner (``image_rules_ok`` as in :func:`checkpoint_outputs`)."""
    from edgecxr.runtime import load
    from edgecxr.runtime.batching import run_batched

    with load(artifact, allow_unverified=allow_unverified) as m:
        _check_labels(samples, m.classes)
        xs, ok = [], []
        for s in samples:
            g = m.decode(s.path)
            ok.append(m.image_rules.check(g) is None)
            xs.append(m.prepare(s.path, gray=g))
        outs = run_batched(m.runner, np.stack(xs))
        if m.sidecar.guard:
            outs["image_rules_ok"] = np.array(ok)
        side = m.sidecar
    meta = {"arch": side.model.get("arch"), "classes": side.classes, "guard": side.guard,
            "operating_point": side.operating_point, "data": {}, "backend": side.backend, "precision": side.precision}
    return outs, meta


def guard_accepts(outs: dict, meta: dict, margin: float = 1.0) -> np.ndarray:
    """Which inputs the runtime's guard accepts: image rules, then content score <= threshold x ``margin``."""
    score = outs["guard"].reshape(-1)
    return (score <= meta["guard"]["threshold"] * margin) & outs.get("image_rules_ok", np.ones(len(score), bool))


def _check_labels(samples: list[Sample], classes: list[str]) -> None:
    unknown = sorted({s.label for s in samples} - set(classes))
    if unknown:
        raise DatasetError(f"labels {unknown} are not among the model's classes {classes}.")


def is_checkpoint(path: Path) -> bool:
    return Path(path).suffix == ".safetensors"


def evaluate_model(path: Path, samples: list[Sample], n_boot: int = 1000, reference: Path | None = None,
                   allow_unverified: bool = False) -> dict:
    """Evaluate a checkpoint or an exported artifact; with ``reference`` (a checkpoint), add agreement and flips."""
    from edgecxr.runtime.batching import softmax
    from edgecxr.runtime.operating_point import findings

    from edgecxr.sidecar import resolve_artifact

    path = resolve_artifact(path)  # an export folder (exports/<model>/onnx-int8) means the artifact in it
    if not path.is_file():
        raise DatasetError(f"{path}: no such checkpoint or artifact.")
    outs, meta = (checkpoint_outputs(path, samples) if is_checkpoint(path)
                  else artifact_outputs(path, samples, allow_unverified))
    classes = meta["classes"]
    probs = softmax(outs["logits"])
    ys = np.array([classes.index(s.label) for s in samples])
    groups = [s.group for s in samples]
    res = evaluate(ys, probs, classes, groups=groups if any(s.patient for s in samples) else None, n_boot=n_boot)
    res["per_source"] = per_source(ys, probs, classes, [s.source for s in samples])
    op = meta.get("operating_point")
    if op and op.get("threshold") is not None:
        f = findings(outs["logits"], classes, op)
        onehot = np.eye(len(classes))[f]
        res["operating_point"] = {"rule": op, "image": point_metrics(ys, onehot, classes),
                                  "per_source": per_source(ys, onehot, classes, [s.source for s in samples])}
    if meta.get("guard") and "guard" in outs:
        rej = ~guard_accepts(outs, meta)
        by_rules = ~outs.get("image_rules_ok", np.ones(len(samples), bool))
        res["guard"] = {"threshold": meta["guard"]["threshold"], "rejected": int(rej.sum()),
                        "rejected_by_image_rules": int(by_rules.sum()),
                        "rejected_share": float(rej.mean()), "rejected_files": [str(s.path) for s, r in zip(samples, rej) if r]}
    if reference is not None:
        ref, _ = checkpoint_outputs(reference, samples)
        a, b = ref["logits"].argmax(1), outs["logits"].argmax(1)
        flips = [{"file": str(s.path), "reference": classes[i], "this": classes[j]}
                 for s, i, j in zip(samples, a, b) if i != j]
        res["reference"] = {"checkpoint": str(reference), "agreement": float(np.mean(a == b)), "flips": len(flips),
                            "flip_rate_ci95": list(wilson_ci(len(flips), len(samples))), "flipped": flips}
        if op and op.get("threshold") is not None:
            res["reference"]["operating_point"] = finding_flips(ref["logits"], outs["logits"], classes, op,
                                                                [str(s.path) for s in samples])
    res.update({"model": str(path), "sha256": sha256_file(path), "arch": meta.get("arch"), "classes": classes,
                "kind": "checkpoint" if is_checkpoint(path) else f"artifact ({meta.get('backend')} {meta.get('precision')})",
                "n_images": len(samples), "caveat": CAVEAT, "training_data": meta.get("data", {}),
                "licences": {"non_commercial_images": sum(s.licence_nc for s in samples), "n": len(samples)},
                "predictions": [{"file": str(s.path), "label": s.label, "source": s.source, "prob": p.round(6).tolist()}
                                for s, p in zip(samples, probs)]})
    return res


def finding_flips(ref_logits: np.ndarray, logits: np.ndarray, classes: list[str], op: dict, files: list[str]) -> dict:
    """Where two models' findings at one operating point (temperature, positive class, threshold) differ: the finding
    is what the runtime reports, and an image near the threshold can change it with the argmax unchanged."""
    from edgecxr.runtime.operating_point import findings

    fa, fb = (findings(x, classes, op) for x in (ref_logits, logits))
    flips = [{"file": f, "reference": classes[i], "this": classes[j]} for f, i, j in zip(files, fa, fb) if i != j]
    return {"finding_agreement": float(np.mean(fa == fb)), "flips": len(flips),
            "flip_rate_ci95": list(wilson_ci(len(flips), len(files))), "flipped": flips}


def evaluate_checkpoint(checkpoint: Path, samples: list[Sample], n_boot: int = 1000) -> dict:
    return evaluate_model(checkpoint, samples, n_boot=n_boot)


def _fmt(v: float, ci: list[float] | None) -> str:
    return f"{100 * v:.1f}" + (f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if ci else "")


def markdown_report(res: dict) -> str:
    lines = [f"## {res['arch']} ({res.get('kind', 'checkpoint')}) on {res['n_images']} images", "", f"> {res['caveat']}", ""]
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
    if res.get("operating_point"):
        op = res["operating_point"]
        m = op["image"]
        lines += [f"**at the operating point** ({op['rule']['positive_class']} when p >= {op['rule']['threshold']:.3f}, "
                  f"temperature {op['rule'].get('temperature', 1.0):.2f}): accuracy {100 * m['accuracy']:.1f}, "
                  + ", ".join(f"{c} sensitivity {100 * v['sensitivity']:.1f}" for c, v in m["per_class"].items()), ""]
    if res.get("guard"):
        g = res["guard"]
        lines += [f"**input guard**: {g['rejected']} of {res['n_images']} images rejected "
                  f"({100 * g['rejected_share']:.1f}%; threshold {g['threshold']:.2f}; "
                  f"{g.get('rejected_by_image_rules', 0)} by the image rules)", ""]
    if res.get("shortcut_probe"):
        from edgecxr.train.shortcuts import markdown

        lines += markdown(res["shortcut_probe"], res["n_images"])
    if res.get("reference"):
        r = res["reference"]
        lines += _flips(f"**vs reference** {r['checkpoint']}", r["agreement"], r)
        if r.get("operating_point"):
            o = r["operating_point"]
            lines += _flips("**vs reference at the operating point** (the finding the runtime reports)",
                            o["finding_agreement"], o)
    return "\n".join(lines)


def _flips(title: str, agreement: float, r: dict) -> list[str]:
    """Agreement with the reference, its flip-rate interval, and the flipped images."""
    lo, hi = r["flip_rate_ci95"]
    return ([f"{title}: agreement {100 * agreement:.2f}% ({r['flips']} flips, flip rate 95% CI "
             f"[{100 * lo:.1f}, {100 * hi:.1f}]%)", ""]
            + [f"- {f['file']}: {f['reference']} -> {f['this']}" for f in r["flipped"]] + [""])


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
