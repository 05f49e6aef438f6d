"""What an uploaded image must be, checked before it is stored: from its header first, then decoded.

1. `read_headers` opens every image of a request *without decoding a pixel*: the type is sniffed
   from the bytes (JPEG, PNG, WebP; filename and declared type ignored), then the header's size must
   hold `ImageLimits` (the settings): at most `max_pixels` (decompression bombs: 413
   `image_too_large`), longest side at most `max_side` and long / short side at most
   `max_aspect_ratio` (422 `image_shape_not_allowed`: a 65000x2 room), all the request's images
   together at most `max_request_pixels` (413 `request_too_large`). A quarter turn (EXIF) swaps the
   sides, which changes none of these. A header also predicts the size after orientation (for
   `boxes`) and what decoding will cost (`ImageHeader.peak_bytes`).
2. `decode_image` checks one image, inside a reservation of that cost from the process's memory
   budget (`api.image_budget`; none within the wait: 503 `server_busy`): a full decode (truncated or
   corrupt: 422 `image_unreadable`), the EXIF orientation applied in place, 8-bit RGB (CMYK and
   YCbCr converted, palette and alpha over white, 16-bit scaled down; animated PNG and WebP: the
   first frame), and the bytes to store. The pixels are freed before it returns.
3. `decode_mask` reads a PNG mask of exactly the room's size *after* the room's EXIF orientation (a
   mask has no orientation of its own; compared from the header, before decoding); what paints is the
   rule of docs/api.md, "Masks: which pixels paint" (`_mask_paint`). A mask with no paint is refused.

Stored: an image that already decodes to upright 8-bit RGB (no EXIF rotation, one frame, no
transparency) as sent — such a JPEG is decoded in JPEG draft mode at 1/8 scale, since only its size
and integrity matter (every coefficient is still read, so damage is still caught; 1/64 of the
memory, though a progressive JPEG's decoder still holds every coefficient: `coefficient_bytes`); any
other as the normalised RGB PNG; masks as 0 = keep, 255 = paint. `check_image` and `check_mask` do
both steps for one image on its own. The files come from `api.multipart`.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

from api.image_budget import BUDGET, decoding_bytes, mask_bytes
from api.jpeg_scans import coefficient_bytes
from api.multipart import UploadedFile
from api.pixel_modes import ALPHA_MODES, to_rgb
from api.problems import (
    IMAGE_SHAPE_NOT_ALLOWED,
    IMAGE_TOO_LARGE,
    IMAGE_UNREADABLE,
    MASK_EMPTY,
    MASK_SIZE_MISMATCH,
    REQUEST_TOO_LARGE,
    UNSUPPORTED_MEDIA_TYPE,
    ApiError,
)
from core.settings import Settings

ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP")
MASK_FORMATS = ("PNG",)
EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}
ORIENTATION = 0x0112
QUARTER_TURNS = (5, 6, 7, 8)  # EXIF orientations that swap width and height
DRAFT_SCALE = 8
PAINT = [0] + [255] * 255  # a mask's lookup table: any non-zero value paints


def sniff(head: bytes) -> str | None:
    """The image format the bytes start with, of those accepted; None for anything else."""
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    return None


@dataclass(frozen=True)
class ImageLimits:
    max_pixels: int
    max_side: int
    max_aspect_ratio: float
    max_request_pixels: int
    memory_budget_bytes: int
    """0: no budget."""

    @classmethod
    def of(cls, settings: Settings) -> ImageLimits:
        s = settings
        return cls(
            s.max_pixels, s.max_side, s.max_aspect_ratio, s.max_request_pixels, s.api_memory_budget_bytes
        )

    @classmethod
    def single(cls, max_pixels: int) -> ImageLimits:
        """One image on its own (`check_image`, `check_mask`): the settings' default shape, no budget."""
        fields = Settings.model_fields
        return cls(max_pixels, fields["max_side"].default, fields["max_aspect_ratio"].default, max_pixels, 0)


