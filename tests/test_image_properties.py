"""Property-based tests (Hypothesis) of the non-DICOM inputs: one gray image, however it is stored or handed over
(8- or 16-bit PNG, gray RGB or RGBA, a gray palette, TIFF, BMP, a numpy array, a PIL image), reads as the same pixels.
"""

import numpy as np
import pytest

pytest.importorskip("hypothesis", reason="hypothesis not installed (it is in the dev extra)")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from PIL import Image  # noqa: E402

from edgecxr.imaging import load_gray  # noqa: E402

SETTINGS = settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@st.composite
def gray_images(draw) -> np.ndarray:
    """A uint8 gray image with contrast: a ramp plus noise, 32-64 px a side."""
    h, w = draw(st.integers(32, 64)), draw(st.integers(32, 64))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    lo, hi = sorted(draw(st.tuples(st.integers(0, 100), st.integers(150, 255))))
    ramp = np.linspace(lo, hi, w)[None, :].repeat(h, 0)
    return np.clip(ramp + rng.integers(-20, 21, (h, w)), 0, 255).astype(np.uint8)


@SETTINGS
@given(img=gray_images())
def test_one_image_in_every_lossless_form_reads_the_same(tmp_path, img):
    ref = load_gray(Image.fromarray(img, "L"))
    forms = {
        "L.png": Image.fromarray(img, "L"),
        "16bit.png": Image.fromarray(img.astype(np.uint16) * 257),
        "rgb.png": Image.fromarray(np.stack([img] * 3, -1), "RGB"),
        "rgba.png": Image.fromarray(np.dstack([img, img, img, np.full_like(img, 255)]), "RGBA"),
        "palette.png": Image.fromarray(img, "L").convert("P"),
        "gray.tif": Image.fromarray(img, "L"),
        "gray.bmp": Image.fromarray(img, "L"),
    }
    for name, im in forms.items():
        path = tmp_path / name
        im.save(path)
        np.testing.assert_allclose(load_gray(path), ref, atol=1e-6, err_msg=name)
    np.testing.assert_allclose(load_gray(img), ref, atol=1e-6, err_msg="numpy uint8")
    np.testing.assert_allclose(load_gray(img.astype(np.float32) / 255), ref, atol=1e-6, err_msg="numpy float in [0, 1]")
