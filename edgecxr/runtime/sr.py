"""DICOM Structured Report of a finding (TID 1500 Measurement Report, via highdicom).

One Comprehensive 3D SR per DICOM input: same patient and study as the source image, a new series,
referencing the source study/series/SOP instance; it holds the finding (qualitative evaluation),
each class's probability, the operating point (when the model has one), the input guard's verdict and
score, and identifies the algorithm (name, version, artifact sha256). highdicom validates the
template's structure as it builds the document. Needs ``pip install 'edgecxr[sr]'`` (highdicom, MIT).
"""

from __future__ import annotations

from pathlib import Path

from edgecxr.errors import EdgeCXRError

# SNOMED CT codes for the findings; classes without a code get a private edgecxr code
FINDING_CODES = {"COVID-19": ("840539006", "SCT", "COVID-19"), "Pneumonia": ("233604007", "SCT", "Pneumonia"),
                 "Normal": ("17621005", "SCT", "Normal")}
PRIVATE_SCHEME = "99EDGECXR"


def _hd():
    try:
        import highdicom as hd
    except ImportError as exc:
        raise EdgeCXRError("DICOM SR output needs highdicom: pip install 'edgecxr[sr]'") from exc
    return hd


def _code(hd, value: str, scheme: str, meaning: str):
    return hd.sr.CodedConcept(value=value, scheme_designator=scheme, meaning=meaning[:64])


# what the SR copies from its source: Type 1 (must be present) and Type 2 (must be present, may be empty)
_TYPE1 = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")
_TYPE2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime", "AccessionNumber",
          "StudyID", "ReferringPhysicianName")


def sr_source(source):
    """A copy of ``source`` the SR can reference: anonymised and test-suite DICOM often lack Type 2 patient and study
    attributes or hold values highdicom refuses (sex "U", a malformed date); those become empty, i.e. "unknown",
    as DICOM allows. Nothing is invented. A missing Type 1 UID raises a ValueError naming it."""
    import copy

    from pydicom.valuerep import DA, TM

    missing = [k for k in _TYPE1 if not str(source.get(k, "") or "").strip()]
    if missing:
        raise ValueError(f"the source lacks {', '.join(missing)} (required to reference it)")
    import pydicom

    ds = pydicom.Dataset()  # a copy without the pixels (the SR only references them); the source stays as it was
    for elem in source:
        if elem.keyword not in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"):
            ds.add(copy.deepcopy(elem))
    if getattr(source, "file_meta", None) is not None:
        ds.file_meta = copy.deepcopy(source.file_meta)
    for k in _TYPE2:
        if k not in ds or ds.get(k) is None:
            setattr(ds, k, "")
    if str(ds.PatientSex).strip().upper() not in ("M", "F", "O", ""):
        ds.PatientSex = ""
    for k, vr in (("PatientBirthDate", DA), ("StudyDate", DA), ("StudyTime", TM)):
        v = str(ds.get(k) or "").strip()
        try:
            if v and vr(v) is None:
                raise ValueError(v)
        except ValueError:
            setattr(ds, k, "")
    return ds


def build_sr(source, prediction, model_identity: dict, version: str, operating_point: dict | None = None,
             series_number: int = 999):
    """A highdicom Comprehensive3DSR for ``prediction`` (status ok or rejected) of the pydicom dataset ``source``."""
    hd = _hd()
    source = sr_source(source)
    from pydicom.sr.codedict import codes

    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=hd.UID(), name="edgecxr", model_name=str(model_identity.get("name") or "covid-densenet")))
    context = hd.sr.ObservationContext(observer_device_context=observer)
    algo = hd.sr.AlgorithmIdentification(
        name=f"edgecxr {model_identity.get('arch')}", version=f"edgecxr {version}",
        parameters=[str(model_identity.get("sha256")),  # the artifact's sha256 (64 characters: fits LO)
                    f"engine {model_identity.get('backend')} {model_identity.get('precision')}"],
        family=codes.DCM.ArtificialIntelligence, manufacturer="edgecxr")
    qualitative, measurements = [], []
    if prediction.status == "ok":
        v, s, m = FINDING_CODES.get(prediction.finding, (prediction.finding, PRIVATE_SCHEME, prediction.finding))
        qualitative.append(hd.sr.QualitativeEvaluation(name=codes.DCM.Finding, value=_code(hd, v, s, m)))
        for cls, p in prediction.probabilities.items():
            measurements.append(hd.sr.Measurement(
                name=_code(hd, f"p-{cls}"[:16], PRIVATE_SCHEME, f"Probability of {cls}"), value=round(float(p), 6),
                unit=codes.UCUM.NoUnits, algorithm_id=algo))
        if operating_point and operating_point.get("threshold") is not None:
            measurements.append(hd.sr.Measurement(
                name=_code(hd, "op-threshold", PRIVATE_SCHEME, f"Operating point: {operating_point['positive_class']} threshold"),
                value=round(float(operating_point["threshold"]), 6), unit=codes.UCUM.NoUnits, algorithm_id=algo))
    verdict = "accepted" if prediction.status == "ok" else "rejected"
    qualitative.append(hd.sr.QualitativeEvaluation(
        name=_code(hd, "guard-verdict", PRIVATE_SCHEME, "Input guard verdict"),
        value=_code(hd, verdict, PRIVATE_SCHEME, f"Input {verdict}")))
    if prediction.guard_score is not None:
        measurements.append(hd.sr.Measurement(
            name=_code(hd, "guard-score", PRIVATE_SCHEME, "Input guard score"), value=round(float(prediction.guard_score), 6),
            unit=codes.UCUM.NoUnits, algorithm_id=algo))
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier="edgecxr finding"),
        measurements=measurements or None, qualitative_evaluations=qualitative, algorithm_id=algo,
        source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(source)])
    report = hd.sr.MeasurementReport(observation_context=context,
                                     procedure_reported=_code(hd, "399208008", "SCT", "Plain chest X-ray"),
                                     imaging_measurements=[group])
    return hd.sr.Comprehensive3DSR(evidence=[source], content=report, series_number=series_number,
                                   series_instance_uid=hd.UID(), sop_instance_uid=hd.UID(), instance_number=1,
                                   manufacturer="edgecxr", series_description="edgecxr AI finding (not a diagnosis)",
                                   is_complete=True, is_final=False, is_verified=False)


def write_sr(source_path: Path, prediction, model_identity: dict, version: str, folder: Path,
             operating_point: dict | None = None) -> Path | None:
    """Write ``<folder>/<SOPInstanceUID of the source>.sr.dcm``; None when the source is not DICOM."""
    from edgecxr.imaging import dcmread, is_dicom

    p = Path(source_path)
    if not (p.is_file() and is_dicom(p)) or prediction.status == "error":
        return None
    src = dcmread(p)
    sr = build_sr(src, prediction, model_identity, version, operating_point)
    Path(folder).mkdir(parents=True, exist_ok=True)
    out = Path(folder) / f"{src.SOPInstanceUID}.sr.dcm"
    sr.save_as(out)
    return out
