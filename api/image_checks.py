"""What an uploaded image must be, checked before anything is stored: `check_image`, `check_mask`.

1. `check_image` sniffs the type from the bytes (JPEG, PNG, WebP; the filename and the declared
   content type are ignored), refuses more than `max_pixels` from the header before decoding
   (decompression bombs: 413 `image_too_large`), decodes fully (truncated or corrupt: 422
   `image_unreadable`), applies the EXIF orientation, and converts to 8-bit RGB: CMYK and YCbCr
   converted, palette and alpha composited over white, 16-bit scaled down. Animated images (GIF is
   refused anyway; animated PNG and WebP) use their first frame.
2. `check_mask` reads a PNG mask: it has the room's size *after* the room's EXIF orientation (a
   mask has no orientation of its own: PNG carries none that browsers apply). Which pixels paint is
   the worker's rule (`models.images.open_mask`): with an alpha channel, the opaque ones (a drawing
   on a transparent canvas); otherwise those of non-zero luminance. A mask with no paint is refused.

What is stored: an image that already decodes to upright 8-bit RGB (no EXIF rotation, one frame,
no transparency) is stored as sent; any other is stored as the normalised RGB PNG. Masks are
stored normalised, 0 = keep, 255 = paint. The files come from `api.multipart`.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

from api.multipart import UploadedFile
from api.problems import (
    IMAGE_TOO_LARGE,
    IMAGE_UNREADABLE,
    MASK_EMPTY,
    MASK_SIZE_MISMATCH,
    UNSUPPORTED_MEDIA_TYPE,
    ApiError,
)

ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP")


def sniff(head: bytes) -> str | None:
    """The image format the bytes start with, of those accepted; None for anything else."""
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    return None


EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}


@dataclass
class CheckedImage:
    image: Image.Image
    """8-bit RGB, EXIF orientation applied."""
    source_format: str
    animated: bool
    original: bytes | None
    """The uploaded bytes when they already decode to exactly `image` (RGB, upright, one frame): stored
    as sent, which spares a PNG encode (~1 s for a 12-megapixel photo) and keeps the JPEG small."""

    @property
    def size(self) -> tuple[int, int]:
        return self.image.size

    def stored(self) -> tuple[bytes, str, str]:
        """(bytes, file extension, content type) to put in the blob store."""
        if self.original is not None:
            ext = EXTENSIONS[self.source_format]
            return self.original, ext, f"image/{'jpeg' if ext == 'jpg' else ext}"
        return png_bytes(self.image), "png", "image/png"


def _bomb(what: str, max_pixels: int) -> ApiError:
    # Pillow's own guard fired: the header declares more pixels than it will decode.
    return IMAGE_TOO_LARGE(f"{what} has more than {max_pixels} pixels")


def _open(
    upload: UploadedFile, what: str, allowed: tuple[str, ...], max_pixels: int
) -> tuple[Image.Image, str]:
    """Open (header only) after sniffing the type and checking the pixel count."""
    fmt = sniff(upload.head())
    if fmt is None or fmt not in allowed:
        names = ", ".join(allowed)
        raise UNSUPPORTED_MEDIA_TYPE(f"{what} is not an image of type {names}")
    upload.file.seek(0)
    try:
        image = Image.open(upload.file, formats=[fmt])
    except Image.DecompressionBombError as exc:
        raise _bomb(what, max_pixels) from exc
    except Exception as exc:  # any decoder complaint about the header
        raise IMAGE_UNREADABLE(f"{what} cannot be read as {fmt}") from exc
    width, height = image.size
    if width < 1 or height < 1:
        raise IMAGE_UNREADABLE(f"{what} has no pixels")
    if width * height > max_pixels:
        # Checked from the header, before a single pixel is decoded: a small file may declare a
        # huge canvas (a decompression bomb).
        raise IMAGE_TOO_LARGE(f"{what} is {width}x{height}, more than {max_pixels} pixels")
    return image, fmt


def _decode(
    upload: UploadedFile, what: str, allowed: tuple[str, ...], max_pixels: int
) -> tuple[Image.Image, str, bool]:
    image, fmt = _open(upload, what, allowed, max_pixels)
    try:
        # verify() checks what the format allows without decoding (PNG chunk CRCs); the file must
        # be opened again afterwards.
        image.verify()
        upload.file.seek(0)
        image = Image.open(upload.file, formats=[fmt])
        animated = bool(getattr(image, "is_animated", False))
        if animated:
            image.seek(0)
        image.load()
    except ApiError:
        raise
    except Image.DecompressionBombError as exc:
        raise _bomb(what, max_pixels) from exc
    except Exception as exc:  # truncated data, bad Huffman tables, broken chunks ...
        raise IMAGE_UNREADABLE(f"{what} is damaged or truncated ({fmt})") from exc
    return image, fmt, animated


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB: 16-bit scaled, CMYK and other colour spaces converted, transparency over white."""
    mode = image.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        values = np.asarray(image).astype(np.float64)
        if mode.startswith("I;16") or (mode == "I" and values.max(initial=0) > 255):
            values = values / 257.0
        image = Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), "L")
        mode = "L"
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
    if has_alpha:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode == "RGB":
        return image
    return image.convert("RGB")


