"""Resize one region of an image through buffers bounded by the output's size, not the region's.

Pillow's bicubic resize of a region keeps an intermediate of (output width x region height) pixels:
a 65000-pixel-tall region read into 64 columns would hold 64 x 65000. Reading it first through an
integer box reduction (`Image.reduce`, which averages blocks straight into its output) brings the
region to at most `REDUCE_GAP` times the output size on each side; the bicubic pass then only
refines that, and every buffer stays within (REDUCE_GAP x output) per side.
"""

from __future__ import annotations

import math

from PIL import Image

# 3: the bicubic filter still sees up to three source pixels per output pixel after the reduction,
# which Pillow's documentation calls indistinguishable from a fair resize in most cases.
REDUCE_GAP = 3

Region = tuple[int, int, int, int]  # left, top, right, bottom, in the image's pixels


def reduce_factor(source: int, target: int) -> int:
    """The block size that brings `source` pixels to at most REDUCE_GAP x `target` (1 = no reduction)."""
    return max(1, math.ceil(source / (REDUCE_GAP * target)))


def reduced_size(source: tuple[int, int], target: tuple[int, int]) -> tuple[int, int]:
    """(W, H) of the reduction `resize_region` reads `source` (W, H) through, to reach `target`."""
    return tuple(  # type: ignore[return-value]
        math.ceil(s / reduce_factor(s, t)) for s, t in zip(source, target, strict=True)
    )


def resize_region(image: Image.Image, region: Region, size: tuple[int, int]) -> Image.Image:
    """The `region` of `image`, resized (bicubic) to `size` (W, H), never copying the region whole."""
    left, top, right, bottom = region
    factors = (reduce_factor(right - left, size[0]), reduce_factor(bottom - top, size[1]))
    if factors != (1, 1):
        image, region = (
            image.reduce(factors, box=region),
            (0, 0, *reduced_size((right - left, bottom - top), size)),
        )
    if (region[2] - region[0], region[3] - region[1]) == size:
        return image.crop(region)  # the same size: a crop, no resampling
    return image.resize(size, Image.Resampling.BICUBIC, box=region)
