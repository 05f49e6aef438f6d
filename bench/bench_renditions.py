"""Bytes and encode time of a preview result's display renditions (`api.renditions`).

    PYTHONPATH=. .venv/bin/python bench/bench_renditions.py [--reps 5] [--size 4000x3000] [--json PATH]

The picture is a room's kind of content at 4000x3000 (12 MP): a wall in a vertical and horizontal
gradient, a window, a wooden floor (a sine grain) and a skirting board; over all of it shading and
texture as natural photographs have them (1/f "pink" noise: detail at every scale, most of it
coarse; sigma 10 levels) and camera-like sensor noise (Gaussian, sigma 2 a channel). Neither the
gradients (which compress to nothing) nor white noise (which does not compress at all) decide the
numbers alone; a real photo of a cluttered room compresses somewhat worse, a bare wall better.
It is stored the way the worker stores a result (PNG, Pillow's default level 6): that PNG is the
first row, and its time is the worker's encode. Every other row is `api.renditions.encode` on that
PNG, exactly what the first request for a rendition costs: decode the PNG, scale (`thumbnail`,
reducing gap 2, Lanczos) and encode. Medians of `--reps` repetitions after one warm-up, in one
process, one thread.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from api.renditions import Rendition, encode

SIDES: tuple[int | None, ...] = (None, 1280, 800)
FORMATS = ("png", "jpeg", "webp")


def pink_noise(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """[H,W] float32, mean 0, sigma 1: amplitude 1/f in every direction. Made at half size (the FFT
    of 12 MP costs a gigabyte) and scaled up: the finest detail is the sensor noise's."""
    h, w = max(1, height // 2), max(1, width // 2)
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    frequency = np.hypot(fx, fy)
    frequency[0, 0] = np.inf  # no constant term
    shape = (h, fx.shape[1])
    spectrum = (rng.normal(size=shape) + 1j * rng.normal(size=shape)) / frequency
    field = np.fft.irfft2(spectrum, s=(h, w)).astype(np.float32)
    field = (field - field.mean()) / field.std()
    return np.asarray(Image.fromarray(field, "F").resize((width, height), Image.Resampling.BILINEAR))


def room(width: int, height: int, seed: int = 0) -> Image.Image:
    """Wall, window, floor and skirting in gradients, with camera-like noise (see the docstring)."""
    y = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]
    x = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :]
    ones = np.ones((height, width), np.float32)
    wall = np.stack([(232 - 30 * y + 8 * x) * ones, (226 - 26 * y) * ones, (214 - 30 * y + 4 * x) * ones], -1)
    grain = np.sin(60 * x + 3 * np.sin(9 * y)) * ones
    wood = np.stack([150 + 20 * grain, 108 + 12 * grain, 72 + 6 * grain], -1)
    pixels = np.where((y > 0.68)[..., None], wood, wall)
    pixels[(x > 0.62) & (x < 0.86) & (y > 0.12) & (y < 0.5)] = (182, 210, 238)  # the window
    pixels[np.broadcast_to((y > 0.66) & (y < 0.69), (height, width))] = (245, 245, 240)  # the skirting
    rng = np.random.default_rng(seed)
    pixels += 10.0 * pink_noise(width, height, rng)[..., None]
    pixels += rng.normal(0.0, 2.0, pixels.shape).astype(np.float32)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def median_seconds(run: Callable[[], bytes], reps: int) -> tuple[float, bytes]:
    """The median wall time of `run()` over `reps` repetitions after a warm-up, and its last answer."""
    answer = run()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        answer = run()
        times.append(time.perf_counter() - start)
    return statistics.median(times), answer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--size", default="4000x3000", help="WIDTHxHEIGHT of the result")
    parser.add_argument("--json", type=Path, help="also write every row here")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    picture = room(width, height)

    def worker_png() -> bytes:
        out = io.BytesIO()
        picture.save(out, "PNG")  # as worker/preview_job.py stores the result
        return out.getvalue()

    png_seconds, stored = median_seconds(worker_png, args.reps)
    rows: list[dict[str, Any]] = [{"format": "png (the result)", "side": None, "size": f"{width}x{height}",
             "bytes": len(stored), "seconds": png_seconds}]  # fmt: skip
    for fmt in FORMATS:
        for side in SIDES:
            wanted = Rendition.of(fmt, side, (width, height))  # type: ignore[arg-type]
            if wanted.is_result:
                continue  # the first row: served as stored, never encoded again
            seconds, data = median_seconds(lambda w=wanted: encode(stored, w), args.reps)
            shown = Image.open(io.BytesIO(data)).size
            rows.append({"format": fmt, "side": side, "size": f"{shown[0]}x{shown[1]}",
                         "bytes": len(data), "seconds": seconds})  # fmt: skip

    def decode() -> bytes:
        with Image.open(io.BytesIO(stored)) as image:
            image.load()
        return stored

    decode_seconds, _ = median_seconds(decode, args.reps)
    print(f"`{' '.join(['bench/bench_renditions.py', *sys.argv[1:]])}`: median of {args.reps}, one thread\n")
    print("| format | max_side | size | bytes | vs the PNG | time (ms) |")
    print("| --- | --- | --- | ---: | ---: | ---: |")
    for row in rows:
        share = 100 * row["bytes"] / len(stored)
        print(
            f"| {row['format']} | {row['side'] or 'full'} | {row['size']} | {row['bytes']:,} | {share:.3g}% "
            f"| {1000 * row['seconds']:.0f} |"
        )
    print(f"\nDecoding the stored PNG alone: {1000 * decode_seconds:.0f} ms, part of every rendition's time.")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
