"""A product photo that is not 8-bit RGB (16-bit grey, transparent) is seen alike by every step of
training: the detector, the pairs, the reference, and the checkpoint's record of the inputs.

`models.images.as_rgb` is the API's reading of such an upload (16-bit grey scaled to 8 bits,
transparency laid over white). Pillow's `convert("RGB")` is not: it clips 16-bit grey to white and
shows the colour a transparent pixel hides, so the detector looked at another picture than the
one trained on, and two different 16-bit photos had the same checkpoint digest (a checkpoint of one
product resumed on another).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from models.base_model import BaseModel
from models.detector import Detector, load_detector
from models.images import as_rgb
from models.training import TrainSettings, train_subject
from models.training_checkpoint import CheckpointMismatch
from models.training_pairs import SubjectPhoto

SIZE = (64, 48)
BOX = (12.0, 10.0, 50.0, 40.0)


def grey16(seed: int) -> Image.Image:
    """A 16-bit grey photo whose every value is above 255: `convert` makes it all white."""
    values = np.random.default_rng(seed).integers(2_000, 60_000, (SIZE[1], SIZE[0]), dtype=np.uint16)
    image = Image.fromarray(values)
    assert image.mode == "I;16"
    return image


def transparent(seed: int) -> Image.Image:
    """RGBA: the same hidden colours for every seed, another alpha each."""
    rgb = np.random.default_rng(0).integers(0, 256, (SIZE[1], SIZE[0], 3), dtype=np.uint8)
    alpha = np.random.default_rng(seed).integers(0, 256, (SIZE[1], SIZE[0], 1), dtype=np.uint8)
    return Image.fromarray(np.concatenate([rgb, alpha], axis=-1))  # 4 channels of uint8: RGBA


@pytest.fixture(scope="module")
def detector(tmp_path_factory: pytest.TempPathFactory) -> Detector:
    return load_detector("tiny", tiny_dir=tmp_path_factory.mktemp("detr") / "tiny-detr")


@pytest.mark.parametrize("make", [grey16, transparent])
def test_the_detector_sees_the_pixels_training_reads(detector: Detector, make) -> None:  # type: ignore[no-untyped-def]
    photo = make(1)
    assert not np.array_equal(np.asarray(photo.convert("RGB")), np.asarray(as_rgb(photo)))  # the premise
    [as_uploaded] = detector.detect([photo])
    [as_trained] = detector.detect([as_rgb(photo)])
    assert as_uploaded == as_trained


@pytest.mark.parametrize("make", [grey16, transparent])
def test_a_subject_photo_holds_the_rgb_pixels_it_trains_on(make) -> None:  # type: ignore[no-untyped-def]
    photo = SubjectPhoto(make(1), BOX)
    assert photo.image.mode == "RGB"
    assert np.array_equal(np.asarray(photo.image), np.asarray(as_rgb(make(1))))


@pytest.mark.parametrize("make", [grey16, transparent])
def test_another_products_checkpoint_is_refused(own_base: BaseModel, tmp_path: Path, make) -> None:  # type: ignore[no-untyped-def]
    settings = TrainSettings(steps=1, batch_size=1, seed=2, checkpoint_every=1)
    train_subject(own_base, [SubjectPhoto(make(1), BOX)], settings, checkpoint_dir=tmp_path)
    # its pixels differ: the first run's state is not its own (before, it resumed from it silently)
    with pytest.raises(CheckpointMismatch):
        train_subject(own_base, [SubjectPhoto(make(2), BOX)], settings, checkpoint_dir=tmp_path)
    again = train_subject(own_base, [SubjectPhoto(make(1), BOX)], settings, checkpoint_dir=tmp_path)
    assert again.summary.resumed_from_step == 1  # the same photo still resumes
