"""The `boxes` field of a subject (API form field and `roomfit train --boxes`): one rule for both.

A JSON list with one entry per photo: `[x0, y0, x1, y1]` in pixels of the upright photo, or null
to let the detector find the product. Callers turn `InvalidBoxes` into their own error (422
`invalid_boxes` at the API, a bad-parameter message on the command line).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

Box = list[float]


class InvalidBoxes(ValueError):
    """The boxes text is not a list of one valid box (or null) per photo; the message says which."""


def _is_number(value: object) -> bool:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float (JSON allows 4300 digits): no pixel
        return False


def parse_boxes(raw: str | None, sizes: Sequence[tuple[int, int]]) -> list[Box | None]:
    """One box or None per photo of `sizes` (width, height); all None when `raw` is empty."""
    if raw is None or not raw.strip():
        return [None] * len(sizes)
    try:
        boxes = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # RecursionError: nested too deep ("[" * 30000)
        raise InvalidBoxes("boxes is not valid JSON") from exc
    if not isinstance(boxes, list) or len(boxes) != len(sizes):
        raise InvalidBoxes(f"boxes must be a JSON list of {len(sizes)} entries, one per photo")
    out: list[Box | None] = []
    for i, (box, (width, height)) in enumerate(zip(boxes, sizes, strict=True)):
        if box is None:
            out.append(None)
            continue
        if not isinstance(box, list) or len(box) != 4 or not all(_is_number(v) for v in box):
            raise InvalidBoxes(f"box {i} must be [x0, y0, x1, y1] in pixels, or null")
        x0, y0, x1, y1 = (float(v) for v in box)
        if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
            raise InvalidBoxes(f"box {i} {box} is not inside photo {i} ({width}x{height}) with x0<x1, y0<y1")
        out.append([x0, y0, x1, y1])
    return out
