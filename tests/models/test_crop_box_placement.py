"""Where the crop square lies (models.crop_plan.box_around): the mask's box grown by `margin` of its
side on every side, centred on the mask and shifted inside the image when it fits; on an axis the
square is longer than the image, centred, past both edges (those pixels are padding)."""

from __future__ import annotations

from models.crop_plan import CropBox, Rect, box_around


def test_the_square_grows_by_the_margin_on_every_side_around_the_mask() -> None:
    # a 100-pixel mask, a quarter of its side on each side: 150, centred on the mask
    assert box_around(Rect(400, 300, 500, 400), (1000, 800), margin=0.25) == CropBox(375, 275, 150)
    assert box_around(Rect(400, 300, 500, 400), (1000, 800), margin=0.5) == CropBox(350, 250, 200)


def test_a_square_that_fits_is_shifted_inside_the_image() -> None:
    assert box_around(Rect(0, 700, 100, 800), (1000, 800), margin=0.25) == CropBox(0, 650, 150)


def test_a_square_longer_than_the_image_is_centred_past_both_edges() -> None:
    # a mask across a wide, low room: the square (the room's width) is far taller than the room
    box = box_around(Rect(0, 0, 1000, 200), (1000, 200), margin=0.25)
    assert box == CropBox(left=0, top=-400, side=1000)
    assert box.top < 0 < 200 < box.bottom and (0 - box.top) == (box.bottom - 200)
