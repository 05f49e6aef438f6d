"""Crop a square around the mask at the model's resolution, and paste the painted square back.

Only masked pixels are ever written: outside the mask the output is byte-identical to the room.
Every buffer here is bounded by the model's resolution, not by the room's shape (`models.crop_plan`):
the crop reads only the square's part inside the image, straight at its small size, and the paste
works tile by tile.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from models.crop_plan import (
    CropBox,
    CropPlan,
    Rect,
    box_around,
    crop_box_around_mask,
    mask_bounds,
    plan_crop,
)
from models.resampling import resize_region

__all__ = [
    "CropBox",
    "CropPlan",
    "box_around",
    "crop_box_around_mask",
    "crop_mask",
    "crop_pixels",
    "crop_square",
    "feathered_alpha",
    "mask_bounds",
    "paste_masked",
    "plan_crop",
]


def crop_square(source: Image.Image | np.ndarray, box: CropBox, size: int | None = None) -> np.ndarray:
    """[H,W,...] -> [size,size,...] (default: the box's own side). The box's part inside the image is
    resized to its place in the square; the rest repeats its edge pixels (context only, never pasted
    back). Give a PIL image for a large room: an array's part inside the box is copied to PIL first."""
    image_size = (source.shape[1], source.shape[0]) if isinstance(source, np.ndarray) else source.size
    plan = plan_crop(box, image_size, box.side if size is None else size)
    return _pad_to_square(_scaled_inside(source, plan), plan)


def _scaled_inside(source: Image.Image | np.ndarray, plan: CropPlan) -> np.ndarray:
    """The box's part inside the image at its place's size in the square."""
    inside, placed = plan.inside, plan.placed
    size = (placed.width, placed.height)
    if isinstance(source, Image.Image):
        return np.asarray(resize_region(source, inside.as_tuple(), size))
    region = source[inside.slices()]
    if size == (inside.width, inside.height):
        return region  # no scaling: a view, padded by the caller
    return np.asarray(resize_region(Image.fromarray(region), (0, 0, inside.width, inside.height), size))


def crop_pixels(image: Image.Image, plan: CropPlan) -> torch.Tensor:
    """An RGB image's crop -> [3,R,R] in [-1, 1], the VAE's input."""
    square = crop_square(image, plan.box, plan.size)
    return torch.from_numpy(square.copy()).permute(2, 0, 1).float() / 127.5 - 1.0


def crop_mask(mask: np.ndarray, plan: CropPlan) -> torch.Tensor:
    """[H,W] bool -> [1,R,R] float, 1 = paint. A square pixel touched by any masked room pixel is
    painted, so no masked room pixel is left without painted content when the crop is scaled back.
    Past the image the mask repeats its edge, as the crop's pixels do."""
    inside, placed = plan.inside, plan.placed
    region = mask[inside.slices()]
    row_start, row_stop = _touched(inside.height, placed.height)
    col_start, col_stop = _touched(inside.width, placed.width)
    small = np.zeros((placed.height, placed.width), dtype=bool)
    # Column chunks, so the running count below stays bounded by R, not by the room's width.
    for first in range(0, inside.width, plan.mask_chunk):
        last = min(first + plan.mask_chunk, inside.width)
        # the square's columns whose touched room columns meet this chunk
        j0 = int(np.searchsorted(col_stop, first, side="right"))
        j1 = int(np.searchsorted(col_start, last, side="left"))
        lo = np.clip(col_start[j0:j1], first, last) - first
        hi = np.clip(col_stop[j0:j1], first, last) - first
        for i in range(placed.height):
            band = region[row_start[i] : row_stop[i], first:last].any(axis=0)
            counts = np.concatenate(([0], np.cumsum(band)))
            small[i, j0:j1] |= counts[hi] > counts[lo]
    return torch.from_numpy(_pad_to_square(small, plan)).float()[None]


def _touched(source: int, target: int) -> tuple[np.ndarray, np.ndarray]:
    """For each of `target` cells spread evenly over `source` pixels: [start, stop) of the pixels it
    overlaps (neighbouring cells may share one)."""
    cells = np.arange(target, dtype=np.int64)
    return cells * source // target, -(-(cells + 1) * source // target)


def _pad_to_square(small: np.ndarray, plan: CropPlan) -> np.ndarray:
    """The placed part -> the R x R square, its edge pixels repeated outward (at the small scale)."""
    placed, size = plan.placed, plan.size
    pads = [(placed.top, size - placed.bottom), (placed.left, size - placed.right)]
    if not any(before or after for before, after in pads):
        return small
    return np.pad(small, pads + [(0, 0)] * (small.ndim - 2), mode="edge")


def feathered_alpha(mask: np.ndarray, feather_px: int) -> np.ndarray:
    """[H,W] bool -> [H,W] float32 in [0,1], 0 wherever the mask is False.

    Ramps from 1/(f+1) on the mask's edge to 1 at f pixels inside it: a soft seam that never
    touches a pixel outside the mask. The array's border counts as inside (edge padding).
    """
    alpha = mask.astype(np.float32)
    eroded = mask
    for _ in range(feather_px):
        eroded = _erode_rows(_erode_rows(eroded).T).T  # a 3x3 erosion is one per axis
        alpha += eroded
    return alpha / (feather_px + 1)


def _erode_rows(mask: np.ndarray) -> np.ndarray:
    """A pixel stays if it and its neighbours above and below are set. Past the border the edge
    repeats, which leaves border pixels to their one inner neighbour: no padded copy is needed."""
    out = mask.copy()
    out[1:] &= mask[:-1]
    out[:-1] &= mask[1:]
    return out


def paste_masked(
    room: np.ndarray, painted: Image.Image, mask: np.ndarray, box: CropBox, *, feather_px: int = 2
) -> np.ndarray:
    """Write the painted square (any size; its side is taken as R) into a copy of `room` [H,W,3]
    uint8, on masked pixels only, tile by tile."""
    height, width = mask.shape
    painted = painted.convert("RGB")
    if painted.width != painted.height:
        painted = painted.resize((painted.width, painted.width), Image.Resampling.BICUBIC)
    plan = plan_crop(box, (width, height), painted.width)
    out = room.copy()
    for tile in plan.tiles():
        _paste_tile(out, mask, painted, plan, tile, feather_px)
    # Any mask pixel outside the box cannot exist: the box covers the mask's bounding box.
    return out


def _paste_tile(
    out: np.ndarray,
    mask: np.ndarray,
    painted: Image.Image,
    plan: CropPlan,
    tile: Rect,
    feather_px: int,
) -> None:
    inside = plan.inside
    # the tile grown by the feather's reach (within the box's inside part), so the erosion at the
    # tile's edge sees the same neighbours as one over the whole part would
    halo = Rect(
        max(tile.left - feather_px, 0),
        max(tile.top - feather_px, 0),
        min(tile.right + feather_px, inside.width),
        min(tile.bottom + feather_px, inside.height),
    )
    halo_mask = mask[halo.slices(inside.left, inside.top)]
    core = tile.slices(-halo.left, -halo.top)
    tile_mask = halo_mask[core]
    if not tile_mask.any():
        return  # nothing to paint here: skip the resize
    patch = painted.resize((tile.width, tile.height), Image.Resampling.BICUBIC, box=plan.painted_box(tile))
    target = out[tile.slices(inside.left, inside.top)]
    if halo_mask.all():
        target[...] = np.asarray(patch)  # the feather's reach is all mask: alpha is 1 on the whole tile
        return
    alpha = feathered_alpha(halo_mask, feather_px)[core][tile_mask][:, None]  # [n,1]
    # tiles do not overlap: this tile of `out` still holds the room's pixels
    room_px = target[tile_mask].astype(np.float32)  # [n,3]
    patch_px = np.asarray(patch)[tile_mask].astype(np.float32)
    target[tile_mask] = np.rint(room_px * (1 - alpha) + patch_px * alpha).astype(np.uint8)
