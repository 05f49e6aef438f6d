"""Acceptance 2: annotation end to end on the tiny detector, and the box choice on fixed detections."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from models.detector import (
    COCO_LABELS,
    SETTING,
    Box,
    Detection,
    DetectorNotFoundError,
    NoObjectFound,
    annotate_photos,
    choose_detection,
    load_detector,
    preferred_classes,
    product_score,
    why_unusable,
)

SIZE = (100, 80)  # every photo here is 100x80 (see `photos`)
SOFA = Detection("couch", 0.80, (10, 10, 90, 70))  # large and centred: 60% of the photo
VASE = Detection("vase", 0.97, (45, 15, 55, 35))  # small, standing on the sofa, the highest score
PERSON = Detection("person", 0.60, (0, 0, 20, 80))  # a strip at the left edge
CHAIR = Detection("chair", 0.95, (60, 30, 90, 70))  # smaller than the sofa, off centre
WEAK_COUCH = Detection("couch", 0.30, (12, 12, 88, 58))
ROOM = [VASE, SOFA, PERSON, CHAIR]


class FixedDetector:
    """Stands in for DETR: returns the given detections per photo, in order."""

    def __init__(self, per_photo: list[list[Detection]]) -> None:
        self.per_photo = per_photo
        self.calls: list[int] = []

    def detect(self, images: list[Image.Image], *, floor: float = 0.0) -> list[list[Detection]]:
        self.calls.append(len(images))
        return [self.per_photo.pop(0) for _ in images]


def photos(count: int) -> list[Image.Image]:
    return [Image.new("RGB", SIZE, (i * 40, 90, 120)) for i in range(count)]


@pytest.mark.parametrize(
    ("label", "expected"),
    [
        (None, SOFA),  # no hint: the large centred sofa, not the higher-scoring small vase on it
        ("Sofa", SOFA),  # a shop's word for couch
        ("couch", SOFA),
        ("lamp", SOFA),  # not a COCO class: as without a hint
        ("spaceship", SOFA),  # no class at all: as without a hint
        ("chair", CHAIR),  # the hint keeps only its class, however small
        ("vase", VASE),
        ("armchair", SOFA),  # chair or couch: the better product score of the two
    ],
)
def test_label_and_product_score(label: str | None, expected: Detection) -> None:
    assert choose_detection(ROOM, image_size=SIZE, label=label, threshold=0.5) == expected
    assert choose_detection(ROOM[::-1], image_size=SIZE, label=label, threshold=0.5) == expected


@pytest.mark.parametrize("label", ["bed", "tv", "dining table"])
def test_a_hinted_class_that_is_not_confident_never_falls_back(label: str) -> None:
    assert choose_detection(ROOM, image_size=SIZE, label=label, threshold=0.5) is None
    found = "found: vase 0.97, chair 0.95, couch 0.80, person 0.60"
    assert why_unusable(ROOM, label=label, threshold=0.5) == f"no {label} found with score >= 0.5 ({found})"


def test_the_threshold_applies_before_the_label() -> None:
    # the only couch is below the threshold: nothing, rather than the confident chair
    assert choose_detection([WEAK_COUCH, CHAIR], image_size=SIZE, label="couch", threshold=0.5) is None
    reason = why_unusable([WEAK_COUCH, CHAIR], label="couch", threshold=0.5)
    assert reason == "no couch found with score >= 0.5 (found: chair 0.95; best couch 0.30)"
    assert choose_detection([WEAK_COUCH, CHAIR], image_size=SIZE, label="couch", threshold=0.2) == WEAK_COUCH
    # without a hint the threshold alone decides who competes: the larger weak couch does not
    assert choose_detection([WEAK_COUCH, CHAIR], image_size=SIZE, threshold=0.5) == CHAIR
    assert choose_detection([WEAK_COUCH, CHAIR], image_size=SIZE, threshold=0.2) == WEAK_COUCH


def test_nothing_confident() -> None:
    assert choose_detection([WEAK_COUCH], image_size=SIZE, threshold=0.5) is None
    assert choose_detection([], image_size=SIZE, threshold=0.0) is None
    assert why_unusable([WEAK_COUCH], threshold=0.5) == "no object found with score >= 0.5 (best couch 0.30)"
    assert (
        why_unusable([], label="lamp", threshold=0.5)
        == "no object found with score >= 0.5 (nothing detected)"
    )
    assert (
        why_unusable([], label="sofa", threshold=0.5) == "no couch found with score >= 0.5 (nothing detected)"
    )


def test_product_score() -> None:
    assert product_score((0, 0, 100, 80), SIZE) == 1.0  # all of it, centred
    assert product_score((-50, -50, 150, 130), SIZE) == 1.0  # clamped to the photo first
    assert product_score((25, 20, 75, 60), SIZE) == pytest.approx(0.25)  # a quarter, centred
    assert product_score((0, 0, 50, 80), SIZE) == pytest.approx(0.5 * 0.75)  # centre halfway to the edge
    assert product_score((0, 0, 50, 40), SIZE) == pytest.approx(0.25 * 0.75)  # the larger offset counts
    assert product_score((0, 0, 2, 80), SIZE) == pytest.approx(0.02 * (1 - 0.5 * 0.98))  # near the edge
    assert product_score((200, 0, 300, 80), SIZE) == 0.0  # outside the photo


@pytest.mark.parametrize(
    ("edge", "centred", "winner"),
    [
        # a strip at the very edge (20% of the photo, centrality 0.6) loses to a smaller centred box (16%)
        ((0, 0, 20, 80), (34, 20, 66, 60), "centred"),
        # the left half (50%, centre halfway to the edge: 0.75) loses to a centred 42% ...
        ((0, 0, 50, 80), (20, 12, 80, 68), "centred"),
        # ... but beats a centred 35%: it is more than 4/3 of its size
        ((0, 0, 50, 80), (25, 12, 75, 68), "edge"),
    ],
)
def test_a_large_box_at_the_edge_against_a_smaller_centred_one(edge: Box, centred: Box, winner: str) -> None:
    at_edge, in_centre = Detection("couch", 0.9, edge), Detection("couch", 0.9, centred)
    expected = at_edge if winner == "edge" else in_centre
    for pool in ([at_edge, in_centre], [in_centre, at_edge]):
        assert choose_detection(pool, image_size=SIZE) == expected


def test_equal_product_scores_go_to_the_higher_detection_score() -> None:
    left, right = Detection("couch", 0.7, (0, 0, 50, 80)), Detection("couch", 0.9, (50, 0, 100, 80))
    assert product_score(left.box, SIZE) == product_score(right.box, SIZE)
    assert choose_detection([left, right], image_size=SIZE) == right
    assert choose_detection([right, left], image_size=SIZE) == right


def test_preferred_classes() -> None:
    assert preferred_classes("couch") == ("couch",)
    assert preferred_classes("potted plant") == ("potted plant",)
    assert preferred_classes("toaster") == ("toaster",)  # any COCO class name works as is
    assert preferred_classes("spaceship") == ()
    assert preferred_classes("lamp") == ()
    assert preferred_classes(None) == ()


@pytest.mark.parametrize("label", ["sofa", None])
def test_annotate_picks_the_sofa_over_the_vase_on_it(label: str | None) -> None:
    [annotation] = annotate_photos(photos(1), detector=FixedDetector([ROOM]), label=label)  # type: ignore[arg-type]
    assert (annotation.box, annotation.label, annotation.score) == (SOFA.box, "couch", 0.80)


def test_annotate_mixes_given_and_detected_boxes() -> None:
    detector = FixedDetector([[SOFA, CHAIR], [WEAK_COUCH, CHAIR]])
    result = annotate_photos(
        photos(3),
        detector=detector,  # type: ignore[arg-type]
        boxes=[None, [1, 2, 30, 40], None],
        label="couch",
        names=["a.jpg", "b.jpg", "c.jpg"],
    )
    assert detector.calls == [2]  # only the photos without a given box are detected
    first, given, weak = result
    assert (first.box, first.label, first.score, first.source) == (SOFA.box, "couch", 0.80, "detected")
    assert (given.box, given.source, given.score) == ((1.0, 2.0, 30.0, 40.0), "given", None)
    assert not weak.usable and weak.box is None and weak.label is None  # not the confident chair
    assert weak.reason == "no couch found with score >= 0.5 (found: chair 0.95; best couch 0.30)"


def test_a_given_box_wins_over_any_detection() -> None:
    detector = FixedDetector([])
    [annotation] = annotate_photos(photos(1), detector=detector, boxes=[[0, 0, 500, 500]])  # type: ignore[arg-type]
    assert detector.calls == []
    assert annotation.box == (0.0, 0.0, 100.0, 80.0)  # clipped to the 100x80 photo
    assert annotation.source == "given"


def test_nothing_found_fails_with_the_code_and_the_photo_names() -> None:
    detector = FixedDetector([[WEAK_COUCH], []])
    with pytest.raises(NoObjectFound) as caught:
        annotate_photos(photos(2), detector=detector, threshold=0.5, names=["front.jpg", "side.jpg"])  # type: ignore[arg-type]
    assert caught.value.code == "no_object_found"
    message = str(caught.value)
    assert "front.jpg: no object found with score >= 0.5 (best couch 0.30)" in message
    assert "side.jpg: no object found with score >= 0.5 (nothing detected)" in message


def test_a_hinted_class_missing_everywhere_fails_naming_it() -> None:
    detector = FixedDetector([[SOFA, VASE], [VASE]])
    with pytest.raises(NoObjectFound) as caught:
        annotate_photos(photos(2), detector=detector, label="bed", names=["front.jpg", "side.jpg"])  # type: ignore[arg-type]
    assert caught.value.code == "no_object_found"
    message = str(caught.value)
    assert "front.jpg: no bed found with score >= 0.5 (found: vase 0.97, couch 0.80)" in message
    assert "side.jpg: no bed found with score >= 0.5 (found: vase 0.97)" in message


def test_one_unusable_photo_does_not_fail_the_subject() -> None:
    detector = FixedDetector([[], [SOFA]])
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
    # no hint: its random classes need not include a couch, and at threshold 0 everything is confident
    result = annotate_photos(images, detector=detector, threshold=0.0)
    assert all(a.usable and a.source == "detected" and a.label in COCO_LABELS for a in result)
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
