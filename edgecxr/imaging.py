"""Read chest X-rays into 2-D float32 arrays in [0, 1]. Torch-free.

Accepts PNG/JPEG (8/16-bit gray, RGB, palette), DICOM, numpy arrays (uint8, uint16, float) and
PIL images. Every failure is an :class:`~edgecxr.errors.ImageError` naming the input.

DICOM pipeline (pydicom): decode (compressed syntaxes through pydicom's pixel-data plugins; see
:func:`dicom_support`) -> Modality LUT / rescale slope+intercept -> VOI LUT or window centre/width
-> scale to [0, 1] by the data's range (pixel padding left out, then shown black) -> invert when Photometric
Interpretation is MONOCHROME1, or MONOCHROME2 with Presentation LUT Shape INVERSE (pydicom does not do this
step). Multi-frame and colour DICOM are refused.

Contract: :func:`load_gray` raises :class:`ImageError` and nothing else, whatever the bytes; the
pixel-module header is checked against the pixel data and the transfer syntax, and the declared
size against a memory budget, before any decoder runs. Blank or near-constant images are refused
in every format. When a header window collapses an image to (near) constant, the stored values'
range is used instead and ``info["voi_fallback"]`` says so; so it is when the window is invalid (width < 1, a
malformed VOI LUT). An unknown VOI LUT Function is read as LINEAR, DICOM's default (``info["voi_function"]``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgecxr.errors import ImageError

MAX_PIXELS = 40_000_000  # decompression-bomb limit (about 6300 x 6300; detector CXRs are <= 4300 x 4300)
MAX_DECODED_BYTES = 256 * 1024 * 1024  # declared pixel data size allowed before decoding
MIN_DYNAMIC_RANGE = 2 / 255  # below this (max - min on [0, 1]) an image counts as blank
MAX_FILE_BYTES = 512 * 1024 * 1024
MIN_SIDE = 32
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".dcm", ".dicom", ".tif", ".tiff", ".bmp"}


def _check_shape(h: int, w: int, name: str) -> None:
    if h * w > MAX_PIXELS:
        raise ImageError(f"{name}: {w}x{h} pixels exceeds the limit of {MAX_PIXELS:,} (decompression-bomb guard).")
    if min(h, w) < MIN_SIDE:
        raise ImageError(f"{name}: {w}x{h} is too small; a chest X-ray needs at least {MIN_SIDE} px per side.")


def from_array(arr: np.ndarray, name: str = "<array>") -> np.ndarray:
    """uint8 / uint16 / float array (H, W), (H, W, 3|4) or (1, H, W) -> float32 (H, W) in [0, 1] (uint16: see
    :func:`_white`).

    Float arrays already in [0, 1] are kept; other float ranges are min-max scaled.
    """
    arr = np.asarray(arr)
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):
        scale = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): _white(arr[..., :3])}.get(arr.dtype, 1.0)
        arr = arr[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32) / scale
    if arr.ndim != 2:
        raise ImageError(f"{name}: expected a 2-D grayscale or (H, W, 3) RGB array, got shape {arr.shape}.")
    _check_shape(arr.shape[0], arr.shape[1], name)
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    if arr.dtype == np.uint16:
        return (arr / _white(arr)).astype(np.float32)
    if arr.dtype == np.bool_ or arr.dtype.kind not in "iuf":
        raise ImageError(f"{name}: unsupported array dtype {arr.dtype}; pass uint8, uint16 or float.")
    out = arr.astype(np.float64)  # float64: (hi - lo) of a wide float32 range (e.g. +-3e38) does not overflow
    if not np.isfinite(out).all():
        raise ImageError(f"{name}: array contains NaN or infinite values.")
    lo, hi = float(out.min()), float(out.max())
    if lo >= 0.0 and hi <= 1.0:
        return out.astype(np.float32)
    if not hi - lo > 0:
        raise ImageError(f"{name}: array is constant ({lo}); not an image.")
    return ((out - lo) / (hi - lo)).astype(np.float32)


def _white(a: np.ndarray) -> float:
    """White for 16-bit integer pixels. An 8-bit image widened exactly (every value a multiple of 257) is 16-bit;
    otherwise 2^bits - 1 for the fewest bits (8 at least, 16 at most) that hold the largest value: a 16-bit PNG or
    TIFF often carries 10-, 12- or 14-bit detector data (DICOM says so in BitsStored, PNG cannot), which scaled by
    65535 would read as a nearly black image."""
    vmax = int(a.max()) if a.size else 0
    if vmax > 255 and not (a % 257).any():
        return 65535.0
    return float((1 << min(16, max(8, vmax.bit_length()))) - 1)


def from_pil(img: Any, name: str = "<PIL image>") -> np.ndarray:
    from PIL import Image

    w, h = img.size
    _check_shape(h, w, name)
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        a = np.clip(np.asarray(img, dtype=np.int64), 0, 65535)
        return (a / _white(a)).astype(np.float32)
    if mode == "F":
        return from_array(np.asarray(img, dtype=np.float32), name)
    if mode == "LAB":  # lightness is the gray image
        img = img.getchannel("L")
    if mode != "L" and img.mode != "L":
        if mode in ("RGBA", "LA", "P", "PA"):
            img = img.convert("RGBA")
            bg = Image.new("RGBA", img.size, (0, 0, 0, 255))
            img = Image.alpha_composite(bg, img)
        img = img.convert("L")
    return np.asarray(img, dtype=np.uint8).astype(np.float32) / 255.0


def is_dicom(path: Path) -> bool:
    if path.suffix.lower() in (".dcm", ".dicom"):
        return True
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


# transfer syntax UID -> (allowed BitsAllocated, max BitsStored) for the decoders we let run
_TS_BITS = {
    "1.2.840.10008.1.2.4.50": ({8}, 8),  # JPEG Baseline
    "1.2.840.10008.1.2.4.51": ({8, 16}, 12),  # JPEG Extended
    "1.2.840.10008.1.2.4.57": ({8, 16}, 16),  # JPEG Lossless
    "1.2.840.10008.1.2.4.70": ({8, 16}, 16),  # JPEG Lossless SV1
    "1.2.840.10008.1.2.4.80": ({8, 16}, 16),  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.81": ({8, 16}, 16),  # JPEG-LS Near-lossless
    "1.2.840.10008.1.2.4.90": ({8, 16}, 16),  # JPEG 2000 Lossless
    "1.2.840.10008.1.2.4.91": ({8, 16}, 16),  # JPEG 2000
    "1.2.840.10008.1.2.5": ({8, 16}, 16),  # RLE Lossless
}
_NATIVE = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99"}


def _int_tag(ds, tag: str, name: str, default: int | None = None) -> int:
    v = ds.get(tag, default)
    if isinstance(v, (list, tuple)) or type(v).__name__ == "MultiValue":
        raise ImageError(f"{name}: DICOM {tag} has several values ({list(v)}); the pixel module is inconsistent.")
    try:
        return int(v)
    except (TypeError, ValueError):
        raise ImageError(f"{name}: DICOM {tag} is missing or not a number ({v!r:.40}).") from None


def check_pixel_module(ds, name: str) -> str:
    """Validate the pixel-module header before any decoder sees the data; return the transfer syntax UID."""
    if "PixelData" not in ds:
        raise ImageError(f"{name}: DICOM file has no pixel data (not an image object).")
    ts = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "") or "1.2.840.10008.1.2")
    frames = _int_tag(ds, "NumberOfFrames", name, 1) if ds.get("NumberOfFrames") not in (None, "") else 1
    if frames != 1:
        raise ImageError(f"{name}: multi-frame DICOM ({frames} frames) is not supported; export a single frame.")
    spp = _int_tag(ds, "SamplesPerPixel", name, 1)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2") or "").strip().upper()
    if spp != 1 or photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise ImageError(f"{name}: colour DICOM ({photometric or '?'}, {spp} samples/pixel) is not a radiograph; refused.")
    rows, cols = _int_tag(ds, "Rows", name), _int_tag(ds, "Columns", name)
    ba, bs = _int_tag(ds, "BitsAllocated", name), _int_tag(ds, "BitsStored", name)
    hb = _int_tag(ds, "HighBit", name, bs - 1)
    if ba not in (8, 16, 32) or not 1 <= bs <= ba or hb != bs - 1:
        raise ImageError(f"{name}: inconsistent pixel module (BitsAllocated {ba}, BitsStored {bs}, HighBit {hb}).")
    if rows <= 0 or cols <= 0:
        raise ImageError(f"{name}: DICOM declares {cols}x{rows} pixels.")
    _check_shape(rows, cols, name)
    declared = rows * cols * ba // 8
    if declared > MAX_DECODED_BYTES:
        raise ImageError(f"{name}: declared pixel data of {declared:,} bytes exceeds the {MAX_DECODED_BYTES:,}-byte budget.")
    if ts in _NATIVE:
        n = len(ds.PixelData) if ds.PixelData is not None else 0
        if n < declared:
            raise ImageError(f"{name}: pixel data holds {n:,} bytes, the header declares {declared:,}; truncated or inconsistent.")
    elif ts in _TS_BITS:
        allowed, max_bs = _TS_BITS[ts]
        if ba not in allowed or bs > max_bs or (ts == "1.2.840.10008.1.2.4.50" and bs != 8):
            raise ImageError(f"{name}: BitsAllocated {ba} / BitsStored {bs} are not valid for transfer syntax {ts}.")
    else:
        raise ImageError(f"{name}: transfer syntax {ts} is not supported.")
    return ts


# Decoder plugins tried, in this order, per transfer syntax (pydicom's own order puts gdcm first, and
# python-gdcm aborts the process on some malformed streams; pylibjpeg-rle panics on truncated RLE).
# "imagecodecs" is edgecxr's own plugin (edgecxr/dicom_codecs.py): 12-bit JPEG Extended, which Pillow and gdcm
# cannot decode, and JPEG Lossless without gdcm. gdcm stays only where nothing else decodes the syntax;
# edgecxr predict isolates decoding.
PLUGIN_ORDER = {
    "1.2.840.10008.1.2.4.50": ["pillow", "pylibjpeg", "gdcm"],
    "1.2.840.10008.1.2.4.51": ["pillow", "imagecodecs", "pylibjpeg", "gdcm"],
    "1.2.840.10008.1.2.4.57": ["imagecodecs", "pylibjpeg", "gdcm"],
    "1.2.840.10008.1.2.4.70": ["imagecodecs", "pylibjpeg", "gdcm"],
    "1.2.840.10008.1.2.4.80": ["pyjpegls", "gdcm"],
    "1.2.840.10008.1.2.4.81": ["pyjpegls", "gdcm"],
    "1.2.840.10008.1.2.4.90": ["pylibjpeg", "pillow", "gdcm"],
    "1.2.840.10008.1.2.4.91": ["pylibjpeg", "pillow", "gdcm"],
    "1.2.840.10008.1.2.5": ["pydicom"],
}


def _plugins(ts: str) -> list[str]:
    try:
        from pydicom.pixels import get_decoder

        from edgecxr.dicom_codecs import register

        register()

        available = set(get_decoder(ts).available_plugins)
    except Exception:
        return []
    ordered = [p for p in PLUGIN_ORDER.get(ts, sorted(available)) if p in available]
    safe = [p for p in ordered if p != "gdcm"]
    return safe or ordered  # gdcm only when nothing else can decode this syntax (it aborts on bad streams)


def _decode_hint(ts: str) -> str:
    """Say to install decoders only when no installed plugin can decode ``ts``."""
    if ts in _NATIVE or _plugins(ts):
        return ""
    return " No decoder for it is installed: pip install 'edgecxr[dicom]'."


_JPEG_FAMILY = {"1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.57",
                "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81"}
_J2K = {"1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91"}


def _j2k_size(cs: bytes) -> tuple[int, int, int] | None:
    """(height, width, components) from a JPEG 2000 codestream's SIZ marker (JP2 boxes skipped)."""
    i = cs.find(b"\xff\x4f\xff\x51")
    if i < 0 or len(cs) < i + 42:
        return None
    siz = cs[i + 4:]
    xs, ys, xo, yo = (int.from_bytes(siz[k:k + 4], "big") for k in (4, 8, 12, 16))
    comps = int.from_bytes(siz[36:38], "big")
    return ys - yo, xs - xo, comps


