"""Cropping and pasting stay within a bound set by the model's resolution, whatever the image's shape.

The geometry is checked on every shape the API could let through (up to 40 000 000 pixels, sides up
to 65 000, any aspect) without allocating such an image: `CropPlan.buffers` lists what cropping
and pasting will allocate. The real functions then run on moderately sized extreme shapes, with
numpy's allocations traced, and keep the room byte-identical outside the mask.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from models.augmentation import NO_AUGMENTATION, AugmentSettings
from models.compositing import crop_mask, crop_pixels, crop_square, paste_masked
from models.crop_plan import Rect, box_around, crop_box_around_mask, plan_crop, work_bound
from models.images import REFERENCE_MAX_SIDE, fit_reference, reference_size
from models.training_pairs import SubjectPhoto, make_pair

MAX_PIXELS = 40_000_000  # the API's default `max_pixels`
MAX_SIDE = 65_000  # near JPEG's own limit (65 535): what a decoder could hand over at most
FEATHER_PX = 2  # the sampler's
RESOLUTIONS = (32, 64, 512)  # below tiny, tiny, the real Paint-by-Example
PREVIEW_MARGIN = 0.25  # the sampler's
TRAINING_MARGINS = AugmentSettings().crop_margin


@st.composite
def image_sizes(draw: st.DrawFn) -> tuple[int, int]:
    """(W, H) from 1 x 1 to MAX_PIXELS, sides up to MAX_SIDE, both orientations, extremes often."""
    extreme = draw(
        st.sampled_from([None, (MAX_SIDE, 1), (MAX_SIDE, MAX_PIXELS // MAX_SIDE), (1, 1), (6324, 6324)])
    )
    if extreme is None:
        long = draw(st.integers(1, MAX_SIDE))
        short = draw(st.integers(1, min(long, MAX_PIXELS // long)))
        extreme = (long, short)
    return extreme if draw(st.booleans()) else (extreme[1], extreme[0])


@st.composite
def boxes_in(draw: st.DrawFn, size: tuple[int, int]) -> Rect:
    """A mask's bounding box: anything from one pixel to the whole image."""
    width, height = size
    if draw(st.booleans()):
        return Rect(0, 0, width, height)  # the full mask of the issue
    left, top = draw(st.integers(0, width - 1)), draw(st.integers(0, height - 1))
    return Rect(left, top, draw(st.integers(left + 1, width)), draw(st.integers(top + 1, height)))


