"""Grey-scale DICOM datasets built in memory from an array: the fuzzer's seeds, the DICOM suite's encodings of a
real radiograph, and the tests' files all start here. Torch-free; needs pydicom.

The dataset has a file meta group, fresh UIDs and a complete pixel module; callers add the tags their case is about
(``**tags``), then compress or save it as they need.
"""

from __future__ import annotations

import numpy as np

DX_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation


def grey_dataset(values: np.ndarray, *, bits_stored: int | None = None, bits_allocated: int = 16,
                 signed: bool = False, photometric: str = "MONOCHROME2", modality: str = "DX",
                 sop_class: str = DX_FOR_PRESENTATION, samples: int = 1, big_endian: bool = False,
                 raw: bytes | None = None, **tags):
    """A DICOM dataset holding ``values`` (rows x cols, frames x rows x cols, or with a trailing samples axis).

    ``bits_stored`` defaults to ``bits_allocated``; ``raw`` replaces the pixel data as written (for headers and data
    that disagree on purpose); ``tags`` are set last, so they may override anything above.
    """
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, generate_uid

    values = np.asarray(values)
    plane = values.shape[-3:-1] if samples > 1 else values.shape[-2:]
    frames = values.shape[0] if values.ndim == (4 if samples > 1 else 3) else 1
    bits_stored = bits_allocated if bits_stored is None else bits_stored

    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRBigEndian if big_endian else ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.Modality = modality
    ds.Rows, ds.Columns = (int(n) for n in plane)
    ds.SamplesPerPixel, ds.PhotometricInterpretation = samples, photometric
    if samples > 1:
        ds.PlanarConfiguration = 0
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits_allocated, bits_stored, bits_stored - 1
    ds.PixelRepresentation = int(signed)
    if raw is None:
        kind = ("i" if signed else "u") + str(max(bits_allocated, 8) // 8)
        raw = values.astype((">" if big_endian else "<") + kind).tobytes()
    ds.PixelData = raw
    for key, value in tags.items():
        setattr(ds, key, value)
    return ds
