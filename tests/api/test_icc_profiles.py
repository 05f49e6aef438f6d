"""A photo's ICC profile through what the API stores and serves: an RGB profile (a phone's
Display P3) stays with the pixels, so the stored room, the painted result and its renditions show
the colours of the shop's photo; a profile of another colour space (CMYK) does not describe the RGB
pixels it is converted to and is not carried."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageCms

from api.image_checks import ImageLimits, decode_image, read_header
from api.multipart import UploadedFile
from api.renditions import Rendition, encode

LIMITS = ImageLimits(40_000_000, 12_000, 10, 160_000_000, 0)
RGB_PROFILE = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
# A CMYK profile's header: what matters to a reader is the data colour space at bytes 16-19.
CMYK_PROFILE = RGB_PROFILE[:16] + b"CMYK" + RGB_PROFILE[20:]


def _encoded(image: Image.Image, fmt: str, **save: Any) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **save)
    return out.getvalue()


def _stored(data: bytes) -> Image.Image:
    """What the API stores for `data` uploaded as a room, opened."""
    upload = UploadedFile("room", "room", io.BytesIO(data), size=len(data))
    checked = decode_image(read_header(upload, what="room", limits=LIMITS))
    return Image.open(io.BytesIO(checked.data))


def _pixels(mode: str, size: tuple[int, int] = (40, 30)) -> Image.Image:
    rng = np.random.default_rng(3)
    channels = len(mode)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8), mode)


def test_a_transparent_room_keeps_its_rgb_profile() -> None:
    """Laid over white, a new image: the profile used to stay behind with the transparent one."""
    stored = _stored(_encoded(_pixels("RGBA"), "PNG", icc_profile=RGB_PROFILE))
    assert stored.mode == "RGB"
    assert stored.info.get("icc_profile") == RGB_PROFILE


def test_a_turned_phone_photo_keeps_its_rgb_profile() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways, as phones do
    stored = _stored(_encoded(_pixels("RGB"), "JPEG", icc_profile=RGB_PROFILE, exif=exif.tobytes()))
    assert stored.size == (30, 40)
    assert stored.info.get("icc_profile") == RGB_PROFILE


def test_a_cmyk_photo_converted_to_rgb_does_not_carry_its_cmyk_profile() -> None:
    """Its pixels are RGB once stored; a CMYK profile embedded beside them would be read as theirs."""
    cmyk = Image.fromarray(np.full((30, 40, 4), 60, np.uint8), "CMYK")
    stored = _stored(_encoded(cmyk, "JPEG", icc_profile=CMYK_PROFILE))
    assert stored.mode == "RGB"
    assert "icc_profile" not in stored.info


# PNG at full size is the result itself, served as stored: not encoded, so not here
@pytest.mark.parametrize(
    ("image_format", "side"), [("jpeg", None), ("jpeg", 20), ("webp", None), ("webp", 20), ("png", 20)]
)
def test_renditions_keep_the_results_rgb_profile(image_format: Any, side: int | None) -> None:
    result = _encoded(_pixels("RGB", (64, 48)), "PNG", icc_profile=RGB_PROFILE)
    wanted = Rendition(image_format, side)
    rendition = Image.open(io.BytesIO(encode(result, wanted)))
    assert rendition.info.get("icc_profile") == RGB_PROFILE
