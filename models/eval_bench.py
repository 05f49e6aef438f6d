"""The evaluation benchmark (`roomfit eval`): its folder, read into memory, and a synthetic one.

    BENCH/
      subjects/<name>/*.png|jpg     a product's photos
      subjects/<name>/boxes.json    {"photo.png": [x0, y0, x1, y1], ...} in pixels; a photo without a
                                    box is left out (a message says so): no detector runs here
      backgrounds/<name>.png        a room photo (any image suffix) ...
      backgrounds/<name>.mask.png   ... and where to paint it (`models.images.open_mask`'s rule)

`load_bench` reads it all (sorted, so a run is reproducible) and hashes every file it read
(`Bench.digest`), so a report folder can tell its own bench from another. `make_synthetic_bench`
writes a small one (distinct shapes and textures on random backgrounds, exact boxes; rooms with a
rectangular or an elliptic mask) for tests and smoke runs.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from models.errors import InvalidImageError, RoomfitModelError
from models.images import list_images, open_image, open_mask
from models.training_pairs import SubjectPhoto

BOXES_FILE = "boxes.json"
MASK_SUFFIX = ".mask.png"
Reader = Callable[[Path], bytes]  # reads a file of the bench, adding it to the digest


class BenchNotFound(RoomfitModelError):
    """The benchmark folder does not exist."""

    code = "bench_not_found"


class InvalidBench(RoomfitModelError):
    """The benchmark folder is not laid out as `models.eval_bench` says (no subjects, a missing mask ...)."""

    code = "invalid_bench"


@dataclass
class BenchSubject:
    name: str
    photos: list[SubjectPhoto]  # the photos with a box, sorted by file name
    photo_names: list[str]


@dataclass
class BenchBackground:
    name: str
    room: Image.Image  # RGB
    mask: np.ndarray  # [H, W] bool, True = paint


@dataclass
class Bench:
    folder: Path
    subjects: list[BenchSubject]
    backgrounds: list[BenchBackground]
    skipped: list[str] = field(default_factory=list)  # photos left out, and why
    digest: str = ""  # sha256 over every file read: names and bytes


def load_bench(folder: Path | str) -> Bench:
    """The benchmark in `folder`; BenchNotFound / InvalidBench say what is missing or wrong."""
    folder = Path(folder)
    if not folder.is_dir():
        raise BenchNotFound(f"no benchmark folder {folder}")
    digest = hashlib.sha256()

    def read(path: Path) -> bytes:
        data = path.read_bytes()
        digest.update(f"{path.relative_to(folder).as_posix()}\0{len(data)}\0".encode())
        digest.update(data)
        return data

    skipped: list[str] = []
    subjects_dir = folder / "subjects"
    subject_dirs = sorted(p for p in subjects_dir.iterdir() if p.is_dir()) if subjects_dir.is_dir() else []
    subjects = [_load_subject(d, read, skipped) for d in subject_dirs]
    subjects = [s for s in subjects if s is not None]
    if not subjects:
        raise InvalidBench(f"{folder} has no subjects: expected subjects/<name>/ folders of product photos")
    backgrounds = _load_backgrounds(folder / "backgrounds", read)
    if not backgrounds:
        raise InvalidBench(
            f"{folder} has no backgrounds: expected backgrounds/<name>.png "
            f"with backgrounds/<name>{MASK_SUFFIX}"
        )
    return Bench(folder, subjects, backgrounds, skipped, digest.hexdigest())


def _load_subject(folder: Path, read: Reader, skipped: list[str]) -> BenchSubject | None:
    paths = list_images(folder)
    if not paths:
        return None
    boxes: dict[str, object] = {}
    if (folder / BOXES_FILE).is_file():
        try:
            boxes = json.loads(read(folder / BOXES_FILE))
        except (ValueError, RecursionError) as exc:  # RecursionError: nested too deep
            raise InvalidBench(f"{folder / BOXES_FILE} is not JSON: {exc}") from exc
        if not isinstance(boxes, dict):
            raise InvalidBench(f"{folder / BOXES_FILE} must map photo file names to [x0, y0, x1, y1]")
    unknown = sorted(set(boxes) - {p.name for p in paths})
    if unknown:
        raise InvalidBench(f"{folder / BOXES_FILE} names {unknown}, which are not photos of {folder.name}")
    photos, names = [], []
    for path in paths:
        if path.name not in boxes:
            skipped.append(f"{folder.name}/{path.name}: no box in {BOXES_FILE}, left out")
            continue
        try:
            image = open_image(read(path), f"photo {folder.name}/{path.name}")
        except InvalidImageError as exc:
            raise InvalidBench(str(exc)) from exc
        box = _check_box(boxes[path.name], image.size, f"{folder.name}/{path.name}")
        photos.append(SubjectPhoto(image, box))
        names.append(path.name)
    if not photos:
        raise InvalidBench(f"subject {folder.name} has no photo with a box in {folder / BOXES_FILE}")
    return BenchSubject(folder.name, photos, names)


def _check_box(box: object, size: tuple[int, int], what: str) -> tuple[float, float, float, float]:
    """The box clipped to the image; InvalidBench unless it is 4 numbers enclosing some pixels."""
    if not (isinstance(box, list) and len(box) == 4 and all(_is_coordinate(v) for v in box)):
        raise InvalidBench(f"{what}: a box is [x0, y0, x1, y1] in pixels, got {str(box)[:200]}")
    x0, y0 = max(0.0, float(box[0])), max(0.0, float(box[1]))
    x1, y1 = min(float(size[0]), float(box[2])), min(float(size[1]), float(box[3]))
    if not (math.isfinite(x0 + y0 + x1 + y1) and x1 > x0 and y1 > y0):
        raise InvalidBench(f"{what}: the box {box} holds no pixel of the {size[0]}x{size[1]} photo")
    return x0, y0, x1, y1


# alike: core.boxes._is_number, the same rule; models/ may not import core/, and core/ not models/
def _is_coordinate(value: object) -> bool:
    """A finite number (JSON gives NaN, Infinity, booleans and ints too large for a float too)."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _load_backgrounds(folder: Path, read: Reader) -> list[BenchBackground]:
    if not folder.is_dir():
        return []
    backgrounds = []
    for path in list_images(folder):
        if path.name.endswith(MASK_SUFFIX):
            continue
        name = path.stem
        if any(b.name == name for b in backgrounds):  # room.png and room.jpg: one mask, one image path
            raise InvalidBench(f"two backgrounds are named {name!r}: keep one image per name in {folder}")
        mask_path = folder / f"{name}{MASK_SUFFIX}"
        if not mask_path.is_file():
            raise InvalidBench(f"background {path.name} has no mask: expected {mask_path}")
        try:
            room = open_image(read(path), f"background {path.name}")
            mask = open_mask(read(mask_path), room.size)
        except InvalidImageError as exc:
            raise InvalidBench(f"background {name}: {exc}") from exc
        if not mask.any():
            raise InvalidBench(f"the mask {mask_path.name} paints nothing")
        backgrounds.append(BenchBackground(name, room, mask))
    return backgrounds


