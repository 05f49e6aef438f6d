"""Reading rooms and masks: EXIF orientation, mask conventions, size checks."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from models import InvalidImageError, open_image, open_mask


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def test_mask_nonzero_luminance_is_paint() -> None:
    array = np.zeros((10, 12), np.uint8)
    array[2:5, 3:7] = 1  # even a faint stroke counts
    mask = open_mask(png(Image.fromarray(array)), (12, 10))
    assert mask.dtype == bool and mask.sum() == 12 and mask[2, 3]


def test_transparent_drawing_paints_where_opaque() -> None:
    rgba = np.zeros((10, 12, 4), np.uint8)  # black everywhere, transparent except the stroke
    rgba[4:6, 1:3, 3] = 255
    mask = open_mask(png(Image.fromarray(rgba, "RGBA")))
    assert mask.sum() == 4 and mask[4, 1]


def test_mask_of_another_size_is_refused() -> None:
    with pytest.raises(InvalidImageError, match="12x10"):
        open_mask(png(Image.new("L", (12, 10), 255)), (13, 10))


def test_unreadable_bytes_are_refused() -> None:
    with pytest.raises(InvalidImageError):
        open_image(b"not an image", "room")


def test_exif_orientation_is_applied() -> None:
    buffer = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 8  # rotate 90 CCW to display
    Image.new("RGB", (40, 20), (10, 200, 30)).save(buffer, "JPEG", exif=exif)
    assert open_image(buffer.getvalue()).size == (20, 40)
