"""Reading rooms, masks and references the way a browser shows them (EXIF orientation applied),
bounding references to what the image encoder uses, and listing a folder's images."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from models.errors import InvalidImageError
from models.resampling import resize_region

# A reference's bound: a longest side of 1024 (at most 1024^2 pixels), whatever the crop's shape.
# The image encoder sees the whole reference resized to its 224 x 224 square (`models.conditioning`),
# so nothing of a reference is cut off, and 1024 leaves it more detail than the encoder can use.
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


def reference_size(box: tuple[int, int, int, int]) -> tuple[int, int]:
    """The size (W, H) `fit_reference` scales `box` to: the whole box, longest side <= REFERENCE_MAX_SIDE."""
    width, height = box[2] - box[0], box[3] - box[1]
    scale = min(1.0, REFERENCE_MAX_SIDE / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def fit_reference(image: Image.Image, box: tuple[int, int, int, int] | None = None) -> Image.Image:
    """The reference in `box` (default: the whole image), in RGB, within the reference bound."""
    region = box or (0, 0, image.width, image.height)
    return resize_region(as_rgb(image), region, reference_size(region))


def open_mask(source: ImageSource, size: tuple[int, int] | None = None) -> np.ndarray:
    """[H,W] bool, True = paint. `size` (W,H) must match when given.

    The rule of docs/api.md, "Masks: which pixels paint", which the API applies to an upload too
    (`api.image_checks._mask_paint`, in Pillow within a memory bound; tests/test_mask_rule.py holds
    the two to the same pixels): with transparency (an alpha channel, or a `transparency` entry,
    with some alpha below 255) a pixel paints when its alpha is >= 128, a drawing on a transparent
    canvas; a fully opaque mask paints every pixel that is not black (any channel non-zero)."""
    mask = _open(source, "mask")
    alpha = _mask_alpha(mask)
    if alpha is not None and alpha.min() < 255:
        array = alpha >= 128
    else:
        colour = mask.convert("RGB") if mask.mode in ("P", "PA") else mask  # the palette's colours
        values = np.asarray(colour)
        if values.ndim == 2:  # one band: grey, 1-bit or 16-bit grey
            array = values != 0
        else:  # any colour channel non-zero; alpha (all 255 here) left out
            channels = [i for i, band in enumerate(colour.getbands()) if band != "A"]
            array = (values[..., channels] != 0).any(axis=-1)
    if size is not None and (array.shape[1], array.shape[0]) != tuple(size):
        raise InvalidImageError(
            f"the mask is {array.shape[1]}x{array.shape[0]} but the room is {size[0]}x{size[1]}"
        )
    return array


def _mask_alpha(mask: Image.Image) -> np.ndarray | None:
    """The mask's alpha, [H,W] uint8, or None when it has neither an alpha channel nor a
    `transparency` entry (PNG tRNS: a palette's alphas, or the one grey or RGB value that is
    transparent)."""
    if "transparency" not in mask.info:
        return np.asarray(mask.getchannel("A")) if "A" in mask.getbands() else None
    if mask.mode in ("I", "I;16"):  # compared at 16 bits: Pillow's conversion would clip first
        return np.where(np.asarray(mask) == mask.info["transparency"], 0, 255).astype(np.uint8)
    return np.asarray(mask.convert("LA" if mask.mode in ("1", "L") else "RGBA").getchannel("A"))


def list_images(folder: Path | str) -> list[Path]:
    """The image files of a folder (domain training), sorted so a run is reproducible."""
    suffixes = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}
    return sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in suffixes)
