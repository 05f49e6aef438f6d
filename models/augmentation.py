"""Reference and mask augmentation for self-supervised training pairs, all driven by one seeded RNG.

Reference augmentation (flip, rotation, blur, colour jitter, random resized crop) makes the adapter
paint the product in poses and lighting its photos do not show; mask augmentation (larger boxes and
irregular shapes around the object) makes sloppy, oversized user masks work. Every mask returned
covers the object's box: the model must always paint the whole product.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter

from models.images import fit_reference

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels
MASK_SHAPES = ("box", "ellipse", "polygon")


@dataclass(frozen=True)
class AugmentSettings:
    # reference
    flip_p: float = 0.5
    max_rotation_deg: float = 15.0
    blur_p: float = 0.3
    max_blur_radius: float = 1.5  # relative to a 256 px crop, scaled with the crop's size
    jitter: float = 0.25  # brightness / contrast / saturation factors drawn from [1 - j, 1 + j]
    # area kept by the random crop; the crop has the reference's own shape, so the product is zoomed
    # in on, never stretched (torchvision's RandomResizedCrop also changes the aspect by 3/4..4/3,
    # which would teach the adapter a sofa 25 % longer or shorter than it is)
    crop_scale: tuple[float, float] = (0.7, 1.0)
    # mask
    mask_grow: tuple[float, float] = (0.0, 0.4)  # each side moves out by this fraction of the box side
    mask_shape_p: tuple[float, float, float] = (0.4, 0.3, 0.3)  # box, ellipse, polygon
    # framing: the context margin around the mask in the training crop, as at inference (0.25)
    crop_margin: tuple[float, float] = (0.15, 0.35)


NO_AUGMENTATION = AugmentSettings(
    flip_p=0.0,
    max_rotation_deg=0.0,
    blur_p=0.0,
    jitter=0.0,
    crop_scale=(1.0, 1.0),
    mask_grow=(0.0, 0.0),
    mask_shape_p=(1.0, 0.0, 0.0),
    crop_margin=(0.25, 0.25),
)


def pixel_box(box: Box, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """The whole pixels a float box touches (rounded outward), clipped to the image (W, H)."""
    width, height = size
    x0, y0 = max(0, math.floor(box[0])), max(0, math.floor(box[1]))
    x1, y1 = min(width, math.ceil(box[2])), min(height, math.ceil(box[3]))
    return x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)


def crop_reference(photo: Image.Image, box: Box) -> Image.Image:
    """The object: the photo inside its box (the un-augmented reference), within the reference bound
    (`models.images.fit_reference`), so augmenting it never scales with the photo's shape."""
    return fit_reference(photo, pixel_box(box, photo.size))


def augment_reference(
    reference: Image.Image, rng: np.random.Generator, settings: AugmentSettings = AugmentSettings()
) -> Image.Image:
    """Random crop (same aspect) -> flip -> rotation -> colour jitter -> blur, each drawn from `rng`.

    The draws happen in a fixed order whatever is switched off, so a setting never shifts the
    random stream of what follows (resume and comparisons stay aligned).
    """
    image = reference.convert("RGB")
    width, height = image.size

    # random crop of `scale` of the area at the reference's own aspect, then back to its size: a
    # zoom, the same factor on both axes
    side = math.sqrt(rng.uniform(*settings.crop_scale))
    crop_w = min(width, max(1, round(width * side)))
    crop_h = min(height, max(1, round(height * side)))
    left = int(rng.integers(0, width - crop_w + 1))
    top = int(rng.integers(0, height - crop_h + 1))
    if (crop_w, crop_h) != (width, height):
        image = image.crop((left, top, left + crop_w, top + crop_h)).resize(
            (width, height), Image.Resampling.BICUBIC
        )

    flip = rng.random() < settings.flip_p
    if flip:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)

    angle = rng.uniform(-settings.max_rotation_deg, settings.max_rotation_deg)
    if angle:
        # corners the rotation uncovers get the crop's mean colour, not black: black would be a cue
        # the reference never has at inference time
        fill = tuple(int(v) for v in np.asarray(image).reshape(-1, 3).mean(axis=0))
        image = image.rotate(angle, resample=Image.Resampling.BILINEAR, fillcolor=fill)

    brightness, contrast, saturation = (
        rng.uniform(1 - settings.jitter, 1 + settings.jitter) for _ in range(3)
    )
    image = ImageEnhance.Brightness(image).enhance(brightness)
    image = ImageEnhance.Contrast(image).enhance(contrast)
    image = ImageEnhance.Color(image).enhance(saturation)

    blur = rng.random() < settings.blur_p
    radius = rng.uniform(0, settings.max_blur_radius) * max(width, height) / 256
    if blur and radius > 0:
        image = image.filter(ImageFilter.GaussianBlur(radius))
    return image


def augment_mask(
    box: Box, size: tuple[int, int], rng: np.random.Generator, settings: AugmentSettings = AugmentSettings()
) -> np.ndarray:
    """[H,W] bool paint-mask around the object's box: a larger box, an ellipse or an irregular polygon
    around it, always covering every pixel of the box and clipped to the image (W, H)."""
    width, height = size
    x0, y0, x1, y1 = pixel_box(box, size)
    box_w, box_h = x1 - x0, y1 - y0
    left, top, right, bottom = (rng.uniform(*settings.mask_grow) for _ in range(4))
    grown = (x0 - left * box_w, y0 - top * box_h, x1 + right * box_w, y1 + bottom * box_h)
    shape = MASK_SHAPES[int(rng.choice(len(MASK_SHAPES), p=np.asarray(settings.mask_shape_p)))]
    jitter = rng.uniform(1.0, 1.3, size=12)  # drawn for every shape: a fixed stream length

    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    cx, cy = (grown[0] + grown[2]) / 2, (grown[1] + grown[3]) / 2
    half_w, half_h = (grown[2] - grown[0]) / 2, (grown[3] - grown[1]) / 2
    if shape == "box":
        gx0, gy0, gx1, gy1 = pixel_box(grown, size)
        draw.rectangle((gx0, gy0, gx1 - 1, gy1 - 1), fill=255)  # PIL's rectangle includes its end
    elif shape == "ellipse":
        # the ellipse through the grown box's corners has semi-axes sqrt(2) times its half sides
        draw.ellipse(
            (
                cx - half_w * math.sqrt(2),
                cy - half_h * math.sqrt(2),
                cx + half_w * math.sqrt(2),
                cy + half_h * math.sqrt(2),
            ),
            fill=255,
        )
    else:
        # a star-shaped polygon: at each angle, a point past the grown box's edge by a random factor
        points = []
        for i, factor in enumerate(jitter):
            angle = 2 * math.pi * i / len(jitter)
            dx, dy = math.cos(angle), math.sin(angle)
            to_edge = min(half_w / abs(dx) if dx else math.inf, half_h / abs(dy) if dy else math.inf)
            points.append((cx + dx * to_edge * factor, cy + dy * to_edge * factor))
        draw.polygon(points, fill=255)
    mask = np.asarray(canvas) > 0
    # the object itself is always painted, whatever the shape left out between polygon vertices
    mask[y0:y1, x0:x1] = True
    return mask


def random_box(size: tuple[int, int], rng: np.random.Generator, side: Sequence[float] = (0.3, 0.6)) -> Box:
    """A random box (for domain pretraining over photos without a product box)."""
    width, height = size
    w, h = rng.uniform(*side) * width, rng.uniform(*side) * height
    x0, y0 = rng.uniform(0, width - w), rng.uniform(0, height - h)
    return (x0, y0, x0 + w, y0 + h)
