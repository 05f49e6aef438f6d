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
from models.compositing import crop_box_around_mask, crop_mask, crop_pixels, plan_crop
from models.images import as_rgb


@dataclass(frozen=True)
class SubjectPhoto:
    image: Image.Image  # upright; held in 8-bit RGB (`as_rgb`), whatever mode it was given in
    box: Box  # the product, in the image's pixels

    def __post_init__(self) -> None:
        # Every reader of a training's photos must see the same pixels: the pairs and the reference
        # read `as_rgb`'s, and so must the checkpoint's digest of the inputs, which reads the image
        # as held (`convert("RGB")` turns every 16-bit grey photo white, and drops transparency, so
        # two products' photos could share a digest and one resume the other's checkpoint).
        # An RGB image is kept as it is: no copy.
        object.__setattr__(self, "image", as_rgb(self.image))


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
    """One training pair from one photo; every random choice comes from `rng`. Cropped as a room is
    (`models.compositing`): no buffer scales with the photo's shape beyond the photo and its masks."""
    image = as_rgb(photo.image)
    paint = augment_mask(photo.box, image.size, rng, settings)  # [H,W] bool
    reference = augment_reference(crop_reference(image, photo.box), rng, settings)

    margin = rng.uniform(*settings.crop_margin)
    plan = plan_crop(
        crop_box_around_mask(paint, margin=margin, min_side=resolution // 2), image.size, resolution
    )
    x0, y0, x1, y1 = pixel_box(photo.box, image.size)
    object_mask = np.zeros(paint.shape, dtype=bool)
    object_mask[y0:y1, x0:x1] = True
    return TrainingPair(
        source=crop_pixels(image, plan),
        paint_mask=crop_mask(paint, plan),
        object_mask=crop_mask(object_mask, plan),
        reference=reference,
    )


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