# alike: dataclass fields, declarations alike in shape only (api.rate_limit.Verdict)
@dataclass(frozen=True)
class ImageHeader:
    """What an image's header says; no pixel of it decoded."""

    upload: UploadedFile
    what: str
    format: str
    mode: str
    size: tuple[int, int]
    """As encoded, before the EXIF orientation."""
    orientation: int | None
    orientation_settled: bool
    """False when the orientation may still change: a PNG without EXIF before its pixels may carry
    one after them, which only decoding reads."""
    animated: bool
    transparent: bool
    limits: ImageLimits
    coefficient_bytes: int = 0
    """What libjpeg buffers while decoding it, even in draft mode: a JPEG of several scans
    (progressive, or not every component in its first scan) keeps every coefficient. 0 for others."""

    @property
    def pixels(self) -> int:
        return self.size[0] * self.size[1]

    @property
    def oriented_size(self) -> tuple[int, int]:
        width, height = self.size
        return (height, width) if self.orientation in QUARTER_TURNS else (width, height)

    @property
    def jpeg_as_sent(self) -> bool:
        """A JPEG that is stored as sent: upright RGB, one frame (its header says all of that)."""
        return (
            self.format == "JPEG"
            and self.mode == "RGB"
            and self.orientation in (None, 1)
            and not self.animated
            and not self.transparent
        )

    def peak_bytes(self) -> int:
        """What checking it may hold at once (`api.image_budget.decoding_bytes`)."""
        drafted = DRAFT_SCALE if self.jpeg_as_sent else None
        alpha = self.transparent or self.mode in ALPHA_MODES
        return decoding_bytes(
            self.mode,
            self.size,
            alpha=alpha,
            file_bytes=self.upload.size,
            draft=drafted,
            coefficients=self.coefficient_bytes,
            fmt=self.format,
        )

    def mask_peak_bytes(self) -> int:
        converted = 4 * self.pixels if self.transparent or self.mode == "P" else 0  # read as RGBA first
        return mask_bytes(self.mode, self.size, file_bytes=self.upload.size) + converted


@dataclass(frozen=True)
class CheckedImage:
    """A checked image, ready to store; its pixels are already freed."""

    size: tuple[int, int]
    """After the EXIF orientation."""
    source_format: str
    animated: bool
    data: bytes
    """The uploaded bytes when they already decode to upright RGB (stored as sent: spares a PNG
    encode, ~1 s for a 12-megapixel photo, and keeps the JPEG small); else the normalised PNG."""
    ext: str
    content_type: str
    as_sent: bool

    def stored(self) -> tuple[bytes, str, str]:
        """(bytes, file extension, content type) to put in the blob store."""
        return self.data, self.ext, self.content_type


# --- headers ------------------------------------------------------------------------------------
def _bomb(what: str, max_pixels: int) -> ApiError:
    # Pillow's own guard fired: the header declares more pixels than it will decode.
    return IMAGE_TOO_LARGE(f"{what} has more than {max_pixels} pixels")


def _open(upload: UploadedFile, what: str, fmt: str, max_pixels: int) -> Image.Image:
    upload.file.seek(0)
    try:
        return Image.open(upload.file, formats=[fmt])
    except Image.DecompressionBombError as exc:
        raise _bomb(what, max_pixels) from exc
    except Exception as exc:  # any decoder complaint about the header
        raise IMAGE_UNREADABLE(f"{what} cannot be read as {fmt}") from exc