def check_plan(size: tuple[int, int], bounds: Rect, resolution: int, margin: float) -> None:
    box = box_around(bounds, size, margin=margin, min_side=resolution // 2)
    width, height = size
    # the crop semantics: a square covering the mask, inside the image wherever it fits
    assert box.left <= bounds.left and box.right >= bounds.right
    assert box.top <= bounds.top and box.bottom >= bounds.bottom
    assert box.side <= max(width, height)
    if box.side <= width:
        assert box.left >= 0 and box.right <= width
    if box.side <= height:
        assert box.top >= 0 and box.bottom <= height

    plan = plan_crop(box, size, resolution)
    inside, placed = plan.inside, plan.placed
    assert 0 <= inside.left < inside.right <= width and 0 <= inside.top < inside.bottom <= height
    assert 0 <= placed.left < placed.right <= resolution and 0 <= placed.top < placed.bottom <= resolution
    # pasting reads the painted square only inside it, up to its far edges exactly
    left, top, right, bottom = plan.painted_box(Rect(0, 0, inside.width, inside.height))
    assert (left, top, right, bottom) == (placed.left, placed.top, placed.right, placed.bottom)
    for name, pixels in plan.buffers(FEATHER_PX).items():
        assert pixels <= work_bound(resolution), (name, pixels, size, bounds, box)


@settings(max_examples=400, deadline=None)
@given(data=st.data(), resolution=st.sampled_from(RESOLUTIONS))
def test_a_room_of_any_shape_is_cropped_and_pasted_within_the_bound(
    data: st.DataObject, resolution: int
) -> None:
    size = data.draw(image_sizes())
    check_plan(size, data.draw(boxes_in(size)), resolution, PREVIEW_MARGIN)


@settings(max_examples=400, deadline=None)
@given(data=st.data(), resolution=st.sampled_from(RESOLUTIONS), margin=st.floats(*TRAINING_MARGINS))
def test_a_product_photo_of_any_shape_makes_pairs_within_the_bound(
    data: st.DataObject, resolution: int, margin: float
) -> None:
    size = data.draw(image_sizes())
    bounds = data.draw(boxes_in(size))  # the augmented paint mask's bounding box
    check_plan(size, bounds, resolution, margin)
    # the reference crop of the product's box, before augmentation and the image encoder
    ref_w, ref_h = reference_size(bounds.as_tuple())  # the whole box, scaled: nothing cut off
    assert 1 <= ref_w <= REFERENCE_MAX_SIDE and 1 <= ref_h <= REFERENCE_MAX_SIDE
    if min(ref_w, ref_h) >= 50:  # where rounding to whole pixels is small, the box's shape is kept
        assert ref_w / ref_h == pytest.approx(bounds.width / bounds.height, rel=0.03)


@settings(max_examples=60, deadline=None)
@given(data=st.data(), resolution=st.sampled_from((8, 32, 64)))
def test_every_masked_pixel_lands_on_a_painted_square_pixel(data: st.DataObject, resolution: int) -> None:
    """The crop's mask covers every masked room pixel's place, so pasting back never lacks paint."""
    width, height = data.draw(st.integers(1, 300)), data.draw(st.integers(1, 300))
    bounds = data.draw(boxes_in((width, height)))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    mask = np.zeros((height, width), bool)
    mask[bounds.slices()] = rng.random((bounds.height, bounds.width)) < 0.3
    mask[bounds.top, bounds.left] = True
    plan = plan_crop(crop_box_around_mask(mask, min_side=resolution // 2), (width, height), resolution)
    square = crop_mask(mask, plan)[0].numpy() > 0
    inside, placed = plan.inside, plan.placed
    rows, cols = np.nonzero(mask)
    square_rows = placed.top + (rows - inside.top) * placed.height // inside.height
    square_cols = placed.left + (cols - inside.left) * placed.width // inside.width
    assert square[square_rows, square_cols].all()


EXTREME_SHAPES = [(20_000, 2), (2, 20_000), (1, 1), (3, 50_000), (50_000, 3), (65_000, 2)]


def room_and_masks(width: int, height: int) -> tuple[np.ndarray, list[np.ndarray]]:
    rng = np.random.default_rng(width * 7 + height)
    room = rng.integers(10, 246, (height, width, 3), dtype=np.uint8)  # never the paint, per channel
    full = np.ones((height, width), bool)
    part = np.zeros((height, width), bool)
    part[height // 3 : height // 3 + max(1, height // 4), width // 3 : width // 3 + max(1, width // 4)] = True
    return room, [full, part]


@pytest.mark.parametrize(("width", "height"), EXTREME_SHAPES)
def test_extreme_rooms_paint_masked_pixels_only_within_the_bound(width: int, height: int) -> None:
    resolution = 64
    room, masks = room_and_masks(width, height)
    image = Image.fromarray(room)
    painted = Image.new("RGB", (resolution, resolution), (255, 0, 255))
    for mask in masks:
        plan = plan_crop(crop_box_around_mask(mask, min_side=resolution // 2), image.size, resolution)
        tracemalloc.start()
        try:
            pixels, paint = crop_pixels(image, plan), crop_mask(mask, plan)
            out = paste_masked(room, painted, mask, plan.box, feather_px=FEATHER_PX)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert pixels.shape == (3, resolution, resolution) and paint.shape == (1, resolution, resolution)
        assert paint.bool().any()
        assert out.shape == room.shape and out.dtype == np.uint8
        assert np.array_equal(out[~mask], room[~mask])
        assert (out[mask] != room[mask]).any(axis=-1).all()  # every masked pixel got paint
        # the output (a room-sized array) plus at most 64 bytes per pixel of the bound; the old
        # full-scale square was side^2 x 3 bytes (7.5 GB at 50 000)
        assert peak <= room.nbytes + 64 * work_bound(resolution), peak


@pytest.mark.parametrize(("width", "height"), EXTREME_SHAPES)
def test_the_full_scale_square_is_still_there_for_small_boxes(width: int, height: int) -> None:
    """`crop_square` without a size keeps its old meaning (the box's own side) where that is small."""
    mask = np.zeros((height, width), bool)
    mask[height // 2, width // 2] = True
    box = crop_box_around_mask(mask, min_side=8)
    square = crop_square(np.zeros((height, width, 3), np.uint8), box)
    assert square.shape == (box.side, box.side, 3)


@pytest.mark.parametrize(("width", "height"), EXTREME_SHAPES)
def test_extreme_product_photos_make_bounded_pairs(width: int, height: int) -> None:
    image = Image.fromarray(room_and_masks(width, height)[0])
    box = (width / 4, height / 4, max(1.0, width * 3 / 4), max(1.0, height * 3 / 4))
    for augment in (AugmentSettings(), NO_AUGMENTATION):
        pair = make_pair(SubjectPhoto(image, box), np.random.default_rng(1), resolution=32, settings=augment)
        assert pair.source.shape == (3, 32, 32)
        assert pair.paint_mask.shape == pair.object_mask.shape == (1, 32, 32)
        assert pair.object_mask.bool().any() and pair.paint_mask.bool()[pair.object_mask.bool()].all()
        ref_w, ref_h = pair.reference.size
        assert max(ref_w, ref_h) <= REFERENCE_MAX_SIDE


def test_a_large_reference_is_scaled_to_the_bound_and_a_small_one_kept() -> None:
    big = Image.new("RGB", (4000, 3000), (10, 20, 30))
    assert fit_reference(big).size == (1024, 768)
    thin = Image.new("RGB", (16_000, 2), (10, 20, 30))
    assert fit_reference(thin).size == (1024, 1)  # all of it: the encoder sees the whole reference
    small = Image.fromarray(np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8))
    assert np.array_equal(np.asarray(fit_reference(small)), np.asarray(small))
