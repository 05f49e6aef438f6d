"""Model folders: where a model name leads, and building the `tiny` presets' folders once.

A setting such as `ROOMFIT_BASE_MODEL` or `ROOMFIT_DETECTOR` names a model one of three ways:
`tiny` (a small random preset built in code), an existing folder, or a Hugging Face id
(`org/name`, optionally `@revision`) already in the local cache. `find_model_folder` is that rule
for every setting; it never downloads and never falls back to another model. An id without
`@revision` is looked up at its pinned revision first (`models.model_fetch.PINNED`, what
`roomfit models fetch` downloads), then at the setting's own revisions (`main` by default).

A found folder is checked against the files its loader reads (`models.model_fetch.LAYOUTS`): a
missing file or a weight only in pickle (`.bin`) form is one line naming the setting and the
`roomfit models fetch` command, before any loader runs. The cache is asked for those config files
only (`allow_patterns`): huggingface_hub otherwise counts a partial snapshot, as a fetch leaves it
(no `model.ckpt`, no `safety_checker/`), as missing.

Several processes (the train and preview workers of `roomfit up`) may ask for the same tiny folder
at the same moment: `build_folder_once` builds into a staging folder beside it and renames it into
place, so a reader only ever sees a complete folder (its marker file is written last). A folder
whose marker records another version is rebuilt the same way.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.errors import ModelNotFoundError
from models.model_fetch import LAYOUTS, fetch_hint, lookup_revisions, split_id


@dataclass(frozen=True)
class ModelSetting:
    """How one setting's value becomes a folder, and how its errors read."""

    setting: str  # the environment variable, named in every error
    error: type[ModelNotFoundError]
    build_tiny: Callable[[Path | str | None], Path]  # the `tiny` preset: (folder or None) -> folder
    required: str  # what a folder must hold: "sub/" (a subfolder) or "file"
    required_label: str  # ... as an error names it
    folder_label: str  # what to point the setting at instead ("a model folder")
    tiny_label: str  # what `tiny` is ("the small random test model")
    revisions: tuple[str | None, ...] = (None,)  # tried in order when the id names no @revision


def find_model_folder(name: str, model: ModelSetting, tiny_dir: Path | str | None = None) -> Path:
    """The local folder `name` stands for; `model.error` naming `model.setting` when there is none."""
    if name == "tiny":
        return model.build_tiny(tiny_dir)
    path = Path(name).expanduser()
    if path.is_dir():
        inside = path / model.required
        if not (inside.is_dir() if model.required.endswith("/") else inside.is_file()):
            raise model.error(f"{model.setting}={name!r} is a folder without {model.required_label}")
        return _checked(path, name, model)
    parsed = split_id(name)
    if parsed is None:
        raise model.error(
            f"{model.setting}={name!r} is neither `tiny`, an existing folder, "
            "nor a Hugging Face id (org/name)"
        )
    repo_id, revision = parsed
    from huggingface_hub import snapshot_download

    layout = LAYOUTS.get(model.setting)
    configs = layout.configs() if layout is not None else None
    missing: Exception | None = None
    for rev in [revision] if revision else lookup_revisions(repo_id, model.revisions):
        try:
            found = snapshot_download(
                repo_id=repo_id, revision=rev, local_files_only=True, allow_patterns=configs
            )
        except Exception as exc:  # LocalEntryNotFoundError, offline errors, bad ids: all "not here"
            missing = exc
            continue
        return _checked(Path(found), name, model)
    raise model.error(
        f"{model.setting}={name!r} is not in the local Hugging Face cache and roomfit never downloads "
        f"at run time: run `{fetch_hint(model.setting, name)}` first, point "
        f"{model.setting} at {model.folder_label}, or set {model.setting}=tiny for {model.tiny_label}"
    ) from missing


def _checked(folder: Path, name: str, model: ModelSetting) -> Path:
    """`folder` when it holds every file its loader reads (as safetensors where the layout says so)."""
    layout = LAYOUTS.get(model.setting)
    problem = layout.problem(folder) if layout is not None else None
    if problem is not None:
        raise model.error(
            f"{model.setting}={name!r}: {folder} {problem}: run `{fetch_hint(model.setting, name)}` "
            f"to fetch what roomfit reads, or point {model.setting} at {model.folder_label}"
        )
    return folder


def built_meta(folder: Path, marker: str) -> dict[str, Any] | None:
    """What a built folder's marker records (version, seed...); None without a readable marker."""
    try:
        return json.loads((folder / marker).read_text())
    except (OSError, ValueError):
        return None


def build_folder_once(folder: Path, marker: str, meta: dict[str, Any], build: Callable[[Path], None]) -> Path:
    """`folder` if its `marker` records `meta`; else `build(staging)`, write the marker, rename into
    place. A folder built with other `meta` (an older version of a preset: `roomfit up` keeps its tiny
    folders under fixed names) or left incomplete is moved aside and replaced by the new build."""
    if built_meta(folder, marker) == meta:
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-build-", dir=folder.parent))
    try:
        build(staging)
        (staging / marker).write_text(json.dumps(meta))
        for _ in range(2):
            try:
                staging.rename(folder)
                break
            except OSError:
                if built_meta(folder, marker) == meta:
                    break  # another process finished the same build first: keep its folder
                _remove_aside(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def _remove_aside(folder: Path) -> None:
    """Rename `folder` out of the way, then delete it: a reader never sees it half deleted."""
    stale = Path(tempfile.mkdtemp(prefix=f".{folder.name}-stale-", dir=folder.parent))
    with contextlib.suppress(OSError):  # another process moved it aside already
        folder.rename(stale / folder.name)
    shutil.rmtree(stale, ignore_errors=True)
