import numpy as np
import pytest
from PIL import Image

from edgecxr.errors import ImageError
from edgecxr.imaging import from_array, load_gray, read_image
from edgecxr.preprocess import PreprocessConfig, preprocess

pydicom = pytest.importorskip("pydicom")


def _dicom(path, arr, photometric="MONOCHROME2", window=None, voi_lut=None, slope=1.0, intercept=0.0,
           spp=1, compress=None, extra=None):
    """``arr``: rows x cols, frames x rows x cols, or with a trailing samples axis when ``spp`` > 1."""
    from pydicom.uid import SecondaryCaptureImageStorage

    from edgecxr.synthetic_dicom import grey_dataset

    ds = grey_dataset(arr, bits_stored=12 if arr.max() < 4096 else 16, photometric=photometric, samples=spp,
                      sop_class=SecondaryCaptureImageStorage, RescaleSlope=slope, RescaleIntercept=intercept)
    if window:
        ds.WindowCenter, ds.WindowWidth = window
    if voi_lut is not None:
        item = pydicom.Dataset()
        item.LUTDescriptor = [len(voi_lut), 0, 16]
        item.LUTData = np.asarray(voi_lut, np.uint16).tobytes()
        ds.VOILUTSequence = [item]
    for k, v in (extra or {}).items():
        setattr(ds, k, v)
    if compress:
        ds.compress(compress)
    ds.save_as(path, enforce_file_format=True)
    return path


RAMP = (np.arange(64 * 64).reshape(64, 64) % 4000).astype(np.uint16)


def test_dicom_monochrome2_and_1(tmp_path):
    m2 = read_image(_dicom(tmp_path / "m2.dcm", RAMP))
    m1 = read_image(_dicom(tmp_path / "m1.dcm", RAMP, photometric="MONOCHROME1"))
    expected = (RAMP - RAMP.min()) / (RAMP.max() - RAMP.min())
    np.testing.assert_allclose(m2, expected, atol=1e-6)
    np.testing.assert_allclose(m1, 1.0 - expected, atol=1e-6)  # MONOCHROME1: high values are dark


def test_dicom_window_applied_before_inversion(tmp_path):
    g2 = read_image(_dicom(tmp_path / "w.dcm", RAMP, window=(1000, 500)))
    # window 750..1250: values below are black, above are white
    assert g2[RAMP < 700].max() == pytest.approx(0.0, abs=1e-6)
    assert g2[RAMP > 1300].min() == pytest.approx(1.0, abs=1e-6)
    g1 = read_image(_dicom(tmp_path / "w1.dcm", RAMP, window=(1000, 500), photometric="MONOCHROME1"))
    np.testing.assert_allclose(g1, 1.0 - g2, atol=1e-6)


def test_dicom_invalid_window_and_unknown_voi_function(tmp_path):
    """A window width below 1 is invalid (PS3.3 C.11.2.1.2): ignored, the stored values' range used, and said so.
    An unknown VOI LUT Function is read as LINEAR, DICOM's default, and said so."""
    plain = read_image(_dicom(tmp_path / "p.dcm", RAMP))
    info: dict = {}
    g = read_image(_dicom(tmp_path / "w0.dcm", RAMP, window=(1000, 0)), info)
    np.testing.assert_allclose(g, plain, atol=1e-6)
    assert "invalid" in info["voi_fallback"]
    linear = read_image(_dicom(tmp_path / "lin.dcm", RAMP, window=(1000, 500), extra={"VOILUTFunction": "LINEAR"}))
    info = {}
    g = read_image(_dicom(tmp_path / "bogus.dcm", RAMP, window=(1000, 500), extra={"VOILUTFunction": "BOGUS"}), info)
    np.testing.assert_allclose(g, linear, atol=1e-6)
    assert "BOGUS" in info["voi_function"] and "voi_fallback" not in info


def test_dicom_without_preamble_and_file_meta(tmp_path):
    """Legacy exports write the bare dataset (no 128-byte preamble, no DICM, no file meta): read with the encoding
    pydicom infers, as the same image with a file meta; the header rules see its header too."""
    from edgecxr.imaging import read_dicom_header

    ref = read_image(_dicom(tmp_path / "ref.dcm", RAMP))
    for implicit in (True, False):
        ds = pydicom.dcmread(_dicom(tmp_path / "src.dcm", RAMP))
        del ds.file_meta
        ds.preamble = None
        bare = tmp_path / f"bare-{implicit}.dcm"
        ds.save_as(bare, implicit_vr=implicit, little_endian=True, enforce_file_format=False)
        assert bare.read_bytes()[:2] == b"\x08\x00"  # no preamble
        np.testing.assert_allclose(read_image(bare), ref, atol=1e-6)
        assert read_dicom_header(bare).Modality == "DX"
    text = tmp_path / "notes.dcm"
    text.write_bytes(b"\x08\x00 not DICOM at all, only two bytes that look like a group 0008 tag")
    with pytest.raises(ImageError):
        read_image(text)


