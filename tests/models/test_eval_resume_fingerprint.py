"""A report folder painted with one dtype is not resumed with another. The images depend on
the precision the base paints in (ROOMFIT_DTYPE), but the weights hash is of the fp32 weights, so
run.json did not tell the two runs apart and a resumed run mixed fp32 and bf16 images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from models import load_base_model
from models.eval_bench import load_bench, make_synthetic_bench
from models.evaluation import EvalSettings, Evaluation, WorkItem, WorkMismatch

SETTINGS = EvalSettings(methods=("baseline",), paint_steps=2)


def test_another_dtype_is_another_run(tiny_folder: Path, tmp_path: Path) -> None:
    bench = load_bench(make_synthetic_bench(tmp_path / "bench", subjects=1, backgrounds=1, photos=1, size=64))
    fp32 = load_base_model("tiny", tiny_dir=tiny_folder, device="cpu", dtype="float32")
    bf16 = load_base_model("tiny", tiny_dir=tiny_folder, device="cpu", dtype="bfloat16")
    assert fp32.weights_hash == bf16.weights_hash  # the hash alone cannot tell them apart

    first = Evaluation(fp32, bench, tmp_path / "out", SETTINGS)
    first.run()
    other = Evaluation(bf16, bench, tmp_path / "other", SETTINGS)
    other.run()
    item = WorkItem("baseline", bench.subjects[0].name, bench.backgrounds[0].name)
    images = [np.asarray(Image.open(e.image_path(item))) for e in (first, other)]
    assert not np.array_equal(*images)  # the dtype changes the painted pixels

    with pytest.raises(WorkMismatch, match="dtype"):
        Evaluation(bf16, bench, tmp_path / "out", SETTINGS).run()
    Evaluation(fp32, bench, tmp_path / "out", SETTINGS).run()  # the same run resumes
