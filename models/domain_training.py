"""Domain pretraining over scene photos (the paper's LSUN-bedroom stage): no product, so each pair
masks a random box of a random photo and uses that box's crop as the reference.

The paper's values for this stage: every UNet weight ("full" mode) at lr 1e-6 (docs/method.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from models.augmentation import random_box
from models.base_model import BaseModel
from models.conditioning import reference_embeddings
from models.training import ProgressCallback, TrainResult, TrainSettings, fine_tune
from models.training_checkpoint import training_inputs_digest
from models.training_pairs import SubjectPhoto, TrainingPair, make_pair

DOMAIN_LEARNING_RATE = 1e-6
DOMAIN_SETTINGS = TrainSettings(mode="full", learning_rate=DOMAIN_LEARNING_RATE)


def train_domain(
    base: BaseModel,
    images: Sequence[Image.Image],
    settings: TrainSettings = DOMAIN_SETTINGS,
    *,
    progress: ProgressCallback | None = None,
    checkpoint_dir: Path | str | None = None,
    info: dict[str, Any] | None = None,
) -> TrainResult:
    """Pretrain on scene photos; the artifact's reference embedding is the first photo's (a domain
    model paints no product of its own)."""
    if not images:
        raise ValueError("domain training needs at least one image")
    resolution = settings.resolution or base.resolution

    def sample(rng: np.random.Generator, count: int) -> list[TrainingPair]:
        pairs = []
        for index in rng.integers(0, len(images), size=count):
            image = images[int(index)]
            photo = SubjectPhoto(image, random_box(image.size, rng))
            pairs.append(make_pair(photo, rng, resolution=resolution, settings=settings.augment))
        return pairs

    return fine_tune(
        base,
        sample,
        reference_embedding=reference_embeddings(base, [images[0]])[0].float().cpu(),
        settings=settings,
        inputs_digest=training_inputs_digest([(im, None) for im in images]),
        progress=progress,
        checkpoint_dir=checkpoint_dir,
        info={"kind": "domain", "images": len(images), **(info or {})},
    )
