"""Which pixels of a mask mean "paint here" is decided twice: by the API when it checks an upload
(api/ may not import models/) and by the engine when it reads one. Both must agree, for every kind
of PNG a widget or a shop's backend may send."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from api.image_checks import check_mask
from api.multipart import UploadedFile
from models import open_mask

H, W = 24, 32


def _masks() -> dict[str, Image.Image]:
    rng = np.random.default_rng(3)
    drawn = np.zeros((H, W), dtype=bool)
    drawn[5:15, 8:20] = True
    values = (rng.integers(1, 256, (H, W)) * drawn).astype(np.uint8)
    rgba = np.zeros((H, W, 4), dtype=np.uint8)
    rgba[..., :3] = 255  # white everywhere, so only alpha says where the drawing is
    rgba[..., 3] = drawn * 200
    la = np.stack([np.full((H, W), 255, np.uint8), (drawn * 255).astype(np.uint8)], -1)
    palette = Image.fromarray(drawn.astype(np.uint8), "L").convert("P")
    return {
        "L 0/255": Image.fromarray((drawn * 255).astype(np.uint8), "L"),
        "L any non-zero": Image.fromarray(values, "L"),
        "RGB coloured strokes": Image.fromarray(np.stack([values, values // 2, values // 3], -1), "RGB"),
        "RGBA drawn on transparent": Image.fromarray(rgba, "RGBA"),
        "LA drawn on transparent": Image.fromarray(la, "LA"),
        "P palette": palette,
        "1 bit": Image.fromarray(drawn).convert("1"),
        "I;16": Image.fromarray((drawn * 40000).astype(np.uint16)),
    }


@pytest.mark.parametrize("name", list(_masks()))
def test_api_and_engine_read_a_mask_alike(name: str) -> None:
    buffer = io.BytesIO()
    _masks()[name].save(buffer, format="PNG")
    data = buffer.getvalue()
    checked = check_mask(
        UploadedFile(field="mask", filename="mask.png", file=io.BytesIO(data), size=len(data)),
        size=(W, H),
        max_pixels=10_000,
    )
    api_paint = np.asarray(checked) > 0
    engine_paint = open_mask(data, (W, H))
    assert api_paint.any()
    assert np.array_equal(api_paint, engine_paint)
