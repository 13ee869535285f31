"""Typed errors. Each message names the input and says what to do next. Torch-free."""


class EdgeCXRError(Exception):
    """Base of every edgecxr error."""


class ImageError(EdgeCXRError, ValueError):
    """An input image cannot be read or is not a usable chest X-ray array."""


class WeightsError(EdgeCXRError, ValueError):
    """A weights or checkpoint file is missing, corrupt or does not fit the model."""


class ArtifactError(EdgeCXRError):
    """An exported artifact or its sidecar is missing, tampered with or does not match."""


class DatasetError(EdgeCXRError, ValueError):
    """A dataset layout or manifest is malformed."""


class BackendUnavailable(EdgeCXRError):
    """An inference engine (TensorRT, OpenVINO, ...) or its hardware is missing."""
