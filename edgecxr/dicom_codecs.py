"""A pydicom decoder plugin backed by imagecodecs (BSD-3-Clause; libjpeg-turbo 3 inside).

pydicom decodes 12-bit JPEG Extended and JPEG Lossless only through pylibjpeg-libjpeg (GPL-3.0, which
edgecxr does not install) or python-gdcm (no 12-bit JPEG Extended; aborts the process on some malformed
streams). Older CR archives hold exactly such files. ``register()`` adds this plugin to pydicom's decoders
for those syntaxes under the label ``imagecodecs`` when imagecodecs is installed (``pip install
'edgecxr[dicom]'``); ``edgecxr.imaging.PLUGIN_ORDER`` says where it is tried. Greyscale only: colour DICOM
is refused before decoding.
"""

from __future__ import annotations

import functools

import numpy as np
from pydicom import uid

LABEL = "imagecodecs"
DECODER_DEPENDENCIES = {
    uid.JPEGExtended12Bit: ("imagecodecs>=2024.1",),
    uid.JPEGLossless: ("imagecodecs>=2024.1",),
    uid.JPEGLosslessSV1: ("imagecodecs>=2024.1",),
}


def is_available(syntax: str) -> bool:
    """pydicom's plugin protocol: True when imagecodecs can decode ``syntax`` here."""
    if syntax not in DECODER_DEPENDENCIES:
        return False
    try:
        import imagecodecs
    except ImportError:
        return False
    return bool(getattr(imagecodecs, "JPEG8", None) and imagecodecs.JPEG8.available)


def decode_frame(src: bytes, runner) -> bytes:
    """pydicom's plugin protocol: one frame's codestream to pixel bytes in the header's container size."""
    import imagecodecs

    if runner.samples_per_pixel != 1:
        raise NotImplementedError("the imagecodecs plugin of edgecxr decodes greyscale (1 sample/pixel) only")
    arr = np.asarray(imagecodecs.jpeg8_decode(src))
    rows, cols = runner.rows, runner.columns
    if arr.shape != (rows, cols):
        raise ValueError(f"the codestream holds a {arr.shape} image, the header says {rows}x{cols}")
    bits_allocated, bits_stored = runner.bits_allocated, runner.bits_stored
    if bits_allocated not in (8, 16) or bits_stored > bits_allocated:
        raise ValueError(f"BitsAllocated {bits_allocated} / BitsStored {bits_stored} not supported")
    if int(arr.max(initial=0)) >= 1 << bits_stored:
        raise ValueError(f"decoded values exceed BitsStored {bits_stored}")
    out = arr.astype(np.int64)
    if runner.pixel_representation == 1:  # JPEG holds the stored bits; extend their sign into the container
        out = np.where(out >= 1 << (bits_stored - 1), out - (1 << bits_stored), out)
        return out.astype(f"<i{bits_allocated // 8}").tobytes()
    return out.astype(f"<u{bits_allocated // 8}").tobytes()


@functools.cache
def register() -> None:
    """Add the plugin to pydicom's decoders, once per process (a no-op without imagecodecs)."""
    from pydicom.pixels import get_decoder

    for syntax in DECODER_DEPENDENCIES:
        decoder = get_decoder(syntax)
        if LABEL not in decoder.available_plugins and LABEL not in getattr(decoder, "_unavailable", {}):
            decoder.add_plugin(LABEL, (__name__, "decode_frame"))
