"""A product from its photos to its adapter: annotate (find the product in each photo), then train.

The one path for `roomfit train` and the worker's train job:

    outcome = annotate_and_train(
        base, images, TrainSettings(steps=400, seed=1),
        boxes=[None, [12, 30, 250, 210]],                 # a given box wins; None: detect
        detector=lambda: load_detector("tiny"),           # loaded only if a box must be detected
        label="couch", on_annotated=print, progress=print, checkpoint_dir=Path("var/ckpt/sub_1"),
    )
    Path("sofa.safetensors").write_bytes(outcome.result.artifact)

When the accelerator runs out of memory, training goes on at half the micro-batch (the pairs per
forward pass; the batch per optimiser step, its noise, timesteps and dropped references stay the
same, and so does the result up to LoRA dropout's masks, drawn per forward pass: a statistically
equivalent adapter, the same one only with `lora_dropout=0`) from its last checkpoint, down to one
pair per pass, then gives up with `TrainingOutOfMemory`.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from models.base_model import BaseModel
from models.detector import DEFAULT_THRESHOLD, Detector, PhotoAnnotation, annotate_photos
from models.errors import TrainingOutOfMemory
from models.images import as_rgb
from models.training import ProgressCallback, TrainResult, TrainSettings, train_subject
from models.training_pairs import SubjectPhoto

log = logging.getLogger("roomfit.models")


@dataclass
class SubjectTrainingResult:
    annotations: list[PhotoAnnotation]  # one per image, in order: its box, or why it has none
    result: TrainResult
    micro_batch_size: int  # pairs per forward pass the run finished at (halved after running out)


def annotate_and_train(
    base: BaseModel,
    images: Sequence[Image.Image],
    settings: TrainSettings,
    *,
    boxes: Sequence[Sequence[float] | None] | None = None,
    detector: Detector | Callable[[], Detector] | None = None,
    label: str | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    names: Sequence[str] | None = None,
    on_annotated: Callable[[list[PhotoAnnotation]], None] | None = None,
    progress: ProgressCallback | None = None,
    checkpoint_dir: Path | str | None = None,
    info: dict[str, Any] | None = None,
) -> SubjectTrainingResult:
    """Annotate every image (`models.detector.annotate_photos`: a given box wins over detection),
    call `on_annotated` once, then `train_subject` on the usable photos.

    `detector` may be a loaded detector or a function that loads one: it is called only when some
    image has no given box. Raises NoObjectFound when no image has a usable box, and
    TrainingOutOfMemory when training runs out of memory even at one pair per forward pass.
    """
    # once, in the pixels every step reads (`models.images.as_rgb`): the detector and the pairs would
    # each convert a 16-bit or transparent photo again; an RGB one is kept as it is
    images = [as_rgb(image) for image in images]
    if boxes is not None and all(box is not None for box in boxes):
        detector = None  # every box is given: nothing to detect, nothing to load
    elif callable(detector):
        detector = detector()
    annotations = annotate_photos(
        images,
        detector=detector,
        boxes=boxes,
        label=label,
        threshold=threshold,
        names=names,
    )
    if on_annotated is not None:
        on_annotated(annotations)
    photos = [SubjectPhoto(images[a.index], a.box) for a in annotations if a.box is not None]
    result, micro_batch_size = _train_within_memory(
        base, photos, settings, progress=progress, checkpoint_dir=checkpoint_dir, info=info
    )
    return SubjectTrainingResult(annotations=annotations, result=result, micro_batch_size=micro_batch_size)


def _train_within_memory(
    base: BaseModel,
    photos: list[SubjectPhoto],
    settings: TrainSettings,
    *,
    progress: ProgressCallback | None,
    checkpoint_dir: Path | str | None,
    info: dict[str, Any] | None,
) -> tuple[TrainResult, int]:
    """`train_subject`, going on at half the micro-batch each time it runs out of memory."""
    micro = settings.micro_batch_size or settings.batch_size
    while True:
        try:
            run = dataclasses.replace(settings, micro_batch_size=micro)
            result = train_subject(
                base, photos, run, progress=progress, checkpoint_dir=checkpoint_dir, info=info
            )
            return result, micro
        except torch.OutOfMemoryError:
            if micro == 1:
                raise TrainingOutOfMemory(
                    f"training ran out of memory even at one pair per pass (batch {settings.batch_size})"
                ) from None
        smaller = max(1, micro // 2)
        log.warning("training ran out of memory at %d pairs per pass; going on at %d", micro, smaller)
        _free_accelerator_memory()  # here, not in the handler: the error's traceback holds tensors there
        micro = smaller


def _free_accelerator_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
