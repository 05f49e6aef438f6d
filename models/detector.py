"""Annotator: find the product in each photo with DETR, so training needs no human labels.

`ROOMFIT_DETECTOR` names the detector: `facebook/detr-resnet-50` (from the local Hugging Face cache,
never downloaded at run time; `@revision` may follow the id), a saved folder, or `tiny` (a small
random DETR, `models.tiny.ensure_tiny_detector`, read back by the same loader as the real one; its
boxes are meaningless). `models.model_folder.find_model_folder` turns the name into a folder.

The box choice is a pure function over detections (`choose_detection`), so it is tested with fixed
detector outputs. The rule:

1. Only detections scoring >= the threshold count ("confident").
2. A hint (`label`) that maps to COCO classes (`preferred_classes`, "sofa" -> couch): the best
   product score among the confident detections of those classes. When none of them is confident
   the photo is unusable ("no couch found with score >= 0.5 (found: vase 0.97)"), never another
   class.
3. No hint, or one that maps to no COCO class ("lamp"): the best product score among all confident
   detections.
4. The product score (`product_score`): a product photo is mostly the product, roughly centred, so
   the box's share of the image times its centrality (1 when the box's centre is the image's,
   falling linearly to `EDGE_CENTRALITY` = 0.5 when it lies on an edge; the distance is the larger
   of the horizontal and vertical ones, each relative to half the image's size; the box is first
   clamped to the image). So a small vase scoring 0.97 on a sofa scoring 0.80 loses to the sofa,
   and a box whose centre is halfway to an edge (centrality 0.75) beats a centred one only when it
   is over 4/3 of its size. Equal product scores go to the higher detection score.

`annotate_photos` applies it per photo, lets a caller's box win, and fails with `no_object_found`
(`NoObjectFound`), naming every photo and why, when no photo is usable.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from PIL import Image

from models.base_model import resolve_device_dtype
from models.detr_components import COCO_LABELS, detr_processor_class
from models.errors import ModelNotFoundError, RoomfitModelError
from models.images import as_rgb
from models.model_folder import ModelSetting, find_model_folder
from models.tiny import ensure_tiny_detector

SETTING = "ROOMFIT_DETECTOR"
DEFAULT_DETECTOR = "facebook/detr-resnet-50"
DEFAULT_THRESHOLD = 0.5
EDGE_CENTRALITY = 0.5  # the centrality of a box whose centre lies on the image's edge (1 at its centre)
NAMED_IN_REASON = 5  # confident detections named in an unusable photo's reason
# a photo thinner than this is stretched before DETR sees it (`_thick_enough`); any photo the API
# takes (`max_aspect_ratio`, 10 by default) is far inside it: only odd strips are
MAX_DETECT_ASPECT = 64
STRETCH_LONG_SIDE = 2048  # a stretched photo's longest side: above DETR's 1333, no 65000 x 1016 buffer

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
    "lamp": (),  # not a COCO class: no preference, the best product score of all wins
}


class NoObjectFound(RoomfitModelError):
    """No photo of a subject has a usable box (none given, none of the hinted class detected at or
    above the threshold, or nothing at all)."""

    code = "no_object_found"


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
    detections: Sequence[Detection],
    *,
    image_size: tuple[int, int],
    label: str | None = None,
    threshold: float = DEFAULT_THRESHOLD,
) -> Detection | None:
    """The product's detection in an image of `image_size` (W, H), by the module's rule: among the
    detections scoring >= `threshold` of the classes `label` maps to (all classes when it maps to
    none), the best `product_score`, ties to the higher detection score. None when there is none:
    a hinted class that is not confident never falls back to another class."""
    preferred = preferred_classes(label)
    pool = [d for d in detections if d.score >= threshold and (not preferred or d.label in preferred)]
    return max(pool, key=lambda d: (product_score(d.box, image_size), d.score), default=None)


def product_score(box: Box, image_size: tuple[int, int]) -> float:
    """How much `box` looks like a product photo's product: the share of the image (W, H) it covers
    times its centrality, 1 when its centre is the image's, `EDGE_CENTRALITY` on an edge."""
    width, height = image_size
    if width <= 0 or height <= 0:
        return 0.0
    x0, y0, x1, y1 = _clamp(box, image_size)
    area = max(x1 - x0, 0.0) * max(y1 - y0, 0.0)
    off_centre = max(abs(x0 + x1 - width) / width, abs(y0 + y1 - height) / height)  # 0 centre, 1 edge
    centrality = 1.0 - (1.0 - EDGE_CENTRALITY) * min(off_centre, 1.0)
    return area / (width * height) * centrality


