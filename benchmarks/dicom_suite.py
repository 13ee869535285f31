"""Real-world DICOM through the runtime: what happens to every file of a DICOM test suite, and whether a chest
radiograph reads the same in every encoding a hospital may send.

1. pydicom's bundled test files and, when installed, the pydicom-data package's larger ones (`pip install
   pydicom-data`, MIT; part of the `dev` extra): CT, MR, US, RT, SR, NM, SEG, colour, multi-frame, broken files, and a
   CR extremity, as they are: each must end as "rejected" or "error" with a reason; none may crash the run or get a
   finding. The suites' own chest radiographs (CR/DX whose header says CHEST: pydicom-data's RG1 in four encodings)
   are the exception: each must be "ok", and the encodings of one image must agree (finding, probabilities).
2. The same files relabelled as frontal chest DX (Modality DX, BodyPartExamined CHEST, ViewPosition PA), so the
   decoders, pixel-module checks, image rules and content guard see them rather than the header rules: still no
   finding for any of them (none is a chest radiograph).
3. One shipped eval CXR written as DICOM in the encodings and pixel conventions real senders use (MONOCHROME1 with
   Presentation LUT Shape INVERSE, 12-bit and signed 16-bit with rescale and windows, SIGMOID VOI, implicit VR,
   RLE, JPEG-LS, JPEG 2000 lossless, JPEG Baseline, JPEG Lossless, pixel padding, a file name without suffix, a bare
   legacy dataset without preamble and file meta): each must be "ok" with the
   PNG's finding and probabilities within a small tolerance.

    python benchmarks/dicom_suite.py exports/covid-densenet-cxr3-76fa283b/openvino-int8 --out benchmarks/results/dicom-suite-76fa283b.md

Other suites (any folder of files; the bundled ones can be left out), e.g. the DICOM test files inside the nibabel
and pynetdicom wheels (MIT): `pip download --no-deps nibabel==5.4.2 pynetdicom==3.0.4 -d wheels`, unzip them, then

    python benchmarks/dicom_suite.py ARTIFACT --no-bundled --suite nibabel=DIR/nibabel/tests/data \
        --suite nibabel-nicom=DIR/nibabel/nicom/tests/data --suite pynetdicom=DIR/pynetdicom/tests/dicom_files

or the 52 DICOM test files of the dicognito 0.19.0 source distribution (MIT; `pip download --no-deps --no-binary
:all: dicognito==0.19.0`, untar): `--no-bundled --suite dicognito=DIR/dicognito-0.19.0/tests`.
Likewise the heudiconv 1.5.1 (Apache-2.0; Siemens MR incl. a multi-frame one, an SR, phantoms) and dicomweb-client
0.61.2 (MIT; a slide-microscopy image and its DICOMweb test payloads) source distributions: `--suite
heudiconv=DIR/heudiconv-1.5.1/heudiconv/tests/data --suite dicomweb-client=DIR/dicomweb_client-0.61.2/data`.
Radiotherapy and annotation tools' source distributions (`pip download --no-deps --no-binary :all:` each, untar):
pymedphys 0.41.0 (Apache-2.0; four RT plans), dicompyler-core 0.5.6 (BSD; CT, RT structure set, plan and a 98-frame
dose), nipype 1.11.0 (Apache-2.0; 377 placeholder files, most of them empty, named .dcm, .nii and the like) and mdai
0.16.0 (Apache-2.0; a CT slice and an SR): `benchmarks/results/dicom-suite-76fa283b-rt-mdai.md` has the command.

Nothing leaves the machine; the files are written to a temporary folder and deleted.
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np


def _suite_roots(extra: list[str], bundled: bool = True) -> dict[str, Path]:
    """The test-suite folders on this machine (the wheels' own files: nothing is downloaded), and any NAME=DIR given."""
    import pydicom

    roots = {}
    for item in extra:
        name, sep, folder = item.partition("=")
        if not sep or not Path(folder).is_dir():
            raise SystemExit(f"--suite takes NAME=FOLDER with an existing folder, got {item!r}")
        roots[name] = Path(folder)
    if not bundled:
        return roots
    roots["pydicom"] = Path(pydicom.__file__).parent / "data" / "test_files"
    try:
        import data_store  # the pydicom-data package

        roots["pydicom-data"] = Path(data_store.__file__).parent / "data"
    except ImportError:
        print("pydicom-data not installed (pip install pydicom-data): its files are left out")
    return roots


def _suite_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".") and p.suffix != ".py")


