"""Peak memory of painting one room, across room shapes: does the engine's memory follow the room?

    PYTHONPATH=. .venv/bin/python bench/bench_memory.py [--shapes 512x512,4000x3000,...] [--baseline-ref HEAD]

Each shape is painted in a fresh subprocess (tiny preset, CPU, one thread, 2 steps, a full mask,
the engine's own `Painter.paint`), so its peak RSS (VmHWM from /proc/self/status) is its own. The
child loads the model and paints a 64x64 room first (torch's working memory), notes VmHWM, then
builds the room and its mask and paints it. Printed: the peak, the growth over the warm process,
the room's own bytes (RGB) and the peak's ratio to the 512x512 case.

`--baseline-ref REF` also runs the engine of a git commit (`git archive REF models`, imported in
place of ./models) on `--baseline-shapes`: only shapes it survives, since before the fix a room of
65000x2 needed a 65000 x 65000 x 3 square (12.7 GB) and more.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SHAPES = "512x512,4000x3000,16000x2,65000x2,2x65000"
BASELINE_SHAPES = "512x512,4000x3000,16000x2,2x16000"
STEPS = 2


def _status_kib(field: str) -> int:
    """A `/proc/self/status` memory field (VmHWM: peak RSS, VmRSS: now), in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def child(width: int, height: int, tiny_dir: str) -> dict[str, Any]:
    """Paint one room of `width` x `height` with a full mask; runs in its own process."""
    import numpy as np
    import torch
    from PIL import Image

    from models import Painter, PaintRequest, get_base_model

    torch.set_num_threads(1)
    painter = Painter(get_base_model("tiny", device="cpu", tiny_dir=tiny_dir))
    reference = Image.fromarray(np.random.default_rng(0).integers(0, 256, (80, 60, 3), dtype=np.uint8))

    def paint(room: Image.Image) -> Image.Image:
        mask = np.ones((room.height, room.width), dtype=bool)  # the full mask
        [out] = painter.paint([PaintRequest(room, mask, seed=1, reference=reference)], steps=STEPS)
        return out

    paint(Image.new("RGB", (64, 64), (90, 120, 150)))  # warm: torch's buffers, the model's first pass
    warm_hwm = _status_kib("VmHWM")
    # a smooth room, cheap to build: a gradient along each axis
    xs = np.linspace(0, 255, width, dtype=np.float32).astype(np.uint8)
    ys = np.linspace(0, 255, height, dtype=np.float32).astype(np.uint8)
    pixels = np.empty((height, width, 3), dtype=np.uint8)
    pixels[..., 0], pixels[..., 1], pixels[..., 2] = xs[None, :], ys[:, None], 128
    room = Image.fromarray(pixels)
    del pixels
    started = time.perf_counter()
    out = paint(room)
    seconds = time.perf_counter() - started
    assert out.size == room.size
    return {
        "shape": f"{width}x{height}",
        "peak_mib": _status_kib("VmHWM") / 1024,
        "warm_mib": warm_hwm / 1024,
        "room_mib": width * height * 3 / 2**20,
        "seconds": seconds,
    }


def run_shape(shape: str, tiny_dir: Path, models_root: Path | None) -> dict[str, Any]:
    width, height = (int(v) for v in shape.lower().split("x"))
    # the engine under test: ./models, or a commit's copy put first on the path
    path = f"{models_root}:{ROOT}" if models_root else str(ROOT)
    command = [sys.executable, __file__, "--child", f"{width}x{height}", "--tiny-dir", str(tiny_dir)]
    done = subprocess.run(command, env={**os.environ, "PYTHONPATH": path}, capture_output=True, text=True)
    if done.returncode != 0:
        return {"shape": shape, "error": f"exit {done.returncode}: {done.stderr.strip().splitlines()[-1:]}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def table(title: str, rows: list[dict[str, Any]]) -> str:
    first = next((r for r in rows if r["shape"] == "512x512" and "error" not in r), None)
    lines = [
        f"**{title}**",
        "",
        "| room | room RGB | peak RSS | growth over warm | peak vs 512x512 | paint time |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['shape']} | | {r['error']} | | | |")
            continue
        ratio = f"{r['peak_mib'] / first['peak_mib']:.2f}x" if first else "-"
        lines.append(
            f"| {r['shape']} | {r['room_mib']:.1f} MiB | {r['peak_mib']:.0f} MiB "
            f"| {r['peak_mib'] - r['warm_mib']:.0f} MiB | {ratio} | {r['seconds']:.2f} s |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default=SHAPES, help="WxH,WxH,...")
    parser.add_argument("--baseline-ref", help="also measure the engine of this git commit")
    parser.add_argument("--baseline-shapes", default=BASELINE_SHAPES)
    parser.add_argument("--json", type=Path, help="write every row here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--tiny-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        width, height = (int(v) for v in args.child.split("x"))
        print(json.dumps(child(width, height, args.tiny_dir)))
        return

    from models import ensure_tiny_model

    results: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        tiny_dir = ensure_tiny_model(Path(tmp) / "tiny-pbe")
        results["this tree"] = [run_shape(s, tiny_dir, None) for s in args.shapes.split(",")]
        if args.baseline_ref:
            old = Path(tmp) / "baseline"
            old.mkdir()
            archive = subprocess.run(
                ["git", "-C", str(ROOT), "archive", args.baseline_ref, "models"],
                check=True,
                capture_output=True,
            )
            subprocess.run(["tar", "-x", "-C", str(old)], input=archive.stdout, check=True)
            results[f"engine at {args.baseline_ref}"] = [
                run_shape(s, tiny_dir, old) for s in args.baseline_shapes.split(",")
            ]
    for title, rows in results.items():
        print(table(f"{title} (tiny, {STEPS} steps, full mask, 1 thread)", rows) + "\n")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
