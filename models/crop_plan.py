"""Where the crop square lies, and the size of every buffer cropping and pasting will use: no pixels.

The engine paints an R x R square (R: the model's resolution) around the mask, with some context.
That square may be far larger than R (a mask across a 65000-pixel-wide room makes it 65000 on a
side) and may reach past the image; it is never built at its own size. Only its part inside the
image is read, straight to its size at scale R/side (`placed`), and the rest of the R x R square is
edge padding at that small scale. Pasting back maps `placed` of the painted square onto the same
part of the room, tile by tile, and writes masked pixels only.

The bound: apart from arrays of the room's own size (the room, its mask, the output), no buffer
holds more than `work_bound(R)` = WORK_FACTOR x R^2 pixels, whatever the room's shape.
`CropPlan.buffers` lists them, so tests check the bound on any shape without allocating it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from models.errors import InvalidImageError
from models.resampling import reduced_size

WORK_FACTOR = 16
TILE_FACTOR = 2  # paste tiles are (2R)^2: with a feather halo of f <= R, (2R + 2f)^2 <= 16 R^2
MASK_CHUNK_FACTOR = 4  # the mask is pooled over column chunks of 4 R^2 room pixels


def work_bound(resolution: int) -> int:
    """The most pixels any one of cropping's or pasting's buffers may hold at this resolution."""
    return WORK_FACTOR * resolution * resolution


@dataclass(frozen=True)
class CropBox:
    """A square in room pixel coordinates; it may reach past the image when the room is too small."""

    left: int
    top: int
    side: int

    @property
    def right(self) -> int:
        return self.left + self.side

    @property
    def bottom(self) -> int:
        return self.top + self.side


@dataclass(frozen=True)
class Rect:
    left: int
    top: int
    right: int
    bottom: int

    @property
    def width(self) -> int:
        return self.right - self.left

    @property
    def height(self) -> int:
        return self.bottom - self.top

    @property
    def pixels(self) -> int:
        return self.width * self.height

    def slices(self, left: int = 0, top: int = 0) -> tuple[slice, slice]:
        """(rows, columns) to index an array with, the rect shifted by (left, top) first."""
        return slice(top + self.top, top + self.bottom), slice(left + self.left, left + self.right)

    def as_tuple(self) -> tuple[int, int, int, int]:
        return (self.left, self.top, self.right, self.bottom)


def mask_bounds(mask: np.ndarray) -> Rect:
    """The bounding box of a [H,W] mask's non-zero pixels (row and column projections only)."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        raise InvalidImageError("the mask is empty: nothing to paint")
    return Rect(int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)


def box_around(
    bounds: Rect, image_size: tuple[int, int], *, margin: float = 0.25, min_side: int = 32
) -> CropBox:
    """The square around `bounds`, grown by `margin` of its side on every side for context, at
    least `min_side`, at most the image's longer side, and shifted to lie inside the image when it fits.
    """
    width, height = image_size
    side = math.ceil(max(bounds.width, bounds.height) * (1 + 2 * margin))
    side = min(max(side, min_side), max(width, height))
    return CropBox(
        left=_place(bounds.left, bounds.right, side, width),
        top=_place(bounds.top, bounds.bottom, side, height),
        side=side,
    )


def crop_box_around_mask(mask: np.ndarray, *, margin: float = 0.25, min_side: int = 32) -> CropBox:
    """`box_around` the mask's non-zero pixels."""
    height, width = mask.shape
    return box_around(mask_bounds(mask), (width, height), margin=margin, min_side=min_side)


def _place(start: int, stop: int, side: int, limit: int) -> int:
    """Start of a `side`-long window centred on [start, stop), clamped into [0, limit) if it fits."""
    if side >= limit:
        return (limit - side) // 2  # centred, past both edges: those pixels are padding
    centred = (start + stop) // 2 - side // 2
    return min(max(centred, 0), limit - side)


@dataclass(frozen=True)
class CropPlan:
    box: CropBox
    size: int  # R: the square's side once scaled
    inside: Rect  # the box's part inside the image, in image pixels
    placed: Rect  # where `inside` lands in the R x R square (at least 1 x 1)

    @property
    def tile(self) -> int:
        return TILE_FACTOR * self.size

    @property
    def mask_chunk(self) -> int:
        return MASK_CHUNK_FACTOR * self.size * self.size

    def tiles(self) -> Iterator[Rect]:
        """Paste tiles covering `inside`, in coordinates relative to it."""
        for top in range(0, self.inside.height, self.tile):
            for left in range(0, self.inside.width, self.tile):
                yield Rect(
                    left,
                    top,
                    min(left + self.tile, self.inside.width),
                    min(top + self.tile, self.inside.height),
                )

    def painted_box(self, tile: Rect) -> tuple[float, float, float, float]:
        """A tile of `inside` in the painted square's coordinates: the inverse of the crop's mapping.
        Multiplied before divided, so the inside part's far edge maps exactly onto `placed`'s (Pillow
        refuses a box a rounding error past the image)."""
        inside, placed = self.inside, self.placed
        return (
            placed.left + tile.left * placed.width / inside.width,
            placed.top + tile.top * placed.height / inside.height,
            placed.left + tile.right * placed.width / inside.width,
            placed.top + tile.bottom * placed.height / inside.height,
        )

    def buffers(self, feather_px: int) -> dict[str, int]:
        """Pixels of each buffer cropping and pasting allocate (upper bounds where Pillow decides)."""
        inside, placed = self.inside, self.placed
        reduced = reduced_size((inside.width, inside.height), (placed.width, placed.height))
        tile_w, tile_h = min(self.tile, inside.width), min(self.tile, inside.height)
        return {
            # crop: box reduction, then Pillow's two-pass bicubic (its middle image is at most this)
            "crop_reduced": reduced[0] * reduced[1],
            "crop_resample": max(reduced[0], placed.width) * max(reduced[1], placed.height),
            "crop_scaled": placed.pixels,
            "crop_square": self.size * self.size,
            # mask: one column chunk's any-over-rows and its running count
            "mask_band": min(self.mask_chunk, inside.width) + 1,
            # paste: a tile with its feather halo, the painted patch, Pillow's middle image
            "paste_halo": min(tile_w + 2 * feather_px, inside.width)
            * min(tile_h + 2 * feather_px, inside.height),
            "paste_patch": tile_w * tile_h,
            "paste_resample": tile_w * self.size,
        }


def plan_crop(box: CropBox, image_size: tuple[int, int], size: int) -> CropPlan:
    """How the `box` of an image of `image_size` (W, H) becomes an R x R square (R = `size`)."""
    width, height = image_size
    inside = Rect(max(box.left, 0), max(box.top, 0), min(box.right, width), min(box.bottom, height))
    if inside.width <= 0 or inside.height <= 0:
        raise ValueError(f"the crop box {box} does not meet the {width}x{height} image")
    left, right = _scaled_span(inside.left - box.left, inside.right - box.left, box.side, size)
    top, bottom = _scaled_span(inside.top - box.top, inside.bottom - box.top, box.side, size)
    return CropPlan(box=box, size=size, inside=inside, placed=Rect(left, top, right, bottom))


def _scaled_span(start: int, stop: int, side: int, size: int) -> tuple[int, int]:
    """[start, stop) of a `side`-long axis, scaled to a `size`-long one: rounded, at least one pixel."""
    first = (2 * start * size + side) // (2 * side)  # round(start * size / side), in integers
    last = (2 * stop * size + side) // (2 * side)
    length = max(1, last - first)
    return min(first, size - length), min(first, size - length) + length
