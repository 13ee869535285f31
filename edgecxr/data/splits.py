"""Patient-level train/val/test splits: no patient group in two splits, stratified by class."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import replace

from edgecxr.data.layouts import Sample


def patient_split(samples: list[Sample], fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
                  seed: int = 0) -> list[Sample]:
    """Assign each patient group to train/val/test. Deterministic for a given seed.

    Groups are stratified by their (majority) class, ordered by a seeded hash, and cut by the
    cumulative fractions, so every image of a patient lands in one split.
    """
    if abs(sum(fractions) - 1.0) > 1e-6 or min(fractions) < 0:
        raise ValueError(f"fractions must be non-negative and sum to 1, got {fractions}")
    groups: dict[str, list[Sample]] = defaultdict(list)
    for s in samples:
        groups[s.group].append(s)
    by_class: dict[str, list[str]] = defaultdict(list)
    for g, members in groups.items():
        labels = [m.label for m in members]
        by_class[max(set(labels), key=labels.count)].append(g)
    assign: dict[str, str] = {}
    for label, gs in by_class.items():
        gs.sort(key=lambda g: hashlib.sha256(f"{seed}:{g}".encode()).hexdigest())
        n = len(gs)
        cut1 = round(n * fractions[0])
        cut2 = cut1 + round(n * fractions[1])
        for i, g in enumerate(gs):
            assign[g] = "train" if i < cut1 else "val" if i < cut2 else "test"
    return [replace(s, split=assign[s.group]) for s in samples]


def subsample(samples: list[Sample], fraction: float, seed: int = 0) -> list[Sample]:
    """Keep about ``fraction`` of the patients of each (class, source) stratum, whole patients only.

    For training-set-size sweeps: deterministic for a seed, every stratum keeps at least one patient.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if fraction == 1:
        return list(samples)
    strata: dict[tuple, set[str]] = defaultdict(set)
    for s in samples:
        strata[(s.label, s.source)].add(s.group)
    keep: set[str] = set()
    for key, groups in strata.items():
        ordered = sorted(groups, key=lambda g: hashlib.sha256(f"{seed}:{g}".encode()).hexdigest())
        keep.update(ordered[:max(1, round(len(ordered) * fraction))])
    return [s for s in samples if s.group in keep]


def split_parts(data, layout: str = "auto", permissive_only: bool = False):
    """(all samples, {"train": [...], "val": [...], "test": [...]}) of a dataset with splits."""
    from edgecxr.data.layouts import load_samples
    from edgecxr.errors import DatasetError

    samples = load_samples(data, layout, permissive_only=permissive_only)
    parts = {sp: [s for s in samples if s.split == sp] for sp in ("train", "val", "test")}
    if not parts["train"] or not parts["val"]:
        raise DatasetError(f"{data}: needs train and val splits; make them with `edgecxr split {data} --out split.csv`.")
    return samples, parts
