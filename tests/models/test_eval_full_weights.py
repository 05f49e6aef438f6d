"""`EvalSettings(keep_full_weights=False)`: a subject's full fine-tune (3.4 GB at real size) is
deleted once its images are painted, also by a resumed run that finds them all painted already
(the run before was killed between the last image and the delete)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from models import load_base_model
from models.eval_bench import load_bench, make_synthetic_bench
from models.evaluation import EvalSettings, Evaluation, WorkItem
from models.training import TrainSettings

KEPT = EvalSettings(methods=("full",), paint_steps=2, train=TrainSettings(steps=2, batch_size=1))


def test_a_resumed_run_deletes_the_full_fine_tune_the_killed_one_left(
    tiny_folder: Path, tmp_path: Path
) -> None:
    bench = load_bench(make_synthetic_bench(tmp_path / "bench", subjects=1, backgrounds=1, photos=1, size=64))
    base = load_base_model("tiny", tiny_dir=tiny_folder, device="cpu", dtype="float32")
    subject = bench.subjects[0].name
    killed = Evaluation(base, bench, tmp_path / "out", KEPT)  # as if killed before its delete
    killed.run()
    weights = killed.artifact_path("full", subject)
    image = killed.image_path(WorkItem("full", subject, bench.backgrounds[0].name))
    assert weights.is_file() and image.is_file()
    painted = image.read_bytes()

    resumed = Evaluation(base, bench, tmp_path / "out", dataclasses.replace(KEPT, keep_full_weights=False))
    resumed.run()
    assert not weights.exists()
    assert image.read_bytes() == painted  # reused, not painted again
