"""A product from its photos to its adapter: annotate (find the product in each photo), then train.

The one path for `roomfit train` and the worker's train job:

    outcome = annotate_and_train(
        base, images, TrainSettings(steps=400, seed=1),
        boxes=[None, [12, 30, 250, 210]],                 # a given box wins; None: detect
        detector=lambda: load_detector("tiny"),           # loaded only if a box must be detected
        label="couch", on_annotated=print, progress=print, checkpoint_dir=Path("var/ckpt/sub_1"),
    )
    Path("sofa.safetensors").write_bytes(outcome.result.artifact)

When the accelerator runs out of memory, training is retried once at half the batch size, in a
checkpoint folder of its own (`batch{n}`: a checkpoint of one batch size never resumes another),
then gives up with `TrainingOutOfMemory`.
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
from models.training import ProgressCallback, TrainResult, TrainSettings, train_subject
from models.training_pairs import SubjectPhoto

log = logging.getLogger("roomfit.models")


@dataclass
class SubjectTrainingResult:
    annotations: list[PhotoAnnotation]  # one per image, in order: its box, or why it has none
    result: TrainResult
    batch_size: int  # the batch size the run finished at: the settings' one, or half after running out


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
    image has no given box. Raises NoObjectDetected when no image has a usable box, and
    TrainingOutOfMemory when training runs out of memory at its batch size and again at half of it
    (or at batch size 1).
    """
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
    result, batch_size = _train_within_memory(
        base, photos, settings, progress=progress, checkpoint_dir=checkpoint_dir, info=info
    )
    return SubjectTrainingResult(annotations=annotations, result=result, batch_size=batch_size)


def _train_within_memory(
    base: BaseModel,
    photos: list[SubjectPhoto],
    settings: TrainSettings,
    *,
    progress: ProgressCallback | None,
    checkpoint_dir: Path | str | None,
    info: dict[str, Any] | None,
) -> tuple[TrainResult, int]:
    """`train_subject`, and once more at half the batch size if the first run runs out of memory."""
    batch, smaller = settings.batch_size, max(1, settings.batch_size // 2)
    try:
        result = train_subject(
            base, photos, settings, progress=progress, checkpoint_dir=checkpoint_dir, info=info
        )
        return result, batch
    except torch.OutOfMemoryError:
        if smaller == batch:
            raise TrainingOutOfMemory("training ran out of memory even at batch size 1") from None
    log.warning("training ran out of memory at batch size %d; retrying once at %d", batch, smaller)
    _free_accelerator_memory()  # here, not in the handler: the error's traceback holds tensors there
    retry_dir = Path(checkpoint_dir) / f"batch{smaller}" if checkpoint_dir is not None else None
    try:
        result = train_subject(
            base,
            photos,
            dataclasses.replace(settings, batch_size=smaller),
            progress=progress,
            checkpoint_dir=retry_dir,
            info=info,
        )
        return result, smaller
    except torch.OutOfMemoryError:
        raise TrainingOutOfMemory(f"training ran out of memory at batch size {batch} and {smaller}") from None


def _free_accelerator_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
