"""`roomfit eval`: the paper's evaluation on a synthetic bench, every model `tiny` (meaningless scores,
real code paths): the report's files, the painted images, resuming a killed run, bad inputs."""

from __future__ import annotations

import json
import math
import re
import statistics
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import Result
from PIL import Image
from typer.testing import CliRunner

from cli.main import app
from models import evaluation as evaluation_module
from models.eval_report import THUMB
from models.full_weights_format import file_format
from models.images import open_mask

TINY = ["--base-model", "tiny", "--dino-model", "tiny", "--clip-model", "tiny", "--inception-model", "tiny"]
FAST = [*TINY, "--steps", "2", "--batch-size", "2"]
METHODS = ("baseline", "lora", "full")
ROW = re.compile(r"^\| (\w+) \| (\d+\.\d) ± (\d+\.\d) \| (\d+\.\d) ± (\d+\.\d) \| (\d[\d.e+-]*) \|$", re.M)


def invoke(*args: str) -> Result:
    return CliRunner().invoke(app, ["eval", *args])


def error_of(result: Result) -> dict[str, Any]:
    """The JSON error line a failed command printed."""
    assert result.exit_code == 2, result.output
    [line] = [line for line in result.output.splitlines() if line.startswith('{"error"')]
    return json.loads(line)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Settings of the command: CPU, every model folder (the tiny ones, built once) in this module's own."""
    from core.settings import get_settings

    root = tmp_path_factory.mktemp("eval")
    patch = pytest.MonkeyPatch()
    patch.setenv("ROOMFIT_MODELS_DIR", str(root / "models"))
    patch.setenv("ROOMFIT_VAR_DIR", str(root / "var"))
    patch.setenv("ROOMFIT_DEVICE", "cpu")
    for name in ("ROOMFIT_TRAIN_STEPS", "ROOMFIT_PREVIEW_STEPS", "ROOMFIT_LORA_RANK"):
        patch.delenv(name, raising=False)
    get_settings.cache_clear()
    yield root
    patch.undo()
    get_settings.cache_clear()


@dataclass
class Run:
    bench: Path
    out: Path
    result: Result
    report: dict[str, Any]


@pytest.fixture(scope="module")
def complete(env: Path) -> Run:
    """The synthetic bench (2 subjects x 2 backgrounds, plus one photo without a box), evaluated in
    one go with every method."""
    bench = env / "bench"
    made = invoke("--make-synthetic", str(bench))
    assert made.exit_code == 0, made.output
    assert len(json.loads(made.output)["subjects"]) == 2
    subject = sorted((bench / "subjects").iterdir())[0]
    Image.open(subject / "photo0.png").save(subject / "unboxed.png")
    out = env / "complete"
    result = invoke(str(bench), "--out", str(out), *FAST)
    assert result.exit_code == 0, result.output
    return Run(bench, out, result, json.loads((out / "report.json").read_text()))


