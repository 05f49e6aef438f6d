"""The result shows the room's colours: a room photo with an RGB ICC profile (a phone's Display P3
JPEG, which the API stores as sent) is painted into an image that carries the same profile, so the
PNG the worker saves (`result.save(buffer, format="PNG")`) embeds it. Without it a viewer took the
result's unchanged pixels for sRGB, and the room outside the mask showed in other colours than the
room photo beside it. A profile of another colour space (a CMYK photo's, once converted) is not an
RGB image's profile and is not carried."""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
import pytest
from PIL import Image, ImageCms

from models import Painter, PaintRequest, open_image
from tests.models.conftest import STEPS, random_room


def rgb_profile() -> bytes:
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    assert profile[16:20] == b"RGB "  # the header's data colour space
    return profile


def room_with_profile(profile: bytes, seed: int) -> Image.Image:
    """A JPEG room as the API stores it (as sent, its profile inside), read as the worker reads it."""
    buffer = io.BytesIO()
    random_room(96, 72, seed=seed).save(buffer, "JPEG", quality=95, icc_profile=profile)
    room = open_image(buffer.getvalue(), "room")
    assert room.info.get("icc_profile") == profile
    return room


def saved_profile(image: Image.Image) -> bytes | None:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")  # as worker/preview_job.py stores the result
    return Image.open(io.BytesIO(buffer.getvalue())).info.get("icc_profile")


def request(room: Image.Image, seed: int, **fields: object) -> PaintRequest:
    mask = np.zeros((room.height, room.width), bool)
    mask[20:50, 30:70] = True
    return PaintRequest(room, mask, seed=seed, **fields)  # type: ignore[arg-type]


def test_a_painted_room_keeps_its_rgb_profile(painter: Painter, reference: Image.Image) -> None:
    profile = rgb_profile()
    room = room_with_profile(profile, seed=1)
    [out] = painter.paint([request(room, 1, reference=reference)], steps=STEPS)
    assert saved_profile(out) == profile


def test_each_row_of_a_mixed_batch_keeps_its_own_rooms_profile(
    painter: Painter, adapter_bytes: Callable[..., bytes]
) -> None:
    store = {"A": adapter_bytes(1), "B": adapter_bytes(2)}
    painter.adapters.loader = store.__getitem__
    profile = rgb_profile()
    rooms = [room_with_profile(profile, seed=2), random_room(96, 72, seed=3)]  # the second has none
    outcomes = painter.paint_mixed([request(r, i) for i, r in enumerate(rooms)], ["A", "B"], steps=STEPS)
    assert all(isinstance(o, Image.Image) for o in outcomes)
    assert saved_profile(outcomes[0]) == profile  # type: ignore[arg-type]
    assert saved_profile(outcomes[1]) is None  # type: ignore[arg-type]


@pytest.mark.parametrize("space", [b"CMYK", b"GRAY"])
def test_a_profile_of_another_colour_space_is_not_carried(
    painter: Painter, reference: Image.Image, space: bytes
) -> None:
    profile = bytearray(rgb_profile())
    profile[16:20] = space  # what a CMYK or grey photo's profile says, left on its RGB conversion
    room = random_room(96, 72, seed=4)
    room.info["icc_profile"] = bytes(profile)
    [out] = painter.paint([request(room, 4, reference=reference)], steps=STEPS)
    assert "icc_profile" not in out.info


def test_a_transparent_room_laid_over_white_keeps_its_profile() -> None:
    profile = rgb_profile()
    rgba = np.zeros((8, 10, 4), np.uint8)
    rgba[..., 3] = 255
    rgba[2:5, 3:6, 3] = 0
    buffer = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buffer, "PNG", icc_profile=profile)
    room = open_image(buffer.getvalue(), "room")
    assert room.mode == "RGB" and room.getpixel((4, 3)) == (255, 255, 255)
    assert room.info.get("icc_profile") == profile
