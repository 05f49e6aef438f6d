"""The image memory of one API process, bounded: `BUDGET.hold(nbytes, capacity=...)`.

Decoding an upload costs memory out of all proportion to its size (an all-black 6000x6000 PNG is
100 KB on the wire and 108 MB decoded), and the thread pool decodes for several requests at once.
So every image check first reserves its estimated peak bytes (`api.image_checks` estimates them
from the header) from one process-wide budget and gives them back when it is done — on success and
on every error. When the reservation cannot be had within `WAIT_SECONDS`, the request is answered
503 `server_busy` with `Retry-After`: the process stays under its memory limit and the client
retries, instead of the process growing until the kernel kills it with every request in it.

No deadlock: a request holds at most one reservation at a time (its images are checked one after
another), and no reservation is larger than the budget — an image estimated above the whole budget
reserves all of it and so runs alone once the others are done. The capacity is the setting
`api_memory_budget_bytes`, read per request like every limit; 0 turns the budget off.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from api.problems import SERVER_BUSY

WAIT_SECONDS = 2.0
"""How long a check waits for room in the budget before answering 503."""
RETRY_AFTER_SECONDS = 2


class MemoryBudget:
    """A semaphore counted in bytes, shared by every thread of the process."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._in_use = 0
        self._waiting = 0

    @property
    def in_use(self) -> int:
        """Bytes reserved now."""
        return self._in_use

    @property
    def waiting(self) -> int:
        """Checks waiting for room now."""
        return self._waiting

    @contextmanager
    def hold(self, nbytes: int, *, capacity: int, wait: float | None = None) -> Iterator[int]:
        """Reserve `nbytes` (at most `capacity`) for the block; yields what was reserved.

        Refuses with 503 `server_busy` when there is no room within `wait` seconds."""
        if capacity <= 0:  # no budget
            yield 0
            return
        wanted = max(0, min(nbytes, capacity))
        timeout = WAIT_SECONDS if wait is None else wait
        with self._changed:
            self._waiting += 1
            try:
                got = self._changed.wait_for(lambda: self._in_use + wanted <= capacity, timeout=timeout)
            finally:
                self._waiting -= 1
            if not got:
                raise SERVER_BUSY(
                    "the server is busy checking other images; retry shortly",
                    headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
                )
            self._in_use += wanted
        try:
            yield wanted
        finally:
            with self._changed:
                self._in_use -= wanted
                self._changed.notify_all()


BUDGET = MemoryBudget()
"""The one budget of this process."""


# --- what an image costs ---------------------------------------------------------------------
# Bytes per pixel of a decoded image, by Pillow mode; anything else counts 4.
MODE_BYTES = {"1": 1, "L": 1, "P": 1, "LA": 2, "La": 2, "PA": 2, "RGB": 3, "YCbCr": 3, "LAB": 3, "HSV": 3}
WEBP_DECODER_BYTES = 8
"""Per pixel, what Pillow's WebP reader holds beside the decoded image while it is checked: libwebp's
animation decoder keeps its RGBA canvases and Pillow a copy of the frame's bytes (measured: an RGB
WebP grows the process by 16 bytes a pixel where an RGB PNG needs at most the 9 of the formula)."""


def jpeg_coefficient_bytes(size: tuple[int, int], sampling: list[tuple[int, int]]) -> int:
    """What libjpeg holds while decoding a JPEG of several scans (progressive, or components in
    separate scans), even in draft mode: every DCT coefficient of the whole image, 64 of 2 bytes for
    each 8x8 block of each component, in whole MCUs. `sampling`: (h, v) per component."""
    width, height = size
    h_max = max(h for h, _ in sampling)
    v_max = max(v for _, v in sampling)
    mcu_columns = -(-width // (8 * h_max))
    mcu_rows = -(-height // (8 * v_max))
    return mcu_columns * mcu_rows * sum(h * v for h, v in sampling) * 64 * 2


def decoding_bytes(
    mode: str,
    size: tuple[int, int],
    *,
    alpha: bool,
    file_bytes: int,
    draft: int | None = None,
    coefficients: int = 0,
    fmt: str = "",
) -> int:
    """The most a photo's check holds at once, estimated from its header: the file, the decoded
    image, a turned copy, the conversion to RGB, the PNG to store (at worst 3 bytes a pixel).
    Decoded in JPEG draft mode at 1/`draft` scale (a JPEG stored as sent): the file and that.
    `coefficients` (`jpeg_coefficient_bytes`; 0 for one scan) are held while the pixels are decoded
    and freed before they are turned or converted; a WebP's reader holds `WEBP_DECODER_BYTES`."""
    width, height = size
    # An eighth more for libjpeg's pools and Pillow's rows beside them (measured peaks: 8-14 % below).
    buffered = coefficients + coefficients // 8
    if draft:
        return file_bytes + buffered + -(-width // draft) * -(-height // draft) * 3
    source = MODE_BYTES.get(mode, 4)
    if mode.startswith("I;16") or mode in ("I", "F"):
        conversion = 15  # integer copies while scaling down to 8 bits, then L, then RGB
    elif alpha:
        conversion = 12  # RGBA, a white background, the composite
    else:
        conversion = 0 if mode == "RGB" else 3
    per_pixel = 2 * source + conversion + 3 + (WEBP_DECODER_BYTES if fmt == "WEBP" else 0)
    # While decoding: the coefficients and the image as Pillow holds it (4 bytes a pixel for RGB).
    return file_bytes + max(width * height * per_pixel, buffered + width * height * 4)


def mask_bytes(mode: str, size: tuple[int, int], *, file_bytes: int) -> int:
    """A mask's: the file, the decoded image, one channel (L or alpha), the 0/255 image, its PNG."""
    return file_bytes + size[0] * size[1] * (MODE_BYTES.get(mode, 4) + 3)
