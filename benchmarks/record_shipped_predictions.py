"""Record the shipped model's outputs on the shipped eval images (tests/test_shipped.py compares against it).

Rerun after shipping a new model: python benchmarks/record_shipped_predictions.py
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from edgecxr.artifact import sha256_file
from edgecxr.data import load_samples
from edgecxr.resources import default_checkpoint, eval_dir
from edgecxr.train.evaluate import checkpoint_outputs

OUT = Path(__file__).resolve().parent / "results" / "shipped-predictions.json"


def main() -> None:
    ck = default_checkpoint()
    samples = sorted(load_samples(eval_dir()), key=lambda s: s.path.name)
    outs, meta = checkpoint_outputs(ck, samples)
    rec = {"checkpoint_sha256": sha256_file(ck), "files": [s.path.name for s in samples],
           "logits": np.round(outs["logits"], 5).tolist()}
    if "guard" in outs:
        rec["guard"] = np.round(outs["guard"].reshape(-1), 4).tolist()
    OUT.write_text(json.dumps(rec, indent=1) + "\n")
    print(f"{len(samples)} images -> {OUT}")


if __name__ == "__main__":
    main()
