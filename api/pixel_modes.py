"""Any decoded photo to 8-bit RGB, the one pixel format roomfit stores and paints: 16-bit and
32-bit greys scaled (in integers, no float copy of a large image), CMYK and other colour spaces
converted, transparency laid over white."""

from __future__ import annotations

import numpy as np
from PIL import Image

ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB: 16-bit scaled, CMYK and other colour spaces converted, transparency over white."""
    mode = image.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        image, mode = _to_8bit(image), "L"
    if mode in ALPHA_MODES or "transparency" in image.info:
        rgba = image.convert("RGBA")
        composite = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
        del rgba
        return composite.convert("RGB")
    if mode == "RGB":
        return image
    return image.convert("RGB")


def _to_8bit(image: Image.Image) -> Image.Image:
    """16-bit (and 32-bit integer above 255) scaled by 1/257, rounded to nearest, clipped to 0..255
    — in integers: no float copies of a large image."""
    values = np.asarray(image)
    if image.mode == "F":
        return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), "L")
    ints = values.astype(np.int32)
    del values
    if image.mode.startswith("I;16") or ints.max(initial=0) > 255:
        # round(v / 257): 257 is odd, so v / 257 is never a tie; the remainder decides.
        rest = ints % 257
        ints //= 257
        ints += rest >= 129
        del rest
    np.clip(ints, 0, 255, out=ints)
    return Image.fromarray(ints.astype(np.uint8), "L")
