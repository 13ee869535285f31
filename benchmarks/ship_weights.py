"""Ship a checkpoint as the default model: copy it to edgecxr/weights/covid-densenet-cxr3.safetensors and write the
record beside it (its metadata, size and sha256, which tests/test_shipped.py checks).

Run: python benchmarks/ship_weights.py CALIBRATED.safetensors
     then python benchmarks/record_shipped_predictions.py and python benchmarks/model_card.py
"""
import json
import shutil
import sys
from pathlib import Path

from edgecxr.artifact import sha256_file
from edgecxr.checkpoint import read_meta

WEIGHTS = Path(__file__).resolve().parents[1] / "edgecxr" / "weights" / "covid-densenet-cxr3.safetensors"


def main() -> None:
    src = Path(sys.argv[1])
    meta = read_meta(src)
    if not meta.get("data", {}).get("permissive_only") or meta["data"].get("non_commercial_training_images", 0):
        sys.exit(f"{src}: not trained on permissive images only; its weights must not be shipped")
    if src.resolve() != WEIGHTS.resolve():
        shutil.copyfile(src, WEIGHTS)
    record = {**meta, "file": WEIGHTS.name, "bytes": WEIGHTS.stat().st_size, "sha256": sha256_file(WEIGHTS)}
    WEIGHTS.with_suffix(".json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    print(f"shipped {src} -> {WEIGHTS} ({record['bytes']:,} bytes, sha256 {record['sha256'][:12]})")


if __name__ == "__main__":
    main()
