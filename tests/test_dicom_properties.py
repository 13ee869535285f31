"""Property-based tests (Hypothesis) of the DICOM pixel pipeline in edgecxr.imaging.

1. The decoding contract on structured DICOM whose pixel-module attributes are drawn at random, valid or not:
   load_gray returns a finite 2-D float32 array in [0, 1] or raises ImageError; nothing else.
2. Equivalences a sender may legally choose between must give the same pixels: MONOCHROME1 vs MONOCHROME2 of the
   inverted values, a positive linear rescale, signed vs unsigned storage, garbage in the bits above BitsStored,
   little vs big endian, 8- vs 16-bit storage, one window vs several with the same first one. A failure prints the smallest example Hypothesis finds.
"""

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis", reason="hypothesis not installed (it is in the dev extra)")
pydicom = pytest.importorskip("pydicom")

from hypothesis import HealthCheck, event, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from edgecxr.errors import ImageError  # noqa: E402
from edgecxr.imaging import load_gray  # noqa: E402
from edgecxr.synthetic_dicom import grey_dataset  # noqa: E402

SETTINGS = settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                              HealthCheck.too_slow])


def _write(tmp_path, name: str, values: np.ndarray, *, bits_stored: int, bits_allocated: int = 16, signed=False,
           photometric="MONOCHROME2", big_endian=False, raw: bytes | None = None, **tags) -> str:
    ds = grey_dataset(values, bits_stored=bits_stored, bits_allocated=bits_allocated, signed=signed,
                      photometric=photometric, big_endian=big_endian, raw=raw, **tags)
    path = tmp_path / f"{name}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return str(path)


def _image(bits: int):
    """A gray image with some contrast, values within ``bits`` bits."""
    return st.tuples(st.integers(32, 48), st.integers(32, 48), st.integers(0, 2**32 - 1)).map(
        lambda t: _ramp(t[0], t[1], t[2], bits))