def _jpeg_size(cs: bytes) -> tuple[int, int, int] | None:
    """(height, width, components) from a JPEG / JPEG-LS SOF segment."""
    i, n = 2, len(cs)
    if cs[:2] != b"\xff\xd8":
        return None
    while i + 9 < n:
        if cs[i] != 0xFF:
            return None
        marker = cs[i + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        length = int.from_bytes(cs[i + 2:i + 4], "big")
        if (0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC)) or marker == 0xF7:
            return int.from_bytes(cs[i + 5:i + 7], "big"), int.from_bytes(cs[i + 7:i + 9], "big"), cs[i + 9]
        if length < 2:
            return None
        i += 2 + length
    return None


def check_codestream(ds, ts: str, name: str) -> None:
    """The compressed frame must declare the header's size (decoders allocate from the codestream, not
    from Rows/Columns: a J2K frame claiming 65535 x 65535 is a memory bomb)."""
    if ts not in _JPEG_FAMILY and ts not in _J2K:
        return
    from pydicom.encaps import generate_frames

    try:
        frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # noqa: BLE001
        raise ImageError(f"{name}: encapsulated pixel data is malformed ({type(exc).__name__}: {exc}).") from None
    size = _j2k_size(frame[:4096]) if ts in _J2K else _jpeg_size(frame[:65536])
    if size is None:
        raise ImageError(f"{name}: the compressed frame has no readable size header (transfer syntax {ts}).")
    h, w, comps = size
    if (h, w) != (int(ds.Rows), int(ds.Columns)) or comps != 1:
        raise ImageError(f"{name}: the compressed frame declares {w}x{h}x{comps}, the header {ds.Columns}x{ds.Rows}x1; "
                         "refused before decoding.")


