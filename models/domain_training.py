"""Domain pretraining over scene photos (the paper's LSUN-bedroom stage): no product, so each pair
masks a random box of a random photo and uses that box's crop as the reference.

The paper's values for this stage: every UNet weight ("full" mode) at lr 1e-6 (docs/method.md).

Streamed, so it scales to the paper's 300k photos: the run holds the sorted list of file paths,
never the photos. Each pair opens the photo it draws (EXIF-transposed, bounded to a longer side of
`SCENE_SIDE_FACTOR` x the model's resolution, decoded at a reduced scale where the format allows)
and drops it once the pair is made. A photo that cannot be read is skipped with a warning and
another is drawn. Resuming checks the file list (names, sizes, modification times), not the pixels.

    files = scene_files([Path("data/bedrooms")])        # a folder's images, sorted
    result = train_domain(base, files, checkpoint_dir=Path("var/ckpt/bedrooms"))
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from models.augmentation import random_box
from models.base_model import BaseModel
from models.conditioning import product_embedding
from models.errors import InvalidImageError
from models.images import list_images, open_image
from models.training import ProgressCallback, TrainResult, TrainSettings, fine_tune
from models.training_pairs import SubjectPhoto, TrainingPair, make_pair

log = logging.getLogger("roomfit.models")

DOMAIN_LEARNING_RATE = 1e-6
DOMAIN_SETTINGS = TrainSettings(mode="full", learning_rate=DOMAIN_LEARNING_RATE)

# A scene photo is bounded to a longer side of 4 R (R: the training resolution) before its pair is
# cut: at most 16 R^2 pixels, the same bound as a room's crop buffers (`crop_plan.work_bound`), so a
# 50 MP photo costs what a 3 MP one does. Nothing the model sees is lost: `random_box` makes boxes of
# at least 0.3 of each side, so a pair's crop square (the box's longer side plus a margin of at least
# 0.15 of it on each side, `AugmentSettings.crop_margin`) spans at least 0.39 of the photo's longer
# side, i.e. >= 1.56 R of the bounded photo's pixels, and is still scaled down to R.
SCENE_SIDE_FACTOR = 4
# Draws in a row that may hit unreadable photos before a pair gives up: with half the photos broken
# that happens once in 4e9 pairs; past it, the folder is more broken than a run should paper over.
MAX_UNREADABLE_IN_A_ROW = 32
# what Pillow raises for a damaged file (OSError covers UnidentifiedImageError and truncation)
_UNREADABLE = (OSError, InvalidImageError, Image.DecompressionBombError, ValueError, SyntaxError)


def scene_files(paths: Iterable[Path | str]) -> list[Path]:
    """The scene photos named by `paths` (image files, or folders: their images, not recursive),
    each once, sorted by absolute path, so the same photos always give the same run."""
    found: set[Path] = set()
    for path in map(Path, paths):
        found.update(list_images(path) if path.is_dir() else [path])
    return sorted(found, key=lambda p: os.path.abspath(p))


def scene_files_digest(files: Sequence[Path]) -> str:
    """sha256 of the file list for resume checks: each file's path relative to the files' common
    folder, size in bytes and mtime_ns, in sorted order. Reads no pixels (one `stat` per file: a
    300k-photo folder in seconds). The folder may move; an edited, added or removed photo changes
    it, and so does a copy that does not keep modification times (`cp` without `-p`), which makes
    the checkpoint refused (`CheckpointMismatch`) rather than resumed on other photos."""
    absolute = sorted(os.path.abspath(f) for f in files)
    root = os.path.commonpath([os.path.dirname(f) for f in absolute]) if absolute else ""
    digest = hashlib.sha256()
    for path in absolute:
        try:
            stat = os.stat(path)
            size, mtime = stat.st_size, stat.st_mtime_ns
        except OSError:  # gone: the sampler will skip it; the digest still says so
            size, mtime = -1, -1
        digest.update(f"{os.path.relpath(path, root)}|{size}|{mtime}\n".encode())
    return digest.hexdigest()


def open_scene(path: Path, max_side: int) -> Image.Image:
    """The photo, RGB, upright (EXIF), with a longer side of at most `max_side`. JPEGs are decoded
    at 1/2, 1/4 or 1/8 scale where that still leaves `max_side` (Pillow's `draft`), so a large photo
    is never decoded whole. Raises what Pillow raises for an unreadable file, or InvalidImageError."""
    with Image.open(path) as raw:
        scale = max_side / max(raw.size)
        if scale < 1:
            raw.draft("RGB", (math.ceil(raw.width * scale), math.ceil(raw.height * scale)))
        image = open_image(raw, f"scene photo {path}")
    image.thumbnail((max_side, max_side), Image.Resampling.BICUBIC)
    return image


class _SceneReader:
    """Opens drawn photos; remembers the unreadable ones so each is warned about once. Whether a
    file is known bad or read again, the same draws follow, so a resumed run draws what it drew."""

    def __init__(self, files: Sequence[Path], max_side: int) -> None:
        self.files, self.max_side = files, max_side
        self.unreadable: dict[int, str] = {}  # file index -> why

    def read(self, index: int) -> Image.Image | None:
        if index in self.unreadable:
            return None
        path = self.files[index]
        try:
            return open_scene(path, self.max_side)
        except _UNREADABLE as exc:
            self.unreadable[index] = f"{path}: {exc}"
            log.warning("domain training: skipping unreadable scene photo %s: %s", path, exc)
            return None

    def draw(self, rng: np.random.Generator) -> Image.Image:
        """A readable photo drawn uniformly (a new draw for each unreadable one)."""
        for _ in range(MAX_UNREADABLE_IN_A_ROW):
            image = self.read(int(rng.integers(0, len(self.files))))
            if image is not None:
                return image
        raise self._none_readable(MAX_UNREADABLE_IN_A_ROW)

    def first(self) -> tuple[int, Image.Image]:
        """The first readable photo in file order, and its index."""
        tries = min(len(self.files), MAX_UNREADABLE_IN_A_ROW)
        for index in range(tries):
            image = self.read(index)
            if image is not None:
                return index, image
        raise self._none_readable(tries)

    def _none_readable(self, tries: int) -> InvalidImageError:
        return InvalidImageError(
            f"no readable scene photo in {tries} tries in a row "
            f"({len(self.unreadable)} of {len(self.files)} photos unreadable so far, the latest: "
            f"{list(self.unreadable.values())[-1]}); check the photos"
        )


def train_domain(
    base: BaseModel,
    files: Sequence[Path | str],
    settings: TrainSettings = DOMAIN_SETTINGS,
    *,
    progress: ProgressCallback | None = None,
    checkpoint_dir: Path | str | None = None,
    info: dict[str, Any] | None = None,
) -> TrainResult:
    """Pretrain on scene photos: image files or folders of them (`scene_files`), read one pair at a
    time. The artifact's reference embedding is one photo's, the first readable one in file order
    (a domain model paints no product of its own; `info["reference_photo"]` is its index)."""
    scenes = scene_files(files)
    if not scenes:
        raise ValueError("domain training needs at least one image")
    resolution = settings.resolution or base.resolution
    reader = _SceneReader(scenes, SCENE_SIDE_FACTOR * resolution)

    def sample(rng: np.random.Generator, count: int) -> list[TrainingPair]:
        pairs = []
        for _ in range(count):
            image = reader.draw(rng)
            photo = SubjectPhoto(image, random_box(image.size, rng))
            pairs.append(make_pair(photo, rng, resolution=resolution, settings=settings.augment))
        return pairs

    chosen, first = reader.first()
    _, reference_embedding = product_embedding(base, [first])  # as a product's, from its one photo
    del first  # the run keeps no photo
    return fine_tune(
        base,
        sample,
        reference_embedding=reference_embedding,
        settings=settings,
        inputs_digest=scene_files_digest(scenes),
        progress=progress,
        checkpoint_dir=checkpoint_dir,
        info={"kind": "domain", "images": len(scenes), "reference_photo": chosen, **(info or {})},
    )