def _chest_radiograph(path: Path) -> tuple | None:
    """A key shared by the encodings of one chest radiograph (CR/DX, BodyPartExamined CHEST), else None."""
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        if ds.get("Modality") in ("CR", "DX") and str(ds.get("BodyPartExamined", "")).upper() == "CHEST":
            return (ds.get("StudyInstanceUID"), ds.get("Rows"), ds.get("Columns"))
    except Exception:  # noqa: BLE001 - not a readable header: not one of the suites' radiographs
        pass
    return None


def _relabelled(files: list[Path], out: Path) -> list[Path]:
    import pydicom

    made = []
    for p in files:
        try:
            ds = pydicom.dcmread(p, force=True)
            if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
                continue
            ds.Modality, ds.BodyPartExamined, ds.ViewPosition = "DX", "CHEST", "PA"
            q = out / f"dx-{p.name}"
            ds.save_as(q, enforce_file_format=False)
            made.append(q)
        except Exception:  # noqa: BLE001 - a file pydicom cannot rewrite is simply not part of this part
            continue
    return made


def _cxr_variants(png: Path, out: Path) -> dict[str, Path]:
    """The same radiograph as DICOM in several encodings and conventions."""
    from PIL import Image
    from pydicom.uid import ImplicitVRLittleEndian, JPEG2000Lossless, JPEGLSLossless, RLELossless, generate_uid

    from edgecxr.synthetic_dicom import grey_dataset

    g = np.asarray(Image.open(png).convert("L"), np.float64) / 255.0

    def base(values: np.ndarray, bits: int, photometric: str = "MONOCHROME2", signed: bool = False):
        return grey_dataset(values, bits_stored=bits, photometric=photometric, signed=signed,
                            StudyInstanceUID=generate_uid(), SeriesInstanceUID=generate_uid(),
                            BodyPartExamined="CHEST", ViewPosition="PA", PatientID="SUITE", PatientName="Suite^Test")

    v12 = np.round(g * 4095)
    variants = {}

    def put(name: str, ds, ts=None, file_name: str | None = None):
        if ts is not None:
            ds.compress(ts)
        p = out / (file_name or f"{name}.dcm")
        ds.save_as(p, enforce_file_format=True)
        variants[name] = p

    put("12-bit MONOCHROME2", base(v12, 12))
    d = base(4095 - v12, 12, "MONOCHROME1")
    d.PresentationLUTShape = "INVERSE"  # what DX requires with MONOCHROME1: one inversion, not two
    put("12-bit MONOCHROME1 + Presentation LUT INVERSE", d)
    d = base(np.round(g * 65535), 16)
    d.WindowCenter, d.WindowWidth = 32768, 65536
    put("16-bit with a window", d)
    d = base(v12 - 2048, 12, signed=True)
    d.RescaleSlope, d.RescaleIntercept = 1, 2048
    d.WindowCenter, d.WindowWidth = 2048, 4096
    put("signed 12-bit, rescale intercept, window", d)
    d = base(np.round(g * 65535), 16)
    d.VOILUTFunction, d.WindowCenter, d.WindowWidth = "SIGMOID", 32768, 65536
    put("16-bit, SIGMOID VOI function", d)
    d = base(2000 + np.round(g * 4000), 16)  # no window, a detector-like narrow range
    put("16-bit raw range 2000-6000, no window", d)
    d = base(v12, 12)
    d.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    put("implicit VR little endian", d)
    put("RLE lossless", base(v12, 12), RLELossless)
    put("JPEG-LS lossless", base(v12, 12), JPEGLSLossless)
    put("JPEG 2000 lossless", base(v12, 12), JPEG2000Lossless)
    padded = np.vstack([np.full((16, v12.shape[1]), 4095.0), v12])  # a padded strip above the exposed field
    d = base(padded, 12)
    d.add_new((0x0028, 0x0120), "US", 4095)  # PixelPaddingValue (explicit VR: the dictionary says "US or SS")
    put("pixel padding strip (PixelPaddingValue)", d)
    put("name without suffix (IM0001)", base(v12, 12), file_name="IM0001")
    d = base(v12, 12)  # a legacy export: the bare dataset, no preamble, no file meta
    del d.file_meta
    d.preamble = None
    d.save_as(out / "bare.dcm", implicit_vr=True, little_endian=True, enforce_file_format=False)
    variants["bare dataset, no preamble or file meta (legacy)"] = out / "bare.dcm"
    try:  # lossy 8-bit JPEG Baseline and 12-bit JPEG Lossless (SV1), encoded by imagecodecs (BSD), encapsulated
        import imagecodecs
        from pydicom.encaps import encapsulate
        from pydicom.uid import JPEGBaseline8Bit, JPEGLosslessSV1

        d = base(np.round(g * 255), 8)
        d.BitsAllocated = 8
        d.PixelData = encapsulate([imagecodecs.jpeg8_encode(np.round(g * 255).astype(np.uint8), level=95)])
        d.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
        put("JPEG Baseline 8-bit (quality 95)", d)
        d = base(v12, 12)
        d.PixelData = encapsulate([imagecodecs.ljpeg_encode(v12.astype(np.uint16), bitspersample=12)])
        d.file_meta.TransferSyntaxUID = JPEGLosslessSV1
        put("JPEG Lossless SV1 12-bit", d)
    except (ImportError, AttributeError, TypeError, ValueError) as exc:  # the [dicom] extra is optional
        print(f"JPEG forms left out: {type(exc).__name__}: {exc}")
    return variants


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("artifact", type=Path, help="exported artifact or its folder")
    ap.add_argument("--image", type=Path, default=None, help="a PNG chest X-ray (default: the first shipped eval image)")
    ap.add_argument("--tolerance", type=float, default=0.02, help="largest allowed probability difference to the PNG")
    ap.add_argument("--out", type=Path, default=None, help="write the report (Markdown) here")
    ap.add_argument("--suite", action="append", default=[], metavar="NAME=FOLDER",
                    help="another folder of DICOM test files (e.g. an unpacked wheel's tests/data); repeatable")
    ap.add_argument("--no-bundled", action="store_true", help="leave out pydicom's and pydicom-data's test files")
    a = ap.parse_args()
    warnings.filterwarnings("ignore")
    from edgecxr.hardware import cpu_info
    from edgecxr.resources import eval_dir
    from edgecxr.runtime import iter_images, load

    png = a.image or sorted((eval_dir() / "COVID-19").glob("*.png"))[0]
    roots = _suite_roots(a.suite, bundled=not a.no_bundled)
    lines = ["# python benchmarks/dicom_suite.py " + " ".join(sys.argv[1:]), "",
             f"{time.strftime('%Y-%m-%dT%H:%MZ', time.gmtime())}; CPU {cpu_info()['model']}, ISA "
             f"{', '.join(cpu_info()['isa'])}; test suites: {', '.join(roots)}; reference image {png.name}", ""]
    failures = []
    with tempfile.TemporaryDirectory() as tmp, load(a.artifact, isolate_decoding=True) as m:
        tmp = Path(tmp)
        suite = {name: _suite_files(root) for name, root in roots.items()}
        chest = {p: k for files in suite.values() for p in files if (k := _chest_radiograph(p))}
        dx = tmp / "dx"
        dx.mkdir()
        for origin, files in suite.items():
            others = [p for p in files if p not in chest]
            relabelled = _relabelled(others, dx)  # the chest radiographs are checked on their own below
            for title, batch in (("as they are", others), ("relabelled as chest DX", relabelled)):
                res = m.predict(batch)
                counts = collections.Counter(r.status for r in res)
                found = [r for r in res if r.status == "ok" or r.finding is not None]
                failures += [f"{origin} {title}: {r.source} got a finding ({r.finding})" for r in found]
                reasons = collections.Counter(r.reason.split(": ", 1)[-1].split(" (accepted")[0].split(";")[0][:60]
                                              for r in res if r.reason)
                lines += [f"## {origin} test files (chest radiographs aside), {title}: {len(batch)} files", "",
                          "| status | files |", "|---|---|"] + [f"| {k} | {v} |" for k, v in sorted(counts.items())]
                lines += ["", "Most common reasons: " + "; ".join(f"{k} ({v})" for k, v in reasons.most_common(6)), ""]
        if chest:
            files = sorted(chest)
            res = dict(zip(files, m.predict(files)))
            lines += [f"## The suites' own chest radiographs: {len(files)} files", "",
                      "| file | status | finding | COVID-19 / Normal / Pneumonia | max difference within its image |",
                      "|---|---|---|---|---|"]
            for p in files:
                r = res[p]
                same = [res[q] for q in files if chest[q] == chest[p] and res[q].status == "ok"]
                if r.status != "ok":
                    failures.append(f"chest radiograph {p.name}: {r.status} {r.reason}")
                    lines.append(f"| {p.name} | {r.status}: {r.reason} | - | - | - |")
                    continue
                diff = max(abs(r.probabilities[k] - o.probabilities[k]) for o in same for k in r.probabilities)
                if diff > a.tolerance or any(o.finding != r.finding for o in same):
                    failures.append(f"chest radiograph {p.name}: its encodings disagree (difference {diff:.4f})")
                probs = " / ".join(f"{v:.3f}" for v in r.probabilities.values())
                lines.append(f"| {p.name} | ok | {r.finding} | {probs} | {diff:.4f} |")
            lines.append("")
        (tmp / "cxr").mkdir()
        variants = _cxr_variants(png, tmp / "cxr")
        ref = m.predict([png])[0]
        lines += [f"## One chest X-ray in {len(variants)} DICOM forms (reference: the PNG, {ref.status}, finding "
                  f"{ref.finding})", "", "| form | status | finding | max probability difference to the PNG |",
                  "|---|---|---|---|"]
        found = iter_images([tmp / "cxr"])
        for name, r in zip(variants, m.predict(list(variants.values()))):
            diff = (max(abs(r.probabilities[k] - ref.probabilities[k]) for k in ref.probabilities)
                    if r.status == "ok" else float("nan"))
            lines.append(f"| {name} | {r.status} | {r.finding} | {diff:.4f} |" if r.status == "ok"
                         else f"| {name} | {r.status}: {r.reason} | - | - |")
            if r.status != "ok" or r.finding != ref.finding or diff > a.tolerance:
                failures.append(f"{name}: {r.status} {r.finding} {r.reason or ''} diff {diff:.4f}")
        if len(found) != len(variants):
            failures.append(f"a folder of the {len(variants)} forms yields {len(found)} images")
    lines += ["", f"**{'FAILED' if failures else 'passed'}**" + ("".join(f"\n- {f}" for f in failures) if failures else
              f": no finding for any test-suite file other than its chest radiographs, whose encodings agree; every "
              f"DICOM form of the CXR read as the PNG (tolerance {a.tolerance}), and found in a folder")]
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        a.out.write_text(text)
    raise SystemExit(1 if failures else 0)


if __name__ == "__main__":
    main()