def _pixel_array(ds, ts: str, name: str) -> np.ndarray:
    """Decode with the plugins of PLUGIN_ORDER, in order; an ImageError naming the syntax when all fail."""
    if ts in _NATIVE:
        return ds.pixel_array
    check_codestream(ds, ts, name)
    plugins = _plugins(ts)
    if not plugins:
        raise ImageError(f"{name}: cannot decode pixel data (transfer syntax {ts}).{_decode_hint(ts)}")
    errors = []
    for plugin in plugins:
        try:
            ds.pixel_array_options(decoding_plugin=plugin)
            return ds.pixel_array
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # noqa: BLE001 - Rust panics derive from BaseException
            errors.append(f"{plugin}: {type(exc).__name__}: {str(exc)[:120]}")
    raise ImageError(f"{name}: cannot decode pixel data (transfer syntax {ts}): " + "; ".join(errors))


def _starts_like_a_dataset(path: Path) -> bool:
    """A DICOM dataset written without preamble and file meta (legacy exports) begins with a group 0008 element."""
    with open(path, "rb") as fh:
        head = fh.read(4)
    return head[:2] in (b"\x08\x00", b"\x00\x08") and len(head) == 4


def dcmread(path: Path, stop_before_pixels: bool = False):
    """pydicom.dcmread, also for legacy files without preamble and file meta (read with the encoding pydicom infers,
    recorded as the transfer syntax). Other non-DICOM bytes still raise pydicom's InvalidDicomError."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(path, stop_before_pixels=stop_before_pixels)
    except InvalidDicomError:
        if not _starts_like_a_dataset(path):
            raise
    ds = pydicom.dcmread(path, stop_before_pixels=stop_before_pixels, force=True)
    if "TransferSyntaxUID" not in getattr(ds, "file_meta", {}):
        from pydicom.dataset import FileMetaDataset
        from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

        implicit, little = ds.original_encoding
        ds.file_meta = getattr(ds, "file_meta", None) or FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = (ImplicitVRLittleEndian if implicit else
                                          ExplicitVRLittleEndian if little else ExplicitVRBigEndian)
    return ds


def read_dicom(path: Path, info: dict | None = None) -> np.ndarray:
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    name = str(path)
    try:
        ds = dcmread(path)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # noqa: BLE001
        raise ImageError(f"{name}: not a readable DICOM file ({type(exc).__name__}: {exc}).") from exc
    ts = check_pixel_module(ds, name)
    try:
        arr = _pixel_array(ds, ts, name)
    except ImageError:
        raise
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # noqa: BLE001 - truncated or corrupt data, decoder panics ...
        raise ImageError(f"{name}: cannot decode pixel data (transfer syntax {ts}): {type(exc).__name__}: {exc}") from exc
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    pad = _padding_mask(ds, arr)
    stored = np.asarray(apply_modality_lut(arr, ds), dtype=np.float64)
    arr2 = stored
    if stored.dtype.kind == "f" and "VOILUTSequence" in ds and np.array_equal(stored, np.round(stored)):
        arr2 = stored.astype(np.int64)  # a VOI LUT is a table lookup: it needs integer stored values
    function = str(ds.get("VOILUTFunction", "") or "").strip().upper()
    if "VOILUTFunction" in ds and function not in ("LINEAR", "LINEAR_EXACT", "SIGMOID"):
        ds.VOILUTFunction = "LINEAR"  # what DICOM means when the function is absent; an unknown one is read so too
        if info is not None:
            info["voi_function"] = f"unknown VOI LUT Function {function[:16]!r} read as LINEAR"
    if not np.isfinite(stored).all():
        raise ImageError(f"{name}: pixel data contains NaN or infinite values.")
    try:
        out = np.asarray(apply_voi_lut(arr2, ds), dtype=np.float64)
        window = None
    except (ValueError, TypeError, IndexError, KeyError) as exc:  # e.g. a window width < 1, a malformed VOI LUT
        out, window = stored, f"the header's VOI transform is invalid ({str(exc)[:80]}); used the stored values' range"
    if not np.isfinite(out).all():
        raise ImageError(f"{name}: pixel data contains NaN or infinite values.")
    body = out if pad is None else out[~pad]  # padding (outside the exposed field) does not set the range
    lo, hi = float(body.min()), float(body.max())
    if hi - lo <= 1e-9 * max(1.0, abs(hi)) or np.std(body) < 1e-6 * (abs(hi) + 1):
        # the header window lies outside the stored values: fall back to their range, as viewers do
        out = stored
        body = out if pad is None else out[~pad]
        lo, hi = float(body.min()), float(body.max())
        window = "the header's VOI window collapsed the image; used the stored values' range"
    if window and info is not None:
        info["voi_fallback"] = window
    if hi - lo <= 0:
        raise ImageError(f"{name}: DICOM pixel data is constant; not a usable image.")
    out = np.clip((out - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)
    if _inverted(ds, photometric):
        out = 1.0 - out
    if pad is not None:
        out[pad] = 0.0  # shown black, as viewers show padding
        if info is not None:
            info["pixel_padding"] = f"{int(pad.sum())} padding pixels (PixelPaddingValue) shown black, left out of the range"
    return standard_orientation(ds, square_pixels(ds, out, name, info), info)


MAX_PIXEL_ANISOTROPY = 4.0  # beyond this row/column spacing ratio the header is taken to be wrong, not the detector


def pixel_aspect(ds) -> float | None:
    """Row spacing / column spacing (a pixel's height / width) from PixelSpacing, ImagerPixelSpacing or
    PixelAspectRatio, in that order; None when the header says nothing usable."""
    for tag in ("PixelSpacing", "ImagerPixelSpacing", "PixelAspectRatio"):
        v = ds.get(tag)
        try:
            a, b = float(v[0]), float(v[1])
        except (TypeError, ValueError, IndexError, KeyError):
            continue
        if np.isfinite(a) and np.isfinite(b) and a > 0 and b > 0:
            return a / b
    return None


def square_pixels(ds, img: np.ndarray, name: str, info: dict | None = None) -> np.ndarray:
    """Resample an image whose header gives non-square pixels (old film digitisers, some CR readers) to square ones
    of the same area, as viewers display it: the model and the image rules see the anatomy's true proportions."""
    ratio = pixel_aspect(ds)
    if ratio is None or abs(ratio - 1.0) <= 0.01:
        return img
    if not 1 / MAX_PIXEL_ANISOTROPY <= ratio <= MAX_PIXEL_ANISOTROPY:
        if info is not None:
            info["pixel_aspect"] = f"header pixel aspect {ratio:.3g} (height/width) ignored: implausible"
        return img
    from PIL import Image

    h, w = img.shape
    nh, nw = max(1, round(h * np.sqrt(ratio))), max(1, round(w / np.sqrt(ratio)))
    _check_shape(nh, nw, name)
    out = np.asarray(Image.fromarray(img, mode="F").resize((nw, nh), Image.BILINEAR), dtype=np.float32)
    if info is not None:
        info["pixel_aspect"] = f"non-square pixels (height/width {ratio:.3g}): resampled {w}x{h} -> {nw}x{nh}"
    return np.clip(out, 0.0, 1.0)


def standard_orientation(ds, img: np.ndarray, info: dict | None = None) -> np.ndarray:
    """A frontal image stored turned or mirrored, as its Patient Orientation (0020,0020) says, brought to the
    radiographic convention (rows run toward the patient's left, columns toward the feet: ``L\\F``), in which chest
    radiographs are read and the model was trained. Lateral or oblique orientations, and absent or malformed ones,
    leave the image as stored."""
    try:
        row, col = (str(v).strip().upper() for v in ds.get("PatientOrientation", []))
    except (TypeError, ValueError):
        return img
    if {row, col} not in ({"L", "F"}, {"L", "H"}, {"R", "F"}, {"R", "H"}):
        return img
    out, steps = img, []
    if row in ("F", "H"):  # rows run head-feet: the image is on its side
        out, (row, col) = out.T, (col, row)
        steps.append("transposed")
    if row == "R":
        out = out[:, ::-1]
        steps.append("mirrored left-right")
    if col == "H":
        out = out[::-1, :]
        steps.append("flipped top-bottom")
    if steps and info is not None:
        stored = "\\".join(str(v) for v in ds.PatientOrientation)
        info["patient_orientation"] = f"stored as {stored}: {', '.join(steps)} to L\\F"
    return np.ascontiguousarray(out)


def _inverted(ds, photometric: str) -> bool:
    """Whether high output values are dark. MONOCHROME1 says so; DX requires Presentation LUT Shape INVERSE with
    MONOCHROME1 (the same inversion, applied once), and INVERSE with MONOCHROME2 inverts a MONOCHROME2 image."""
    shape = str(ds.get("PresentationLUTShape", "") or "").strip().upper()
    return photometric == "MONOCHROME1" or (photometric == "MONOCHROME2" and shape == "INVERSE")


def _padding_mask(ds, arr: np.ndarray) -> np.ndarray | None:
    """Stored values marked as padding by PixelPaddingValue (and PixelPaddingRangeLimit), or None."""
    if "PixelPaddingValue" not in ds:
        return None
    try:
        v = int(ds.PixelPaddingValue)
        limit = int(ds.PixelPaddingRangeLimit) if "PixelPaddingRangeLimit" in ds else v
    except (TypeError, ValueError):  # e.g. an unresolved "US or SS" value read as bytes
        return None
    bits = int(ds.get("BitsAllocated", 16) or 16)
    if int(ds.get("PixelRepresentation", 0) or 0) == 1:  # signed pixels, padding written as its unsigned bit pattern
        v, limit = (x - (1 << bits) if x >= 1 << (bits - 1) else x for x in (v, limit))
    lo, hi = min(v, limit), max(v, limit)
    mask = (arr >= lo) & (arr <= hi)
    if not mask.any() or mask.all():
        return None
    return mask


def read_dicom_header(path: Path):
    """The DICOM dataset without pixel data (for the header rules), or None when unreadable."""
    try:
        return dcmread(path, stop_before_pixels=True)
    except Exception:
        return None


def read_image(path: str | Path, info: dict | None = None) -> np.ndarray:
    """Read a PNG/JPEG/TIFF/BMP or DICOM file -> float32 (H, W) in [0, 1]."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    name = str(path)
    if not path.is_file():
        raise ImageError(f"{name}: no such file.")
    size = path.stat().st_size
    if size == 0:
        raise ImageError(f"{name}: file is empty.")
    if size > MAX_FILE_BYTES:
        raise ImageError(f"{name}: {size:,} bytes is larger than the {MAX_FILE_BYTES:,}-byte limit.")
    if is_dicom(path):
        return read_dicom(path, info)
    try:
        with Image.open(path) as img:
            w, h = img.size
            _check_shape(h, w, name)
            img.load()
            return from_pil(_upright(img, info), name)
    except ImageError:
        raise
    except UnidentifiedImageError as exc:
        raise ImageError(f"{name}: not an image Pillow or pydicom can read (PNG, JPEG, DICOM ...).") from exc
    except Exception as exc:  # Pillow plugins raise many types on hostile bytes
        raise ImageError(f"{name}: corrupt or truncated image ({type(exc).__name__}: {exc}).") from exc


def _upright(img, info: dict | None):
    """The image as viewers show it: turned as its EXIF Orientation tag says (cameras and some exporters write the
    pixels as sensed and the turn in the tag)."""
    from PIL import ImageOps

    try:
        orientation = int(img.getexif().get(0x0112, 1) or 1)
        if not 2 <= orientation <= 8:  # 1: upright; anything else is not a defined turn
            return img
        turned = ImageOps.exif_transpose(img)
    except Exception:  # noqa: BLE001 - a malformed EXIF block: the pixels as stored
        return img
    if info is not None:
        info["exif_orientation"] = f"EXIF Orientation {orientation}: turned as viewers show it"
    return turned


def input_name(item: Any) -> str:
    return str(item) if isinstance(item, (str, Path)) else f"<{type(item).__name__}>"


def load_gray(item: Any, info: dict | None = None) -> np.ndarray:
    """Any supported input (path, numpy array, PIL image) -> float32 (H, W) in [0, 1].

    Raises :class:`ImageError` only; blank and near-constant images are refused whatever the format.
    """
    name = input_name(item)
    try:
        if isinstance(item, (str, Path)):
            g = read_image(item, info)
        elif isinstance(item, np.ndarray):
            g = from_array(item, name)
        elif hasattr(item, "mode") and hasattr(item, "size") and hasattr(item, "convert"):
            g = from_pil(item, name)
        else:
            raise ImageError(f"unsupported input type {type(item).__name__}; pass a path, numpy array or PIL image.")
    except (ImageError, KeyboardInterrupt, SystemExit):
        raise
    except MemoryError:
        raise ImageError(f"{name}: not enough memory to decode this image.") from None
    except BaseException as exc:  # noqa: BLE001 - any decoder's own exception type (Rust panics too) becomes an ImageError
        raise ImageError(f"{name}: cannot read ({type(exc).__name__}: {exc}).") from exc
    if g.ndim != 2 or not np.isfinite(g).all():
        raise ImageError(f"{name}: decoding gave no finite 2-D image.")
    if float(g.max()) - float(g.min()) < MIN_DYNAMIC_RANGE or float(g.std()) < MIN_DYNAMIC_RANGE / 4:
        raise ImageError(f"{name}: blank or near-constant image (no usable contrast); not a radiograph.")
    return g


def dicom_support() -> dict[str, bool]:
    """Which compressed DICOM transfer syntaxes the installed pydicom plugins can decode."""
    from pydicom.pixels.decoders import (
        JPEG2000Decoder, JPEG2000LosslessDecoder, JPEGBaseline8BitDecoder, JPEGExtended12BitDecoder,
        JPEGLosslessDecoder, JPEGLosslessSV1Decoder, JPEGLSLosslessDecoder, JPEGLSNearLosslessDecoder,
        RLELosslessDecoder,
    )

    decoders = {
        "RLE Lossless": RLELosslessDecoder,
        "JPEG Baseline": JPEGBaseline8BitDecoder,
        "JPEG Extended (12-bit)": JPEGExtended12BitDecoder,
        "JPEG Lossless": JPEGLosslessDecoder,
        "JPEG Lossless SV1": JPEGLosslessSV1Decoder,
        "JPEG-LS Lossless": JPEGLSLosslessDecoder,
        "JPEG-LS Near-lossless": JPEGLSNearLosslessDecoder,
        "JPEG 2000 Lossless": JPEG2000LosslessDecoder,
        "JPEG 2000": JPEG2000Decoder,
    }
    from edgecxr.dicom_codecs import register

    register()
    support = {k: bool(d.is_available) for k, d in decoders.items()}
    # Pillow makes the 12-bit syntax "available" but decodes only its 8-bit variant
    support["JPEG Extended (12-bit)"] = bool({"imagecodecs", "pylibjpeg"} & set(JPEGExtended12BitDecoder.available_plugins))
    return support
