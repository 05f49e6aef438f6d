"""Property tests of the image checks: whatever bytes arrive, the answer is a 4xx ApiError or a
checked RGB image — never another exception (which would be a 500)."""

from __future__ import annotations

import io

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from api.image_checks import check_image, check_mask
from api.multipart import UploadedFile
from api.problems import ApiError
from tests.api.conftest import image_bytes, mask_bytes

SEEDS = [
    image_bytes(16, 12, "PNG"),
    image_bytes(16, 12, "JPEG"),
    image_bytes(16, 12, "WEBP"),
    mask_bytes(16, 12),
]


def _upload(data: bytes) -> UploadedFile:
    return UploadedFile("photos", "x", io.BytesIO(data), size=len(data))


@st.composite
def damaged(draw: st.DrawFn) -> bytes:
    """A valid image with bytes flipped, cut or inserted: the inputs decoders get wrong."""
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(0, 6))):
        action = draw(st.sampled_from(["flip", "cut", "insert"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if action == "flip" and data:
            data[at] ^= draw(st.integers(1, 255))
        elif action == "cut":
            del data[at : at + draw(st.integers(1, 64))]
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=32))
    return bytes(data)


@given(data=st.one_of(damaged(), st.binary(max_size=256)))
@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
def test_any_bytes_give_an_image_or_a_client_error(data: bytes) -> None:
    try:
        checked = check_image(_upload(data), what="photo", max_pixels=10_000)
    except ApiError as exc:
        assert 400 <= exc.status < 500
        assert exc.code in {
            "unsupported_media_type",
            "image_unreadable",
            "image_too_large",
            "image_shape_not_allowed",  # a damaged header can claim any size
        }
        return
    # What is stored decodes to the checked size: the upload itself (as sent) or the RGB PNG.
    reopened = Image.open(io.BytesIO(checked.data))
    assert reopened.size == checked.size
    if not checked.as_sent:
        assert reopened.mode == "RGB"


@given(data=damaged())
@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
def test_any_mask_bytes_give_a_mask_or_a_client_error(data: bytes) -> None:
    try:
        mask = check_mask(_upload(data), size=(16, 12), max_pixels=10_000)
    except ApiError as exc:
        assert 400 <= exc.status < 500
        return
    assert mask.mode == "L" and mask.size == (16, 12)
