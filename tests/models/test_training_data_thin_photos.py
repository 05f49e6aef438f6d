"""A photo far thinner than DETR's resize can take (a shelf strip, a rail) is detected, not a crash.

DETR's processor scales the longest side to `longest_edge` (1333 for facebook/detr-resnet-50, 96 for
`tiny`) and rounds the other to whole pixels: past an aspect of twice that, the short side rounds to
0 and transformers raises ValueError, which failed the whole subject (a worker's `internal_error`,
`roomfit train`'s `invalid_argument`) for one odd photo. The command line reads photos without the
API's aspect limit, and that limit (`max_aspect_ratio`) is a setting with no upper bound.
"""

from __future__ import annotations

import pytest

from models.detector import Detector, annotate_photos, load_detector
from tests.models.conftest import random_room


@pytest.fixture(scope="module")
def detector(tmp_path_factory: pytest.TempPathFactory) -> Detector:
    return load_detector("tiny", tiny_dir=tmp_path_factory.mktemp("detr") / "tiny-detr")


@pytest.mark.parametrize("size", [(3000, 2), (2, 3000), (20_000, 3), (1, 400)])
def test_a_very_thin_photo_is_detected_within_its_own_pixels(
    detector: Detector, size: tuple[int, int]
) -> None:
    [found] = detector.detect([random_room(*size, seed=1)])
    assert found  # the tiny detector's random weights find something everywhere at floor 0
    width, height = size
    for d in found:
        assert 0 <= d.box[0] < d.box[2] <= width and 0 <= d.box[1] < d.box[3] <= height


def test_a_thin_photo_beside_normal_ones_leaves_the_subject_trainable(detector: Detector) -> None:
    photos = [random_room(160, 120, seed=2), random_room(4000, 2, seed=3)]
    notes = annotate_photos(photos, detector=detector, threshold=0.0, names=["front.jpg", "rail.jpg"])
    assert notes[0].usable and notes[0].source == "detected"
    thin = notes[1]
    assert thin.usable or thin.reason  # detected, or unusable with a reason: never an exception
    if thin.box is not None:
        x0, y0, x1, y1 = thin.box
        assert 0 <= x0 < x1 <= 4000 and 0 <= y0 < y1 <= 2
