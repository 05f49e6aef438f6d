"""Annotator: find the product in each photo with DETR, so training needs no human labels.

`ROOMFIT_DETECTOR` names the detector: `facebook/detr-resnet-50` (from the local Hugging Face cache,
never downloaded at run time; `@revision` may follow the id), a saved folder, or `tiny` (a small
random DETR built in code, saved with `save_pretrained` and read back by the same loader as the real
one; its boxes are meaningless).

The box choice is a pure function over detections (`choose_detection`), so it is tested with fixed
detector outputs; `annotate_photos` applies it per photo, lets a caller's box win, and fails with
`no_object_detected` when no photo is usable.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from PIL import Image

from models.base_model import resolve_device_dtype
from models.errors import ModelNotFoundError, RoomfitModelError
from models.model_folder import build_folder_once

SETTING = "ROOMFIT_DETECTOR"
DEFAULT_DETECTOR = "facebook/detr-resnet-50"
DEFAULT_THRESHOLD = 0.5
TINY_VERSION = 1
TINY_SEED = 4321
TINY_MARKER = "roomfit_tiny_detector.json"

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels of the photo

# COCO's 91 category ids as DETR numbers them (gaps are "N/A"), so `tiny` names labels like the real one.
COCO_LABELS: tuple[str, ...] = (
    "N/A", "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "N/A", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "N/A", "backpack", "umbrella", "N/A",
    "N/A", "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle", "N/A",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant", "bed",
    "N/A", "dining table", "N/A", "N/A", "toilet", "N/A", "tv", "laptop", "mouse", "remote", "keyboard",
    "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "N/A", "book", "clock", "vase",
    "scissors", "teddy bear", "hair drier", "toothbrush",
)  # fmt: skip

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


def _processor_class() -> type:
    try:  # transformers >= 5: the PIL backend by name (the default one wants torchvision)
        from transformers import DetrImageProcessorPil

        return DetrImageProcessorPil
    except ImportError:  # transformers 4.x
        from transformers import DetrImageProcessor

        return DetrImageProcessor


def default_tiny_detector_dir() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "roomfit" / f"tiny-detr-v{TINY_VERSION}"


def build_tiny_detector() -> tuple[torch.nn.Module, object]:
    """A DETR with a small ResNet backbone, no timm and no pretrained weights: nothing downloads."""
    from transformers import DetrConfig, DetrForObjectDetection, ResNetConfig

    backbone = ResNetConfig(
        num_channels=3,
        embedding_size=16,
        hidden_sizes=[16, 32, 64, 64],
        depths=[1, 1, 1, 1],
        layer_type="basic",
        out_features=["stage4"],
    )
    config = DetrConfig(
        use_timm_backbone=False,
        use_pretrained_backbone=False,
        backbone_config=backbone,
        d_model=32,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        num_queries=10,
        num_labels=len(COCO_LABELS),
        id2label=dict(enumerate(COCO_LABELS)),
        label2id={name: i for i, name in enumerate(COCO_LABELS) if name != "N/A"},
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_SEED)
        model = DetrForObjectDetection(config)
    processor = _processor_class()(size={"shortest_edge": 64, "longest_edge": 96})
    return model, processor


def ensure_tiny_detector(folder: Path | str | None = None) -> Path:
    """Build the tiny detector folder once (atomically) and return it."""

    def build(staging: Path) -> None:
        model, processor = build_tiny_detector()
        model.save_pretrained(staging)  # type: ignore[attr-defined]
        processor.save_pretrained(staging)  # type: ignore[attr-defined]

    folder = Path(folder) if folder is not None else default_tiny_detector_dir()
    return build_folder_once(folder, TINY_MARKER, {"version": TINY_VERSION, "seed": TINY_SEED}, build)


def resolve_detector_folder(name: str, tiny_dir: Path | str | None = None) -> Path:
    """`ROOMFIT_DETECTOR` -> a local folder; never downloads, never falls back to another detector."""
    if name == "tiny":
        return ensure_tiny_detector(tiny_dir)
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise DetectorNotFoundError(f"{SETTING}={name!r} is a folder without config.json")
        return path
    repo_id, _, revision = name.partition("@")
    if repo_id.count("/") == 1 and not repo_id.startswith((".", "/")):
        from huggingface_hub import snapshot_download

        # facebook/detr-resnet-50's main revision builds its backbone with timm (which needs torchvision);
        # its `no_timm` revision holds the same weights for transformers' own ResNet, so prefer it.
        for rev in [revision] if revision else ["no_timm", None]:
            try:
                return Path(snapshot_download(repo_id=repo_id, revision=rev, local_files_only=True))
            except Exception:  # not cached, offline, bad id: all "not here"
                continue
        raise DetectorNotFoundError(
            f"{SETTING}={name!r} is not in the local Hugging Face cache and roomfit never downloads "
            f"at run time: run `huggingface-cli download {repo_id} --revision no_timm` first, point "
            f"{SETTING} at a folder, or set {SETTING}=tiny for the small random detector"
        )
    raise DetectorNotFoundError(
        f"{SETTING}={name!r} is neither `tiny`, an existing folder, nor a Hugging Face id (org/name)"
    )


def load_detector(name: str, *, device: str = "cpu", tiny_dir: Path | str | None = None) -> Detector:
    """The detector `name` resolves to, read with `from_pretrained(folder)` whatever the source."""
    from transformers import DetrForObjectDetection

    folder = resolve_detector_folder(name, tiny_dir)
    try:
        model = DetrForObjectDetection.from_pretrained(folder)
        processor = _processor_class().from_pretrained(folder)
    except OSError as exc:
        raise DetectorNotFoundError(
            f"{SETTING}={name!r}: {folder} is not a complete DETR folder: {exc}"
        ) from exc
    dev, _ = resolve_device_dtype(device, "float32")
    return Detector(model, processor, name=name, device=dev)
