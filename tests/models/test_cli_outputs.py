"""`roomfit paint` and `roomfit train` refuse an --out they cannot write in one JSON line (exit
2) before any work, instead of painting or training first and then failing with a traceback
(`image.save` of an unknown extension: ValueError; `write_bytes` to a folder: IsADirectoryError)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from click.testing import Result
from PIL import Image
from typer.testing import CliRunner

from cli.main import app
from tests.models.conftest import random_room


@pytest.fixture
def env(tiny_folder: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    from core.settings import get_settings

    monkeypatch.setenv("ROOMFIT_BASE_MODEL", str(tiny_folder))
    monkeypatch.setenv("ROOMFIT_DEVICE", "cpu")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    mask = np.zeros((64, 80), np.uint8)
    mask[10:40, 20:60] = 255
    paths = {"room": tmp_path / "room.png", "mask": tmp_path / "mask.png", "photo": tmp_path / "photo.png"}
    random_room(80, 64).save(paths["room"])
    Image.fromarray(mask).save(paths["mask"])
    random_room(48, 48, seed=3).save(paths["photo"])
    return paths


def _usage_error(result: Result) -> str:
    """The one-line error of a refused argument: typer's usage message or roomfit's JSON line."""
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.startswith('{"error"')]
    return json.loads(lines[0])["detail"] if lines else result.output


def test_paint_to_an_unknown_extension(env: None, files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "result"  # no extension: Pillow cannot tell the format
    result = CliRunner().invoke(
        app,
        [
            *("paint", "--room", str(files["room"]), "--mask", str(files["mask"])),
            *("--reference", str(files["photo"]), "--out", str(out), "--steps", "1"),
        ],
    )
    assert "--out" in _usage_error(result)
    assert not out.exists()


def test_train_to_a_folder(env: None, files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "adapters"
    out.mkdir()
    result = CliRunner().invoke(
        app,
        [
            *("train", str(files["photo"]), "--out", str(out), "--boxes", "[[4, 4, 40, 40]]"),
            *("--steps", "1", "--batch-size", "1"),
        ],
    )
    assert "--out" in _usage_error(result)
