"""Crop a square around the mask, and paste the painted square back into the full-size room.

Only masked pixels are ever written: outside the mask the output is byte-identical to the room.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from models.errors import InvalidImageError


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


def crop_box_around_mask(mask: np.ndarray, *, margin: float = 0.25, min_side: int = 32) -> CropBox:
    """The square around the mask's bounding box, grown by `margin` of its side on every side for
    context, at least `min_side`, and shifted to lie inside the image when it fits.
    """
    height, width = mask.shape
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        raise InvalidImageError("the mask is empty: nothing to paint")
    top, bottom = int(rows[0]), int(rows[-1]) + 1
    left, right = int(cols[0]), int(cols[-1]) + 1
    side = math.ceil(max(right - left, bottom - top) * (1 + 2 * margin))
    side = min(max(side, min_side), max(width, height))
    return CropBox(left=_place(left, right, side, width), top=_place(top, bottom, side, height), side=side)


def _place(start: int, stop: int, side: int, limit: int) -> int:
    """Start of a `side`-long window centred on [start, stop), clamped into [0, limit) if it fits."""
    if side >= limit:
        return (limit - side) // 2  # centred, past both edges: those pixels are padding
    centred = (start + stop) // 2 - side // 2
    return min(max(centred, 0), limit - side)


def crop_square(array: np.ndarray, box: CropBox) -> np.ndarray:
    """[H,W,...] -> [side,side,...]; the part past the image repeats its edge pixels (context only,
    never pasted back)."""
    height, width = array.shape[:2]
    pad_top, pad_left = max(0, -box.top), max(0, -box.left)
    pad_bottom, pad_right = max(0, box.bottom - height), max(0, box.right - width)
    inside = array[max(box.top, 0) : min(box.bottom, height), max(box.left, 0) : min(box.right, width)]
    if pad_top or pad_left or pad_bottom or pad_right:
        pads = [(pad_top, pad_bottom), (pad_left, pad_right)] + [(0, 0)] * (array.ndim - 2)
        inside = np.pad(inside, pads, mode="edge")
    return inside


def feathered_alpha(mask: np.ndarray, feather_px: int) -> np.ndarray:
    """[H,W] bool -> [H,W] float32 in [0,1], 0 wherever the mask is False.

    Ramps from 1/(f+1) on the mask's edge to 1 at f pixels inside it: a soft seam that never
    touches a pixel outside the mask. The image border counts as inside (edge padding).
    """
    alpha = mask.astype(np.float32)
    eroded = mask
    for _ in range(feather_px):
        padded = np.pad(eroded, 1, mode="edge")
        h, w = eroded.shape
        eroded = np.logical_and.reduce(
            [padded[dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3)]
        )
        alpha += eroded
    return alpha / (feather_px + 1)


def paste_masked(
    room: np.ndarray, painted: Image.Image, mask: np.ndarray, box: CropBox, *, feather_px: int = 2
) -> np.ndarray:
    """Write the painted square (any size; resized to the box) into a copy of `room` [H,W,3] uint8,
    on masked pixels only."""
    height, width = mask.shape
    square = np.asarray(painted.convert("RGB").resize((box.side, box.side), Image.Resampling.BICUBIC))
    # the part of the box that lies inside the image, in room and in square coordinates
    top, left = max(box.top, 0), max(box.left, 0)
    bottom, right = min(box.bottom, height), min(box.right, width)
    region = (slice(top, bottom), slice(left, right))
    patch = square[top - box.top : bottom - box.top, left - box.left : right - box.left].astype(np.float32)

    region_mask = mask[region]
    alpha = feathered_alpha(region_mask, feather_px)[..., None]  # [h,w,1]
    blended = np.rint(room[region].astype(np.float32) * (1 - alpha) + patch * alpha).astype(np.uint8)

    out = room.copy()
    out_region = out[region]
    out_region[region_mask] = blended[region_mask]
    # Any mask pixel outside the box cannot exist: the box covers the mask's bounding box.
    return out
