"""`roomfit paint` end to end on the tiny model (the command as cli/main.py registers it)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from cli.engine import paint
from models import BaseModel
from tests.models.conftest import make_adapter_bytes, random_room


@pytest.fixture
def app(tiny_folder: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[typer.Typer]:
    from core.settings import get_settings

    monkeypatch.setenv("ROOMFIT_BASE_MODEL", str(tiny_folder))  # the session's tiny folder, as a local folder
    monkeypatch.setenv("ROOMFIT_DEVICE", "cpu")
    get_settings.cache_clear()
    application = typer.Typer()
    application.command()(paint)
    application.command("noop", hidden=True)(lambda: None)  # keep `paint` a named subcommand
    yield application
    get_settings.cache_clear()


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    room = random_room(130, 97)
    mask = np.zeros((97, 130), np.uint8)
    mask[20:60, 40:100] = 255
    paths = {"room": tmp_path / "room.jpg", "mask": tmp_path / "mask.png", "reference": tmp_path / "ref.png"}
    room.save(paths["room"], quality=95)
    Image.fromarray(mask).save(paths["mask"])
    random_room(40, 50, seed=3).save(paths["reference"])
    return paths


def run(app: typer.Typer, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["paint", *args])
    return result.exit_code, result.output


def test_paint_with_a_reference(app, files, tmp_path: Path) -> None:
    out = tmp_path / "out.png"
    code, output = run(
        app,
        *("--room", str(files["room"]), "--mask", str(files["mask"])),
        *("--reference", str(files["reference"]), "--out", str(out), "--seed", "3", "--steps", "2"),
    )
    assert code == 0, output
    result = np.asarray(Image.open(out))
    room = np.asarray(Image.open(files["room"]).convert("RGB"))
    keep = np.asarray(Image.open(files["mask"])) == 0
    assert result.shape == room.shape
    assert np.array_equal(result[keep], room[keep])
    assert (result[~keep] != room[~keep]).any()


def test_paint_with_an_adapter_and_its_errors(app, files, base: BaseModel, painter, tmp_path: Path) -> None:
    adapter = tmp_path / "a.safetensors"
    adapter.write_bytes(make_adapter_bytes(base, 1))
    common = ("--room", str(files["room"]), "--mask", str(files["mask"]), "--steps", "2")
    code, output = run(app, *common, "--adapter", str(adapter), "--out", str(tmp_path / "o.png"))
    assert code == 0, output

    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(adapter.read_bytes()[:-50])
    code, output = run(app, *common, "--adapter", str(broken), "--out", str(tmp_path / "x.png"))
    assert code == 2 and "adapter_corrupt" in output

    code, output = run(app, *common, "--out", str(tmp_path / "y.png"))  # neither reference nor adapter
    assert code != 0
