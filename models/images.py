"""Reading rooms, masks and references the way a browser shows them (EXIF orientation applied),
bounding references to what the image encoder uses, and listing a folder's images."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from models.errors import InvalidImageError
from models.resampling import resize_region

# A reference's bound. Paint-by-Example's image processor scales the shorter side to 224 and keeps
# the centre square, so a 16000 x 2 crop would become a 224 x 1 792 000 array before that crop.
# Keeping only the central part of aspect <= 4 drops nothing the encoder sees, and a longest side
# of 1024 leaves the shorter side >= 256 > 224 whenever it is scaled down: at most 1024^2 pixels.
REFERENCE_MAX_ASPECT = 4
REFERENCE_MAX_SIDE = 1024

ImageSource = str | Path | bytes | Image.Image


def _open(source: ImageSource, what: str) -> Image.Image:
    try:
        if isinstance(source, Image.Image):
            image = source
        elif isinstance(source, bytes):
            image = Image.open(io.BytesIO(source))
        else:
            image = Image.open(source)
        image.load()
    except (OSError, UnidentifiedImageError) as exc:
        raise InvalidImageError(f"cannot read the {what}: {exc}") from exc
    # Phones store photos sideways plus an EXIF Orientation tag; the shopper drew the mask on the
    # upright image, so everything is painted and returned upright.
    return ImageOps.exif_transpose(image)


def open_image(source: ImageSource, what: str = "image") -> Image.Image:
    """An RGB image, EXIF-transposed."""
    return _open(source, what).convert("RGB")


def as_rgb(image: Image.Image) -> Image.Image:
    """The image in RGB; itself when it already is (`convert` would copy a room for nothing)."""
    return image if image.mode == "RGB" else image.convert("RGB")


def reference_window(
    box: tuple[int, int, int, int],
) -> tuple[tuple[int, int, int, int], tuple[int, int]]:
    """What `fit_reference` reads of `box` (its central part of aspect <= REFERENCE_MAX_ASPECT) and
    the size (W, H) it scales that to (longest side <= REFERENCE_MAX_SIDE)."""
    left, top, right, bottom = box
    width, height = right - left, bottom - top
    keep_w, keep_h = min(width, height * REFERENCE_MAX_ASPECT), min(height, width * REFERENCE_MAX_ASPECT)
    left, top = left + (width - keep_w) // 2, top + (height - keep_h) // 2
    scale = min(1.0, REFERENCE_MAX_SIDE / max(keep_w, keep_h))
    size = (max(1, round(keep_w * scale)), max(1, round(keep_h * scale)))
    return (left, top, left + keep_w, top + keep_h), size


def fit_reference(image: Image.Image, box: tuple[int, int, int, int] | None = None) -> Image.Image:
    """The reference in `box` (default: the whole image), in RGB, within the reference bound."""
    region, size = reference_window(box or (0, 0, image.width, image.height))
    return resize_region(as_rgb(image), region, size)


def open_mask(source: ImageSource, size: tuple[int, int] | None = None) -> np.ndarray:
    """[H,W] bool, True = paint (any non-zero luminance). `size` (W,H) must match when given."""
    mask = _open(source, "mask")
    if mask.mode in ("RGBA", "LA", "PA"):
        # A transparent-background drawing: what was drawn is what is opaque.
        array = np.asarray(mask.getchannel("A")) > 0
    else:
        array = np.asarray(mask.convert("L")) > 0
    if size is not None and (array.shape[1], array.shape[0]) != tuple(size):
        raise InvalidImageError(
            f"the mask is {array.shape[1]}x{array.shape[0]} but the room is {size[0]}x{size[1]}"
        )
    return array


def list_images(folder: Path | str) -> list[Path]:
    """The image files of a folder (domain training), sorted so a run is reproducible."""
    suffixes = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}
    return sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in suffixes)
