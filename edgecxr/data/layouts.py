"""Read the dataset layouts users actually have into a list of :class:`Sample`.

* ``folder``: ``ROOT/<class>/*.png`` or ``ROOT/{train,val,test}/<class>/*.png``
  (the COVID-19 Radiography Database style).
* ``covidx``: a COVIDx split file, one image per line: ``patient_id filename label [source]``;
  images are looked up in ``--images`` (default: a folder named like the file's split beside it,
  else the file's own folder).
* ``csv``: a manifest with columns ``file`` and ``class`` and optionally ``split``,
  ``patient_id`` / ``patient_group``, ``non_commercial_only``; paths relative to the CSV's folder
  (``../shared/cxr/dev/MANIFEST.csv`` is one).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from edgecxr.errors import DatasetError
from edgecxr.imaging import IMAGE_SUFFIXES

SPLITS = ("train", "val", "test")
_ALIASES = {"covid": "COVID-19", "covid-19": "COVID-19", "covid19": "COVID-19", "normal": "Normal",
            "pneumonia": "Pneumonia", "viral pneumonia": "Pneumonia"}


@dataclass(frozen=True)
class Sample:
    path: Path
    label: str
    split: str | None = None
    patient: str | None = None
    licence_nc: bool = False  # True when the licence is non-commercial only
    source: str | None = None  # hospital / collection the image came from (manifest column ``source``)

    @property
    def group(self) -> str:
        """Patient group used for splitting and per-patient metrics (the file when unknown)."""
        return self.patient or str(self.path)


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _from_folder(root: Path) -> list[Sample]:
    split_dirs = [root / s for s in SPLITS if (root / s).is_dir()]
    samples = []
    for sd in split_dirs or [root]:
        for cdir in sorted(d for d in sd.iterdir() if d.is_dir()):
            for p in _images(cdir):
                samples.append(Sample(p, cdir.name, sd.name if split_dirs else None))
    return samples


def _from_covidx(path: Path, images: Path | None) -> list[Sample]:
    split = next((s for s in SPLITS if s in path.stem.lower()), None)
    if split == "val" and "test" in path.stem.lower():
        split = "test"
    if images is None:
        cand = path.parent / (split or "")
        images = cand if split and cand.is_dir() else path.parent
    samples = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) < 3:
            raise DatasetError(f"{path}:{n}: expected 'patient_id filename label [source]', got {line!r}")
        pid, fname, label = parts[0], parts[1], parts[2]
        samples.append(Sample(images / fname, _ALIASES.get(label.lower(), label), split, pid))
    return samples


def _from_csv(path: Path) -> list[Sample]:
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        raise DatasetError(f"{path}: empty manifest.")
    cols = set(rows[0])
    fcol = next((c for c in ("file", "path", "filename") if c in cols), None)
    lcol = next((c for c in ("class", "label") if c in cols), None)
    if fcol is None or lcol is None:
        raise DatasetError(f"{path}: needs a 'file' and a 'class' column; has {sorted(cols)}.")
    pcol = next((c for c in ("patient_group", "patient_id", "patient") if c in cols), None)
    out = []
    for r in rows:
        split = (r.get("split") or "").strip() or None
        out.append(Sample(path.parent / r[fcol], r[lcol], split, (r.get(pcol) or None) if pcol else None,
                          (r.get("non_commercial_only") or "").strip().lower() == "yes",
                          (r.get("source") or "").strip() or None))
    return out


def detect_layout(path: Path) -> str:
    if path.is_dir():
        return "folder"
    if path.suffix.lower() == ".csv":
        return "csv"
    if path.suffix.lower() == ".txt":
        return "covidx"
    raise DatasetError(f"{path}: cannot tell the dataset layout; pass --layout folder|covidx|csv.")


def load_samples(path: str | Path, layout: str = "auto", images: Path | None = None,
                 permissive_only: bool = False) -> list[Sample]:
    """Read a dataset. ``permissive_only`` drops images whose licence is non-commercial only."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"{path}: no such dataset file or folder.")
    layout = detect_layout(path) if layout == "auto" else layout
    if layout == "folder":
        samples = _from_folder(path)
    elif layout == "covidx":
        samples = _from_covidx(path, images)
    elif layout == "csv":
        samples = _from_csv(path)
    else:
        raise DatasetError(f"unknown layout {layout!r}; choose folder, covidx or csv.")
    if permissive_only:
        samples = [s for s in samples if not s.licence_nc]
    if not samples:
        raise DatasetError(f"{path}: no images found (layout {layout}).")
    return samples


def write_manifest(samples: list[Sample], path: Path) -> None:
    """Write samples as a CSV manifest (file paths relative to the manifest's folder when possible)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    base = path.parent.resolve()
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file", "class", "split", "patient_id"])
        for s in samples:
            p = s.path.resolve()
            try:
                rel = p.relative_to(base)
            except ValueError:
                rel = p
            w.writerow([str(rel), s.label, s.split or "", s.patient or ""])
