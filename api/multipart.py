"""Multipart uploads, streamed with hard limits: `read_form` and what it returns.

The request body goes through python-multipart's push parser. Each file part is counted as it
arrives and refused with 413 `image_too_large` the moment it passes the limit, so no more than
limit + one chunk of it is ever read; file parts go to spooled temporary files (RAM up to 1 MiB,
then disk), never to one big bytes object. The number of files per field, the number of text
fields and their sizes are limited the same way. A declared `Content-Length` over the whole form's
limit is refused unread (413 `payload_too_large`).

While parsing, a digest of the field names, text values and file contents (not the random
boundary) is taken: it is what `Idempotency-Key` compares. What the files contain is checked
afterwards, by `api.image_checks`.
"""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass, field
from typing import IO

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from api.problems import (
    CLIENT_DISCONNECTED,
    FIELD_TOO_LARGE,
    IMAGE_TOO_LARGE,
    MALFORMED_MULTIPART,
    PAYLOAD_TOO_LARGE,
    UNSUPPORTED_CONTENT_TYPE,
    VALIDATION_ERROR,
    ApiError,
)

SPOOL_BYTES = 1024 * 1024
MAX_TEXT_FIELDS = 16
MAX_TEXT_FIELD_BYTES = 64 * 1024
MAX_PART_HEADERS = 16
# Slack for boundaries, part headers and text fields on top of the files themselves.
BODY_OVERHEAD_BYTES = 1024 * 1024


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
        _close_all(self.files)


@dataclass(frozen=True)
class FormLimits:
    max_file_bytes: int
    file_fields: dict[str, tuple[int, ApiError]]
    """field name -> (most files accepted, the error when one more arrives)."""

    @property
    def max_body_bytes(self) -> int:
        files = sum(count for count, _ in self.file_fields.values())
        return files * self.max_file_bytes + BODY_OVERHEAD_BYTES


def _close_all(files: dict[str, list[UploadedFile]]) -> None:
    for uploads in files.values():
        for upload in uploads:
            upload.close()


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
            raise MALFORMED_MULTIPART("too many headers in one multipart part")
        self._headers[self._header_name.lower()] = self._header_value
        self._header_name = b""
        self._header_value = b""

    def on_headers_finished(self) -> None:
        disposition, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        if disposition != b"form-data" or b"name" not in options:
            raise MALFORMED_MULTIPART("every part needs Content-Disposition: form-data; name=…")
        try:
            name = options[b"name"].decode("utf-8")
            filename = options[b"filename"].decode("utf-8") if b"filename" in options else None
        except UnicodeDecodeError as exc:
            raise MALFORMED_MULTIPART("part names must be UTF-8") from exc
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
                raise VALIDATION_ERROR(f"more than {MAX_TEXT_FIELDS} form fields")
            self._text = bytearray()

    # --- the body of one part -----------------------------------------------------------------
    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if self._file is not None:
            self._file.size += len(chunk)
            if self._file.size > self.limits.max_file_bytes:
                what = f"file {self._name!r} #{len(self.files[self._name])}"
                raise IMAGE_TOO_LARGE(f"{what} is larger than {self.limits.max_file_bytes} bytes")
            self._file.file.write(chunk)
            self._file.hasher.update(chunk)
        elif self._text is not None:
            self._text.extend(chunk)
            if len(self._text) > MAX_TEXT_FIELD_BYTES:
                raise FIELD_TOO_LARGE(f"form field {self._name!r} is over {MAX_TEXT_FIELD_BYTES} bytes")

    def on_part_end(self) -> None:
        if self._file is not None:
            self._file.file.seek(0)
            self.digest.update(b"\x00file\x00" + self._file.hasher.digest())
        elif self._text is not None:
            try:
                value = self._text.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise VALIDATION_ERROR(f"form field {self._name!r} is not UTF-8") from exc
            if "\x00" in value:
                # No database stores NUL in text (PostgreSQL refuses it): refuse it here, clearly.
                raise VALIDATION_ERROR(f"form field {self._name!r} contains a NUL character")
            self.fields.setdefault(self._name, []).append(value)
            self.digest.update(b"\x00text\x00" + hashlib.sha256(self._text).digest())
        self._file = None
        self._text = None

    def close(self) -> None:
        _close_all(self.files)


async def read_form(request: Request, limits: FormLimits) -> ParsedForm:
    """Stream and parse a multipart/form-data body, refusing it as soon as a limit is passed."""
    content_type, params = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data":
        raise UNSUPPORTED_CONTENT_TYPE("send the request as multipart/form-data")
    boundary = params.get(b"boundary")
    if not boundary or len(boundary) > 200:
        raise MALFORMED_MULTIPART("multipart/form-data without a valid boundary")
    too_large = PAYLOAD_TOO_LARGE(f"the request body is over {limits.max_body_bytes} bytes")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limits.max_body_bytes:
        raise too_large  # before reading a byte of it

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
                raise too_large
            if chunk:
                parser.write(chunk)
        parser.finalize()
    except ApiError:
        builder.close()
        raise
    except ClientDisconnect as exc:
        builder.close()
        raise CLIENT_DISCONNECTED("the client went away during the upload") from exc
    except Exception as exc:  # python-multipart's own errors: the body is not valid multipart
        builder.close()
        raise MALFORMED_MULTIPART(f"the multipart body cannot be parsed: {exc}") from exc
    if builder._file is not None or builder._text is not None:
        builder.close()
        raise MALFORMED_MULTIPART("the multipart body ends inside a part")
    return ParsedForm(fields=builder.fields, files=builder.files, digest=builder.digest.hexdigest())