def read_header(
    upload: UploadedFile, *, what: str, limits: ImageLimits, formats: tuple[str, ...] = ACCEPTED_FORMATS
) -> ImageHeader:
    """Sniff the type, open the header, check size and shape; nothing is decoded."""
    fmt = sniff(upload.head())
    if fmt is None or fmt not in formats:
        raise UNSUPPORTED_MEDIA_TYPE(f"{what} is not an image of type {', '.join(formats)}")
    image = _open(upload, what, fmt, limits.max_pixels)
    width, height = image.size
    if width < 1 or height < 1:
        raise IMAGE_UNREADABLE(f"{what} has no pixels")
    if width * height > limits.max_pixels:
        # A small file may declare a huge canvas (a decompression bomb).
        raise IMAGE_TOO_LARGE(f"{what} is {width}x{height}, more than {limits.max_pixels} pixels")
    long, short = max(width, height), min(width, height)
    if long > limits.max_side:
        raise IMAGE_SHAPE_NOT_ALLOWED(
            f"{what} is {width}x{height}; its longest side may be {limits.max_side}"
        )
    if long > limits.max_aspect_ratio * short:
        raise IMAGE_SHAPE_NOT_ALLOWED(
            f"{what} is {width}x{height}; its long side may be at most {limits.max_aspect_ratio:g} "
            "times its short side"
        )
    try:
        # The base class's reader: it never decodes (PNG's own would, to look behind the pixels).
        orientation = Image.Image.getexif(image).get(ORIENTATION)
    except Exception:  # decoding refuses it (422) before a pixel is decoded; here only a prediction
        orientation = None
    try:
        animated = bool(getattr(image, "is_animated", False))
    except Exception:  # unknown: assume the costlier path
        animated = True
    return ImageHeader(
        upload=upload,
        what=what,
        format=fmt,
        mode=image.mode,
        size=(width, height),
        orientation=orientation if isinstance(orientation, int) else None,
        orientation_settled=fmt != "PNG" or "exif" in image.info,
        animated=animated,
        transparent="transparency" in image.info,
        limits=limits,
        coefficient_bytes=coefficient_bytes(upload.file, image) if fmt == "JPEG" else 0,
    )


def read_headers(
    limits: ImageLimits, images: Sequence[tuple[UploadedFile, str, tuple[str, ...]]]
) -> list[ImageHeader]:
    """The headers of all the images of one request, (file, what, formats) each, in order; their
    pixels together within `max_request_pixels`, counted before any of them is decoded."""
    headers: list[ImageHeader] = []
    total = 0
    for upload, what, formats in images:
        header = read_header(upload, what=what, limits=limits, formats=formats)
        total += header.pixels
        if total > limits.max_request_pixels:
            raise REQUEST_TOO_LARGE(
                f"the images of this request decode to more than {limits.max_request_pixels} pixels "
                f"together ({what} brings them to {total})"
            )
        headers.append(header)
    return headers


# --- decoding -----------------------------------------------------------------------------------
def _strict_orientation(image: Image.Image, what: str) -> int | None:
    try:
        value = image.getexif().get(ORIENTATION)
    except Exception as exc:
        # The worker applies the same orientation when it reads the blob; an EXIF block it could not
        # read either would fail the job later, so refuse it now.
        raise IMAGE_UNREADABLE(f"{what} has an unreadable EXIF block") from exc
    return value if isinstance(value, int) else None


