"""the CLI's float options refuse NaN and infinity (typer's min/max let NaN through: every
comparison with it is false), before any model loads. Before:

- `paint --guidance nan` painted without guidance and exited 0 (`nan > 1` is false: guidance off);
- `train --reference-dropout nan` trained with none and exited 0; `--dropout nan` ended in an
  `internal_error` (torch's RuntimeError); `--lr nan` failed only once the model had loaded;
- `adapters import --alpha nan` (or inf) wrote an adapter of alpha NaN and printed `"alpha": NaN`,
  which is not JSON, exit 0;
- `doctor --timeout nan` failed every service check with "no answer within nan s"."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from core.settings import Settings
from tests.cli_inputs import ModelLoaded, stub_cli_inputs

PAINT = ["paint", "--room", "room.png", "--mask", "mask.png", "--reference", "photo.png", "--out", "o.png"]
TRAIN = ["train", "photo.png", "--out", "a.safetensors", "--boxes", "[[4, 4, 40, 40]]", "--steps", "1"]
IMPORT = ["adapters", "import", "lora.safetensors", "--out", "i.safetensors"]


@pytest.fixture
def files(embedded_env: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return stub_cli_inputs(tmp_path, monkeypatch)


@pytest.mark.parametrize(
    "args",
    [
        [*PAINT, "--guidance", "nan"],
        [*PAINT, "--guidance", "inf"],
        [*PAINT, "--guidance", "-1"],  # outside the API's 0 to 20, as "21" is
        [*PAINT, "--guidance", "21"],
        [*TRAIN, "--lr", "nan"],
        [*TRAIN, "--lr", "inf"],
        [*TRAIN, "--dropout", "nan"],
        [*TRAIN, "--reference-dropout", "nan"],
        [*TRAIN, "--threshold", "nan"],
        [*IMPORT, "--alpha", "nan"],
        [*IMPORT, "--alpha", "inf"],
        ["doctor", "--timeout", "nan"],
    ],
    ids=lambda args: " ".join(args[:2] + args[-2:]),
)
def test_non_finite_numbers_are_refused_before_any_work(args: list[str], files: Path) -> None:
    result = CliRunner().invoke(app, args)
    assert not isinstance(result.exception, ModelLoaded), "the value was taken and a model loaded"
    assert result.exit_code == 2, (result.output, result.exception)
    assert args[-2] in result.output
    if "--out" in args:
        assert not (files / args[args.index("--out") + 1]).exists()


def test_finite_numbers_are_still_taken(files: Path) -> None:
    """The same options with ordinary values get past parsing (to the model, stubbed here)."""
    for args in ([*PAINT, "--guidance", "0"], [*TRAIN, "--lr", "1e-4"], [*IMPORT, "--alpha", "8"]):
        assert isinstance(CliRunner().invoke(app, args).exception, ModelLoaded), args