def test_eval_writes_the_report_grid_and_images(complete: Run) -> None:
    out, report = complete.out, complete.report
    assert "unboxed.png: no box in boxes.json, left out" in complete.result.output
    subjects = sorted(report["bench"]["subjects"])
    assert report["bench"]["skipped"] == [f"{subjects[0]}/unboxed.png: no box in boxes.json, left out"]
    backgrounds = report["bench"]["backgrounds"]
    assert len(subjects) == 2 and backgrounds == ["room0", "room1"]

    # report.md: one row per method, DINO and CLIP-I with their interval, and FID
    rows = {m.group(1): m.groups()[1:] for m in ROW.finditer((out / "report.md").read_text())}
    assert list(rows) == list(METHODS)
    # report.json: the same numbers, each method's mean the mean of its subjects', a t interval
    for method in METHODS:
        row, per = report["methods"][method], report["per_subject"][method]
        assert sorted(per) == subjects
        for key, shown, shown_half in (("dino", 0, 1), ("clip_i", 2, 3)):
            values = [per[s][key] for s in subjects]
            for s in subjects:  # a subject's score: the mean over its backgrounds
                assert sorted(per[s]["backgrounds"]) == backgrounds
                assert per[s][key] == pytest.approx(
                    statistics.fmean(b[key] for b in per[s]["backgrounds"].values())
                )
            assert row[key]["mean"] == pytest.approx(statistics.fmean(values))
            half = 12.706 * statistics.stdev(values) / math.sqrt(2)  # t(0.975, 1)
            assert row[key]["half_width"] == pytest.approx(half)
            assert row[key]["ci95"] == pytest.approx([row[key]["mean"] - half, row[key]["mean"] + half])
            assert row[key]["n_subjects"] == 2
            assert float(rows[method][shown]) == pytest.approx(row[key]["mean"], abs=0.051)
            assert float(rows[method][shown_half]) == pytest.approx(half, abs=0.051)
            assert 0 < row[key]["mean"] <= 100
        assert row["fid"]["value"] == pytest.approx(float(rows[method][4]), rel=1e-3)
        assert row["fid"]["real"] == 6 and row["fid"]["generated"] == 4
    assert "Student-t" in report["confidence_interval"]
    assert report["settings"]["ablations"] == {"reference_augmentation": True, "mask_augmentation": True}
    assert report["settings"]["train"]["steps"] == 2 and report["models"]["dino"] == "tiny"
    assert sorted(report["training"]) == [f"{m}/{s}" for m in ("full", "lora") for s in subjects]
    per_subject = (out / "per_subject.md").read_text()
    assert len(re.findall(r"^\| s\d-\S+ \| \w+ \| \d+\.\d \| \d+\.\d \|$", per_subject, re.M)) == 6

    with Image.open(out / "grid.png") as grid:  # rows (subject, background); room, mask, crop, methods
        assert grid.size == ((3 + len(METHODS)) * THUMB, len(subjects) * len(backgrounds) * THUMB)

    # every image painted, only inside its background's mask, and each method paints differently
    work = out / "work"
    for background in backgrounds:
        room = np.asarray(Image.open(complete.bench / "backgrounds" / f"{background}.png").convert("RGB"))
        mask = open_mask(complete.bench / "backgrounds" / f"{background}.mask.png")
        for subject in subjects:
            painted = {
                m: np.asarray(Image.open(work / "images" / m / subject / f"{background}.png"))
                for m in METHODS
            }
            for image in painted.values():
                assert image.shape == room.shape
                assert np.array_equal(image[~mask], room[~mask])
                assert not np.array_equal(image[mask], room[mask])
            assert not np.array_equal(painted["baseline"], painted["full"])
    for method, kind in (("lora", "roomfit-lora"), ("full", "roomfit-unet")):
        for subject in subjects:
            assert file_format((work / "artifacts" / method / f"{subject}.safetensors").read_bytes()) == kind


