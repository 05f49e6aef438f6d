"""What files each real model needs, at which pinned revision, and fetching exactly those.

roomfit never downloads at run time (`models.model_folder.find_model_folder` looks in the local
Hugging Face cache only); `roomfit models fetch` (cli/models.py) fills that cache, or a folder, ahead
of time through `fetch_model`. Both read the same `Layout`, so what is fetched is what is checked and
loaded:

- `PBE` (`ROOMFIT_BASE_MODEL`): the five subfolders `models.base_model.load_base_model` reads; not
  `model_index.json`, `safety_checker/` nor the repository's single-file `model.ckpt` (several GB, unused).
- `DETR` (`ROOMFIT_DETECTOR`), `DINO` and `CLIP` (the eval metrics' `--dino-model` / `--clip-model`):
  `config.json`, `preprocessor_config.json` and the weights.

Weights are safetensors where the repository has them. The base model and the detector are read as
safetensors only (a `.bin` is a pickle: their `Layout.pickle_ok` is False); the metric models fall back
to `pytorch_model.bin` where a repository has no safetensors. Revisions are pinned in `PINNED`;
where the sources in docs/models.md give no commit hash the pin is a named revision.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from models.errors import RoomfitModelError

# Commit hashes where public sources give one (docs/models.md says which); DETR's `no_timm` branch
# holds the checkpoint for transformers' own ResNet (main's needs timm) and no source names its commit.
PINNED: dict[str, str] = {
    "Fantasy-Studio/Paint-by-Example": "351e6427d8c28a3b24f7c751d43eb4b6735127f7",
    "facebook/detr-resnet-50": "no_timm",
    "facebook/dino-vits16": "abe3b354cb6a9b6f146096b14a4a9d7eecbcb4bd",
    "openai/clip-vit-base-patch32": "3d74acf9a28c67741b2f4f2ea7635f0aaf6f0268",
}


class ModelFetchError(RoomfitModelError):
    """A model could not be fetched (network, unknown id or revision, a repository without the files)."""

    code = "model_fetch_failed"


@dataclass(frozen=True)
class Component:
    """One folder of a model: the files its loader reads there."""

    folder: str  # "" for the repository's root
    configs: tuple[str, ...]
    # The weights' file as safetensors and as pickle (transformers names them apart: model.safetensors,
    # pytorch_model.bin); None: a folder of configs only.
    weights: tuple[str, str] | None = None

    def path(self, name: str) -> str:
        return f"{self.folder}/{name}" if self.folder else name


@dataclass(frozen=True)
class Layout:
    """What a loader reads from a model folder, and how a fetch or an error names it."""

    what: str  # "base model", for messages
    components: tuple[Component, ...]
    pickle_ok: bool  # whether a weight without safetensors may be read as its .bin (pickle) file
    fetch_command: str  # what an error tells the user to run

    def configs(self) -> list[str]:
        return [c.path(name) for c in self.components for name in c.configs]

    def choose(self, repo_files: Iterable[str]) -> list[str]:
        """The repository's files to fetch: every config, and each weight as safetensors (with its
        shards) where the repository has it, else as .bin when `pickle_ok`. ValueError says what lacks."""
        files = set(repo_files)
        chosen = [name for name in self.configs() if name in files]
        lacking = [name for name in self.configs() if name not in files]
        for component in self.components:
            if component.weights is None:
                continue
            safe, pickle = (component.path(name) for name in component.weights)
            found = _weight_files(safe, files) or (_weight_files(pickle, files) if self.pickle_ok else [])
            if found:
                chosen += found
            elif _weight_files(pickle, files):  # and not pickle_ok
                lacking.append(f"{safe} (only {pickle}, a pickle: roomfit reads safetensors only)")
            else:
                lacking.append(safe + (f" nor {pickle}" if self.pickle_ok else ""))
        if lacking:
            raise ValueError(f"has no {', '.join(lacking)}")
        return chosen

    def problem(self, folder: Path) -> str | None:
        """Why `folder` cannot be loaded as this layout (a missing file, a pickle-only weight), or None."""
        present = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
        try:
            self.choose(present)
        except ValueError as exc:
            return str(exc)
        return None


def _weight_files(name: str, files: set[str]) -> list[str]:
    """A weight's files in `files`: `name` itself, or its shard index with the shards beside it
    ("model.safetensors.index.json", "model-00001-of-00002.safetensors", ...)."""
    if name in files:
        return [name]
    if f"{name}.index.json" not in files:
        return []
    stem, _, extension = name.rpartition(".")
    shards = sorted(f for f in files if f.startswith(f"{stem}-") and f.endswith(f".{extension}"))
    return [f"{name}.index.json", *shards]


_HF_CONFIG = ("config.json",)
_DIFFUSERS_WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
_TRANSFORMERS_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
PBE = Layout(
    what="base model",
    components=(
        Component("unet", _HF_CONFIG, _DIFFUSERS_WEIGHTS),
        Component("vae", _HF_CONFIG, _DIFFUSERS_WEIGHTS),
        Component("image_encoder", _HF_CONFIG, _TRANSFORMERS_WEIGHTS),
        Component("feature_extractor", ("preprocessor_config.json",)),
        Component("scheduler", ("scheduler_config.json",)),
    ),
    pickle_ok=False,
    fetch_command="roomfit models fetch --base",
)
_TRANSFORMERS = (Component("", ("config.json", "preprocessor_config.json"), _TRANSFORMERS_WEIGHTS),)
DETR = Layout("detector", _TRANSFORMERS, pickle_ok=False, fetch_command="roomfit models fetch --detector")
DINO = Layout(
    "DINO metric model", _TRANSFORMERS, pickle_ok=True, fetch_command="roomfit models fetch --metrics"
)
CLIP = Layout(
    "CLIP metric model", _TRANSFORMERS, pickle_ok=True, fetch_command="roomfit models fetch --metrics"
)

# The layout each setting's loader reads (keyed by the name its errors give, `ModelSetting.setting`).
LAYOUTS: dict[str, Layout] = {
    "ROOMFIT_BASE_MODEL": PBE,
    "ROOMFIT_DETECTOR": DETR,
    "--dino-model": DINO,
    "--clip-model": CLIP,
}


def fetch_hint(setting: str, name: str) -> str:
    """The command that fetches what `setting`=`name` needs: `roomfit models fetch --base NAME`."""
    layout = LAYOUTS.get(setting)
    if layout is None:
        return "roomfit models fetch"
    if layout.fetch_command.endswith("--metrics"):  # the metric models are fetched at their defaults
        return layout.fetch_command
    return f"{layout.fetch_command} {name}"


def lookup_revisions(repo_id: str, fallbacks: Iterable[str | None]) -> list[str | None]:
    """The revisions a loader tries for an id named without `@revision`: the pin, then `fallbacks`
    (None: the cache's `main`)."""
    pinned = [PINNED[repo_id]] if repo_id in PINNED else []
    return list(dict.fromkeys([*pinned, *fallbacks]))


@dataclass(frozen=True)
class Fetched:
    """What `fetch_model` did for one setting (printed as JSON by `roomfit models fetch`)."""

    setting: str
    name: str
    folder: str | None = None  # where the files are now (a snapshot folder or `to`)
    revision: str | None = None
    commit: str | None = None
    files: tuple[str, ...] = ()
    note: str | None = None  # why nothing was fetched


def split_id(name: str) -> tuple[str, str | None] | None:
    """`org/name[@revision]` -> (repo id, revision or None); None when `name` is no Hugging Face id."""
    repo_id, _, revision = name.partition("@")
    if repo_id.count("/") != 1 or repo_id.startswith((".", "/")):
        return None
    return repo_id, revision or None


def fetch_model(setting: str, name: str, *, to: Path | None = None, cache_dir: Path | None = None) -> Fetched:
    """Download the files `LAYOUTS[setting]` reads for `name` into the HF cache (or into `to`), with
    huggingface_hub's progress bars; ModelFetchError, one line naming `setting` and `name`, on failure."""
    if name == "tiny":
        return Fetched(setting, name, note="built in code at first use: nothing to fetch")
    if Path(name).expanduser().is_dir():
        return Fetched(setting, name, folder=name, note="a local folder: nothing to fetch")
    parsed = split_id(name)
    if parsed is None:
        raise ModelFetchError(
            f"{setting}={name!r} is neither `tiny`, a folder, nor a Hugging Face id (org/name)"
        )
    repo_id, asked = parsed
    revision = asked or PINNED.get(repo_id, "main")
    layout = LAYOUTS[setting]
    from huggingface_hub import HfApi, snapshot_download

    # Read here, not at import (huggingface_hub reads its variables once, when first imported).
    endpoint = os.environ.get("HF_ENDPOINT") or None
    try:
        info = HfApi(endpoint=endpoint).model_info(repo_id, revision=revision)
        files = layout.choose(sibling.rfilename for sibling in info.siblings or [])
        folder = snapshot_download(
            repo_id,
            revision=revision,
            allow_patterns=files,
            cache_dir=cache_dir,
            local_dir=to,
            endpoint=endpoint,
        )
    except ValueError as exc:  # Layout.choose: the repository lacks files roomfit reads
        raise ModelFetchError(f"{setting}={name!r}: {repo_id}@{revision} {exc}") from exc
    except Exception as exc:  # network down, unknown repository or revision, offline mode, a full disk
        raise ModelFetchError(
            f"{setting}={name!r}: cannot fetch {repo_id}@{revision}: {first_line(exc)}"
        ) from exc
    return Fetched(setting, name, folder=str(folder), revision=revision, commit=info.sha, files=tuple(files))


def first_line(exc: BaseException) -> str:
    """An exception as one line: its type and its message's first non-empty line, shortened."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."
