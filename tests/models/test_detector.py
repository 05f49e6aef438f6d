"""Acceptance 2: annotation end to end on the tiny detector, and the box choice on fixed detections."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from models.detector import (
    COCO_LABELS,
    SETTING,
    Detection,
    DetectorNotFoundError,
    NoObjectDetected,
    annotate_photos,
    choose_detection,
    load_detector,
    preferred_classes,
)

COUCH = Detection("couch", 0.80, (10, 10, 90, 60))
CHAIR = Detection("chair", 0.95, (5, 5, 30, 30))
PERSON = Detection("person", 0.99, (0, 0, 20, 80))
WEAK_COUCH = Detection("couch", 0.30, (12, 12, 88, 58))


class FixedDetector:
    """Stands in for DETR: returns the given detections per photo, in order."""

    def __init__(self, per_photo: list[list[Detection]]) -> None:
        self.per_photo = per_photo
        self.calls: list[int] = []

    def detect(self, images: list[Image.Image], *, floor: float = 0.0) -> list[list[Detection]]:
        self.calls.append(len(images))
        return [self.per_photo.pop(0) for _ in images]


def photos(count: int) -> list[Image.Image]:
    return [Image.new("RGB", (100, 80), (i * 40, 90, 120)) for i in range(count)]


@pytest.mark.parametrize(
    ("label", "expected"),
    [
        (None, PERSON),  # no hint: the highest score
        ("couch", COUCH),  # the hint beats a higher-scoring other class
        ("Sofa", COUCH),  # a shop's word for it
        ("chair", CHAIR),
        ("lamp", PERSON),  # not a COCO class: no preference
        ("bed", PERSON),  # hinted class not found: fall back to the best of all
    ],
)
def test_label_preference(label: str | None, expected: Detection) -> None:
    assert choose_detection([COUCH, CHAIR, PERSON], label=label, threshold=0.5) == expected


def test_threshold_applies_before_the_label_preference() -> None:
    # the only couch is below the threshold: the chair wins rather than a weak couch
    assert choose_detection([WEAK_COUCH, CHAIR], label="couch", threshold=0.5) == CHAIR
    assert choose_detection([WEAK_COUCH, CHAIR], label="couch", threshold=0.2) == WEAK_COUCH
    assert choose_detection([WEAK_COUCH], threshold=0.5) is None
    assert choose_detection([], threshold=0.0) is None


def test_equal_scores_prefer_the_larger_box() -> None:
    small, large = Detection("couch", 0.9, (0, 0, 10, 10)), Detection("couch", 0.9, (0, 0, 50, 40))
    assert choose_detection([small, large]) == large


def test_preferred_classes() -> None:
    assert preferred_classes("couch") == ("couch",)
    assert preferred_classes("potted plant") == ("potted plant",)
    assert preferred_classes("toaster") == ("toaster",)  # any COCO class name works as is
    assert preferred_classes("spaceship") == ()
    assert preferred_classes(None) == ()


def test_annotate_mixes_given_and_detected_boxes() -> None:
    detector = FixedDetector([[COUCH, CHAIR], [WEAK_COUCH]])
    result = annotate_photos(
        photos(3),
        detector=detector,  # type: ignore[arg-type]
        boxes=[None, [1, 2, 30, 40], None],
        label="couch",
        names=["a.jpg", "b.jpg", "c.jpg"],
    )
    assert detector.calls == [2]  # only the photos without a given box are detected
    first, given, weak = result
    assert (first.box, first.label, first.score, first.source) == (COUCH.box, "couch", 0.80, "detected")
    assert (given.box, given.source, given.score) == ((1.0, 2.0, 30.0, 40.0), "given", None)
    assert not weak.usable and weak.box is None
    assert "0.5" in (weak.reason or "") and "0.30" in (weak.reason or "")


def test_a_given_box_wins_over_any_detection() -> None:
    detector = FixedDetector([])
    [annotation] = annotate_photos(photos(1), detector=detector, boxes=[[0, 0, 500, 500]])  # type: ignore[arg-type]
    assert detector.calls == []
    assert annotation.box == (0.0, 0.0, 100.0, 80.0)  # clipped to the 100x80 photo
    assert annotation.source == "given"


def test_nothing_found_fails_with_the_code_and_the_photo_names() -> None:
    detector = FixedDetector([[WEAK_COUCH], []])
    with pytest.raises(NoObjectDetected) as caught:
        annotate_photos(photos(2), detector=detector, threshold=0.5, names=["front.jpg", "side.jpg"])  # type: ignore[arg-type]
    assert caught.value.code == "no_object_detected"
    message = str(caught.value)
    assert "front.jpg" in message and "side.jpg" in message


def test_one_unusable_photo_does_not_fail_the_subject() -> None:
    detector = FixedDetector([[], [COUCH]])
    result = annotate_photos(photos(2), detector=detector)  # type: ignore[arg-type]
    assert [a.usable for a in result] == [False, True]


def test_bad_boxes_argument() -> None:
    with pytest.raises(ValueError, match="2 entries for 3 photos"):
        annotate_photos(photos(3), detector=None, boxes=[None, None])
    with pytest.raises(ValueError, match="nothing of the"):
        annotate_photos(photos(1), detector=None, boxes=[[200, 200, 300, 300]])


def test_tiny_detector_end_to_end(tmp_path: Path) -> None:
    """Built, saved, read back with from_pretrained(folder), run on real photos: the structure is
    right (its random weights make the boxes themselves meaningless, hence threshold 0)."""
    detector = load_detector("tiny", tiny_dir=tmp_path / "detr")
    assert (tmp_path / "detr" / "config.json").is_file()
    assert detector.model.config.id2label[63] == "couch" and len(COCO_LABELS) == 91
    images = [Image.new("RGB", (160, 120), (200, 30, 30)), Image.new("RGB", (90, 140), (20, 30, 200))]
    found = detector.detect(images)
    assert len(found) == 2 and all(found)
    for image, detections in zip(images, found, strict=True):
        for d in detections:
            assert d.label in COCO_LABELS and 0.0 <= d.score <= 1.0
            assert 0 <= d.box[0] <= d.box[2] <= image.width + 1e-3
            assert 0 <= d.box[1] <= d.box[3] <= image.height + 1e-3
    result = annotate_photos(images, detector=detector, label="couch", threshold=0.0)
    assert all(a.usable and a.source == "detected" for a in result)
    # the same folder loads again (the loader of the real model, no rebuild)
    again = load_detector(str(tmp_path / "detr"))
    assert [d.score for d in again.detect(images[:1])[0]] == [d.score for d in found[0]]


def test_unknown_detector_names_the_setting(tmp_path: Path) -> None:
    # a HF id that no cache holds: looked up with local_files_only, so nothing is downloaded
    with pytest.raises(DetectorNotFoundError, match=SETTING) as caught:
        load_detector("roomfit-tests/no-such-detr")
    assert caught.value.code == "model_not_found"
    with pytest.raises(DetectorNotFoundError, match=SETTING):
        load_detector(str(tmp_path / "missing-folder"))
