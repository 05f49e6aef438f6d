"""A room (or photo, or reference) in any pixel format becomes the 8-bit RGB the API stores and paints
(api/image_checks.py, `decode_image`): 16-bit grey scaled by 1/257 (rounded), transparency laid over
white. The engine's `open_image` (so `roomfit paint --room`, `roomfit train`, the eval bench) read a
16-bit grey PNG clipped to 8 bits, a room of white, and dropped alpha to the colour hidden under it:
the preview's pixels outside the mask were not the room photo's as any viewer shows it."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from models import Painter, PaintRequest, open_image
from models.images import as_rgb
from tests.models.conftest import STEPS

WHITE = 255


def png(image: Image.Image, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG", **options)
    return buffer.getvalue()


def grey16(height: int = 30, width: int = 40) -> tuple[bytes, np.ndarray]:
    """A 16-bit grey PNG and the 8-bit values it stands for: round(v / 257)."""
    values = np.random.default_rng(5).integers(0, 65536, (height, width)).astype(np.uint16)
    values[0, :4] = [0, 128, 129, 65535]  # the rounding's edges: 0, 0 (128/257 < .5), 1, 255
    data = png(Image.fromarray(values))
    assert Image.open(io.BytesIO(data)).mode.startswith("I;16")  # really a 16-bit grey PNG
    expected = np.floor(values / 257 + 0.5).astype(np.uint8)
    return data, np.repeat(expected[..., None], 3, axis=-1)


def test_a_16_bit_grey_room_is_scaled_to_8_bits_not_clipped() -> None:
    data, expected = grey16()
    room = open_image(data, "room")
    assert room.mode == "RGB"
    assert np.array_equal(np.asarray(room), expected)


def test_transparency_is_laid_over_white() -> None:
    rng = np.random.default_rng(6)
    colour = rng.integers(0, 256, (20, 24, 3)).astype(np.uint8)
    opaque = rng.random((20, 24)) < 0.5
    expected = np.where(opaque[..., None], colour, WHITE).astype(np.uint8)

    rgba = Image.fromarray(np.dstack([colour, opaque.astype(np.uint8) * 255]), "RGBA")
    assert np.array_equal(np.asarray(open_image(png(rgba))), expected)

    grey = colour[..., 0]
    la = Image.fromarray(np.dstack([grey, opaque.astype(np.uint8) * 255]), "LA")
    grey_expected = np.where(opaque, grey, WHITE).astype(np.uint8)
    assert np.array_equal(np.asarray(open_image(png(la))), np.repeat(grey_expected[..., None], 3, -1))

    # a palette whose index 0 is transparent (tRNS), drawn in black
    indices = opaque.astype(np.uint8)  # 0: transparent, 1: red
    palette = Image.fromarray(indices, "P")
    palette.putpalette([0, 0, 0, 255, 0, 0])
    decoded = Image.open(io.BytesIO(png(palette, transparency=0)))
    assert decoded.mode == "P" and "transparency" in decoded.info
    red_or_white = np.where(opaque[..., None], [255, 0, 0], WHITE).astype(np.uint8)
    assert np.array_equal(np.asarray(open_image(png(palette, transparency=0))), red_or_white)


def test_opaque_formats_keep_their_pixels() -> None:
    rng = np.random.default_rng(8)
    rgb = Image.fromarray(rng.integers(0, 256, (12, 16, 3)).astype(np.uint8))
    assert as_rgb(rgb) is rgb  # no copy of a room that is RGB already
    assert np.array_equal(np.asarray(open_image(png(rgb))), np.asarray(rgb))
    opaque_rgba = rgb.convert("RGBA")  # alpha 255 everywhere: the colours as they are
    assert np.array_equal(np.asarray(open_image(png(opaque_rgba))), np.asarray(rgb))
    grey = rgb.convert("L")
    assert np.array_equal(np.asarray(open_image(png(grey))), np.asarray(grey.convert("RGB")))


def test_a_16_bit_grey_room_is_painted_with_its_own_pixels_outside_the_mask(
    painter: Painter, reference: Image.Image
) -> None:
    data, expected = grey16(48, 64)
    room = open_image(data, "room")
    mask = np.zeros((48, 64), bool)
    mask[10:30, 20:50] = True
    [out] = painter.paint([PaintRequest(room, mask, seed=3, reference=reference)], steps=STEPS)
    out_px = np.asarray(out)
    assert np.array_equal(out_px[~mask], expected[~mask])
    assert (out_px[mask] != expected[mask]).any(axis=-1).mean() > 0.5
