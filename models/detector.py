"""Annotator: find the product in each photo with DETR, so training needs no human labels.

`ROOMFIT_DETECTOR` names the detector: `facebook/detr-resnet-50` (from the local Hugging Face cache,
never downloaded at run time; `@revision` may follow the id), a saved folder, or `tiny` (a small
random DETR, `models.tiny.ensure_tiny_detector`, read back by the same loader as the real one; its
boxes are meaningless). `models.model_folder.find_model_folder` turns the name into a folder.

The box choice is a pure function over detections (`choose_detection`), so it is tested with fixed
detector outputs; `annotate_photos` applies it per photo, lets a caller's box win, and fails with
`no_object_detected` when no photo is usable.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from PIL import Image

from models.base_model import resolve_device_dtype
from models.detr_components import COCO_LABELS, detr_processor_class
from models.errors import ModelNotFoundError, RoomfitModelError
from models.model_folder import ModelSetting, find_model_folder
from models.tiny import ensure_tiny_detector

SETTING = "ROOMFIT_DETECTOR"
DEFAULT_DETECTOR = "facebook/detr-resnet-50"
DEFAULT_THRESHOLD = 0.5

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels of the photo

# What shops call their products -> the COCO classes DETR may see them as.
LABEL_SYNONYMS: dict[str, tuple[str, ...]] = {
    "sofa": ("couch",),
    "couch": ("couch",),
    "settee": ("couch",),
    "loveseat": ("couch",),
    "armchair": ("chair", "couch"),
    "chair": ("chair",),
    "stool": ("chair",),
    "bench": ("bench", "couch"),
    "bed": ("bed",),
    "table": ("dining table",),
    "desk": ("dining table",),
    "dining table": ("dining table",),
    "plant": ("potted plant",),
    "potted plant": ("potted plant",),
    "vase": ("vase", "potted plant"),
    "tv": ("tv",),
    "television": ("tv",),
    "clock": ("clock",),
    "lamp": (),  # not a COCO class: no preference, the highest score wins
}


class NoObjectDetected(RoomfitModelError):
    """No photo of a subject has a usable box (none given, none detected above the threshold)."""

    code = "no_object_detected"


class DetectorNotFoundError(ModelNotFoundError):
    """The detector named by `ROOMFIT_DETECTOR` is neither `tiny`, a folder, nor in the HF cache."""


@dataclass(frozen=True)
class Detection:
    label: str  # COCO class name
    score: float
    box: Box


@dataclass(frozen=True)
class PhotoAnnotation:
    """What the annotator decided for one photo (the API's `photos[]` entry)."""

    index: int
    name: str  # for messages: a file name, or "photo 3"
    box: Box | None
    score: float | None
    label: str | None
    source: Literal["given", "detected"] | None
    reason: str | None = None  # why the photo is unusable, when box is None

    @property
    def usable(self) -> bool:
        return self.box is not None


def preferred_classes(label: str | None) -> tuple[str, ...]:
    """The COCO classes that match a caller's hint ("Sofa" -> couch); () means no preference."""
    if not label:
        return ()
    hint = label.strip().lower()
    if hint in LABEL_SYNONYMS:
        return LABEL_SYNONYMS[hint]
    return (hint,) if hint in COCO_LABELS else ()


def choose_detection(
    detections: Sequence[Detection], *, label: str | None = None, threshold: float = DEFAULT_THRESHOLD
) -> Detection | None:
    """The product's detection: the highest-scoring one at or above `threshold`, among the classes
    matching `label` when any of those was found, else among all. None when nothing passes."""
    passing = [d for d in detections if d.score >= threshold]
    preferred = preferred_classes(label)
    matching = [d for d in passing if d.label in preferred]
    pool = matching or passing
    # ties are broken by the larger box: a product photo is mostly the product
    return max(pool, key=lambda d: (d.score, _area(d.box)), default=None)


def _area(box: Box) -> float:
    return max(box[2] - box[0], 0.0) * max(box[3] - box[1], 0.0)


def clip_box(box: Sequence[float], size: tuple[int, int]) -> Box:
    """A caller's or detector's box, clipped to the image (W, H); ValueError when nothing is left."""
    if len(box) != 4:
        raise ValueError(f"a box is [x0, y0, x1, y1], got {list(box)}")
    width, height = size
    x0, y0, x1, y1 = (float(v) for v in box)
    clipped = (max(0.0, x0), max(0.0, y0), min(float(width), x1), min(float(height), y1))
    if clipped[2] - clipped[0] < 1 or clipped[3] - clipped[1] < 1:
        raise ValueError(f"box {list(box)} leaves nothing of the {width}x{height} image")
    return clipped


class Detector:
    """A loaded DETR and its image processor; `detect` returns every detection above a floor."""

    def __init__(self, model: torch.nn.Module, processor: object, *, name: str, device: torch.device) -> None:
        self.model = model.eval().requires_grad_(False).to(device)
        self.processor = processor
        self.name = name
        self.device = device

    @torch.no_grad()
    def detect(self, images: Sequence[Image.Image], *, floor: float = 0.0) -> list[list[Detection]]:
        """Detections per image, boxes in that image's pixels, scores >= `floor`."""
        results: list[list[Detection]] = []
        for image in images:  # one at a time: photos differ in size, and DETR pads a batch to the largest
            rgb = image.convert("RGB")
            inputs = self.processor(images=[rgb], return_tensors="pt")  # type: ignore[operator]
            outputs = self.model(pixel_values=inputs["pixel_values"].to(self.device))
            [found] = self.processor.post_process_object_detection(  # type: ignore[attr-defined]
                outputs, threshold=floor, target_sizes=[(rgb.height, rgb.width)]
            )
            id2label = self.model.config.id2label
            results.append(
                [
                    Detection(label=str(id2label.get(int(c), c)), score=float(s), box=_box(b))
                    for s, c, b in zip(found["scores"], found["labels"], found["boxes"], strict=True)
                ]
            )
        return results


def _box(values: torch.Tensor) -> Box:
    x0, y0, x1, y1 = (float(v) for v in values.tolist())
    return (x0, y0, x1, y1)


def annotate_photos(
    photos: Sequence[Image.Image],
    *,
    detector: Detector | None,
    boxes: Sequence[Sequence[float] | None] | None = None,
    label: str | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    names: Sequence[str] | None = None,
) -> list[PhotoAnnotation]:
    """One annotation per photo; a caller's box wins over detection. Raises NoObjectDetected when no
    photo is usable, naming each photo and why. `detector` may be None when every box is given."""
    names = list(names) if names is not None else [f"photo {i}" for i in range(len(photos))]
    if boxes is not None and len(boxes) != len(photos):
        raise ValueError(f"boxes has {len(boxes)} entries for {len(photos)} photos (use null to detect)")
    given = list(boxes) if boxes is not None else [None] * len(photos)
    to_detect = [i for i, box in enumerate(given) if box is None]
    if to_detect and detector is None:
        raise ValueError("photos without a given box need a detector")
    detected = detector.detect([photos[i] for i in to_detect]) if detector is not None and to_detect else []
    found = dict(zip(to_detect, detected, strict=True))

    annotations = []
    for index, (photo, name, box) in enumerate(zip(photos, names, given, strict=True)):
        if box is not None:
            clipped = clip_box(box, photo.size)
            annotations.append(PhotoAnnotation(index, name, clipped, None, label, "given"))
            continue
        best = choose_detection(found[index], label=label, threshold=threshold)
        if best is None:
            top = max((d.score for d in found[index]), default=None)
            reason = f"no detection scored >= {threshold}" + (f" (best {top:.2f})" if top is not None else "")
            annotations.append(PhotoAnnotation(index, name, None, None, None, None, reason))
            continue
        try:
            clipped = clip_box(best.box, photo.size)
        except ValueError as exc:
            annotations.append(PhotoAnnotation(index, name, None, None, None, None, str(exc)))
            continue
        annotations.append(PhotoAnnotation(index, name, clipped, best.score, best.label, "detected"))

    if not any(a.usable for a in annotations):
        detail = "; ".join(f"{a.name}: {a.reason}" for a in annotations)
        raise NoObjectDetected(f"no object found in any photo ({detail}); give boxes or clearer photos")
    return annotations


# --- loading -----------------------------------------------------------------------------------


# alike: declarative, like base_model.BASE_MODEL; the rule that reads it is model_folder.find_model_folder
DETECTOR = ModelSetting(
    setting=SETTING,
    error=DetectorNotFoundError,
    build_tiny=ensure_tiny_detector,
    required="config.json",
    required_label="config.json",
    folder_label="a folder",
    tiny_label="the small random detector",
    # facebook/detr-resnet-50's main revision builds its backbone with timm (which needs torchvision);
    # its `no_timm` revision holds the same weights for transformers' own ResNet, so prefer it.
    revisions=("no_timm", None),
)


def load_detector(name: str, *, device: str = "cpu", tiny_dir: Path | str | None = None) -> Detector:
    """The detector `name` resolves to, read with `from_pretrained(folder)` whatever the source."""
    from transformers import DetrForObjectDetection

    folder = find_model_folder(name, DETECTOR, tiny_dir)
    try:
        model = DetrForObjectDetection.from_pretrained(folder)
        processor = detr_processor_class().from_pretrained(folder)
    except OSError as exc:
        raise DetectorNotFoundError(
            f"{SETTING}={name!r}: {folder} is not a complete DETR folder: {exc}"
        ) from exc
    dev, _ = resolve_device_dtype(device, "float32")
    return Detector(model, processor, name=name, device=dev)
