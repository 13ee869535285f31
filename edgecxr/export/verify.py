"""The verification gate: an artifact is verified only when it agrees with the FP32 PyTorch model on
real labelled images within the target's tolerance (Polygraphy-style explicit tolerances)."""

from __future__ import annotations

import numpy as np

from edgecxr.metrics import agreement


def run_batched(runner, x: np.ndarray, batch: int | None = None, progress=None) -> np.ndarray:
    """Logits for ``x`` through ``runner`` in chunks no larger than its maximum batch."""
    b = max(1, min(batch or runner.max_batch, runner.max_batch))
    outs = []
    for i in range(0, len(x), b):
        outs.append(runner.run(x[i : i + b]))
        if progress is not None:
            progress(len(x[i : i + b]))
    return np.concatenate(outs)


def compare(ref_logits: np.ndarray, logits: np.ndarray, y: np.ndarray, tolerance: dict) -> dict:
    """Agreement with the reference, accuracy change on labelled images, max |logit| difference, verdict."""
    ref_pred, pred = ref_logits.argmax(1), logits.argmax(1)
    labelled = y >= 0
    acc_ref = float(np.mean(ref_pred[labelled] == y[labelled])) if labelled.any() else float("nan")
    acc = float(np.mean(pred[labelled] == y[labelled])) if labelled.any() else float("nan")
    agree = agreement(ref_pred, pred)
    drop = acc_ref - acc
    reasons = []
    if agree < tolerance["min_agreement"]:
        reasons.append(f"agreement {agree:.4f} < {tolerance['min_agreement']}")
    if labelled.any() and drop > tolerance["max_accuracy_drop"] + 1e-12:
        reasons.append(f"accuracy drop {drop:.4f} > {tolerance['max_accuracy_drop']}")
    return {
        "images": int(len(y)), "labelled": int(labelled.sum()), "agreement": agree,
        "accuracy_reference": acc_ref, "accuracy": acc, "accuracy_drop": drop,
        "max_abs_logit_diff": float(np.max(np.abs(ref_logits - logits))) if len(y) else 0.0,
        "tolerance": dict(tolerance), "verdict": "passed" if not reasons else "failed", "reasons": reasons,
    }
