"""`roomfit paint`, `train` and `adapters import` refuse a path they cannot use in one line
(exit 2) before any model loads. Before, each of these loaded the model (and `train` trained, `paint`
painted) and then ended in an `internal_error`:

- a folder where a file is read: `--adapter`, `--init-unet`, the LORA of `adapters import`
  (IsADirectoryError);
- a file where a folder is made: `train --checkpoint-dir` (FileExistsError);
- an --out under a file, `photo.png/out.png` (FileExistsError, after the whole training);
- a `paint --out` extension Pillow registers a save handler for but cannot write an RGB image with:
  `.xbm` (mode 1 only), `.grib` / `.bufr` / `.h5` (stubs without a handler) (OSError, after painting).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from core.settings import Settings
from tests.cli_inputs import ModelLoaded, stub_cli_inputs

PAINT = ["paint", "--room", "room.png", "--mask", "mask.png", "--reference", "photo.png"]
TRAIN = ["train", "photo.png", "--boxes", "[[4, 4, 40, 40]]", "--steps", "1"]
IMPORT = ["adapters", "import"]


@pytest.fixture
def files(embedded_env: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return stub_cli_inputs(tmp_path, monkeypatch)


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (
            ["paint", "--room", "room.png", "--mask", "mask.png", "--adapter", "folder", "--out", "o.png"],
            "--adapter",
        ),
        ([*PAINT, "--init-unet", "folder", "--out", "o.png"], "--init-unet"),
        ([*TRAIN, "--init-unet", "folder", "--out", "a.safetensors"], "--init-unet"),
        ([*IMPORT, "folder", "--out", "i.safetensors"], "is a directory"),
        ([*TRAIN, "--checkpoint-dir", "photo.png", "--out", "a.safetensors"], "--checkpoint-dir"),
        ([*PAINT, "--out", "photo.png/o.png"], "--out"),
        ([*TRAIN, "--out", "photo.png/deeper/a.safetensors"], "--out"),
        ([*IMPORT, "lora.safetensors", "--out", "photo.png/i.safetensors"], "--out"),
        ([*IMPORT, "lora.safetensors", "--out", "folder"], "--out"),
        ([*PAINT, "--out", "o.xbm"], "--out"),
        ([*PAINT, "--out", "o.grib"], "--out"),
        ([*PAINT, "--out", "o.h5"], "--out"),
    ],
    ids=lambda value: " ".join(value[-3:]) if isinstance(value, list) else value,
)
def test_a_path_that_cannot_be_used_is_refused_before_any_work(
    args: list[str], option: str, files: Path
) -> None:
    result = CliRunner().invoke(app, args)
    assert not isinstance(result.exception, ModelLoaded), "the path was taken and a model loaded"
    assert result.exit_code == 2, (result.output, result.exception)
    assert option in result.output


def test_usable_paths_are_still_taken(files: Path) -> None:
    """Files where files are read, a new folder for checkpoints, outputs in new folders, common
    image formats: past the checks (to the model, stubbed here)."""
    for args in (
        [*PAINT, "--out", "new/deeper/o.jpg"],
        [*PAINT, "--out", "o.webp"],
        [*TRAIN, "--checkpoint-dir", "ckpt", "--out", "new/a.safetensors"],
        [*IMPORT, "lora.safetensors", "--out", "i.safetensors"],
    ):
        assert isinstance(CliRunner().invoke(app, args).exception, ModelLoaded), args
