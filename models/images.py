"""Reading rooms and references the way a browser shows them (EXIF orientation applied, 8-bit RGB as
the API stores them), masks as stored (a mask has no orientation of its own), bounding references to
what the image encoder uses, and listing a folder's images."""

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


def _open(source: ImageSource, what: str, *, upright: bool = True) -> Image.Image:
    """The decoded image; turned by its EXIF orientation when `upright` (a photo), as stored when not
    (a mask: it has no orientation of its own, docs/api.md "Masks", and the API reads it as stored)."""
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
    # upright image, so a room is painted and returned upright.
    return ImageOps.exif_transpose(image) if upright else image


def open_image(source: ImageSource, what: str = "image") -> Image.Image:
    """An 8-bit RGB image (`as_rgb`), EXIF-transposed."""
    return as_rgb(_open(source, what))


def as_rgb(image: Image.Image) -> Image.Image:
    """The image in 8-bit RGB; itself when it already is (`convert` would copy a room for nothing).

    The pixels the API stores for an upload (`api.pixel_modes.to_rgb`; api/ and models/ import
    nothing of each other), so a room read here is the room the service paints: 16- and 32-bit
    grey scaled to 8 bits (Pillow's `convert` clips a 16-bit grey photo to white), transparency laid
    over white (`convert` drops alpha, showing whatever colour a transparent pixel hides)."""
    if image.mode.startswith("I;16") or image.mode in ("I", "F"):
        image = _grey_8bit(image)  # a new image: a 16-bit `transparency` entry is not carried over
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        rgb = Image.alpha_composite(white, image.convert("RGBA")).convert("RGB")
        if (profile := rgb_profile(image.info.get("icc_profile"))) is not None:  # the colours' meaning
            rgb.info["icc_profile"] = profile
        return rgb
    return image if image.mode == "RGB" else image.convert("RGB")


# alike: api.pixel_modes's rgb_profile and 8-bit rule, the same rule on purpose; api/ and models/
# import nothing of each other (tests/test_mask_rule.py holds the two to the same pixels)
def rgb_profile(profile: object) -> bytes | None:
    """`profile` when it is an ICC profile of RGB data (bytes 16-19 of its header, the data colour
    space, say `RGB `), else None: a CMYK or grey photo's, left in `info` by its conversion to RGB,
    would describe other pixels. (The API's rule too: `api.pixel_modes.rgb_profile`.)"""
    return profile if isinstance(profile, bytes) and profile[16:20] == b"RGB " else None


def _grey_8bit(image: Image.Image) -> Image.Image:
    """16-bit grey (and 32-bit integer grey above 255) -> 8-bit L by round(v / 257); float grey rounded;
    then clipped to 0..255. In int32 (a room may be 40 MP): no float copy, and no overflow near 2^31."""
    values = np.asarray(image)
    if image.mode == "F":
        return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), "L")
    wide = values.astype(np.int32)
    if image.mode.startswith("I;16") or wide.max(initial=0) > 255:
        # round(v / 257) = v // 257, plus one where the remainder is past half (257 is odd: no ties)
        wide = wide // 257 + (wide % 257 >= 129)
    return Image.fromarray(np.clip(wide, 0, 255).astype(np.uint8), "L")


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
    """[H,W] bool, True = paint, read as stored (no EXIF turn). `size` (W,H) must match when given.

    The rule of docs/api.md, "Masks: which pixels paint", which the API applies to an upload too
    (`api.image_checks._mask_paint`, in Pillow within a memory bound; tests/test_mask_rule.py holds
    the two to the same pixels): with transparency (an alpha channel, or a `transparency` entry,
    with some alpha below 255) a pixel paints when its alpha is >= 128, a drawing on a transparent
    canvas; a fully opaque mask paints every pixel that is not black (any channel non-zero)."""
    # Not turned: a mask is drawn on the upright room, so a tag an editor copied from the photo
    # would turn it off the drawing (or to another size).
    mask = _open(source, "mask", upright=False)
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
