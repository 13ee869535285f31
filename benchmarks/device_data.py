"""Fit the dev set into a device machine's upload limit, and rebuild it there.

The device tool sends the working tree (at most 64 MiB). The dev set (``../shared/cxr``, ~24 MiB of PNGs) plus the
tracked tree is over that, but 312 of its images are already in the tree, byte for byte, as ``calibration_data/``.
``pack`` copies the manifest and only the images the pool does not hold; ``restore`` (on the device machine) fills in
the rest from the pool by sha256 and checks every image of the manifest against its sha256.

    python benchmarks/device_data.py pack ../shared/cxr .gpudata/cxr --pool calibration_data
    python benchmarks/device_data.py restore .gpudata/cxr --pool calibration_data
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import shutil
import sys
from pathlib import Path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def pool_index(pool: Path) -> dict[str, Path]:
    return {sha256(p): p for p in sorted(pool.rglob("*.png"))}


def manifests(root: Path) -> list[Path]:
    found = sorted(root.rglob("MANIFEST.csv"))
    if not found:
        sys.exit(f"{root}: no MANIFEST.csv below it; point at the dataset folder (e.g. ../shared/cxr).")
    return found


def rows(manifest: Path) -> list[dict]:
    with manifest.open(newline="") as fh:
        return list(csv.DictReader(fh))


def pack(src: Path, dest: Path, pool: Path) -> None:
    have = pool_index(pool)
    copied = skipped = 0
    for man in manifests(src):
        out = dest / man.parent.relative_to(src)
        out.mkdir(parents=True, exist_ok=True)
        shutil.copy2(man, out / man.name)
        for r in rows(man):
            if r["sha256"] in have:
                skipped += 1
                continue
            target = out / r["file"]
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(man.parent / r["file"], target)
            copied += 1
    if (src / "SOURCES.md").is_file():
        shutil.copy2(src / "SOURCES.md", dest / "SOURCES.md")
    size = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
    print(f"{dest}: {copied} images copied, {skipped} left to the pool {pool}; {size / 2**20:.1f} MiB")


def restore(dest: Path, pool: Path) -> None:
    have = pool_index(pool)
    filled = bad = 0
    for man in manifests(dest):
        for r in rows(man):
            target = man.parent / r["file"]
            if not target.is_file():
                if r["sha256"] not in have:
                    sys.exit(f"{target}: missing and not in the pool {pool}; pack again from the full dataset.")
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(have[r["sha256"]], target)
                filled += 1
            if sha256(target) != r["sha256"]:
                bad += 1
                print(f"sha256 mismatch: {target}", file=sys.stderr)
    if bad:
        sys.exit(f"{bad} images do not match their manifest's sha256.")
    print(f"{dest}: {filled} images restored from {pool}; every image matches its sha256")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack")
    p.add_argument("src", type=Path)
    p.add_argument("dest", type=Path)
    p.add_argument("--pool", type=Path, default=Path("calibration_data"))
    r = sub.add_parser("restore")
    r.add_argument("dest", type=Path)
    r.add_argument("--pool", type=Path, default=Path("calibration_data"))
    a = ap.parse_args()
    if a.cmd == "pack":
        pack(a.src, a.dest, a.pool)
    else:
        restore(a.dest, a.pool)


if __name__ == "__main__":
    main()
