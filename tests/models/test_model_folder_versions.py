"""A preset's folder is rebuilt when its version changes: `roomfit up` and the workers keep the tiny
models under fixed names (`<models dir>/tiny-pbe`), so a version bump must not find the old build."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from models.model_folder import build_folder_once, built_meta
from models.tiny import MARKER, TINY_SEED, TINY_VERSION


def builder(calls: list[str], content: str) -> Callable[[Path], None]:
    def build(staging: Path) -> None:
        calls.append(content)
        (staging / "weights.txt").write_text(content)

    return build


def test_a_folder_of_another_version_is_rebuilt_and_one_of_this_version_is_kept(tmp_path: Path) -> None:
    folder, calls = tmp_path / "tiny-pbe", []
    build_folder_once(folder, "marker.json", {"version": 1}, builder(calls, "old"))
    assert (folder / "weights.txt").read_text() == "old"

    build_folder_once(folder, "marker.json", {"version": 2}, builder(calls, "new"))
    assert (folder / "weights.txt").read_text() == "new"
    assert built_meta(folder, "marker.json") == {"version": 2}
    build_folder_once(folder, "marker.json", {"version": 2}, builder(calls, "again"))
    assert calls == ["old", "new"]  # the same version is reused, not rebuilt
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny-pbe"]  # no staging or stale folder left


def test_an_incomplete_folder_is_replaced(tmp_path: Path) -> None:
    folder, calls = tmp_path / "tiny-pbe", []
    folder.mkdir()
    (folder / "half-written.bin").write_bytes(b"\0")  # a killed build: no marker
    build_folder_once(folder, "marker.json", {"version": 2}, builder(calls, "new"))
    assert sorted(p.name for p in folder.iterdir()) == ["marker.json", "weights.txt"]


def test_the_tiny_models_folder_records_its_version(tiny_folder: Path) -> None:
    assert json.loads((tiny_folder / MARKER).read_text()) == {"version": TINY_VERSION, "seed": TINY_SEED}
    assert TINY_VERSION >= 2  # 2: the VAE's latents at unit std (tests/models/test_training.py)