def check_image(upload: UploadedFile, *, what: str, max_pixels: int) -> CheckedImage:
    """A photo or room: type from the bytes, pixel limit, full decode, orientation, RGB."""
    image, fmt, animated = _decode(upload, what, ACCEPTED_FORMATS, max_pixels)
    try:
        oriented = ImageOps.exif_transpose(image)
    except Exception as exc:
        # The worker applies the same orientation when it reads the blob; an EXIF block it could not
        # read either would fail the job later, so refuse it now.
        raise IMAGE_UNREADABLE(f"{what} has an unreadable EXIF block") from exc
    upright = _orientation(image) in (None, 1)
    try:
        rgb = to_rgb(oriented)
    except Exception as exc:
        raise IMAGE_UNREADABLE(f"{what} has a pixel format that cannot be converted") from exc
    as_sent = upright and not animated and image.mode == "RGB" and "transparency" not in image.info
    return CheckedImage(
        image=rgb, source_format=fmt, animated=animated, original=upload.bytes() if as_sent else None
    )


def _orientation(image: Image.Image) -> int | None:
    try:
        return image.getexif().get(0x0112)
    except Exception:
        return None


def check_mask(upload: UploadedFile, *, size: tuple[int, int], max_pixels: int) -> Image.Image:
    """The mask as 8-bit L, 255 = paint, 0 = keep; exactly `size` (the oriented room's)."""
    image, _, _ = _decode(upload, "mask", ("PNG",), max_pixels)
    if image.size != size:
        w, h = image.size
        raise MASK_SIZE_MISMATCH(
            f"the mask is {w}x{h} but the room is {size[0]}x{size[1]} (after its EXIF orientation)"
        )
    try:
        # The worker's rule (models.images.open_mask): a drawing on a transparent background paints
        # where it is opaque; any other mask paints where its luminance is non-zero.
        if image.mode in ("RGBA", "LA", "PA"):
            paint = np.asarray(image.getchannel("A")) > 0
        else:
            paint = np.asarray(image.convert("L")) > 0
    except Exception as exc:
        raise IMAGE_UNREADABLE("the mask has a pixel format that cannot be read") from exc
    if not paint.any():
        raise MASK_EMPTY("the mask has no non-zero pixel: nothing to paint")
    return Image.fromarray((paint * 255).astype(np.uint8), "L")


def png_bytes(image: Image.Image) -> bytes:
    """Lossless, quickly: the worker decodes it once, so a low compression level is the better trade."""
    out = io.BytesIO()
    image.save(out, "PNG", compress_level=1)
    return out.getvalue()