# --- a synthetic bench -------------------------------------------------------------------------

SHAPES = ("diamond", "disc", "square", "triangle", "hexagon")
TEXTURES = ("checker", "stripes", "dots", "rings", "plain")


def synthetic_product(index: int, side: int = 44, seed: int = 0) -> Image.Image:
    """RGBA: product `index`'s texture inside its shape (transparent around). Products differ in
    shape and texture (cycled) and in their two colours (seeded), one bright and one dark."""
    rng = np.random.default_rng([seed, index, 17])
    bright, dark = rng.integers(150, 256, 3), rng.integers(0, 90, 3)
    y, x = np.mgrid[0:side, 0:side]
    texture = TEXTURES[index % len(TEXTURES)]
    if texture == "checker":
        pattern = ((x // 6) + (y // 6)) % 2 == 0
    elif texture == "stripes":
        pattern = ((x + y) // 5) % 2 == 0
    elif texture == "dots":
        pattern = ((x % 9 - 4) ** 2 + (y % 9 - 4) ** 2) > 6
    elif texture == "rings":
        pattern = (np.hypot(x - side / 2, y - side / 2) // 4) % 2 == 0
    else:
        pattern = np.ones((side, side), bool)
    pixels = np.where(pattern[..., None], bright, dark).astype(np.uint8)
    shape = Image.new("L", (side, side), 0)
    draw, last = ImageDraw.Draw(shape), side - 1
    kind = SHAPES[index % len(SHAPES)]
    if kind == "diamond":
        draw.polygon([(side / 2, 0), (last, side / 2), (side / 2, last), (0, side / 2)], 255)
    elif kind == "disc":
        draw.ellipse((0, 0, last, last), 255)
    elif kind == "square":
        draw.rectangle((4, 4, last - 4, last - 4), 255)
    elif kind == "triangle":
        draw.polygon([(side / 2, 0), (last, last), (0, last)], 255)
    else:
        draw.regular_polygon((side / 2, side / 2, side / 2), 6, fill=255)
    image = Image.fromarray(pixels).convert("RGBA")
    image.putalpha(shape)
    return image


def synthetic_room(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    """A smooth two-colour gradient with some noise: a different 'room' every time."""
    width, height = size
    a, b = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    angle = rng.uniform(0, 2 * math.pi)
    y, x = np.mgrid[0:height, 0:width]
    ramp = ((np.cos(angle) * x / width + np.sin(angle) * y / height + 1) / 2)[..., None]
    pixels = a * (1 - ramp) + b * ramp + rng.normal(0, 10, (height, width, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def synthetic_photo(product: Image.Image, rng: np.random.Generator, size: tuple[int, int]) -> SubjectPhoto:
    """The product in a random pose (scale, flip, rotation, place) on a random room; its exact box."""
    side = max(8, round(product.width * rng.uniform(0.75, 1.15)))
    obj = product.resize((side, side), Image.Resampling.BILINEAR)
    if rng.random() < 0.5:
        obj = obj.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    obj = obj.rotate(rng.uniform(-25, 25), resample=Image.Resampling.BILINEAR, expand=True)
    room = synthetic_room(rng, size)
    x = int(rng.integers(0, max(1, size[0] - obj.width + 1)))
    y = int(rng.integers(0, max(1, size[1] - obj.height + 1)))
    room.paste(obj, (x, y), obj)
    x0, y0, x1, y1 = obj.getchannel("A").getbbox()
    box = (x + x0, y + y0, min(size[0], x + x1), min(size[1], y + y1))
    return SubjectPhoto(room, tuple(float(v) for v in box))


def make_synthetic_bench(
    folder: Path | str,
    subjects: int = 2,
    backgrounds: int = 2,
    photos: int = 3,
    seed: int = 0,
    size: int = 96,
) -> Path:
    """Write a bench of `subjects` products (`photos` each, exact boxes in boxes.json) and
    `backgrounds` rooms (rectangular and elliptic masks in turn) into `folder`, a new or empty one."""
    folder = Path(folder)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        what = "not empty" if folder.is_dir() else "not a folder"
        raise InvalidBench(f"a synthetic bench goes into a new or empty folder; {folder} is {what}")
    if min(subjects, backgrounds, photos) < 1:
        raise ValueError("a synthetic bench needs at least one subject, background and photo")
    rng = np.random.default_rng([seed, 4242])
    for index in range(subjects):
        name = f"s{index}-{SHAPES[index % len(SHAPES)]}-{TEXTURES[index % len(TEXTURES)]}"
        product = synthetic_product(index, side=round(size * 0.45), seed=seed)
        target = folder / "subjects" / name
        target.mkdir(parents=True)
        boxes = {}
        for n in range(photos):
            photo = synthetic_photo(product, rng, (size, size))
            photo.image.save(target / f"photo{n}.png")
            boxes[f"photo{n}.png"] = list(photo.box)
        (target / BOXES_FILE).write_text(json.dumps(boxes, indent=1))
    rooms = folder / "backgrounds"
    rooms.mkdir(parents=True)
    for index in range(backgrounds):
        room = synthetic_room(rng, (size, size))
        w, h = (round(size * rng.uniform(0.35, 0.55)) for _ in range(2))
        x0, y0 = int(rng.integers(0, size - w + 1)), int(rng.integers(0, size - h + 1))
        mask = Image.new("L", (size, size), 0)
        draw = ImageDraw.Draw(mask)
        (draw.rectangle if index % 2 == 0 else draw.ellipse)((x0, y0, x0 + w - 1, y0 + h - 1), fill=255)
        room.save(rooms / f"room{index}.png")
        mask.save(rooms / f"room{index}{MASK_SUFFIX}")
    return folder