def test_dicom_presentation_lut_shape(tmp_path):
    """DX pairs MONOCHROME1 with Presentation LUT Shape INVERSE: one inversion, not two; INVERSE on a MONOCHROME2
    image inverts it; IDENTITY changes nothing."""
    m2 = read_image(_dicom(tmp_path / "m2.dcm", RAMP))
    m1_inv = read_image(_dicom(tmp_path / "m1i.dcm", RAMP, photometric="MONOCHROME1", extra={"PresentationLUTShape": "INVERSE"}))
    m2_inv = read_image(_dicom(tmp_path / "m2i.dcm", RAMP, extra={"PresentationLUTShape": "INVERSE"}))
    m2_id = read_image(_dicom(tmp_path / "m2d.dcm", RAMP, extra={"PresentationLUTShape": "IDENTITY"}))
    np.testing.assert_allclose(m1_inv, 1.0 - m2, atol=1e-6)
    np.testing.assert_allclose(m2_inv, 1.0 - m2, atol=1e-6)
    np.testing.assert_allclose(m2_id, m2, atol=1e-6)


def test_dicom_pixel_padding_is_left_out_of_the_range(tmp_path):
    """Padding outside the exposed field (here 4095, far above the image's 1000-2000) must not squeeze the image
    into a few grey levels; it is shown black, in both polarities, and the note says so."""
    img = (1000 + (np.arange(64 * 64).reshape(64, 64) % 1001)).astype(np.uint16)
    padded = img.copy()
    padded[:, :8] = 4095
    info: dict = {}
    g = load_gray(_dicom(tmp_path / "pad.dcm", padded, extra={"PixelPaddingValue": 4095}), info=info)
    body = (img[:, 8:] - img[:, 8:].min()) / (img[:, 8:].max() - img[:, 8:].min())
    np.testing.assert_allclose(g[:, 8:], body, atol=1e-6)
    assert (g[:, :8] == 0).all() and "pixel_padding" in info
    g1 = read_image(_dicom(tmp_path / "pad1.dcm", padded, photometric="MONOCHROME1", extra={"PixelPaddingValue": 4095}))
    np.testing.assert_allclose(g1[:, 8:], 1.0 - body, atol=1e-6)
    assert (g1[:, :8] == 0).all()
    ranged = padded.copy()
    ranged[:, :4] = 4000  # a padding range: 4000..4095
    g2 = read_image(_dicom(tmp_path / "pad2.dcm", ranged, extra={"PixelPaddingValue": 4000, "PixelPaddingRangeLimit": 4095}))
    np.testing.assert_allclose(g2[:, 8:], body, atol=1e-6)
    signed = padded.astype(np.int32) - 2048  # signed pixels; padding -32768 written as its bit pattern 32768
    signed[:, :8] = -32768
    path = _dicom(tmp_path / "pad3.dcm", np.zeros((64, 64)), extra={"PixelPaddingValue": 32768})
    ds = pydicom.dcmread(path)
    ds.PixelRepresentation, ds.BitsStored, ds.HighBit = 1, 16, 15
    ds.PixelData = signed.astype(np.int16).tobytes()
    ds.save_as(path)
    g3 = read_image(path)
    np.testing.assert_allclose(g3[:, 8:], body, atol=1e-6)
    assert (g3[:, :8] == 0).all()