def test_a_killed_run_resumes_to_the_same_numbers(
    complete: Run, env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed at its third image (the second subject's adapter trained, none of its images painted),
    then started again: it trains and paints only what is missing, and scores as the run that was
    never stopped."""
    out = env / "resumed"
    args = [str(complete.bench), "--out", str(out), *FAST, "--methods", "lora,full"]
    trainings, paints = [], []
    real_train, real_paint = evaluation_module.annotate_and_train, evaluation_module.Evaluation._paint

    def train(*a: Any, **k: Any) -> Any:
        trainings.append(k["info"]["evaluation"])
        return real_train(*a, **k)

    kill_at = [3]

    def paint(self: Any, item: Any, *a: Any) -> None:
        paints.append(item)
        if len(paints) == kill_at[0]:
            raise RuntimeError("killed")
        real_paint(self, item, *a)

    monkeypatch.setattr(evaluation_module, "annotate_and_train", train)
    monkeypatch.setattr(evaluation_module.Evaluation, "_paint", paint)
    killed = invoke(*args)
    assert killed.exit_code != 0 and str(killed.exception) == "killed"
    images = out / "work" / "images"
    assert len(list(images.rglob("*.png"))) == 2 and not (out / "report.json").exists()
    assert len(list((out / "work" / "artifacts" / "lora").glob("*.safetensors"))) == 2
    (images / "lora" / ".junk.png.1.tmp").write_bytes(b"half a file")  # what a kill mid-write leaves

    assert trainings == sorted(complete.report["bench"]["subjects"])  # both LoRA adapters trained
    trainings.clear()
    paints.clear()
    kill_at[0] = 0
    resumed = invoke(*args, "--no-keep-full-weights")  # changes no image: the same work folder
    assert resumed.exit_code == 0, resumed.output
    artifacts = out / "work" / "artifacts"
    assert not list((artifacts / "full").glob("*.safetensors"))  # deleted once painted
    assert len(list((artifacts / "lora").glob("*.safetensors"))) == 2
    assert len(trainings) == 2  # the full fine-tunes only: both LoRA adapters were there
    assert [p.method for p in paints] == ["lora", "lora", "full", "full", "full", "full"]
    report = json.loads((out / "report.json").read_text())
    for method in ("lora", "full"):
        assert report["methods"][method] == complete.report["methods"][method]
        assert report["per_subject"][method] == complete.report["per_subject"][method]


def test_bad_inputs_are_json_errors(complete: Run, env: Path, tmp_path: Path) -> None:
    assert error_of(invoke(str(tmp_path / "nowhere"), "--out", str(tmp_path / "o"), *FAST))["error"] == (
        "bench_not_found"
    )
    empty = error_of(invoke(str(tmp_path), "--out", str(tmp_path / "o"), *FAST))
    assert empty["error"] == "invalid_bench" and "no subjects" in empty["detail"]
    (tmp_path / "b" / "subjects" / "sofa").mkdir(parents=True)
    Image.new("RGB", (32, 32)).save(tmp_path / "b" / "subjects" / "sofa" / "a.png")
    (tmp_path / "b" / "subjects" / "sofa" / "boxes.json").write_text('{"a.png": [2, 2, 20, 20]}')
    no_rooms = error_of(invoke(str(tmp_path / "b"), "--out", str(tmp_path / "o"), *FAST))
    assert no_rooms["error"] == "invalid_bench" and "no backgrounds" in no_rooms["detail"]
    assert error_of(invoke(str(complete.bench), *FAST))["error"] == "invalid_argument"  # no --out
    methods = error_of(
        invoke(str(complete.bench), "--out", str(tmp_path / "o"), *FAST, "--methods", "lora,x")
    )
    assert methods["error"] == "invalid_argument" and "x" in methods["detail"]
    model = error_of(
        invoke(
            str(complete.bench), "--out", str(tmp_path / "o"), *FAST, "--dino-model", str(tmp_path / "none")
        )
    )
    assert model["error"] == "model_not_found" and "--dino-model" in model["detail"]
    again = error_of(invoke("--make-synthetic", str(complete.bench)))
    assert again["error"] == "invalid_bench" and "not empty" in again["detail"]
    # the complete run's folder, with other settings: refused rather than mixed
    other = error_of(invoke(str(complete.bench), "--out", str(complete.out), *TINY, "--steps", "3"))
    assert other["error"] == "work_mismatch" and "train" in other["detail"]


def test_one_subject_has_no_interval_and_no_fid(env: Path, tmp_path: Path) -> None:
    """One subject, one photo, one background: no t interval (n = 1) and FID null with its reason;
    the ablation flags reach the training settings and the report."""
    from models.augmentation import NO_AUGMENTATION
    from models.eval_bench import make_synthetic_bench

    bench = make_synthetic_bench(tmp_path / "bench", subjects=1, backgrounds=1, photos=1, seed=3)
    out = tmp_path / "out"
    flags = ["--methods", "baseline", "--rank", "2", "--no-reference-augmentation", "--no-mask-augmentation"]
    result = invoke(str(bench), "--out", str(out), *FAST, *flags)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    row = report["methods"]["baseline"]
    assert row["dino"]["ci95"] is None and row["dino"]["n_subjects"] == 1
    assert row["fid"]["value"] is None and "at least 2" in row["fid"]["reason"]
    assert re.search(r"^\| baseline \| \d+\.\d \| \d+\.\d \| n/a \|$", (out / "report.md").read_text(), re.M)
    assert report["settings"]["ablations"] == {"reference_augmentation": False, "mask_augmentation": False}
    augment = report["settings"]["train"]["augment"]
    assert augment["flip_p"] == NO_AUGMENTATION.flip_p == 0 and augment["mask_shape_p"] == [1.0, 0.0, 0.0]
    assert augment["crop_margin"] != list(NO_AUGMENTATION.crop_margin)  # the framing stays as trained
    assert report["settings"]["train"]["rank"] == 2
    with Image.open(out / "grid.png") as grid:
        assert grid.size == (4 * THUMB, THUMB)


def test_help_names_the_metric_models_defaults() -> None:
    """The help states the metric models' defaults without importing them (torch): they must agree."""
    from models.metric_models import DEFAULT_CLIP, DEFAULT_DINO, DEFAULT_INCEPTION

    result = CliRunner().invoke(app, ["eval", "--help"], env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    for name in (DEFAULT_DINO, DEFAULT_CLIP, DEFAULT_INCEPTION):
        assert f"(default {name}" in result.output