def _ramp(h: int, w: int, seed: int, bits: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    top = 2**bits - 1
    y, x = np.mgrid[0:h, 0:w]
    base = (x / (w - 1) * 0.6 + y / (h - 1) * 0.3) * top
    noise = rng.integers(0, max(2, top // 10), size=(h, w))
    return np.clip(base + noise, 0, top).astype(np.int64)


def _contract(path: str) -> None:
    try:
        g = load_gray(path)
    except ImageError as exc:
        event(f"refused: {str(exc).split(': ', 1)[-1][:50]}")  # pytest --hypothesis-show-statistics
        return
    event("decoded")
    assert g.ndim == 2 and g.dtype == np.float32 and np.isfinite(g).all()
    assert float(g.min()) >= 0.0 and float(g.max()) <= 1.0


# values a sender should not write; a draw breaks at most one field, so most draws reach the decoder and the scaling
INVALID = {
    "bits_allocated": [1, 12, 32, 64],
    "bits_stored": [0, 17, 40],
    "photometric": ["RGB", "PALETTE COLOR", "", "mono"],
    "rows": [0, 1, 31],
    "cols": [0, 1, 31],
    "length_change": [-64, -2, 2, 64],
    "slope": [-1.0, 0.0, 1e-30, 1e30, float("nan"), float("inf")],
    "intercept": [1e30, float("nan")],
    "frames": [0, 2],
}


@st.composite
def header_values(draw):
    ba = draw(st.sampled_from([8, 16]))
    h = {
        "bits_allocated": ba,
        "bits_stored": draw(st.integers(1, ba)),
        "signed": draw(st.booleans()),
        "photometric": draw(st.sampled_from(["MONOCHROME1", "MONOCHROME2"])),
        "rows": draw(st.integers(32, 80)),
        "cols": draw(st.integers(32, 80)),
        "length_change": 0,
        "slope": draw(st.floats(0.001, 1000.0)),
        "intercept": draw(st.floats(-5000, 5000)),
        "window": draw(st.one_of(st.none(), st.tuples(st.floats(width=32), st.floats(width=32)))),
        "voi_function": draw(st.sampled_from([None, "LINEAR", "SIGMOID", "LINEAR_EXACT", "BOGUS"])),
        "padding": draw(st.one_of(st.none(), st.integers(0, 65535))),
        "presentation": draw(st.sampled_from([None, "IDENTITY", "INVERSE", "BOGUS"])),
        "frames": draw(st.sampled_from([None, 1])),
        "seed": draw(st.integers(0, 2**32 - 1)),
    }
    broken = draw(st.sampled_from([None] * len(INVALID) + list(INVALID)))  # half the draws break nothing
    if broken:
        h[broken] = draw(st.sampled_from(INVALID[broken]))
    return h


@SETTINGS
@given(h=header_values())
def test_random_pixel_modules_keep_the_contract(tmp_path, h):
    """Whatever the pixel-module header says, and however the pixel data fits it, the contract holds."""
    rng = np.random.default_rng(h["seed"])
    # the pixel module is overwritten with the drawn header, the pixel data below with random bytes
    ds = grey_dataset(np.zeros((1, 1)), photometric=h["photometric"], raw=b"", Rows=h["rows"], Columns=h["cols"],
                      BitsAllocated=h["bits_allocated"], BitsStored=h["bits_stored"],
                      HighBit=max(h["bits_stored"] - 1, 0), PixelRepresentation=int(h["signed"]),
                      RescaleSlope=h["slope"], RescaleIntercept=h["intercept"])
    if h["window"] is not None:
        ds.WindowCenter, ds.WindowWidth = h["window"]
    if h["voi_function"]:
        ds.VOILUTFunction = h["voi_function"]
    if h["padding"] is not None:
        ds.add_new((0x0028, 0x0120), "US", h["padding"])
    if h["presentation"]:
        ds.PresentationLUTShape = h["presentation"]
    if h["frames"] is not None:
        ds.NumberOfFrames = h["frames"]
    n = max(0, h["rows"] * h["cols"] * max(h["bits_allocated"], 8) // 8 + h["length_change"])
    n += n % 2  # DICOM values have even length
    ds.PixelData = rng.integers(0, 256, size=n, dtype=np.uint8).tobytes()
    path = tmp_path / "random.dcm"
    try:
        ds.save_as(path, enforce_file_format=True)
    except (ValueError, TypeError, OverflowError):
        return  # pydicom refuses to write this header: not a file anyone can send
    _contract(str(path))


@SETTINGS
@given(img=_image(12), bits=st.sampled_from([12, 14, 16]))
def test_monochrome1_of_the_inverted_values_reads_as_monochrome2(tmp_path, img, bits):
    img = img * (2 ** (bits - 12))
    top = 2**bits - 1
    a = load_gray(_write(tmp_path, "m2", img, bits_stored=bits))
    b = load_gray(_write(tmp_path, "m1", top - img, bits_stored=bits, photometric="MONOCHROME1"))
    np.testing.assert_allclose(a, b, atol=1e-6)


@SETTINGS
@given(img=_image(12), slope=st.floats(0.01, 100.0), intercept=st.floats(-5000, 5000))
def test_a_positive_linear_rescale_changes_nothing(tmp_path, img, slope, intercept):
    """Without a window, the pixels are scaled by their range: a Modality LUT that is a positive linear map is moot."""
    a = load_gray(_write(tmp_path, "plain", img, bits_stored=12))
    b = load_gray(_write(tmp_path, "rescaled", img, bits_stored=12, RescaleSlope=slope, RescaleIntercept=intercept))
    np.testing.assert_allclose(a, b, atol=1e-5)


@SETTINGS
@given(img=_image(12), bits=st.sampled_from([12, 16]))
def test_signed_storage_of_shifted_values_reads_as_unsigned(tmp_path, img, bits):
    img = img * (2 ** (bits - 12))
    a = load_gray(_write(tmp_path, "unsigned", img, bits_stored=bits))
    b = load_gray(_write(tmp_path, "signed", img - 2 ** (bits - 1), bits_stored=bits, signed=True))
    np.testing.assert_allclose(a, b, atol=1e-6)


@SETTINGS
@given(img=_image(10), bits=st.sampled_from([10, 12]), junk_seed=st.integers(0, 2**32 - 1))
def test_bits_above_bits_stored_are_ignored(tmp_path, img, bits, junk_seed):
    """Old senders keep overlays or garbage in the bits above BitsStored; only the stored bits are the image."""
    img = img * (2 ** (bits - 10))
    junk = np.random.default_rng(junk_seed).integers(0, 2 ** (16 - bits), size=img.shape) << bits
    a = load_gray(_write(tmp_path, "clean", img, bits_stored=bits))
    b = load_gray(_write(tmp_path, "junk", img, bits_stored=bits, raw=(img | junk).astype("<u2").tobytes()))
    np.testing.assert_allclose(a, b, atol=1e-6)


@SETTINGS
@given(img=_image(12))
def test_big_endian_reads_as_little_endian(tmp_path, img):
    a = load_gray(_write(tmp_path, "le", img, bits_stored=12))
    b = load_gray(_write(tmp_path, "be", img, bits_stored=12, big_endian=True))
    np.testing.assert_allclose(a, b, atol=1e-6)


@SETTINGS
@given(img=_image(8))
def test_8_bit_storage_reads_as_16_bit_storage_of_the_same_image(tmp_path, img):
    a = load_gray(_write(tmp_path, "b8", img, bits_stored=8, bits_allocated=8))
    b = load_gray(_write(tmp_path, "b16", img * 257, bits_stored=16))
    np.testing.assert_allclose(a, b, atol=1e-6)


@SETTINGS
@given(img=_image(12), windows=st.lists(st.tuples(st.integers(500, 3500), st.integers(200, 4000)), min_size=1,
                                        max_size=3))
def test_the_first_of_several_windows_is_the_one_applied(tmp_path, img, windows):
    """CR/DX headers often carry several windows (soft tissue, bone ...); the first is the default (PS3.3 C.11.2)."""
    (c, w), *_ = windows
    a = load_gray(_write(tmp_path, "one", img, bits_stored=12, WindowCenter=c, WindowWidth=w))
    b = load_gray(_write(tmp_path, "many", img, bits_stored=12, WindowCenter=[x for x, _ in windows],
                         WindowWidth=[y for _, y in windows]))
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_the_properties_can_fail(tmp_path):
    """The equivalence checks see a real difference: MONOCHROME1 without the inversion is not MONOCHROME2."""
    img = _ramp(40, 40, 0, 12)
    a = load_gray(_write(tmp_path, "m2", img, bits_stored=12))
    b = load_gray(_write(tmp_path, "m1", img, bits_stored=12, photometric="MONOCHROME1"))
    assert np.abs(a - b).max() > 0.5