def test_dicom_voi_lut_sequence(tmp_path):
    lut = (np.arange(4096) // 16).astype(np.uint16)  # maps 0..4095 to 0..255
    g = read_image(_dicom(tmp_path / "lut.dcm", RAMP, voi_lut=lut))
    np.testing.assert_allclose(g, (RAMP // 16) / (RAMP // 16).max(), atol=1e-6)


def test_dicom_rle_compressed(tmp_path):
    from pydicom.uid import RLELossless

    g = read_image(_dicom(tmp_path / "rle.dcm", RAMP, compress=RLELossless))
    np.testing.assert_allclose(g, (RAMP - RAMP.min()) / (RAMP.max() - RAMP.min()), atol=1e-6)



@pytest.mark.parametrize("syntax,lossless", [("1.2.840.10008.1.2.4.51", False), ("1.2.840.10008.1.2.4.70", True)])
def test_dicom_12bit_jpeg_decoded_without_gpl_libjpeg(tmp_path, syntax, lossless):
    """12-bit JPEG Extended (which Pillow and gdcm cannot decode) and JPEG Lossless SV1 decode through edgecxr's
    imagecodecs plugin: the same image as the uncompressed file, exactly when lossless."""
    imagecodecs = pytest.importorskip("imagecodecs", reason="the [dicom] extra (imagecodecs) is not installed")
    from pydicom.encaps import encapsulate
    from pydicom.uid import UID

    plain = read_image(_dicom(tmp_path / "plain.dcm", RAMP))
    path = _dicom(tmp_path / "jpeg12.dcm", RAMP)
    ds = pydicom.dcmread(path)
    stream = imagecodecs.jpeg8_encode(RAMP, bitspersample=12, **({"lossless": True} if lossless else {"level": 100}))
    ds.PixelData = encapsulate([stream])
    ds["PixelData"].is_undefined_length = True
    ds.file_meta.TransferSyntaxUID = UID(syntax)
    ds.save_as(path, enforce_file_format=True)
    g = read_image(path)
    if lossless:
        np.testing.assert_array_equal(g, plain)
    else:
        assert np.abs(g - plain).max() < 0.01  # 12-bit JPEG at quality 100: below 1% of the range


def test_dicom_rescale_slope_intercept(tmp_path):
    g = read_image(_dicom(tmp_path / "r.dcm", RAMP, slope=2.0, intercept=-1024))
    np.testing.assert_allclose(g, (RAMP - RAMP.min()) / (RAMP.max() - RAMP.min()), atol=1e-6)  # linear: same after scaling


def test_dicom_multiframe_and_colour_refused(tmp_path):
    with pytest.raises(ImageError, match="multi-frame"):
        read_image(_dicom(tmp_path / "mf.dcm", np.stack([RAMP, RAMP])))
    rgb = np.stack([RAMP] * 3, -1)
    with pytest.raises(ImageError, match="colour"):
        read_image(_dicom(tmp_path / "rgb.dcm", rgb, photometric="RGB", spp=3))


def test_png_16bit_8bit_rgb(tmp_path):
    a16 = (np.linspace(0, 65535, 64 * 80).reshape(64, 80)).astype(np.uint16)
    Image.fromarray(a16).save(tmp_path / "a16.png")
    np.testing.assert_allclose(read_image(tmp_path / "a16.png"), a16 / 65535.0, atol=1e-6)
    a8 = (np.arange(64 * 64).reshape(64, 64) % 256).astype(np.uint8)
    Image.fromarray(a8).save(tmp_path / "a8.png")
    np.testing.assert_allclose(read_image(tmp_path / "a8.png"), a8 / 255.0, atol=1e-6)
    Image.fromarray(np.stack([a8] * 3, -1)).save(tmp_path / "rgb.jpg", quality=100)
    assert np.abs(read_image(tmp_path / "rgb.jpg") - a8 / 255.0).mean() < 0.02


def test_arrays_and_pil():
    a8 = np.tile(np.arange(50, dtype=np.uint8) + 100, (40, 1))
    assert load_gray(a8).max() == pytest.approx(149 / 255)
    assert load_gray(a8.astype(np.uint16) * 257).max() == pytest.approx(149 / 255, abs=1e-4)
    assert load_gray(Image.fromarray(a8)).shape == (40, 50)
    f = np.linspace(-100, 100, 40 * 50).reshape(40, 50)
    g = from_array(f)
    assert g.min() == 0.0 and g.max() == 1.0


@pytest.mark.parametrize("make,match", [
    (lambda p: p.write_bytes(b""), "empty"),
    (lambda p: p.write_bytes(b"hello, I am a text file" * 20), "not an image"),
    (lambda p: Image.fromarray(np.zeros((1, 1), np.uint8)).save(p, format="PNG"), "too small"),
])
def test_bad_files(tmp_path, make, match):
    p = tmp_path / "x.png"
    make(p)
    with pytest.raises(ImageError, match=match) as ei:
        read_image(p)
    assert str(p) in str(ei.value)


def test_truncated_png(tmp_path):
    Image.fromarray((np.random.default_rng(0).random((200, 200)) * 255).astype(np.uint8)).save(tmp_path / "ok.png")
    data = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "t.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="corrupt or truncated"):
        read_image(tmp_path / "t.png")


def test_decompression_bomb(tmp_path, monkeypatch):
    import edgecxr.imaging as im

    monkeypatch.setattr(im, "MAX_PIXELS", 100 * 100)
    Image.fromarray(np.zeros((200, 200), np.uint8)).save(tmp_path / "big.png")
    with pytest.raises(ImageError, match="decompression-bomb"):
        read_image(tmp_path / "big.png")
    with pytest.raises(ImageError, match="decompression-bomb"):
        load_gray(np.zeros((200, 200), np.uint8))


def test_nan_array_refused():
    a = np.zeros((64, 64), np.float32)
    a[3, 3] = np.nan
    with pytest.raises(ImageError, match="NaN"):
        load_gray(a)


def test_preprocess_policies():
    g = np.random.default_rng(0).random((100, 200)).astype(np.float32)
    for policy in ("crop", "pad", "stretch"):
        x = preprocess(g, PreprocessConfig(size=64, resize=policy))
        assert x.shape == (3, 64, 64) and x.dtype == np.float32
        np.testing.assert_allclose(x[0] * 0.229 + 0.485, x[2] * 0.225 + 0.406, atol=1e-5)  # same gray per channel
    padded = preprocess(g, PreprocessConfig(size=64, resize="pad"))
    assert np.allclose(padded[0, 0], (0 - 0.485) / 0.229)  # black border rows
    with pytest.raises(ValueError):
        PreprocessConfig(resize="zoom")


def test_histogram_equalisation_option():
    from edgecxr.preprocess import equalize_hist

    rng = np.random.default_rng(0)
    g = (rng.random((80, 60)) ** 3).astype(np.float32)  # dark-skewed image
    e = equalize_hist(g)
    assert e.min() >= 0 and e.max() <= 1 and abs(float(np.median(e)) - 0.5) < 0.05  # spread over the range
    order = np.argsort(g, axis=None)
    assert np.all(np.diff(e.ravel()[order]) >= -1e-6)  # monotone: grey-level order is kept
    cfg = PreprocessConfig(size=32, equalize=True)
    assert not np.allclose(preprocess(g, cfg), preprocess(g, PreprocessConfig(size=32)))
    assert PreprocessConfig.from_dict(cfg.to_dict()) == cfg  # carried through checkpoints and sidecars
    old = {k: v for k, v in cfg.to_dict().items() if k != "equalize"}  # written before the option existed
    assert PreprocessConfig.from_dict(old).equalize is False


def test_smoothing_option_evens_out_pixel_noise_and_keeps_old_dicts():
    from edgecxr.preprocess import gaussian_smooth

    rng = np.random.default_rng(0)
    ramp = np.tile(np.linspace(0.1, 0.9, 64, dtype=np.float32), (64, 1))
    noisy = np.clip(ramp + rng.normal(0, 0.03, ramp.shape), 0, 1).astype(np.float32)
    s = gaussian_smooth(noisy, 1.0)
    assert s.shape == noisy.shape and s.dtype == np.float32
    assert np.std(s - ramp) < 0.4 * np.std(noisy - ramp)  # the noise is mostly gone...
    assert np.abs(gaussian_smooth(ramp, 1.0) - ramp)[:, 4:-4].max() < 1e-5  # ...a linear ramp passes unchanged
    flat = np.full((16, 16), 0.3, np.float32)
    assert np.allclose(gaussian_smooth(flat, 2.0), 0.3)  # weights sum to one, edges replicated
    assert gaussian_smooth(noisy, 0.0) is noisy
    cfg = PreprocessConfig(size=32, smooth=0.8)
    assert not np.allclose(preprocess(noisy, cfg), preprocess(noisy, PreprocessConfig(size=32)))
    assert PreprocessConfig.from_dict(cfg.to_dict()) == cfg  # carried through checkpoints and sidecars
    assert "smooth" not in PreprocessConfig().to_dict()  # off: the dict older checkpoints and artifacts hold
    assert PreprocessConfig.from_dict(PreprocessConfig().to_dict()).smooth == 0.0
    with pytest.raises(ValueError, match="smooth"):
        PreprocessConfig(smooth=-1.0)


def test_folders_find_dicom_without_a_suffix(tmp_path):
    """PACS exports and DICOM media name files IM0001 or 1.2.840...: a folder's DICOM files count by content, not
    only by suffix; DICOMDIR (an index, no pixels) and other files are skipped and reported."""
    import shutil

    from edgecxr.runtime import iter_images

    d = tmp_path / "study" / "IMAGES"
    d.mkdir(parents=True)
    shutil.copy(_dicom(tmp_path / "a.dcm", RAMP), d / "IM0001")
    shutil.copy(tmp_path / "a.dcm", d / "1.2.840.113619.2.55")
    shutil.copy(tmp_path / "a.dcm", tmp_path / "study" / "DICOMDIR")
    (d / "notes.txt").write_text("not an image")
    Image.fromarray((RAMP // 16).astype(np.uint8)).save(d / "b.png")
    (d / "moved.png").symlink_to(tmp_path / "gone.png")  # a broken link: reported by its input, not dropped
    (d / "IM0002").symlink_to(tmp_path / "gone")
    skipped: list = []
    found = iter_images([tmp_path / "study"], skipped)
    assert sorted(f.name for f in found) == ["1.2.840.113619.2.55", "IM0001", "b.png", "moved.png"]
    assert sorted(f.name for f in skipped) == ["DICOMDIR", "IM0002", "notes.txt"]
    with pytest.raises(ImageError, match="no such file"):
        read_image(d / "moved.png")
    assert read_image(d / "IM0001").shape == RAMP.shape


def test_dicom_with_non_square_pixels_is_resampled_to_its_true_proportions(tmp_path):
    """A digitiser that samples rows twice as far apart as columns (PixelSpacing 0.2 \\ 0.1 mm) stores a chest half as
    tall as it is: read, it has the proportions of the same chest sampled square, the note says so; square pixels,
    a missing or implausible spacing leave the image as stored."""
    yy, xx = np.mgrid[0:128, 0:96]
    full = (1000 + 800 * np.sin(xx / 9.0) * np.cos(yy / 13.0)).astype(np.uint16)  # 96 wide x 128 tall, square pixels
    half = full[::2]  # every second row: 96 x 64 stored, rows 0.2 mm apart
    info: dict = {}
    g = load_gray(_dicom(tmp_path / "aniso.dcm", half, extra={"PixelSpacing": [0.2, 0.1]}), info=info)
    h, w = g.shape
    assert abs(h / w - 128 / 96) < 0.03 and "pixel_aspect" in info and "resampled" in info["pixel_aspect"]
    ref = read_image(_dicom(tmp_path / "square.dcm", full))
    a = np.asarray(Image.fromarray(g, mode="F").resize((96, 128), Image.BILINEAR))
    assert np.corrcoef(a.ravel(), ref.ravel())[0, 1] > 0.98
    for extra in ({"PixelSpacing": [0.1, 0.1]}, {}, {"ImagerPixelSpacing": [1.0, 9.0]}, {"PixelSpacing": [0, 0.1]}):
        note: dict = {}
        assert load_gray(_dicom(tmp_path / "sq.dcm", half, extra=extra), info=note).shape == half.shape
        assert ("pixel_aspect" in note) == ("ImagerPixelSpacing" in extra)  # implausible 9:1 is noted, not applied
    g2 = load_gray(_dicom(tmp_path / "par.dcm", half, extra={"PixelAspectRatio": [2, 1]}))
    assert g2.shape == g.shape


def test_16_bit_files_holding_fewer_bits_read_at_their_own_depth(tmp_path):
    """Detector data of 10-14 bits in a 16-bit PNG/TIFF or uint16 array reads as bright as the 8-bit image it
    encodes (not ~16x darker, nor refused as blank); an 8-bit image widened exactly (x257) still reads as 16-bit."""
    rng = np.random.default_rng(3)
    img8 = (rng.random((64, 72)) * 200 + 40).astype(np.uint8)
    ref = img8 / 255.0
    for bits in (10, 12, 14):
        top = (1 << bits) - 1
        deep = np.round(img8.astype(np.float64) * top / 255).astype(np.uint16)
        for suffix in (".png", ".tif"):
            Image.fromarray(deep).save(tmp_path / f"d{bits}{suffix}")
            np.testing.assert_allclose(read_image(tmp_path / f"d{bits}{suffix}"), ref, atol=1 / 255)
        np.testing.assert_allclose(from_array(deep), ref, atol=1 / 255)
    wide = img8.astype(np.uint16) * 257
    Image.fromarray(wide).save(tmp_path / "w.png")
    np.testing.assert_allclose(read_image(tmp_path / "w.png"), ref, atol=1e-6)
    full = (rng.random((64, 72)) * 65535).astype(np.uint16)
    np.testing.assert_allclose(from_array(full), full / 65535.0, atol=1e-6)
    dark_raw = img8.astype(np.uint16)  # 8-bit values in a 16-bit container (no widening)
    np.testing.assert_allclose(from_array(dark_raw), ref, atol=1e-6)


def test_exif_orientation_is_applied_and_noted(tmp_path):
    """A JPEG whose pixels are stored sideways with EXIF Orientation 6 ("rotate 90 CW to view") reads upright."""
    rng = np.random.default_rng(4)
    upright = (rng.random((80, 60)) * 255).astype(np.uint8)
    upright[:20] = 255  # a bright top band, to see where it goes
    stored = np.rot90(upright, 1)  # what a camera writes when the view needs a 90 degree clockwise turn
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(tmp_path / "o6.jpg", quality=100, exif=exif.tobytes())
    info: dict = {}
    g = load_gray(tmp_path / "o6.jpg", info=info)
    assert g.shape == upright.shape and "exif_orientation" in info
    assert g[:20].mean() > 0.95 and g[20:].mean() < 0.7
    Image.fromarray(stored).save(tmp_path / "o1.jpg", quality=100)
    note: dict = {}
    assert load_gray(tmp_path / "o1.jpg", info=note).shape == stored.shape and not note


def test_lab_images_read_their_lightness():
    from edgecxr.imaging import from_pil

    rgb = Image.fromarray((np.random.default_rng(5).random((40, 50)) * 255).astype(np.uint8)).convert("RGB")
    lab = rgb.convert("LAB")
    np.testing.assert_allclose(from_pil(lab), np.asarray(lab.getchannel("L"), np.float32) / 255.0)


@pytest.mark.parametrize("orientation,store", [
    (["R", "F"], lambda a: a[:, ::-1]),
    (["L", "H"], lambda a: a[::-1, :]),
    (["R", "H"], lambda a: a[::-1, ::-1]),
    (["F", "L"], lambda a: a.T),
    (["H", "R"], lambda a: a[::-1, ::-1].T),
])
def test_dicom_stored_turned_or_mirrored_reads_in_the_standard_orientation(tmp_path, orientation, store):
    """Patient Orientation says how the rows and columns run; a frontal image stored otherwise than L\\F reads as the
    L\\F image (noted); L\\F, lateral (A/P) and absent orientations read as stored."""
    rng = np.random.default_rng(6)
    std = (rng.random((48, 64)) * 3000 + 500).astype(np.uint16)
    std[:6, :10] = 4000  # a bright corner at the patient's right shoulder, top left as read
    ref = read_image(_dicom(tmp_path / "std.dcm", std, extra={"PatientOrientation": ["L", "F"]}))
    info: dict = {}
    g = load_gray(_dicom(tmp_path / "o.dcm", np.ascontiguousarray(store(std)), extra={"PatientOrientation": orientation}),
                  info=info)
    np.testing.assert_allclose(g, ref, atol=1e-6)
    assert "patient_orientation" in info
    for keep in (["A", "F"], None):
        note: dict = {}
        stored = np.ascontiguousarray(store(std))
        extra = {"PatientOrientation": keep} if keep else {}
        assert load_gray(_dicom(tmp_path / "k.dcm", stored, extra=extra), info=note).shape == stored.shape
        assert "patient_orientation" not in note


@pytest.mark.parametrize("shape,samples,signed,big_endian", [((5, 7), 1, False, False), ((3, 5, 7), 1, True, False),
                                                             ((5, 7, 3), 3, False, False), ((5, 7), 1, False, True)])
def test_synthetic_dicom_holds_its_array(tmp_path, shape, samples, signed, big_endian):
    """The DICOM builder the fuzzer, the suite and these tests share: pydicom reads back the array it was given."""
    from edgecxr.synthetic_dicom import grey_dataset

    values = np.random.default_rng(0).integers(-2000 if signed else 0, 4000, size=shape)
    ds = grey_dataset(values, bits_stored=13, signed=signed, samples=samples, big_endian=big_endian)
    ds.save_as(tmp_path / "s.dcm", enforce_file_format=True)
    back = pydicom.dcmread(tmp_path / "s.dcm")
    assert (back.Rows, back.Columns) == (shape[-3:-1] if samples > 1 else shape[-2:])
    np.testing.assert_array_equal(back.pixel_array, values)
    dx = pydicom.uid.DigitalXRayImageStorageForPresentation
    assert back.SOPClassUID == back.file_meta.MediaStorageSOPClassUID == dx
