"""The paper's quality metrics: DINO and CLIP-I subject similarity, and FID.

- The scored region of a generated image is the crop of its mask's bounding box (`region_box`,
  `crop_region`), as the paper scores the painted product, not the whole room.
- DINO / CLIP-I (`dino_similarity`, `clip_i_similarity`): per generated image, the cosine between
  its region's embedding and each reference photo of its subject, averaged over those pairs;
  embeddings are L2-normalised first (DreamBooth's definition, which the paper follows). The
  references are used as given: cropping them to the product is the caller's choice.
- FID (`fid`): torchmetrics' `FrechetInceptionDistance` on a given feature network
  (`models.metric_models.load_inception`; the real one needs `pip install 'roomfit[eval]'`).

The models come from `models.metric_models`; a `tiny` preset gives meaningless but deterministic
scores, for tests.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from models.crop_plan import mask_bounds
from models.errors import InvalidImageError
from models.images import open_mask
from models.metric_models import ImageEmbedder, InceptionFeatures

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels, x1/y1 exclusive
Mask = np.ndarray | Image.Image  # [H, W], non-zero = painted; an image follows `open_mask`'s rule
FID_BATCH = 16  # images per Inception call


def _mask_array(mask: Mask) -> np.ndarray:
    return open_mask(mask) if isinstance(mask, Image.Image) else np.asarray(mask)


def region_box(mask: Mask) -> Box:
    """The bounding box of the mask's painted pixels; InvalidImageError when none is painted."""
    return mask_bounds(_mask_array(mask)).as_tuple()


def crop_region(image: Image.Image, mask: Mask) -> Image.Image:
    """The part of `image` the metrics score: the crop of `mask`'s bounding box."""
    array = _mask_array(mask)
    if (array.shape[1], array.shape[0]) != image.size:
        raise InvalidImageError(
            f"the mask is {array.shape[1]}x{array.shape[0]} but the image is {image.width}x{image.height}"
        )
    return image.crop(region_box(array))


# alike: two names for one body (`subject_similarity`), so a caller cannot score DINO with CLIP.
def dino_similarity(
    model: ImageEmbedder,
    generated: Sequence[Image.Image],
    references: Sequence[Sequence[Image.Image]],
    *,
    masks: Sequence[Mask] | None = None,
) -> list[float]:
    """DINO score per generated image (see `subject_similarity`); `model` from `load_dino_model`."""
    return subject_similarity(model, generated, references, masks=masks, expected="dino")


def clip_i_similarity(
    model: ImageEmbedder,
    generated: Sequence[Image.Image],
    references: Sequence[Sequence[Image.Image]],
    *,
    masks: Sequence[Mask] | None = None,
) -> list[float]:
    """CLIP-I score per generated image (see `subject_similarity`); `model` from `load_clip_model`."""
    return subject_similarity(model, generated, references, masks=masks, expected="clip")


def subject_similarity(
    model: ImageEmbedder,
    generated: Sequence[Image.Image],
    references: Sequence[Sequence[Image.Image]],
    *,
    masks: Sequence[Mask] | None = None,
    expected: str | None = None,
) -> list[float]:
    """For each generated image, the mean cosine between its embedding and those of its subject's
    references (`references[i]`, at least one). With `masks`, each generated image is first cropped
    to its mask's box (`crop_region`); without, the images are taken as the regions already."""
    if expected is not None and model.kind != expected:
        raise ValueError(f"this metric needs the {expected} model, got the {model.kind} one ({model.name})")
    if len(references) != len(generated):
        raise ValueError(f"{len(generated)} generated images but {len(references)} reference lists")
    if masks is not None and len(masks) != len(generated):
        raise ValueError(f"{len(generated)} generated images but {len(masks)} masks")
    if any(len(refs) == 0 for refs in references):
        raise ValueError("every generated image needs at least one reference photo of its subject")
    regions = (
        list(generated)
        if masks is None
        else [crop_region(g, m) for g, m in zip(generated, masks, strict=True)]
    )
    if not regions:
        return []
    # A subject's references repeat across its generated images: embed each distinct one once.
    distinct: dict[int, int] = {}
    unique: list[Image.Image] = []
    for refs in references:
        for ref in refs:
            if id(ref) not in distinct:
                distinct[id(ref)] = len(unique)
                unique.append(ref)
    gen = F.normalize(model.embed(regions), dim=-1)
    ref = F.normalize(model.embed(unique), dim=-1)
    scores = []
    for row, refs in zip(gen, references, strict=True):
        picked = ref[[distinct[id(r)] for r in refs]]
        scores.append(float((picked @ row).mean()))
    return scores


def fid(inception: InceptionFeatures, real: Sequence[Image.Image], generated: Sequence[Image.Image]) -> float:
    """Fréchet Inception Distance between `real` and `generated` (any sizes: each is resized to the
    network's input). Needs at least 2 images per set: a covariance of one sample is undefined; with
    fewer images than features (2048) the estimate is biased upwards, so compare FIDs of like-sized sets."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    for what, images in (("real", real), ("generated", generated)):
        if len(images) < 2:
            raise ValueError(
                f"FID needs at least 2 {what} images (a covariance of fewer is undefined), got {len(images)}"
            )
    metric = FrechetInceptionDistance(feature=inception, normalize=False).to(inception.device)
    with torch.no_grad():
        for images, is_real in ((real, True), (generated, False)):
            for batch in _uint8_batches(images):
                metric.update(batch, real=is_real)
        return float(metric.compute())


def _uint8_batches(images: Sequence[Image.Image]) -> Iterator[torch.Tensor]:
    """uint8 [N, 3, H, W] batches of up to FID_BATCH consecutive images of one size (sizes may differ
    between batches: the Inception wrapper resizes), one batch in memory at a time."""
    batch: list[np.ndarray] = []
    for image in images:
        array = np.asarray(image.convert("RGB"))
        if batch and (len(batch) == FID_BATCH or batch[0].shape != array.shape):
            yield torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2)
            batch = []
        batch.append(array)
    if batch:
        yield torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2)
