"""The verification gate: an artifact is verified only when it agrees with the FP32 PyTorch model on
real labelled images, disjoint from its calibration images, within the target's tolerance
(Polygraphy-style explicit tolerances)."""

from __future__ import annotations

import numpy as np

from edgecxr.metrics import agreement, wilson_ci


def guard_decisions(scores: np.ndarray, guard: dict) -> np.ndarray:
    """True where the input guard accepts (score at or below its threshold)."""
    return np.asarray(scores, np.float64).reshape(-1) <= float(guard["threshold"])


def operating_point_check(ref_logits: np.ndarray, logits: np.ndarray, y: np.ndarray, classes: list[str],
                          op: dict) -> dict | None:
    """Findings at the operating point (temperature, positive-class threshold) of reference and artifact: their
    agreement and the positive class's sensitivity on the labelled images; None without an operating point."""
    from edgecxr.runtime.operating_point import findings

    pos, thr = op.get("positive_class"), op.get("threshold")
    if pos not in classes or thr is None:
        return None
    fa, fb = (findings(z, classes, op) for z in (ref_logits, logits))
    positives = y == classes.index(pos)
    res = {"positive_class": pos, "threshold": thr, "finding_agreement": agreement(fa, fb), "positives": int(positives.sum())}
    if positives.any():
        res["sensitivity_reference"] = float(np.mean(fa[positives] == classes.index(pos)))
        res["sensitivity"] = float(np.mean(fb[positives] == classes.index(pos)))
    return res


def compare(ref: dict[str, np.ndarray], outs: dict[str, np.ndarray], y: np.ndarray, tolerance,
            guard: dict | None = None, heatmap: dict | None = None, classes: list[str] | None = None,
            operating_point: dict | None = None) -> dict:
    """Agreement with the reference, flips with a 95% interval, accuracy change, guard agreement, sensitivity at
    the operating point, verdict."""
    ref_logits, logits = ref["logits"], outs["logits"]
    ref_pred, pred = ref_logits.argmax(1), logits.argmax(1)
    labelled = y >= 0
    acc_ref = float(np.mean(ref_pred[labelled] == y[labelled])) if labelled.any() else float("nan")
    acc = float(np.mean(pred[labelled] == y[labelled])) if labelled.any() else float("nan")
    agree = agreement(ref_pred, pred)
    flips = int(np.sum(ref_pred != pred))
    drop = acc_ref - acc
    reasons = []
    finite = bool(np.all(np.isfinite(logits)))
    if not finite:
        reasons.append("non-finite outputs")
    if agree < tolerance.min_agreement:
        reasons.append(f"agreement {agree:.4f} < {tolerance.min_agreement}")
    if labelled.any() and drop > tolerance.max_accuracy_drop + 1e-12:
        reasons.append(f"accuracy drop {drop:.4f} > {tolerance.max_accuracy_drop}")
    res = {
        "images": int(len(y)), "labelled": int(labelled.sum()), "agreement": agree, "flips": flips,
        "flip_rate_ci95": list(wilson_ci(flips, len(y))), "accuracy_reference": acc_ref, "accuracy": acc,
        "accuracy_drop": drop, "max_abs_logit_diff": float(np.max(np.abs(ref_logits - logits))) if len(y) else 0.0,
        "tolerance": {"min_agreement": tolerance.min_agreement, "max_accuracy_drop": tolerance.max_accuracy_drop,
                      "min_guard_agreement": tolerance.min_guard_agreement,
                      "max_op_sensitivity_drop": tolerance.max_op_sensitivity_drop,
                      "min_finding_agreement": tolerance.min_finding_agreement},
    }
    if operating_point and classes:
        opc = operating_point_check(ref_logits, logits, y, classes, operating_point)
        if opc:
            res["operating_point"] = opc
            drop_op = opc.get("sensitivity_reference", 0.0) - opc.get("sensitivity", 0.0)
            if drop_op > tolerance.max_op_sensitivity_drop + 1e-12:
                reasons.append(f"{opc['positive_class']} sensitivity at the operating point {opc['sensitivity']:.4f} vs "
                               f"{opc['sensitivity_reference']:.4f} in FP32 (drop > {tolerance.max_op_sensitivity_drop})")
            if opc["finding_agreement"] < tolerance.min_finding_agreement:
                reasons.append(f"finding agreement at the operating point {opc['finding_agreement']:.4f} < "
                               f"{tolerance.min_finding_agreement}")
    if guard and "guard" in ref and "guard" in outs:
        a, b = guard_decisions(ref["guard"], guard), guard_decisions(outs["guard"], guard)
        res["guard_agreement"] = float(np.mean(a == b))
        ra, rb = np.ravel(ref["guard"]).astype(np.float64), np.ravel(outs["guard"]).astype(np.float64)
        res["guard_score_correlation"] = float(np.corrcoef(ra, rb)[0, 1]) if ra.std() > 0 and rb.std() > 0 else 0.0
        if len(ra) > 2 and res["guard_score_correlation"] < 0.95:  # decisions alone pass a constant score on CXRs
            reasons.append(f"guard score correlation {res['guard_score_correlation']:.3f} < 0.95")
        res["guard_accepted_reference"] = float(np.mean(a))
        if res["guard_agreement"] < tolerance.min_guard_agreement:
            reasons.append(f"guard accept/reject agreement {res['guard_agreement']:.4f} < {tolerance.min_guard_agreement}")
    maps = sorted(k for k in ref if k.startswith("maps"))
    if maps and heatmap and all(k in outs for k in maps):
        from edgecxr.runtime.heatmap import class_activation_map, correlation

        corr = [correlation(class_activation_map([ref[k][i] for k in maps], heatmap, int(ref_pred[i])),
                            class_activation_map([outs[k][i] for k in maps], heatmap, int(ref_pred[i])))
                for i in range(len(y))]
        res["heatmap_correlation_mean"] = float(np.mean(corr))
        res["heatmap_correlation_min"] = float(np.min(corr))
    res.update(verdict="passed" if not reasons else "failed", reasons=reasons)
    return res
