"""DICOM header rules: refuse what the header says is not a frontal chest radiograph. Torch-free.

Defaults (each configurable per target in ``[guard]`` and carried in the sidecar):

* Modality must be CR or DX. Secondary captures (SC/OT) are refused by default: they can hold a
  digitised radiograph but also a screenshot or a photo, and their headers rarely say which; allow
  them with ``modalities = ["CR", "DX", "SC"]`` when your sender produces digitised films, and the
  content check still looks at the pixels.
* BodyPartExamined, when present and not empty, must be a chest term (CHEST, THORAX, LUNG and the
  usual vendor and language variants).
* ViewPosition, when present and not empty, must be PA or AP (frontal): LL/RL/LATERAL are refused,
  the model has never seen a lateral view.
* "For Processing" images (raw detector data, before the modality's image processing) are always refused: they
  look nothing like the radiographs the model learnt from; the modality's "For Presentation" image is the input.
"""

from __future__ import annotations

from dataclasses import dataclass, field

CHEST_TERMS = ("CHEST", "THORAX", "LUNG", "LUNGS", "TORAX", "THORAKS", "BRUST", "POITRINE", "PECHO", "TORACE",
               "CHEST_PA", "CHEST_AP", "PA CHEST", "AP CHEST", "CHEST PA", "CHEST AP", "CXR", "THORACIC", "PORT CHEST")


# SOP classes of raw ("For Processing") projection images: DX, mammography, intra-oral
FOR_PROCESSING_SOP_CLASSES = ("1.2.840.10008.5.1.4.1.1.1.1.1", "1.2.840.10008.5.1.4.1.1.1.2.1",
                              "1.2.840.10008.5.1.4.1.1.1.3.1")


@dataclass
class HeaderRules:
    modalities: list[str] = field(default_factory=lambda: ["CR", "DX"])
    body_parts: list[str] = field(default_factory=lambda: list(CHEST_TERMS))
    views: list[str] = field(default_factory=lambda: ["PA", "AP", "AP SUPINE", "AP ERECT", "PA ERECT", "POSTERO_ANTERIOR",
                                                      "ANTERO_POSTERIOR"])
    enabled: bool = True

    @classmethod
    def from_dict(cls, d: dict | None) -> "HeaderRules":
        if not d:
            return cls()
        unknown = set(d) - {"modalities", "body_parts", "views", "enabled"}
        if unknown:
            raise ValueError(f"unknown header rule(s): {', '.join(sorted(unknown))}")
        return cls(**{k: (list(v) if isinstance(v, list) else v) for k, v in d.items()})

    def to_dict(self) -> dict:
        return {"modalities": self.modalities, "body_parts": self.body_parts, "views": self.views,
                "enabled": self.enabled}

    def check(self, ds) -> str | None:
        """The reason to refuse this dataset, or None when its header raises no objection."""
        if not self.enabled:
            return None

        def text(tag: str) -> str:
            v = ds.get(tag, "")
            if isinstance(v, (list, tuple)) or type(v).__name__ == "MultiValue":
                v = "\\".join(str(x) for x in v)
            return str(v or "").strip().upper()

        modality = text("Modality")
        if modality not in self.modalities:
            return (f"not a chest radiograph: Modality {modality or '(empty)'} (accepted: {', '.join(self.modalities)})")
        if text("PresentationIntentType") == "FOR PROCESSING" or text("SOPClassUID") in FOR_PROCESSING_SOP_CLASSES:
            return ("raw detector data (For Processing): send the For Presentation image the modality makes from it")
        part = text("BodyPartExamined")
        if part and not any(part == t or part.replace("_", " ") == t for t in self.body_parts) \
                and not any(w in part.replace("_", " ").split() for w in ("CHEST", "THORAX", "LUNG", "LUNGS")):
            return f"not a chest radiograph: BodyPartExamined {part}"
        view = text("ViewPosition")
        if view and view not in self.views:
            kind = "lateral view" if view in ("LL", "RL", "LLD", "RLD", "LAT", "LATERAL") else "not a frontal view"
            return f"{kind}: ViewPosition {view} (this model reads frontal PA/AP radiographs only)"
        return None
