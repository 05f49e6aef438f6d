"""Reading rooms, masks and references the way a browser shows them (EXIF orientation applied),
and listing a folder's images."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from models.errors import InvalidImageError

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
