"""Uploads: a streaming multipart reader with hard limits, and the image checks. One module.

Everything here runs *before* anything is stored:

1. `read_form` streams the request body through python-multipart's push parser. Each file part is
   counted as it arrives and refused with 413 `image_too_large` the moment it passes the limit, so
   no more than limit + one chunk of it is ever read; file parts go to spooled temporary files (RAM
   up to 1 MiB, then disk), never to one big bytes object. The number of files per field, the number
   of text fields and their sizes are limited the same way.
2. `check_image` sniffs the type from the bytes (JPEG, PNG, WebP; the filename and the declared
   content type are ignored), refuses more than `max_pixels` from the header before decoding
   (decompression bombs: 413 `image_too_large`), decodes fully (truncated or corrupt: 422
   `image_unreadable`), applies the EXIF orientation, and converts to 8-bit RGB: CMYK and YCbCr
   converted, palette and alpha composited over white, 16-bit scaled down. Animated images (GIF is
   refused anyway; animated PNG and WebP) use their first frame.
3. `check_mask` reads a PNG mask: it has the room's size *after* the room's EXIF orientation (a
   mask has no orientation of its own: PNG carries none that browsers apply). Which pixels paint is
   the worker's rule (`models.images.open_mask`): with an alpha channel, the opaque ones (a drawing
   on a transparent canvas); otherwise those of non-zero luminance. A mask with no paint is refused.

What is stored: an image that already decodes to upright 8-bit RGB (no EXIF rotation, one frame,
no transparency) is stored as sent; any other is stored as the normalised RGB PNG. Masks are
stored normalised, 0 = keep, 255 = paint.
"""

from __future__ import annotations

import hashlib
import io
import logging
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO

import numpy as np
from PIL import Image, ImageOps
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from api.problems import ApiError

log = logging.getLogger("roomfit.api.uploads")

SPOOL_BYTES = 1024 * 1024
MAX_TEXT_FIELDS = 16
MAX_TEXT_FIELD_BYTES = 64 * 1024
MAX_PART_HEADERS = 16
# Slack for boundaries, part headers and text fields on top of the files themselves.
BODY_OVERHEAD_BYTES = 1024 * 1024

ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP")


@dataclass
class UploadedFile:
    field: str
    filename: str | None
    file: IO[bytes]
    size: int = 0
    hasher: hashlib._Hash = field(default_factory=hashlib.sha256)

    def head(self, n: int = 16) -> bytes:
        self.file.seek(0)
        return self.file.read(n)

    def bytes(self) -> bytes:
        self.file.seek(0)
        return self.file.read()

    def close(self) -> None:
        self.file.close()


@dataclass
class ParsedForm:
    fields: dict[str, list[str]]
    files: dict[str, list[UploadedFile]]
    digest: str
    """sha256 over field names, text values and file contents in order: what Idempotency-Key compares.
    It ignores the multipart boundary, which clients draw at random for every attempt."""

    def text(self, name: str) -> str | None:
        values = self.fields.get(name)
        return values[0] if values else None

    def close(self) -> None:
        for uploads in self.files.values():
            for upload in uploads:
                upload.close()


@dataclass(frozen=True)
class FormLimits:
    max_file_bytes: int
    file_fields: dict[str, tuple[int, ApiError]]
    """field name -> (most files accepted, the error when one more arrives)."""

    @property
    def max_body_bytes(self) -> int:
        files = sum(count for count, _ in self.file_fields.values())
        return files * self.max_file_bytes + BODY_OVERHEAD_BYTES


def _too_large(what: str, limit: int) -> ApiError:
    return ApiError(413, "image_too_large", f"{what} is larger than {limit} bytes")


