"""What checking one uploaded image reserves from the API's image-memory budget against what its
decode really holds: baseline and progressive JPEGs (4:2:0, 4:4:4, stored as sent or turned by
EXIF), a progressive CMYK JPEG and WebPs, at 12, 24 and 40 megapixels.

    PYTHONPATH=. .venv/bin/python bench/bench_decode_memory.py --sizes 12 40    # ~2 min, Linux

Each image is decoded in a fresh process (`read_header`, then `decode_image`, as the API does);
"measured" is that process's peak resident size (VmHWM, reset through /proc/self/clear_refs just
before the decode) minus what it held before, in MiB. To measure another commit's estimates, run
this file with `PYTHONPATH=/path/to/worktree`.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

SIZES = {"12": (4000, 3000), "24": (6000, 4000), "40": (7744, 5164)}

MEASURE = """
import sys, tempfile
from api.image_checks import ImageLimits, decode_image, read_header
from api.multipart import UploadedFile

def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)

data = open(sys.argv[1], "rb").read()
spooled = tempfile.SpooledTemporaryFile(max_size=1 << 20)
spooled.write(data)
spooled.seek(0)
upload = UploadedFile("room", "room", spooled, size=len(data))
header = read_header(upload, what="room", limits=ImageLimits(40_000_000, 12000, 10, 160_000_000, 0))
with open("/proc/self/clear_refs", "w") as refs:  # forget the peak so far
    refs.write("5")
before = status("VmRSS")
checked = decode_image(header)
print(len(data), header.peak_bytes(), status("VmHWM") - before, checked.as_sent)
"""


def picture(size: tuple[int, int]) -> Image.Image:
    """Smooth gradients with some row texture: compresses like a photo, cheap to make."""
    width, height = size
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :]
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    pixels = np.stack([x + 0 * y, y + 0 * x, (x + y) / 2], -1)
    pixels += np.random.default_rng(0).normal(0, 6, (height, 1, 1)).astype(np.float32)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def write_cases(folder: Path, name: str, image: Image.Image) -> list[tuple[str, Path]]:
    turned = Image.Exif()
    turned[0x0112] = 6  # rotate 90°: decoded whole, not stored as sent
    with_alpha = image.convert("RGBA")
    with_alpha.paste((0, 0, 0, 0), (0, 0, image.width // 4, image.height // 4))
    cases = {
        "baseline 4:2:0, as sent": ("JPEG", image, {"quality": 85}),
        "baseline 4:2:0, turned": ("JPEG", image, {"quality": 85, "exif": turned.tobytes()}),
        "progressive 4:2:0, as sent": ("JPEG", image, {"quality": 85, "progressive": True}),
        "progressive 4:4:4, as sent": ("JPEG", image, {"quality": 85, "progressive": True, "subsampling": 0}),
        "progressive 4:4:4, turned": (
            "JPEG",
            image,
            {"quality": 85, "progressive": True, "subsampling": 0, "exif": turned.tobytes()},
        ),
        "progressive CMYK": ("JPEG", image.convert("CMYK"), {"quality": 85, "progressive": True}),
        "WebP lossy": ("WEBP", image, {"quality": 80, "method": 0}),
        "WebP with alpha": ("WEBP", with_alpha, {"quality": 80, "method": 0}),
    }
    written = []
    for index, (label, (fmt, source, options)) in enumerate(cases.items()):
        path = folder / f"{name}-{index}.{fmt.lower()}"
        source.save(path, fmt, **options)
        written.append((f"{name} {label}", path))
    return written


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", nargs="+", choices=sorted(SIZES), default=sorted(SIZES))
    args = parser.parse_args()
    mib = 2**20
    # the code measured is the one PYTHONPATH names (this tree, or another commit's worktree)
    paths = [os.path.abspath(p) for p in os.environ.get("PYTHONPATH", ".").split(os.pathsep) if p]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    print("| image (megapixels, kind) | file | reserved | measured |\n| --- | ---: | ---: | ---: |")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.sizes:
            for label, path in write_cases(Path(tmp), name, picture(SIZES[name])):
                done = subprocess.run(
                    [sys.executable, "-c", MEASURE, str(path)],
                    capture_output=True,
                    text=True,
                    check=True,
                    cwd=tmp,  # not this folder: `-c` puts the working folder first on the path
                    env=env,
                )
                size, reserved, grew = (int(v) / mib for v in done.stdout.split()[:3])
                print(f"| {label} | {size:.1f} | {reserved:.1f} | {grew:.1f} |", flush=True)
                path.unlink()


if __name__ == "__main__":
    main()
