"""Peak resident memory of the API process per request kind.

Each kind gets a fresh `roomfit serve` (embedded mode: SQLite, filesystem broker, local blobs, in a
temporary folder; tests/api/served.py), warmed up with one small request of the same kind (so the
decoders and pools are there), then one measured request. Reported: the answer, the growth of the
process's peak resident memory (VmHWM, reset just before) above its resident size after the
warm-up, and the CPU time the server spent on the request. Photos are 8-bit JPEGs of smooth
content (a camera's, roughly); "turned" ones carry EXIF orientation 6, so they are decoded, turned
and stored as PNG rather than stored as sent.

    PYTHONPATH=. .venv/bin/python bench/bench_api_memory.py [--kind NAME ...] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.api.served import ServedApi, encoded, photo_files, served_api

MP12 = (4000, 3000)
MP20 = (5472, 3648)  # 19.96 MP: eight of them fit max_request_pixels (160 MP)


def photo(size: tuple[int, int], *, turned: bool = False, seed: int = 0) -> bytes:
    """A smooth colour photo as JPEG (quality 85); `turned`: EXIF orientation 6."""
    width, height = size
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (height // 32, width // 32, 3), dtype=np.uint8), "RGB")
    exif = Image.Exif()
    if turned:
        exif[0x0112] = 6
    return encoded(coarse.resize(size, Image.Resampling.BILINEAR), "JPEG", quality=85, exif=exif)


def black_png(side: int) -> bytes:
    """All black: 0.06 MB on the wire, side x side x 3 bytes decoded (the issue's attack)."""
    return encoded(Image.new("RGB", (side, side)), "PNG", compress_level=9)


def mask(size: tuple[int, int]) -> bytes:
    width, height = size
    pixels = np.zeros((height, width), np.uint8)
    pixels[height // 4 : 3 * height // 4, width // 4 : 3 * width // 4] = 255
    return encoded(Image.fromarray(pixels, "L"), "PNG")


@dataclass
class Result:
    kind: str
    body_mb: float
    status: str
    warm_rss_mib: float
    peak_growth_mib: float
    cpu_seconds: float


Prepare = Callable[[ServedApi], tuple[float, Callable[[], Any]]]
"""Warms the server up for a kind; returns the measured request's body size (MB) and the request."""


def _subject(photos: list[bytes]) -> Prepare:
    def prepare(api: ServedApi) -> tuple[float, Callable[[], httpx.Response]]:
        files = photo_files(photos)
        warm = api.post("/v1/subjects", {"name": "warm"}, photo_files([photo((64, 48))]))
        assert warm.status_code == 202, warm.text
        body = sum(len(p) for p in photos) / 1e6
        return body, lambda: api.post("/v1/subjects", {"name": "sofa"}, files)

    return prepare


def _preview(size: tuple[int, int]) -> Prepare:
    def prepare(api: ServedApi) -> tuple[float, Callable[[], httpx.Response]]:
        subject_id = api.ready_subject()

        def send(room: bytes, paint: bytes) -> httpx.Response:
            files = [("room", ("room.jpg", room, "image/jpeg")), ("mask", ("mask.png", paint, "image/png"))]
            return api.post("/v1/previews", {"subject_id": subject_id}, files)

        warm = send(photo((64, 48)), mask((64, 48)))
        assert warm.status_code == 202, warm.text
        room, paint = photo(size), mask(size)
        return (len(room) + len(paint)) / 1e6, lambda: send(room, paint)

    return prepare


def _at_once(count: int, photos: list[bytes]) -> Prepare:
    """`count` subjects posted at the same moment (the issue: three such requests reached 3.5 GB)."""

    def prepare(api: ServedApi) -> tuple[float, Callable[[], list[httpx.Response]]]:
        files = photo_files(photos)
        warm = api.post("/v1/subjects", {"name": "warm"}, photo_files([photo((64, 48))]))
        assert warm.status_code == 202, warm.text

        def send() -> list[httpx.Response]:
            with ThreadPoolExecutor(count) as pool:
                sent = [pool.submit(api.post, "/v1/subjects", {"name": "sofa"}, files) for _ in range(count)]
                return [f.result() for f in sent]

        return count * sum(len(p) for p in photos) / 1e6, send

    return prepare


def _get_subject() -> Prepare:
    def prepare(api: ServedApi) -> tuple[float, Callable[[], httpx.Response]]:
        created = api.post("/v1/subjects", {"name": "sofa"}, photo_files([photo((64, 48))]))
        subject_id = created.json()["id"]
        api.get(f"/v1/subjects/{subject_id}")
        return 0.0, lambda: api.get(f"/v1/subjects/{subject_id}")

    return prepare


KINDS: dict[str, Callable[[], Prepare]] = {
    "subject, 1 photo of 12 MP": lambda: _subject([photo(MP12)]),
    "subject, 1 photo of 12 MP, turned": lambda: _subject([photo(MP12, turned=True)]),
    "subject, 8 photos of 20 MP": lambda: _subject([photo(MP20, seed=i) for i in range(8)]),
    "subject, 8 photos of 20 MP, turned": lambda: _subject(
        [photo(MP20, turned=True, seed=i) for i in range(8)]
    ),
    "preview, 12 MP room + mask": lambda: _preview(MP12),
    "3 subjects at once, 8 black PNGs of 4400x4400 each": lambda: _at_once(3, [black_png(4400)] * 8),
    "GET subject": _get_subject,
}


def measure(kind: str) -> Result:
    prepare = KINDS[kind]()
    with tempfile.TemporaryDirectory() as folder, served_api(Path(folder)) as api:
        body_mb, request = prepare(api)
        warm_rss = api.rss_mib()
        cpu = api.cpu_seconds()
        response, growth = api.peak_growth_mib(request, since=warm_rss)
        spent = api.cpu_seconds() - cpu
        answers = response if isinstance(response, list) else [response]
        status = ", ".join(str(a.status_code) for a in answers)
    return Result(kind, round(body_mb, 2), status, round(warm_rss), round(growth, 1), round(spent, 2))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--kind", action="append", choices=list(KINDS), help="repeatable (default: all)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    kinds = args.kind or list(KINDS)
    results = []
    print("| request | body (MB) | answer | warm RSS (MiB) | peak RSS growth (MiB) | server CPU (s) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for kind in kinds:
        result = measure(kind)
        results.append(result)
        print(
            f"| {result.kind} | {result.body_mb} | {result.status} | {result.warm_rss_mib} | "
            f"{result.peak_growth_mib} | {result.cpu_seconds} |",
            flush=True,
        )
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2))


if __name__ == "__main__":
    main()