class _FormBuilder:
    """python-multipart callbacks: builds the fields and files of one request, enforcing limits."""

    def __init__(self, limits: FormLimits) -> None:
        self.limits = limits
        self.fields: dict[str, list[str]] = {}
        self.files: dict[str, list[UploadedFile]] = {}
        self.digest = hashlib.sha256()
        self.text_fields = 0
        self._header_name = b""
        self._header_value = b""
        self._headers: dict[bytes, bytes] = {}
        self._header_count = 0
        self._file: UploadedFile | None = None
        self._text: bytearray | None = None
        self._name = ""

    # --- headers of one part ------------------------------------------------------------------
    def on_part_begin(self) -> None:
        self._headers = {}
        self._header_count = 0
        self._file = None
        self._text = None

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        self._header_count += 1
        if self._header_count > MAX_PART_HEADERS:
            raise ApiError(400, "malformed_multipart", "too many headers in one multipart part")
        self._headers[self._header_name.lower()] = self._header_value
        self._header_name = b""
        self._header_value = b""

    def on_headers_finished(self) -> None:
        disposition, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        if disposition != b"form-data" or b"name" not in options:
            raise ApiError(
                400, "malformed_multipart", "every part needs Content-Disposition: form-data; name=…"
            )
        try:
            name = options[b"name"].decode("utf-8")
            filename = options[b"filename"].decode("utf-8") if b"filename" in options else None
        except UnicodeDecodeError as exc:
            raise ApiError(400, "malformed_multipart", "part names must be UTF-8") from exc
        self._name = name
        self.digest.update(b"\x00name\x00" + name.encode())
        if name in self.limits.file_fields:
            most, error = self.limits.file_fields[name]
            uploads = self.files.setdefault(name, [])
            if len(uploads) >= most:
                raise error
            self._file = UploadedFile(name, filename, tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES))  # noqa: SIM115
            uploads.append(self._file)
        else:
            self.text_fields += 1
            if self.text_fields > MAX_TEXT_FIELDS:
                raise ApiError(422, "validation_error", f"more than {MAX_TEXT_FIELDS} form fields")
            self._text = bytearray()

    # --- the body of one part -----------------------------------------------------------------
    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if self._file is not None:
            self._file.size += len(chunk)
            if self._file.size > self.limits.max_file_bytes:
                raise _too_large(
                    f"file {self._name!r} #{len(self.files[self._name])}", self.limits.max_file_bytes
                )
            self._file.file.write(chunk)
            self._file.hasher.update(chunk)
        elif self._text is not None:
            self._text.extend(chunk)
            if len(self._text) > MAX_TEXT_FIELD_BYTES:
                raise ApiError(
                    413, "field_too_large", f"form field {self._name!r} is over {MAX_TEXT_FIELD_BYTES} bytes"
                )

    def on_part_end(self) -> None:
        if self._file is not None:
            self._file.file.seek(0)
            self.digest.update(b"\x00file\x00" + self._file.hasher.digest())
        elif self._text is not None:
            try:
                value = self._text.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ApiError(422, "validation_error", f"form field {self._name!r} is not UTF-8") from exc
            if "\x00" in value:
                # No database stores NUL in text (PostgreSQL refuses it): refuse it here, clearly.
                raise ApiError(422, "validation_error", f"form field {self._name!r} contains a NUL character")
            self.fields.setdefault(self._name, []).append(value)
            self.digest.update(b"\x00text\x00" + hashlib.sha256(self._text).digest())
        self._file = None
        self._text = None

    def close(self) -> None:
        for uploads in self.files.values():
            for upload in uploads:
                upload.close()


