"""Self-supervised training pairs (the paper's recipe): source = the photo, reference = the augmented
crop of the product's box, mask = the augmented box.

The source is framed like inference frames a room (`models.compositing.crop_box_around_mask`: a square
around the mask with some context, at the model's resolution), so the adapter learns the crops it
will be asked to paint.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from models.augmentation import (
    NO_AUGMENTATION,
    AugmentSettings,
    Box,
    augment_mask,
    augment_reference,
    crop_reference,
    pixel_box,
)
from models.compositing import crop_box_around_mask, crop_square


@dataclass(frozen=True)
class SubjectPhoto:
    image: Image.Image  # RGB, upright
    box: Box  # the product, in the image's pixels


@dataclass
class TrainingPair:
    source: torch.Tensor  # [3,R,R] in [-1, 1]: the crop around the mask, product included
    paint_mask: torch.Tensor  # [1,R,R] 1 = paint (roomfit's polarity; models.unet_input flips it)
    object_mask: torch.Tensor  # [1,R,R] 1 = the product's box, for checks and evaluation
    reference: Image.Image  # the augmented product crop, for the image encoder


def make_pair(
    photo: SubjectPhoto,
    rng: np.random.Generator,
    *,
    resolution: int,
    settings: AugmentSettings = AugmentSettings(),
) -> TrainingPair:
    """One training pair from one photo; every random choice comes from `rng`."""
    image = np.asarray(photo.image.convert("RGB"))
    size = (image.shape[1], image.shape[0])
    paint = augment_mask(photo.box, size, rng, settings)  # [H,W] bool
    reference = augment_reference(crop_reference(photo.image, photo.box), rng, settings)

    margin = rng.uniform(*settings.crop_margin)
    crop = crop_box_around_mask(paint, margin=margin, min_side=resolution // 2)
    x0, y0, x1, y1 = pixel_box(photo.box, size)
    object_mask = np.zeros(paint.shape, dtype=bool)
    object_mask[y0:y1, x0:x1] = True

    source = Image.fromarray(crop_square(image, crop)).resize(
        (resolution, resolution), Image.Resampling.BICUBIC
    )
    source_t = torch.from_numpy(np.asarray(source).copy()).permute(2, 0, 1).float() / 127.5 - 1.0
    return TrainingPair(
        source=source_t,
        paint_mask=_resize_mask(paint, crop, resolution),
        object_mask=_resize_mask(object_mask, crop, resolution),
        reference=reference,
    )


def _resize_mask(mask: np.ndarray, crop: object, resolution: int) -> torch.Tensor:
    """[H,W] bool -> [1,R,R] float; a resized pixel touched by the mask is in it (as at inference)."""
    square = Image.fromarray(crop_square(mask.astype(np.uint8) * 255, crop))  # type: ignore[arg-type]
    square = square.resize((resolution, resolution), Image.Resampling.BOX)
    return torch.from_numpy(np.asarray(square) > 0).float()[None]


def sample_pairs(
    photos: Sequence[SubjectPhoto],
    rng: np.random.Generator,
    *,
    count: int,
    resolution: int,
    settings: AugmentSettings = AugmentSettings(),
) -> list[TrainingPair]:
    """`count` pairs from photos drawn with replacement (a batch of one training step)."""
    picks = rng.integers(0, len(photos), size=count)
    return [make_pair(photos[int(i)], rng, resolution=resolution, settings=settings) for i in picks]


def evaluation_pairs(photos: Sequence[SubjectPhoto], *, resolution: int) -> list[TrainingPair]:
    """One un-augmented pair per photo (mask = box, reference = box crop): for held-out losses."""
    rng = np.random.default_rng(0)  # NO_AUGMENTATION draws but ignores its numbers
    return [make_pair(p, rng, resolution=resolution, settings=NO_AUGMENTATION) for p in photos]
