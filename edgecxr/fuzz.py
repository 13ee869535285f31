"""A seeded mutation fuzzer for the decoding contract (issue 12). Torch-free.

Seeds: PNG (8/16-bit, RGBA, palette), JPEG, TIFF (incl. float32), BMP made here, and DICOM files
built here (uncompressed, a bare legacy dataset without preamble and file meta, RLE, deflated,
JPEG Baseline/Lossless/LS/2000 where a local encoder exists) plus pydicom's bundled test files. Mutations: bit flips, byte overwrites with interesting
values, chunk deletion/duplication, truncation, and header-field edits of DICOM datasets.

The contract checked for every input: :func:`edgecxr.imaging.load_gray` returns a finite 2-D
float32 array in [0, 1] or raises :class:`ImageError`; anything else is a finding. Process deaths
are caught by running inputs in worker processes (``run``).

Short run (CI): tests/test_fuzz.py. Long run: ``python -m edgecxr.fuzz --n 100000 --out fuzz-findings``.
"""

from __future__ import annotations

import io
import random
from pathlib import Path

import numpy as np

INTERESTING = [b"\x00", b"\xff", b"\x7f", b"\x80", b"\x00\x00", b"\xff\xff", b"\xff\xff\xff\x7f", b"\x00\x00\x00\x80",
               b"\x01\x00", b"\x00\x01", b"\x40\x1f", b"\xff\xfe"]


def _img(rng: np.random.Generator, h: int = 48, w: int = 40) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return ((np.sin(x / 5.0) + np.cos(y / 7.0) + rng.random((h, w)) * 0.3 + 2) * 60).astype(np.uint8)


def _exif(orientation: int) -> bytes:
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