def why_unusable(detections: Sequence[Detection], *, label: str | None = None, threshold: float) -> str:
    """Why `choose_detection` found nothing, for a person: "no couch found with score >= 0.5 (found:
    vase 0.97, person 0.60; best couch 0.30)"."""
    preferred = preferred_classes(label)
    wanted = " or ".join(preferred) or "object"
    confident = sorted((d for d in detections if d.score >= threshold), key=lambda d: -d.score)
    details = []
    if confident:
        named = ", ".join(f"{d.label} {d.score:.2f}" for d in confident[:NAMED_IN_REASON])
        more = len(confident) - NAMED_IN_REASON
        details.append(f"found: {named}" + (f" and {more} more" if more > 0 else ""))
    matching = [d for d in detections if not preferred or d.label in preferred]  # all below threshold
    best = max(matching, key=lambda d: d.score, default=None)
    if best is not None:
        details.append(f"best {best.label} {best.score:.2f}")
    return f"no {wanted} found with score >= {threshold:g} ({'; '.join(details) or 'nothing detected'})"


def clip_box(box: Sequence[float], size: tuple[int, int]) -> Box:
    """A caller's or detector's box, clipped to the image (W, H); ValueError when nothing is left.

    Any extent above zero is kept, however thin: training reads a box by the whole pixels it
    touches (`models.augmentation.pixel_box`), and `core.boxes` accepts every finite box with
    x0 < x1, y0 < y1 inside the photo, so refusing [10, 10, 10.5, 50] here failed a shop's valid
    request as an internal error. A coordinate that is not a finite number is refused: `_clamp`'s
    min / max would read a NaN as the image's edge (the whole photo)."""
    if len(box) != 4:
        raise ValueError(f"a box is [x0, y0, x1, y1], got {list(box)}")
    if not all(math.isfinite(float(v)) for v in box):
        raise ValueError(f"box {list(box)} is not four finite numbers")
    width, height = size
    clipped = _clamp(box, size)
    if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
        raise ValueError(f"box {list(box)} leaves nothing of the {width}x{height} image")
    return clipped


def _clamp(box: Sequence[float], size: tuple[int, int]) -> Box:
    """`box`'s corners moved into the image (W, H); the box may end up empty."""
    width, height = size
    x0, y0, x1, y1 = (float(v) for v in box)
    return (max(0.0, x0), max(0.0, y0), min(float(width), x1), min(float(height), y1))


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
            # the pixels training reads (`as_rgb`: 16-bit grey scaled, transparency over white), not
            # `convert`'s (a 16-bit grey photo clipped to white, a transparent pixel's hidden colour)
            rgb = as_rgb(image)
            seen = _thick_enough(rgb)
            inputs = self.processor(images=[seen], return_tensors="pt")  # type: ignore[operator]
            outputs = self.model(pixel_values=inputs["pixel_values"].to(self.device))
            # DETR's boxes are relative to the image it saw: scaled by the photo's own size, they are
            # the photo's pixels, stretched or not
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


def _thick_enough(image: Image.Image) -> Image.Image:
    """The photo itself, or, when it is thinner than 1 : `MAX_DETECT_ASPECT`, the photo stretched
    across to that aspect (its longest side bounded to `STRETCH_LONG_SIDE` first: DETR scales it
    down anyway). DETR's processor scales the longest side to its `longest_edge` and rounds the other
    to whole pixels: past an aspect of twice that (2666 for detr-resnet-50, 192 for `tiny`) the short
    side is 0 and transformers raises. Stretched, not padded: padding would leave the photo a line
    of a pixel or two among the padding after DETR's resize, and its boxes (relative to the image
    seen) map back to the photo as they are."""
    width, height = image.size
    long, short = max(width, height), min(width, height)
    if long <= short * MAX_DETECT_ASPECT:
        return image
    long = min(long, STRETCH_LONG_SIDE)
    side = math.ceil(long / MAX_DETECT_ASPECT)
    return image.resize((long, side) if width >= height else (side, long), Image.Resampling.BILINEAR)


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
    """One annotation per photo; a caller's box wins over detection, else `choose_detection` picks
    the box (an unusable photo says `why_unusable`). Raises NoObjectFound when no photo is usable,
    naming each photo and why. `detector` may be None when every box is given."""
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
        best = choose_detection(found[index], image_size=photo.size, label=label, threshold=threshold)
        if best is None:
            reason = why_unusable(found[index], label=label, threshold=threshold)
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
        raise NoObjectFound(f"no object found in any photo ({detail}); give boxes or clearer photos")
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