async def read_form(request: Request, limits: FormLimits) -> ParsedForm:
    """Stream and parse a multipart/form-data body, refusing it as soon as a limit is passed."""
    content_type, params = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data":
        raise ApiError(415, "unsupported_content_type", "send the request as multipart/form-data")
    boundary = params.get(b"boundary")
    if not boundary or len(boundary) > 200:
        raise ApiError(400, "malformed_multipart", "multipart/form-data without a valid boundary")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limits.max_body_bytes:
        # Refused before reading a byte of it.
        raise ApiError(413, "payload_too_large", f"the request body is over {limits.max_body_bytes} bytes")

    builder = _FormBuilder(limits)
    callbacks = {
        "on_part_begin": builder.on_part_begin,
        "on_part_data": builder.on_part_data,
        "on_part_end": builder.on_part_end,
        "on_header_field": builder.on_header_field,
        "on_header_value": builder.on_header_value,
        "on_header_end": builder.on_header_end,
        "on_headers_finished": builder.on_headers_finished,
    }
    parser = MultipartParser(boundary, callbacks)  # type: ignore[arg-type]
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > limits.max_body_bytes:
                raise ApiError(
                    413, "payload_too_large", f"the request body is over {limits.max_body_bytes} bytes"
                )
            if chunk:
                parser.write(chunk)
        parser.finalize()
    except ApiError:
        builder.close()
        raise
    except ClientDisconnect as exc:
        builder.close()
        raise ApiError(400, "client_disconnected", "the client went away during the upload") from exc
    except Exception as exc:  # python-multipart's own errors: the body is not valid multipart
        builder.close()
        raise ApiError(400, "malformed_multipart", f"the multipart body cannot be parsed: {exc}") from exc
    if builder._file is not None or builder._text is not None:
        builder.close()
        raise ApiError(400, "malformed_multipart", "the multipart body ends inside a part")
    return ParsedForm(fields=builder.fields, files=builder.files, digest=builder.digest.hexdigest())


# --- images ------------------------------------------------------------------------------------


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


def _open(
    upload: UploadedFile, what: str, allowed: tuple[str, ...], max_pixels: int
) -> tuple[Image.Image, str]:
    """Open (header only) after sniffing the type and checking the pixel count."""
    fmt = sniff(upload.head())
    if fmt is None or fmt not in allowed:
        names = ", ".join(allowed)
        raise ApiError(415, "unsupported_media_type", f"{what} is not an image of type {names}")
    upload.file.seek(0)
    try:
        image = Image.open(upload.file, formats=[fmt])
    except Image.DecompressionBombError as exc:
        raise ApiError(413, "image_too_large", f"{what} has more than {max_pixels} pixels") from exc
    except Exception as exc:  # any decoder complaint about the header
        raise ApiError(422, "image_unreadable", f"{what} cannot be read as {fmt}") from exc
    width, height = image.size
    if width < 1 or height < 1:
        raise ApiError(422, "image_unreadable", f"{what} has no pixels")
    if width * height > max_pixels:
        # Checked from the header, before a single pixel is decoded: a small file may declare a
        # huge canvas (a decompression bomb).
        raise ApiError(413, "image_too_large", f"{what} is {width}x{height}, more than {max_pixels} pixels")
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
        raise ApiError(413, "image_too_large", f"{what} has more than {max_pixels} pixels") from exc
    except Exception as exc:  # truncated data, bad Huffman tables, broken chunks ...
        raise ApiError(422, "image_unreadable", f"{what} is damaged or truncated ({fmt})") from exc
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
        raise ApiError(422, "image_unreadable", f"{what} has an unreadable EXIF block") from exc
    upright = _orientation(image) in (None, 1)
    try:
        rgb = to_rgb(oriented)
    except Exception as exc:
        raise ApiError(
            422, "image_unreadable", f"{what} has a pixel format that cannot be converted"
        ) from exc
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
        raise ApiError(
            422,
            "mask_size_mismatch",
            f"the mask is {w}x{h} but the room is {size[0]}x{size[1]} (after its EXIF orientation)",
        )
    try:
        # The worker's rule (models.images.open_mask): a drawing on a transparent background paints
        # where it is opaque; any other mask paints where its luminance is non-zero.
        if image.mode in ("RGBA", "LA", "PA"):
            paint = np.asarray(image.getchannel("A")) > 0
        else:
            paint = np.asarray(image.convert("L")) > 0
    except Exception as exc:
        raise ApiError(422, "image_unreadable", "the mask has a pixel format that cannot be read") from exc
    if not paint.any():
        raise ApiError(422, "mask_empty", "the mask has no non-zero pixel: nothing to paint")
    return Image.fromarray((paint * 255).astype(np.uint8), "L")


def png_bytes(image: Image.Image) -> bytes:
    """Lossless, quickly: the worker decodes it once, so a low compression level is the better trade."""
    out = io.BytesIO()
    image.save(out, "PNG", compress_level=1)
    return out.getvalue()


def iter_chunks(data: bytes, size: int = 64 * 1024) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]
