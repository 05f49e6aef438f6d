"""Any decoded photo to 8-bit RGB, the one pixel format roomfit stores and paints: 16-bit and
32-bit greys scaled (in integers, no float copy of a large image), CMYK and other colour spaces
converted, transparency laid over white. An RGB ICC profile (a phone's Display P3) stays with the
pixels, so the stored room and the painted result show the colours the shop's photo did; another
colour space's profile (CMYK, grey) does not describe RGB pixels and goes."""

from __future__ import annotations

import numpy as np
from PIL import Image

ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB: 16-bit scaled, CMYK and other colour spaces converted, transparency over white;
    with the image's ICC profile when that describes RGB (`rgb_profile`), else none."""
    if image.mode == "RGB" and "transparency" not in image.info:
        return image
    profile = rgb_profile(image.info.get("icc_profile"))
    mode = image.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        image, mode = _to_8bit(image), "L"
    if mode in ALPHA_MODES or "transparency" in image.info:
        rgba = image.convert("RGBA")
        composite = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
        del rgba
        rgb = composite.convert("RGB")
    else:
        rgb = image.convert("RGB")
    rgb.info.pop("icc_profile", None)  # `convert` copies the old colour space's
    if profile is not None:
        rgb.info["icc_profile"] = profile
    return rgb


def rgb_profile(profile: object) -> bytes | None:
    """`profile` when it is an ICC profile of RGB data (bytes 16-19 of its header, the data colour
    space, say `RGB `), else None."""
    return profile if isinstance(profile, bytes) and profile[16:20] == b"RGB " else None


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
