"""A mask has no orientation of its own (docs/api.md, "Masks: which pixels paint"): it is drawn on the
room after the room's EXIF orientation, and the API reads its pixels as stored even when the PNG
carries an EXIF Orientation tag (an editor that copied the photo's metadata writes one). The engine's
`open_mask` (so `roomfit paint --mask` and the eval bench) must read the same pixels: turning the mask
by its tag refused a mask of the right size, or, on a square room, painted pixels the shopper never
drew."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from models import Painter, PaintRequest, open_mask
from tests.models.conftest import STEPS, random_room

ORIENTATION = 0x0112


def mask_png(drawn: np.ndarray, orientation: int) -> bytes:
    """The drawn mask (True = paint) as an 8-bit grey PNG whose EXIF says `orientation`."""
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    buffer = io.BytesIO()
    Image.fromarray(drawn.astype(np.uint8) * 255).save(buffer, "PNG", exif=exif)
    return buffer.getvalue()


@pytest.mark.parametrize("orientation", range(2, 9))
def test_a_mask_is_read_as_stored_whatever_its_exif_orientation(orientation: int) -> None:
    drawn = np.zeros((40, 30), bool)  # 30 wide, 40 tall: a quarter turn would change its size
    drawn[2:9, 3:20] = True  # near the top-left corner: any turn or flip moves it
    data = mask_png(drawn, orientation)
    assert Image.open(io.BytesIO(data)).getexif().get(ORIENTATION) == orientation  # the tag is there
    mask = open_mask(data, (30, 40))
    assert np.array_equal(mask, drawn)


def test_a_square_room_keeps_every_pixel_outside_a_tagged_mask(painter: Painter, reference) -> None:
    room = random_room(64, 64, seed=4)
    drawn = np.zeros((64, 64), bool)
    drawn[4:24, 6:40] = True
    mask = open_mask(mask_png(drawn, 6), room.size)  # same size either way: a turn went unnoticed
    [out] = painter.paint([PaintRequest(room, mask, seed=2, reference=reference)], steps=STEPS)
    out_px, room_px = np.asarray(out), np.asarray(room)
    assert np.array_equal(out_px[~drawn], room_px[~drawn])
    assert (out_px[drawn] != room_px[drawn]).any(axis=-1).mean() > 0.5
