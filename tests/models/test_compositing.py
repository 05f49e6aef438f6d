"""Crop box and paste-back, without the model."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from models import InvalidImageError, crop_box_around_mask, paste_masked
from models.compositing import crop_square, feathered_alpha

CASES = [
    ((479, 641), (slice(100, 200), slice(300, 420))),  # interior
    ((479, 641), (slice(0, 30), slice(0, 50))),  # touches top-left corner
    ((479, 641), (slice(400, 479), slice(600, 641))),  # touches bottom-right corner
    ((479, 641), (slice(200, 208), slice(200, 208))),  # 8x8
    ((479, 641), (slice(0, 479), slice(0, 641))),  # everything
    ((33, 700), (slice(0, 33), slice(10, 20))),  # a room thinner than any crop
]


@pytest.mark.parametrize(("shape", "region"), CASES)
def test_box_is_square_covers_the_mask_and_stays_inside_when_it_fits(shape, region) -> None:
    mask = np.zeros(shape, bool)
    mask[region] = True
    box = crop_box_around_mask(mask, margin=0.25, min_side=32)
    rows, cols = np.nonzero(mask)
    assert box.left <= cols.min() and box.right > cols.max()
    assert box.top <= rows.min() and box.bottom > rows.max()
    height, width = shape
    if box.side <= width:
        assert box.left >= 0 and box.right <= width
    if box.side <= height:
        assert box.top >= 0 and box.bottom <= height
    assert crop_square(np.zeros((*shape, 3), np.uint8), box).shape == (box.side, box.side, 3)


def test_empty_mask_is_refused() -> None:
    with pytest.raises(InvalidImageError):
        crop_box_around_mask(np.zeros((10, 10), bool))


def test_feather_is_zero_outside_and_one_deep_inside() -> None:
    mask = np.zeros((40, 40), bool)
    mask[10:30, 10:30] = True
    alpha = feathered_alpha(mask, 3)
    assert np.all(alpha[~mask] == 0)
    assert alpha[20, 20] == 1
    assert 0 < alpha[10, 20] < 1


@pytest.mark.parametrize(("shape", "region"), CASES)
def test_paste_writes_masked_pixels_only(shape, region) -> None:
    rng = np.random.default_rng(0)
    room = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    mask = np.zeros(shape, bool)
    mask[region] = True
    box = crop_box_around_mask(mask, min_side=32)
    painted = Image.new("RGB", (64, 64), (255, 0, 255))
    out = paste_masked(room, painted, mask, box, feather_px=2)
    assert out.shape == room.shape
    assert np.array_equal(out[~mask], room[~mask])
    assert (out[mask] != room[mask]).any()