def _load(header: ImageHeader, *, draft: bool) -> tuple[Image.Image, bool, bool]:
    """Decode fully (or, for a JPEG stored as sent and `draft`, at 1/8 scale): (image, animated,
    drafted). Truncated data, bad Huffman tables, broken chunks: 422 `image_unreadable`."""
    upload, what, fmt = header.upload, header.what, header.format
    image = _open(upload, what, fmt, header.limits.max_pixels)
    try:
        # verify() checks what the format allows without decoding (PNG chunk CRCs); the file must
        # be opened again afterwards.
        image.verify()
        image = _open(upload, what, fmt, header.limits.max_pixels)
        animated = bool(getattr(image, "is_animated", False))
        if animated:
            image.seek(0)
        drafted = draft and fmt == "JPEG" and image.mode == "RGB" and not animated
        drafted = drafted and _strict_orientation(image, what) in (None, 1)
        if drafted:
            width, height = image.size
            image.draft("RGB", (max(1, width // DRAFT_SCALE), max(1, height // DRAFT_SCALE)))
        image.load()
    except ApiError:
        raise
    except Image.DecompressionBombError as exc:
        raise _bomb(what, header.limits.max_pixels) from exc
    except Exception as exc:
        raise IMAGE_UNREADABLE(f"{what} is damaged or truncated ({fmt})") from exc
    return image, animated, drafted


def decode_image(header: ImageHeader) -> CheckedImage:
    """A photo or room, decoded, turned upright, made RGB and encoded for storing — within a
    reservation of the process's memory budget. Its pixels are freed before this returns."""
    what, fmt = header.what, header.format
    with BUDGET.hold(header.peak_bytes(), capacity=header.limits.memory_budget_bytes):
        image, animated, drafted = _load(header, draft=header.jpeg_as_sent)
        if drafted:  # a JPEG stored as sent: decoded only to prove it decodes
            del image
            return _as_sent(header, header.size)
        upright = _strict_orientation(image, what) in (None, 1)
        if upright and not animated and image.mode == "RGB" and "transparency" not in image.info:
            size = image.size
            del image
            return _as_sent(header, size)
        try:
            ImageOps.exif_transpose(image, in_place=True)  # in place: no second full copy
        except Exception as exc:
            raise IMAGE_UNREADABLE(f"{what} has an unreadable EXIF block") from exc
        try:
            rgb = to_rgb(image)
        except Exception as exc:
            raise IMAGE_UNREADABLE(f"{what} has a pixel format that cannot be converted") from exc
        del image
        return CheckedImage(rgb.size, fmt, animated, png_bytes(rgb), "png", "image/png", as_sent=False)


def _as_sent(header: ImageHeader, size: tuple[int, int]) -> CheckedImage:
    ext = EXTENSIONS[header.format]
    content_type = f"image/{'jpeg' if ext == 'jpg' else ext}"
    return CheckedImage(size, header.format, False, header.upload.bytes(), ext, content_type, as_sent=True)


def decode_mask(header: ImageHeader, *, size: tuple[int, int]) -> Image.Image:
    """The mask as 8-bit L, 255 = paint, 0 = keep; exactly `size` (the oriented room's)."""
    if header.size != size:
        w, h = header.size
        raise MASK_SIZE_MISMATCH(
            f"the mask is {w}x{h} but the room is {size[0]}x{size[1]} (after its EXIF orientation)"
        )
    with BUDGET.hold(header.mask_peak_bytes(), capacity=header.limits.memory_budget_bytes):
        image, _, _ = _load(header, draft=False)
        try:
            paint = _mask_paint(image)
        except Exception as exc:
            raise IMAGE_UNREADABLE("the mask has a pixel format that cannot be read") from exc
        if paint.getbbox() is None:
            raise MASK_EMPTY("the mask paints no pixel: all transparent, or all black")
        return paint


def _mask_paint(image: Image.Image) -> Image.Image:
    """255 = paint, 0 = keep: docs/api.md's "Masks: which pixels paint", as `models.images.open_mask`."""
    if image.mode == "P" or ("transparency" in image.info and image.mode not in ("I", "I;16")):
        image = image.convert("LA" if image.mode in ("1", "L") else "RGBA")  # tRNS or palette: as alpha
    alpha = image.getchannel("A") if "A" in image.getbands() else None
    if "transparency" in image.info and image.mode in ("I", "I;16"):  # Pillow's would clip to 8 bits
        alpha = Image.fromarray((np.asarray(image) != image.info["transparency"]).view(np.uint8) * 255)
    if alpha is not None and alpha.getextrema()[0] < 255:  # with transparency: alpha >= 128 paints
        return alpha.point([0] * 128 + [255] * 128)
    del alpha  # fully opaque: any pixel not black paints; a byte a pixel at a time (`mask_peak_bytes`)
    colour = image if image.mode in ("LA", "RGB", "RGBA") else image.convert("L")  # 16-bit: clipped
    paint = colour.getchannel(0).point(PAINT)
    for band in [band for band in colour.getbands()[1:] if band != "A"]:  # in place, one at a time
        paint.paste(255, mask=colour.getchannel(band).point(PAINT))
    return paint


def check_image(upload: UploadedFile, *, what: str, max_pixels: int) -> CheckedImage:
    """One photo or room on its own: `read_header` and `decode_image`, the default shape limits."""
    return decode_image(read_header(upload, what=what, limits=ImageLimits.single(max_pixels)))


def check_mask(upload: UploadedFile, *, size: tuple[int, int], max_pixels: int) -> Image.Image:
    """One mask on its own: `read_header` (PNG only) and `decode_mask`."""
    limits = ImageLimits.single(max_pixels)
    return decode_mask(read_header(upload, what="mask", limits=limits, formats=MASK_FORMATS), size=size)


def png_bytes(image: Image.Image) -> bytes:
    """Lossless, quickly: the worker decodes it once, so a low compression level is the better trade."""
    out = io.BytesIO()
    image.save(out, "PNG", compress_level=1)
    return out.getvalue()
