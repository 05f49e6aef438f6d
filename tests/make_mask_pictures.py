"""The pictures of docs/api.md, "Masks: which pixels paint": `python -m tests.make_mask_pictures`
(re)writes docs/masks/*.png.

Each picture is a 96x64 mask as an image viewer shows it (transparency as a grey checkerboard),
an arrow, and what that mask paints (magenta on a pale room) — read from the mask's PNG by the
engine (`models.open_mask`) and checked against the API's reading (`api.image_checks.check_mask`),
so a picture cannot show another rule than the code's. Shapes are drawn with numpy, not ImageDraw,
so a Pillow upgrade does not move a pixel. tests/test_mask_rule.py fails when the committed pictures
differ from what this makes now.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from api.image_checks import check_mask
from api.multipart import UploadedFile
from models import open_mask

FOLDER = Path(__file__).resolve().parent.parent / "docs" / "masks"
W, H = 96, 64
GAP = 16  # between the two panels, with the arrow
WHITE = (255, 255, 255)
CHECKER = (204, 204, 204)
ROOM = (236, 233, 226)
PAINT = (255, 40, 120)  # the widget's brush colour
ARROW = (96, 96, 96)

_Y, _X = np.mgrid[0:H, 0:W]


def _rect(x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    inside = np.zeros((H, W), bool)
    inside[y0:y1, x0:x1] = True
    return inside


def _disc(cx: float, cy: float, r: float) -> np.ndarray:
    return (_X - cx) ** 2 + (_Y - cy) ** 2 <= r * r


def _stroke(x0: float, y0: float, x1: float, y1: float, width: float) -> np.ndarray:
    """A straight brush stroke with round ends."""
    dx, dy = x1 - x0, y1 - y0
    t = np.clip(((_X - x0) * dx + (_Y - y0) * dy) / (dx * dx + dy * dy), 0.0, 1.0)
    return (_X - (x0 + t * dx)) ** 2 + (_Y - (y0 + t * dy)) ** 2 <= (width / 2) ** 2


def greyscale() -> Image.Image:
    """Greyscale, no alpha: white, grey, even nearly black paints; only black (0) keeps."""
    grey = np.zeros((H, W), np.uint8)
    grey[_rect(10, 12, 40, 52)] = 255
    grey[_disc(62, 24, 10)] = 96
    grey[_stroke(54, 48, 86, 48, 8)] = 12
    return Image.fromarray(grey, "L")


def opaque_rgba() -> Image.Image:
    """The RGBA mask many tools export: alpha 255 everywhere, black with a white rectangle. Fully
    opaque, so its colour decides: the rectangle paints, the black keeps."""
    rgba = np.zeros((H, W, 4), np.uint8)
    rgba[..., 3] = 255
    rgba[_rect(28, 14, 68, 50), :3] = 255
    return Image.fromarray(rgba, "RGBA")


def transparent_drawing() -> Image.Image:
    """Black brush strokes on a transparent canvas: alpha decides, colour does not. The solid
    stroke (alpha 255) and the stronger one (200) paint; the faint one (alpha 100) keeps."""
    rgba = np.zeros((H, W, 4), np.uint8)
    rgba[..., 3] = np.where(_stroke(12, 14, 40, 50, 12), 255, 0)
    rgba[_stroke(52, 16, 84, 16, 10), 3] = 200
    rgba[_stroke(52, 44, 84, 44, 10), 3] = 100
    return Image.fromarray(rgba, "RGBA")


MASKS = {
    "greyscale.png": greyscale,
    "opaque-rgba.png": opaque_rgba,
    "transparent-drawing.png": transparent_drawing,
}


def as_shown(mask: Image.Image) -> np.ndarray:
    """The mask as a viewer shows it: over an 8-pixel checkerboard where it is transparent."""
    checker = np.where((((_X // 8) + (_Y // 8)) % 2 == 0)[..., None], WHITE, CHECKER).astype(np.float64)
    rgba = np.asarray(mask.convert("RGBA")).astype(np.float64)
    alpha = rgba[..., 3:] / 255.0
    return np.rint(rgba[..., :3] * alpha + checker * (1.0 - alpha)).astype(np.uint8)


def paints(mask: Image.Image) -> np.ndarray:
    """What the mask paints, read from its PNG by the engine; the API must read the same."""
    buffer = io.BytesIO()
    mask.save(buffer, "PNG")
    data = buffer.getvalue()
    engine = open_mask(data, (W, H))
    upload = UploadedFile(field="mask", filename="mask.png", file=io.BytesIO(data), size=len(data))
    api = np.asarray(check_mask(upload, size=(W, H), max_pixels=W * H)) > 0
    if not np.array_equal(engine, api):
        raise AssertionError("the API and the engine read this mask differently")
    return engine


def _arrow() -> np.ndarray:
    gap = np.full((H, GAP, 3), WHITE, np.uint8)
    y, x = np.mgrid[0:H, 0:GAP]
    shaft = (abs(y - H // 2) <= 1) & (x >= 2) & (x < GAP - 6)
    head = (x >= GAP - 9) & (x < GAP - 2) & (abs(y - H // 2) <= (GAP - 2 - x))
    gap[shaft | head] = ARROW
    return gap


def picture(mask: Image.Image) -> Image.Image:
    """The mask as shown, an arrow, and what it paints, side by side."""
    painted = np.where(paints(mask)[..., None], PAINT, ROOM).astype(np.uint8)
    return Image.fromarray(np.concatenate([as_shown(mask), _arrow(), painted], axis=1), "RGB")


def pictures() -> dict[str, Image.Image]:
    return {name: picture(make()) for name, make in MASKS.items()}


def main() -> None:
    FOLDER.mkdir(parents=True, exist_ok=True)
    for name, image in pictures().items():
        image.save(FOLDER / name, "PNG", optimize=True)
        print(FOLDER / name, (FOLDER / name).stat().st_size, "bytes")


if __name__ == "__main__":
    main()
