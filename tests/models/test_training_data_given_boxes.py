"""A shop's box reaches training as the shop meant it: thin but valid boxes train, nonsense is refused.

core.boxes (the API's `boxes` field and `roomfit train --boxes`) accepts any finite box inside the
photo with x0 < x1 and y0 < y1, so the engine must train on every such box: a ValueError from
annotation is a worker's `internal_error`, not an answer a shop can act on.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from models.base_model import BaseModel
from models.detector import annotate_photos
from models.subject_training import annotate_and_train
from models.training import TrainSettings
from models.training_pairs import SubjectPhoto, make_pair
from tests.models.conftest import random_room

SIZE = (100, 80)


@pytest.mark.parametrize(
    "box",
    [
        [10.0, 10.0, 10.5, 50.0],  # half a pixel wide: a pole, a lamp's stand
        [10.0, 30.2, 60.0, 30.9],  # less than a pixel high
        [99.5, 0.0, 100.0, 80.0],  # the last half column of the photo
        [0.25, 0.25, 0.75, 0.75],  # inside the first pixel
    ],
)
def test_a_sub_pixel_box_inside_the_photo_is_kept(box: list[float]) -> None:
    [annotation] = annotate_photos([Image.new("RGB", SIZE)], detector=None, boxes=[box])
    assert annotation.usable and annotation.source == "given"
    assert annotation.box == tuple(box)
    # and it makes a pair whose paint mask covers the pixels the box touches
    photo = SubjectPhoto(random_room(*SIZE, seed=2), annotation.box)
    for seed in range(5):
        pair = make_pair(photo, np.random.default_rng(seed), resolution=32)
        obj = pair.object_mask.bool()
        assert obj.any() and pair.paint_mask.bool()[obj].all()


def test_a_half_pixel_wide_box_trains(own_base: BaseModel) -> None:
    images = [random_room(*SIZE, seed=s) for s in range(2)]
    boxes = [[10.0, 10.0, 10.5, 50.0], [20.0, 20.0, 60.0, 60.0]]
    outcome = annotate_and_train(own_base, images, TrainSettings(steps=1, batch_size=2), boxes=boxes)
    assert [a.source for a in outcome.annotations] == ["given", "given"]
    assert len(outcome.result.summary.losses) == 1


@pytest.mark.parametrize(
    "box",
    [
        [math.nan, 10.0, 50.0, 50.0],
        [10.0, 10.0, math.nan, 50.0],
        [10.0, 10.0, math.inf, math.nan],
        [-math.inf, -math.inf, math.inf, math.inf],
    ],
)
def test_a_box_that_is_not_numbers_is_refused_not_read_as_the_whole_photo(box: list[float]) -> None:
    # min/max let a NaN through as the other operand: [nan, 10, 50, 50] became [0, 10, 50, 50]
    with pytest.raises(ValueError, match="box"):
        annotate_photos([Image.new("RGB", SIZE)], detector=None, boxes=[box])


@pytest.mark.parametrize("box", [[10.0, 10.0, 10.0, 50.0], [20.0, 10.0, 10.0, 50.0], [0, 0, 0, 0]])
def test_an_empty_or_reversed_box_is_still_refused(box: list[float]) -> None:
    with pytest.raises(ValueError, match="nothing of the"):
        annotate_photos([Image.new("RGB", SIZE)], detector=None, boxes=[box])