def image_seeds(seed: int = 0) -> list[tuple[str, bytes]]:
    from PIL import Image

    rng = np.random.default_rng(seed)
    g = _img(rng)
    out = []
    for name, im, fmt, kw in [
        ("g8.png", Image.fromarray(g), "PNG", {}),
        ("g16.png", Image.fromarray(g.astype(np.uint16) * 257), "PNG", {}),
        ("rgba.png", Image.fromarray(np.dstack([g, g, g, g])), "PNG", {}),
        ("pal.png", Image.fromarray(g).convert("P"), "PNG", {}),
        ("g.jpg", Image.fromarray(g), "JPEG", {"quality": 80}),
        ("rgb.jpg", Image.fromarray(np.dstack([g, g // 2, g])), "JPEG", {}),
        ("f32.tif", Image.fromarray(g.astype(np.float32) * 1e30), "TIFF", {}),
        ("g.tif", Image.fromarray(g), "TIFF", {"compression": "tiff_deflate"}),
        ("g.bmp", Image.fromarray(g), "BMP", {}),
        ("exif6.jpg", Image.fromarray(g), "JPEG", {"exif": _exif(6)}),
        ("g12.png", Image.fromarray(g.astype(np.uint16) * 16), "PNG", {}),
    ]:
        buf = io.BytesIO()
        im.save(buf, format=fmt, **kw)
        out.append((name, buf.getvalue()))
    return out


def dicom_seeds(seed: int = 0) -> list[tuple[str, bytes]]:
    import pydicom
    from pydicom.uid import (DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, JPEG2000Lossless,
                             JPEGLSLossless, RLELossless)

    from .synthetic_dicom import grey_dataset

    rng = np.random.default_rng(seed)
    arr = _img(rng).astype(np.uint16) * 16
    out = []
    for ts in (ExplicitVRLittleEndian, RLELossless, DeflatedExplicitVRLittleEndian, JPEGLSLossless, JPEG2000Lossless):
        # mirrored and with non-square pixels, so that both read paths are fuzzed
        ds = grey_dataset(arr, bits_stored=12, photometric="MONOCHROME1", WindowCenter=2000, WindowWidth=3000,
                          RescaleSlope=1, RescaleIntercept=0, PatientOrientation=["R", "F"], PixelSpacing=[0.2, 0.1])
        try:
            if ts == DeflatedExplicitVRLittleEndian:
                ds.file_meta.TransferSyntaxUID = ts
            elif ts != ExplicitVRLittleEndian:
                ds.compress(ts)
        except Exception:
            continue  # no local encoder for this syntax
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        out.append((f"seed-{ts.name.replace(' ', '_')}.dcm", buf.getvalue()))
        if ts == ExplicitVRLittleEndian:  # a legacy bare dataset: no preamble, no file meta, implicit VR
            del ds.file_meta
            ds.preamble = None
            buf = io.BytesIO()
            ds.save_as(buf, implicit_vr=True, little_endian=True, enforce_file_format=False)
            out.append(("seed-bare-implicit.dcm", buf.getvalue()))
    base = Path(pydicom.__file__).parent / "data" / "test_files"
    for f in ("CT_small.dcm", "MR_small.dcm", "JPEG2000.dcm", "JPGExtended.dcm", "MR_small_RLE.dcm",
              "JPEGLSNearLossless_16.dcm", "image_dfl.dcm", "SC_rgb_jpeg_dcmtk.dcm", "693_J2KI.dcm"):
        if (base / f).is_file():
            out.append((f, (base / f).read_bytes()))
    return out


def mutate(data: bytes, rnd: random.Random) -> bytes:
    b = bytearray(data)
    for _ in range(rnd.choice((1, 1, 2, 3, 8))):
        if not b:
            break
        op = rnd.random()
        i = rnd.randrange(len(b))
        if op < 0.35:
            b[i] ^= 1 << rnd.randrange(8)
        elif op < 0.6:
            v = rnd.choice(INTERESTING)
            b[i:i + len(v)] = v
        elif op < 0.7:
            j = min(len(b), i + rnd.randrange(1, 64))
            del b[i:j]
        elif op < 0.8:
            j = min(len(b), i + rnd.randrange(1, 64))
            b[i:i] = b[i:j]
        elif op < 0.9:
            b = b[: max(1, rnd.randrange(len(b)))]
        else:
            b[i] = rnd.randrange(256)
    return bytes(b)


def check(path: Path) -> str | None:
    """None when the contract holds for this file, else a description of the finding."""
    from edgecxr.errors import ImageError
    from edgecxr.imaging import load_gray

    try:
        g = load_gray(path)
    except ImageError as exc:
        return "memory bomb: " + str(exc)[:200] if "not enough memory" in str(exc) else None
    except BaseException as exc:  # noqa: BLE001 - anything else is a finding
        return f"{type(exc).__name__}: {exc}"[:300]
    if not isinstance(g, np.ndarray) or g.ndim != 2 or g.dtype != np.float32 or not np.isfinite(g).all() \
            or g.min() < 0 or g.max() > 1:
        return "contract broken: output is not a finite float32 2-D image in [0, 1]"
    return None


def _worker(args) -> list[tuple[int, str, str]]:
    """Check inputs ``start .. start+n`` of the deterministic stream; return findings."""
    seed, start, n, tmp = args
    from edgecxr.runtime.isolation import limit_memory

    limit_memory()  # a memory bomb shows up as a finding instead of exhausting the machine
    seeds = image_seeds() + dicom_seeds()
    findings = []
    folder = Path(tmp)
    for k in range(start, start + n):
        rnd = random.Random(seed * 1_000_003 + k)
        name, data = seeds[k % len(seeds)]
        p = folder / f"{k}{Path(name).suffix}"
        p.write_bytes(mutate(data, rnd))
        f = check(p)
        if f:
            findings.append((k, name, f))
        p.unlink()
    return findings


def run(n: int, seed: int = 0, chunk: int = 500, workers: int = 2, out: Path | None = None) -> dict:
    """Fuzz ``n`` inputs in worker processes. A chunk whose worker dies is re-run alone and bisected, so
    each process death is pinned to one input (a dying worker breaks its whole pool, so the first
    round's other failures are only suspects)."""
    import multiprocessing as mp
    import tempfile
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    ctx = mp.get_context("spawn")  # fresh workers: nothing of the caller (torch threads, engines) is forked

    report = {"inputs": n, "seed": seed, "findings": [], "process_deaths": []}

    def collect(res):
        report["findings"] += [{"input": k, "seed_file": s, "finding": f} for k, s, f in res]

    with tempfile.TemporaryDirectory() as tmp:
        suspects = []
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as ex:
            futs = {ex.submit(_worker, (seed, s, min(chunk, n - s), tmp)): s for s in range(0, n, chunk)}
            for fut, start in futs.items():
                try:
                    collect(fut.result())
                except BrokenProcessPool:
                    suspects.append((start, min(chunk, n - start)))
        while suspects:
            start, cnt = suspects.pop()
            with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as ex:
                try:
                    collect(ex.submit(_worker, (seed, start, cnt, tmp)).result())
                    continue
                except BrokenProcessPool:
                    pass
            if cnt == 1:
                name, _ = regenerate(start, seed)
                report["process_deaths"].append({"input": start, "seed_file": name})
            else:
                half = cnt // 2
                suspects += [(start, half), (start + half, cnt - half)]
    if out:
        import json

        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "report.json").write_text(json.dumps(report, indent=1))
    return report


def regenerate(k: int, seed: int = 0) -> tuple[str, bytes]:
    """The bytes of input ``k`` of the stream (to turn a finding into a regression test)."""
    seeds = image_seeds() + dicom_seeds()
    name, data = seeds[k % len(seeds)]
    return name, mutate(data, random.Random(seed * 1_000_003 + k))


if __name__ == "__main__":  # pragma: no cover
    import argparse
    import json
    import time

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()
    t0 = time.perf_counter()
    rep = run(a.n, a.seed, workers=a.workers, out=a.out)
    rep["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps({k: (v if not isinstance(v, list) else len(v)) for k, v in rep.items()}))
    for f in rep["findings"][:20]:
        print(f)
