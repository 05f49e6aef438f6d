"""What a preview is painted with: the subject's adapter, or (zero-shot) the base model and a
reference crop. One function decides, for the single and the batched preview path alike.

The decision is `core.previews.paint_mode`, the rule the API applied at POST, made again from the
subject as it is when the preview is painted: an `auto` preview of a subject that became ready while
it waited is painted with the adapter. What it is painted with is recorded on the preview row (in
the caller's session; the caller commits).

A zero-shot preview paints from the crop training conditions the adapter on: the boxed photos'
crops (`models.augmentation.crop_reference`, photo order, as training takes them), of which
`models.conditioning.product_embedding` picks the one most like the others, so a zero-shot preview
and the adapter trained later paint from the same view. The choice is kept per process for the
subject's photos and boxes (`_REFERENCES`), so the photos are read and encoded once, not per preview.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING

from core import previews
from core.blobstore import BlobNotFound
from core.tables import Preview, Subject
from worker.job_runner import JobFailed
from worker.runtime import Runtime

if TYPE_CHECKING:
    from PIL import Image

# Reference choices a preview worker keeps (subjects it painted zero-shot lately): one crop each,
# within the reference bound (models.images.fit_reference), so a few hundred KB at most.
REFERENCES_CACHED = 32


@dataclass(frozen=True)
class PaintPlan:
    mode: str  # "adapter" or "zero_shot"
    adapter_id: str | None  # the adapter's blob key; None: the base model paints
    adapter_version: int | None
    reference: Image.Image | None = None  # zero-shot: the product crop the base model paints from
    reference_photo: int | None = None  # zero-shot: the index of the photo that crop is from


def paint_plan(runtime: Runtime, preview: Preview, subject: Subject | None) -> PaintPlan:
    """The plan for `preview` of `subject` (rows read in the caller's session), recorded on the
    preview (`mode`, `adapter_version`); JobFailed with `subject_not_ready` when the subject cannot be
    painted as the preview asked (gone, failed, cancelled, queued to train again, or `adapter` while it
    is not ready)."""
    requested = preview.requested_mode or "auto"
    mode = previews.paint_mode(requested, subject) if subject is not None else None
    if subject is None or mode is None:
        status = subject.status if subject is not None else "gone"
        raise JobFailed(
            "subject_not_ready",
            f"subject {preview.subject_id} is {status}; a preview in mode {requested} cannot be painted",
        )
    if mode == "adapter":
        plan = PaintPlan(
            mode="adapter", adapter_id=subject.adapter_key, adapter_version=subject.adapter_version
        )
    else:
        index, crop = reference_crop(runtime, subject)
        plan = PaintPlan(
            mode="zero_shot", adapter_id=None, adapter_version=None, reference=crop, reference_photo=index
        )
    previews.record_mode(preview, mode, plan.adapter_version)
    return plan


_REFERENCES: OrderedDict[tuple[object, ...], tuple[int, Image.Image]] = OrderedDict()
_REFERENCES_LOCK = threading.Lock()


def reference_crop(runtime: Runtime, subject: Subject) -> tuple[int, Image.Image]:
    """(photo index, crop): the reference a zero-shot preview of `subject` paints from, chosen as
    training chooses the adapter's (`models.training.train_subject`)."""
    from models import InvalidImageError, open_image
    from models.augmentation import crop_reference
    from models.conditioning import product_embedding

    base = runtime.base_model
    boxed = [photo for photo in subject.photos if photo.box]  # photo order: training's order
    key = (
        subject.id,
        base.model_id,
        base.weights_hash,
        tuple((photo.index, photo.blob_key, tuple(photo.box or ())) for photo in boxed),
    )
    with _REFERENCES_LOCK:
        if key in _REFERENCES:
            _REFERENCES.move_to_end(key)
            return _REFERENCES[key]
    if not boxed:  # paint_mode lets no such subject through; a plain error rather than an empty choice
        raise JobFailed("subject_not_ready", f"subject {subject.id} has no photo with a box")
    crops = []
    for photo in boxed:  # one photo decoded at a time; only its bounded crop is kept
        try:
            image = open_image(runtime.blobs.get(photo.blob_key), f"photo {photo.index}")
        except BlobNotFound as exc:
            raise JobFailed("image_unreadable", f"photo {photo.index} of the subject is missing") from exc
        except InvalidImageError as exc:
            raise JobFailed("image_unreadable", str(exc)) from exc
        x0, y0, x1, y1 = (float(v) for v in photo.box or ())
        crops.append(crop_reference(image, (x0, y0, x1, y1)))
        del image
    chosen, _ = product_embedding(base, crops)
    found = (boxed[chosen].index, crops[chosen])
    with _REFERENCES_LOCK:
        _REFERENCES[key] = found
        while len(_REFERENCES) > REFERENCES_CACHED:
            _REFERENCES.popitem(last=False)
    return found
