"""Read chest X-rays into 2-D float32 arrays in [0, 1]. Torch-free.

Accepts PNG/JPEG (8/16-bit gray, RGB, palette), DICOM, numpy arrays (uint8, uint16, float) and
PIL images. Every failure is an :class:`~edgecxr.errors.ImageError` naming the input.

DICOM pipeline (pydicom): decode (compressed syntaxes through pydicom's pixel-data plugins; see
:func:`dicom_support`) -> Modality LUT / rescale slope+intercept -> VOI LUT or window centre/width
-> scale to [0, 1] by the data's range -> invert when Photometric Interpretation is MONOCHROME1
(pydicom does not do this step for us). Multi-frame and colour DICOM are refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgecxr.errors import ImageError

MAX_PIXELS = 64_000_000  # decompression-bomb limit (e.g. 8000 x 8000)
MAX_FILE_BYTES = 512 * 1024 * 1024
MIN_SIDE = 32
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".dcm", ".dicom", ".tif", ".tiff", ".bmp"}


def _check_shape(h: int, w: int, name: str) -> None:
    if h * w > MAX_PIXELS:
        raise ImageError(f"{name}: {w}x{h} pixels exceeds the limit of {MAX_PIXELS:,} (decompression-bomb guard).")
    if min(h, w) < MIN_SIDE:
        raise ImageError(f"{name}: {w}x{h} is too small; a chest X-ray needs at least {MIN_SIDE} px per side.")


def from_array(arr: np.ndarray, name: str = "<array>") -> np.ndarray:
    """uint8 / uint16 / float array (H, W), (H, W, 3|4) or (1, H, W) -> float32 (H, W) in [0, 1].

    Float arrays already in [0, 1] are kept; other float ranges are min-max scaled.
    """
    arr = np.asarray(arr)
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):
        scale = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}.get(arr.dtype, 1.0)
        arr = arr[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32) / scale
    if arr.ndim != 2:
        raise ImageError(f"{name}: expected a 2-D grayscale or (H, W, 3) RGB array, got shape {arr.shape}.")
    _check_shape(arr.shape[0], arr.shape[1], name)
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    if arr.dtype == np.uint16:
        return arr.astype(np.float32) / 65535.0
    if arr.dtype == np.bool_ or arr.dtype.kind not in "iuf":
        raise ImageError(f"{name}: unsupported array dtype {arr.dtype}; pass uint8, uint16 or float.")
    out = arr.astype(np.float32)
    if not np.isfinite(out).all():
        raise ImageError(f"{name}: array contains NaN or infinite values.")
    lo, hi = float(out.min()), float(out.max())
    if lo >= 0.0 and hi <= 1.0:
        return out
    if hi - lo < 1e-12:
        raise ImageError(f"{name}: array is constant ({lo}); not an image.")
    return (out - lo) / (hi - lo)


def from_pil(img: Any, name: str = "<PIL image>") -> np.ndarray:
    from PIL import Image

    w, h = img.size
    _check_shape(h, w, name)
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return np.asarray(img, dtype=np.uint16).astype(np.float32) / 65535.0
    if mode == "I":
        a = np.asarray(img, dtype=np.int64)
        top = 65535.0 if a.max() > 255 else 255.0
        return (np.clip(a, 0, top) / top).astype(np.float32)
    if mode == "F":
        return from_array(np.asarray(img, dtype=np.float32), name)
    if mode != "L":
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


def read_dicom(path: Path) -> np.ndarray:
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    name = str(path)
    try:
        ds = pydicom.dcmread(path)
    except (InvalidDicomError, EOFError, OSError, ValueError, KeyError) as exc:
        raise ImageError(f"{name}: not a readable DICOM file ({type(exc).__name__}: {exc}).") from exc
    if "PixelData" not in ds:
        raise ImageError(f"{name}: DICOM file has no pixel data (not an image object).")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise ImageError(f"{name}: multi-frame DICOM ({frames} frames) is not supported; export a single frame.")
    spp = int(ds.get("SamplesPerPixel", 1))
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if spp != 1 or photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise ImageError(f"{name}: colour DICOM ({photometric}, {spp} samples/pixel) is not a radiograph; refused.")
    _check_shape(int(ds.get("Rows", 0)), int(ds.get("Columns", 0)), name)
    try:
        arr = ds.pixel_array
    except Exception as exc:  # missing decoder, truncated data ...
        ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        tsname = getattr(ts, "name", str(ts))
        raise ImageError(
            f"{name}: cannot decode pixel data (transfer syntax {tsname}): {exc}. For compressed DICOM "
            "install the decoders: pip install 'edgecxr[dicom]'."
        ) from exc
    arr = apply_modality_lut(arr, ds)
    if arr.dtype.kind == "f" and "VOILUTSequence" in ds and np.array_equal(arr, np.round(arr)):
        arr = arr.astype(np.int64)  # a VOI LUT is a table lookup: it needs integer stored values
    arr = apply_voi_lut(arr, ds)
    out = np.asarray(arr, dtype=np.float64)
    if not np.isfinite(out).all():
        raise ImageError(f"{name}: pixel data contains NaN or infinite values.")
    lo, hi = float(out.min()), float(out.max())
    if hi - lo <= 0:
        raise ImageError(f"{name}: DICOM pixel data is constant; not a usable image.")
    out = ((out - lo) / (hi - lo)).astype(np.float32)
    if photometric == "MONOCHROME1":
        out = 1.0 - out
    return out


def read_image(path: str | Path) -> np.ndarray:
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
        return read_dicom(path)
    try:
        with Image.open(path) as img:
            w, h = img.size
            _check_shape(h, w, name)
            img.load()
            return from_pil(img, name)
    except ImageError:
        raise
    except UnidentifiedImageError as exc:
        raise ImageError(f"{name}: not an image Pillow or pydicom can read (PNG, JPEG, DICOM ...).") from exc
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageError(f"{name}: corrupt or truncated image ({exc}).") from exc


def load_gray(item: Any) -> np.ndarray:
    """Any supported input (path, numpy array, PIL image) -> float32 (H, W) in [0, 1]."""
    if isinstance(item, (str, Path)):
        return read_image(item)
    if isinstance(item, np.ndarray):
        return from_array(item)
    if hasattr(item, "mode") and hasattr(item, "size") and hasattr(item, "convert"):
        return from_pil(item)
    raise ImageError(f"unsupported input type {type(item).__name__}; pass a path, numpy array or PIL image.")


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
    return {k: bool(d.is_available) for k, d in decoders.items()}
