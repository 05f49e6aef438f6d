"""Inputs for the CLI tests that check an argument is refused before any work: readable files (a
room, a mask, a photo, a LoRA file that is never read) and a folder in tmp_path, with loading the
base model stubbed to raise `ModelLoaded`, so a test can tell "refused at once" from "taken"."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.settings import get_settings


class ModelLoaded(Exception):
    """The argument was taken: the command went on to load the base model."""


def stub_cli_inputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Readable inputs and a folder in tmp_path (the working folder); loading a model raises
    `ModelLoaded`. For a test module's fixture that also takes `embedded_env`."""
    import cli.adapters
    import cli.engine
    import cli.train

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise ModelLoaded

    for module in (cli.engine, cli.train, cli.adapters):
        monkeypatch.setattr(module, "load_cli_base", refuse)
    monkeypatch.setenv("ROOMFIT_BASE_MODEL", "tiny")
    monkeypatch.setenv("ROOMFIT_DEVICE", "cpu")
    get_settings.cache_clear()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)).save(tmp_path / "room.png")
    Image.fromarray(np.full((64, 80), 255, np.uint8)).save(tmp_path / "mask.png")
    Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(tmp_path / "photo.png")
    (tmp_path / "lora.safetensors").write_bytes(b"a file: read only once the model is loaded")
    (tmp_path / "folder").mkdir()
    return tmp_path
