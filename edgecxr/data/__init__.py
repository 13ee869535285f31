"""Datasets: the layouts users have (class folders, COVIDx split files, CSV manifests) and patient-level splits.

This module is torch-free; the torch ``Dataset`` lives in :mod:`edgecxr.data.torchdata`.
"""

from edgecxr.data.layouts import Sample, load_samples, write_manifest
from edgecxr.data.splits import patient_split

__all__ = ["Sample", "load_samples", "write_manifest", "patient_split"]
