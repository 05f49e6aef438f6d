"""How a JPEG's scans are laid out, read from its markers without decoding it: what its decoder
will buffer. libjpeg keeps a whole-image coefficient buffer for a JPEG of several scans (progressive,
or a sequential one whose first scan carries fewer than all components), even when it decodes at
1/8 scale (draft mode), so `api.image_budget` must reserve it (a 40 MP progressive photo: ~118 MiB
at 4:2:0, ~232 MiB at 4:4:4, measured)."""

from __future__ import annotations

import io
from typing import BinaryIO

from PIL import Image

from api.image_budget import jpeg_coefficient_bytes


def coefficient_bytes(file: BinaryIO, image: Image.Image) -> int:
    """What libjpeg holds while decoding this JPEG, from its markers (nothing decoded): every
    coefficient for a JPEG of several scans, even in draft mode; 0 for one of a single scan."""
    sampling = [(h, v) for _, h, v, _ in getattr(image, "layer", [])]
    if not sampling or not all(h > 0 and v > 0 for h, v in sampling):
        sampling = [(1, 1)] * len(image.getbands())  # not readable: as if none were subsampled
    progressive = bool(image.info.get("progressive") or image.info.get("progression"))
    if progressive or first_scan_components(file) < len(sampling):  # libjpeg's has_multiple_scans
        return jpeg_coefficient_bytes(image.size, sampling)
    return 0


def first_scan_components(f: BinaryIO) -> int:
    """How many components the JPEG's first scan (SOS) carries; 0 when the markers up to it cannot
    be followed (then it counts as a JPEG of several scans: the costlier estimate)."""
    f.seek(2)  # past SOI
    while True:
        byte = f.read(1)
        if byte != b"\xff":
            return 0
        marker = f.read(1)
        while marker == b"\xff":  # fill bytes before a marker
            marker = f.read(1)
        if not marker:
            return 0
        if marker == b"\x01" or b"\xd0" <= marker <= b"\xd7":  # no length
            continue
        length = int.from_bytes(f.read(2), "big")
        if length < 2:
            return 0
        if marker == b"\xda":
            count = f.read(1)
            return count[0] if count else 0
        f.seek(length - 2, io.SEEK_CUR)
