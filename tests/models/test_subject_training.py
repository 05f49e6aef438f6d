"""annotate_and_train: a lazy detector, the on_annotated hook, and what happens when the device runs
out of memory (simulated: the first training runs raise torch.OutOfMemoryError)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from PIL import Image

from models import subject_training
from models.adapter_format import read_adapter
from models.base_model import BaseModel
from models.detector import Detection, NoObjectFound, PhotoAnnotation
from models.errors import TrainingOutOfMemory
from models.subject_training import annotate_and_train
from models.training import TrainSettings
from models.training_checkpoint import checkpoint_step
from tests.models.training_fixtures import views

FAST = TrainSettings(steps=2, batch_size=2, learning_rate=1e-3, seed=3)
PHOTOS = views("checker", range(2))
IMAGES = [p.image for p in PHOTOS]


class StubDetector:
    """Stands in for DETR: finds the product at its true box in every photo it is given."""

    def __init__(self) -> None:
        self.seen: list[int] = []

    def detect(self, images: list[Image.Image], *, floor: float = 0.0) -> list[list[Detection]]:
        self.seen.append(len(images))
        boxes = {id(p.image): p.box for p in PHOTOS}
        return [[Detection("couch", 0.9, boxes[id(image)])] for image in images]


class Loads:
    """A detector factory that counts its calls."""

    def __init__(self) -> None:
        self.calls = 0
        self.detector = StubDetector()

    def __call__(self) -> StubDetector:
        self.calls += 1
        return self.detector


def test_given_boxes_train_without_loading_the_detector(own_base: BaseModel) -> None:
    loads = Loads()
    events: list[tuple[str, int]] = []
    outcome = annotate_and_train(
        own_base,
        IMAGES,
        FAST,
        boxes=[list(p.box) for p in PHOTOS],
        detector=loads,  # type: ignore[arg-type]
        on_annotated=lambda notes: events.append(("annotated", len(notes))),
        progress=lambda p: events.append(("step", p.step)),
        info={"subject": "sub_1"},
    )
    assert loads.calls == 0
    assert events == [("annotated", 2), ("step", 1), ("step", 2)]  # the hook runs once, before training
    assert [a.source for a in outcome.annotations] == ["given", "given"]
    assert outcome.micro_batch_size == FAST.batch_size  # the whole batch per pass, as asked
    info = read_adapter(outcome.result.artifact).info
    assert info["subject"] == "sub_1" and info["photos"] == 2 and info["steps"] == 2


def test_a_missing_box_loads_the_detector_once(own_base: BaseModel) -> None:
    loads = Loads()
    seen: list[list[PhotoAnnotation]] = []
    steps: list[tuple[int, int]] = []  # (on_annotated calls so far, step)
    outcome = annotate_and_train(
        own_base,
        IMAGES,
        FAST,
        boxes=[list(PHOTOS[0].box), None],
        detector=loads,  # type: ignore[arg-type]
        label="couch",
        names=["front.jpg", "side.jpg"],
        on_annotated=seen.append,
        progress=lambda p: steps.append((len(seen), p.step)),
    )
    assert loads.calls == 1 and loads.detector.seen == [1]  # only the photo without a box is detected
    assert seen == [outcome.annotations]
    first, second = outcome.annotations
    assert (first.name, first.source) == ("front.jpg", "given")
    assert (second.name, second.source, second.box) == ("side.jpg", "detected", PHOTOS[1].box)
    assert steps == [(1, 1), (1, 2)]


def test_no_usable_box_raises_before_training(own_base: BaseModel) -> None:
    class FindsNothing:
        def detect(self, images: list[Image.Image], *, floor: float = 0.0) -> list[list[Detection]]:
            return [[] for _ in images]

    annotated: list[object] = []
    with pytest.raises(NoObjectFound) as caught:
        annotate_and_train(own_base, IMAGES, FAST, detector=FindsNothing(), on_annotated=annotated.append)  # type: ignore[arg-type]
    assert caught.value.code == "no_object_found" and annotated == []


@pytest.fixture
def out_of_memory(monkeypatch: pytest.MonkeyPatch) -> Callable[[int], list[tuple[int, int, Path | None]]]:
    """`out_of_memory(n)`: the device runs out of memory in the first n training runs, after their
    first step (checkpointed); returns the (batch, micro-batch, checkpoint folder) of every run."""

    def install(failures: int) -> list[tuple[int, int, Path | None]]:
        runs: list[tuple[int, int, Path | None]] = []
        real = subject_training.train_subject

        def train_subject(base, photos, settings, **kwargs):  # type: ignore[no-untyped-def]
            runs.append((settings.batch_size, settings.micro_batch_size, kwargs.get("checkpoint_dir")))
            if len(runs) > failures:
                return real(base, photos, settings, **kwargs)

            def progress(p) -> None:  # type: ignore[no-untyped-def]
                raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

            return real(base, photos, settings, **{**kwargs, "progress": progress})

        monkeypatch.setattr(subject_training, "train_subject", train_subject)
        return runs

    return install


def test_out_of_memory_goes_on_at_half_the_micro_batch_from_the_checkpoint(
    own_base: BaseModel, out_of_memory, tmp_path: Path
) -> None:
    runs = out_of_memory(2)
    settings = TrainSettings(steps=3, batch_size=4, seed=3, checkpoint_every=1, lora_dropout=0.0)
    boxes = [list(p.box) for p in PHOTOS]
    outcome = annotate_and_train(own_base, IMAGES, settings, boxes=boxes, checkpoint_dir=tmp_path)
    # the batch per step stays the paper's; only the pairs per forward pass shrink
    assert runs == [(4, 4, tmp_path), (4, 2, tmp_path), (4, 1, tmp_path)]
    assert outcome.micro_batch_size == 1
    summary = outcome.result.summary
    assert summary.resumed_from_step == 2  # each failed run had checkpointed one more step
    assert read_adapter(outcome.result.artifact).info["batch_size"] == 4
    assert checkpoint_step(tmp_path) == 3
    # the same steps as a run that never ran out (micro-batching changes no draw)
    plain = annotate_and_train(own_base, IMAGES, replace(settings, checkpoint_every=0), boxes=boxes).result
    assert summary.losses == pytest.approx(plain.summary.losses, rel=1e-4)


def test_out_of_memory_at_one_pair_per_pass_gives_up(own_base: BaseModel, out_of_memory) -> None:
    runs = out_of_memory(3)
    settings = TrainSettings(steps=2, batch_size=4, micro_batch_size=2)
    with pytest.raises(TrainingOutOfMemory, match="even at one pair per pass") as caught:
        annotate_and_train(own_base, IMAGES, settings, boxes=[list(p.box) for p in PHOTOS])
    assert caught.value.code == "out_of_memory"
    assert runs == [(4, 2, None), (4, 1, None)]
