"""Build calibration_data/ from ../shared/cxr/dev (permissive licences only, copied byte for byte).

calib/: up to 30 images per class from dev train, one per patient group, spread evenly over the
class's sources (INT8 calibration); val/: every permissive image of dev val; eval/: every permissive
image of dev test (the bench's labelled set). The export gate verifies on val/ + eval/, which share no
image and no patient with calib/. Deterministic: files are chosen in sha256 order. Run: python benchmarks/make_calibration_data.py
"""

from __future__ import annotations

import csv
import hashlib
import shutil
import sys
from collections import defaultdict
from pathlib import Path

SRC = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/cxr/dev")
DST = Path(__file__).resolve().parents[1] / "calibration_data"
PER_CLASS = 30
KEEP = ["file", "split", "class", "source", "source_repo", "source_commit", "original_path", "patient_id",
        "patient_group", "license", "origin_url", "non_commercial_only", "sha256"]


def main() -> None:
    rows = list(csv.DictReader((SRC / "MANIFEST.csv").open()))
    rows = [r for r in rows if r["non_commercial_only"] == "no"]
    chosen = []
    by_class = defaultdict(list)
    for r in rows:
        if r["split"] == "train":
            by_class[r["class"]].append(r)
    for cls, rs in sorted(by_class.items()):
        rs.sort(key=lambda r: r["sha256"])
        by_source = defaultdict(list)
        seen_groups = set()
        for r in rs:  # one image per patient group for variety
            if r["patient_group"] not in seen_groups:
                by_source[r["source"]].append(r)
                seen_groups.add(r["patient_group"])
        picked, queues = [], [by_source[s] for s in sorted(by_source)]
        while len(picked) < PER_CLASS and any(queues):  # round-robin over sources
            for q in queues:
                if q and len(picked) < PER_CLASS:
                    picked.append(q.pop(0))
        chosen += [("calib", r) for r in picked]
    chosen += [("val", r) for r in rows if r["split"] == "val"]
    chosen += [("eval", r) for r in rows if r["split"] == "test"]
    for sub in ("calib", "val", "eval"):
        shutil.rmtree(DST / sub, ignore_errors=True)
    out_rows = []
    for sub, r in chosen:
        src = SRC / r["file"]
        dst = DST / sub / r["class"] / Path(r["file"]).name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
        assert hashlib.sha256(dst.read_bytes()).hexdigest() == r["sha256"], dst
        out_rows.append(dict({k: r[k] for k in KEEP}, file=str(dst.relative_to(DST)), split=sub))
    with (DST / "MANIFEST.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=KEEP)
        w.writeheader()
        w.writerows(out_rows)
    print(f"{len(out_rows)} images -> {DST}")


if __name__ == "__main__":
    main()
