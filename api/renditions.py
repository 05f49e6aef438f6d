"""Display renditions of a preview's result: the painted PNG as a JPEG, a WebP or a smaller PNG,
made once and kept beside the result in the blob store.

The result itself (`result.png`, the room's size) is the exact answer: every pixel the mask keeps
equals the room's. A rendition is for showing it: smaller on the wire, scaled to fit a screen, and
lossy where the format is. It is encoded on the first request for it and stored under a key derived
from the result's (`result.png.r/webp-1024.webp`), so the second request is a blob-store read (or a
presigned redirect), never a second encode; it lives under the preview's prefix, so deleting the
preview deletes its renditions too.

Two first requests for one rendition at once may both encode it; that costs one encode more and
nothing else, because the store's writes are atomic (`BlobStore.put`: temporary file and rename,
or one S3 PUT): a reader gets one whole rendition or the other, and both are the same picture.

A preview deleted while its rendition is encoded (`DELETE`, its subject's, the retention sweep) must
not keep it: the deletion drops the preview's blobs once, so a rendition written after that would
stay under a prefix nobody lists again. So the rendition is written *before* the preview is looked
up again (`still_there`, in its own transaction): a deletion committed by then is seen and the
rendition removed (`PreviewGone`, 404), one committed later drops it with the rest. A preview the sweep
may take soon is not kept from (`keep=False`): the sweep removes blobs before its rows commit.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from PIL import Image

from api.image_budget import BUDGET
from api.pixel_modes import rgb_profile
from core.blobstore import BlobNotFound, BlobStore, Download, Stream
from core.settings import Settings

ImageFormat = Literal["png", "jpeg", "webp"]
MIN_SIDE = 16
"""The smallest `max_side` taken: below it there is no picture left to show."""
MAX_SIDE = 8192
"""The largest `max_side` taken: past any screen; a larger result is still served whole without it."""


@dataclass(frozen=True)
class Format:
    media_type: str
    extension: str
    save: dict[str, Any]  # Pillow's `Image.save` options


FORMATS: dict[str, Format] = {
    # Lossless, so no quality to choose; zlib's middle level (Pillow's default) is the usual
    # balance: level 9 saves a few percent for several times the time.
    "png": Format("image/png", "png", {"compress_level": 6}),
    # 85: the knee of JPEG's size/quality curve for photographs. Below ~75 blocks and ringing show
    # around the painted product's edges; above ~90 the file grows fast for nothing one can see.
    # Progressive: a large preview shows whole (blurred) at once on a slow phone connection.
    "jpeg": Format("image/jpeg", "jpg", {"quality": 85, "progressive": True}),
    # 80: libwebp's lossy scale runs lower than JPEG's; 80 looks like JPEG 85 at a quarter to a third
    # fewer bytes (libwebp's own default is 75). method 4 is its default speed/size trade-off: 6
    # saves a few percent for about twice the encode time, paid by the shopper's first request.
    "webp": Format("image/webp", "webp", {"quality": 80, "method": 4}),
}


@dataclass(frozen=True)
class Rendition:
    """What a request asks for: a format and the longest side (None: the result's own size)."""

    image_format: ImageFormat
    side: int | None

    @classmethod
    def of(cls, image_format: ImageFormat, max_side: int | None, size: tuple[int, int]) -> Rendition:
        """The request for a result of `size`: a `max_side` at or past its longest side is its own size
        (never upscaled), so `max_side=4096` and none name one rendition, and PNG at its own size is
        the result itself."""
        side = max_side if max_side is not None and max_side < max(size) else None
        return cls(image_format, side)

    @property
    def is_result(self) -> bool:
        """The exact result, served as stored: nothing to encode."""
        return self.image_format == "png" and self.side is None

    @property
    def format(self) -> Format:
        return FORMATS[self.image_format]

    def key(self, result_key: str) -> str:
        """Where this rendition of the result at `result_key` is kept: beside it, under the preview."""
        return f"{result_key}.r/{self.image_format}-{self.side or 'full'}.{self.format.extension}"


def memory_needed(size: tuple[int, int], side: int | None, file_bytes: int) -> int:
    """The most an encode holds at once: the file, the decoded result (Pillow keeps RGB and RGBA at 4
    bytes a pixel), at most as much again on the way down (the `reduce` copy, or Lanczos' first pass
    of the output's width by the input's height), the scaled picture and its encoded bytes (at most
    its pixels' bytes)."""
    width, height = size
    scale = 1.0 if side is None else min(1.0, side / max(size))
    out = round(width * scale) * round(height * scale) * 4
    return file_bytes + 2 * width * height * 4 + 2 * out


def encode(data: bytes, wanted: Rendition, *, budget_bytes: int = 0) -> bytes:
    """`data` (the result PNG) as `wanted`: its longest side at most `wanted.side`, its aspect kept.

    The decoded pixels are reserved from the process's image-memory budget (`budget_bytes`, the
    capacity; 0: none) before decoding: a 40-megapixel result is 160 MB decoded, and several
    shoppers' first requests may encode at once (503 `server_busy` when there is no room)."""
    with Image.open(io.BytesIO(data)) as image:
        need = memory_needed(image.size, wanted.side, len(data))
        with BUDGET.hold(need, capacity=budget_bytes):
            if wanted.side is not None:
                # thumbnail: keeps the aspect ratio, never enlarges, and with a reducing gap first
                # shrinks by a whole factor (JPEG draft mode, else `reduce`: a box filter, cheap),
                # then resamples the last step (at least 2x) with Lanczos: close to one Lanczos pass
                # from the full size at a fraction of its time. 2.0 is Pillow's own default for
                # thumbnail; 3.0 would be indistinguishable from the full pass, for a slower encode.
                image.thumbnail((wanted.side, wanted.side), Image.Resampling.LANCZOS, reducing_gap=2.0)
            else:
                image.load()
            picture = image if image.mode in ("RGB", "L") else image.convert("RGB")
            out = io.BytesIO()
            # The result carries its room's RGB profile (a phone's Display P3); WebP's writer embeds
            # only a profile given to it, and without it the colours shift from the result's.
            profile = rgb_profile(image.info.get("icc_profile"))
            extra = {"icc_profile": profile} if profile is not None else {}
            picture.save(out, wanted.image_format.upper(), **wanted.format.save, **extra)
            return out.getvalue()


class PreviewGone(Exception):
    """The preview was deleted while its rendition was encoded: the caller removes what was written
    (`api.services.previews.result`: everything under the preview's prefix)."""


def rendition_download(
    blobs: BlobStore,
    result_key: str,
    wanted: Rendition,
    settings: Settings,
    *,
    still_there: Callable[[], bool] = lambda: True,
    keep: bool = True,
) -> Download:
    """How the client gets `wanted` of the result at `result_key`: the kept rendition if there is one,
    else encoded now and kept first (with `keep` False: sent from memory, not kept). Raises
    `BlobNotFound` when the result itself is gone, `PreviewGone` when `still_there()` says the
    preview was deleted meanwhile."""
    key = wanted.key(result_key)
    try:
        return blobs.download(key, settings.presign_seconds)
    except BlobNotFound:
        pass  # the first request for it: made below
    encoded = encode(blobs.get(result_key), wanted, budget_bytes=settings.api_memory_budget_bytes)
    if not keep:
        if not still_there():
            raise PreviewGone(result_key)
        return Stream(iter([encoded]))
    blobs.put(key, encoded, wanted.format.media_type)
    # Written first, then looked up: a deletion either is seen here or drops it after its commit.
    if not still_there():
        raise PreviewGone(key)
    return blobs.download(key, settings.presign_seconds)
