"""`roomfit models fetch` against a fake Hub on 127.0.0.1 (`hub_cache.serve_hub`): exactly the files
roomfit reads, at the pinned revisions, then loaded offline by roomfit's own loaders; failures are
one line naming the model."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from cli.models import app as models_app
from models.model_fetch import CLIP, DINO, PBE, PINNED, lookup_revisions
from tests.models.hub_cache import DETR_ID, PBE_ID, PBE_UNREAD, FakeRepo, detr_repo, pbe_repo, serve_hub

DINO_ID, CLIP_ID = "facebook/dino-vits16", "openai/clip-vit-base-patch32"


def folder_files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def repos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, FakeRepo]:
    """The real repositories' file names, holding the tiny presets' files where roomfit reads (so what
    is fetched loads) and placeholders for what it must leave (model.ckpt, .bin, safety_checker/)."""
    from models.tiny import ensure_tiny_detector, ensure_tiny_model

    root = tmp_path_factory.mktemp("tiny")
    pbe = pbe_repo(weights=False)
    pbe.files = {**folder_files(ensure_tiny_model(root / "pbe")), **{p: b"unread" for p in PBE_UNREAD}}
    detr = detr_repo(weights=False)
    detr.files = {**folder_files(ensure_tiny_detector(root / "detr")), "pytorch_model.bin": b"unread"}
    configs = {"config.json": b"{}", "preprocessor_config.json": b"{}"}
    dino = FakeRepo(
        DINO_ID, PINNED[DINO_ID], {**configs, "model.safetensors": b"s", "pytorch_model.bin": b"b"}
    )
    clip_files = {**configs, "pytorch_model.bin": b"b", "tf_model.h5": b"t", "vocab.json": b"{}"}
    clip = FakeRepo(CLIP_ID, PINNED[CLIP_ID], clip_files)  # no safetensors: the .bin is fetched
    return {repo.repo_id: repo for repo in (pbe, detr, dino, clip)}


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hugging Face cache for this test, online (huggingface_hub's constants were read at
    import, so they are patched as well as the variables)."""
    import huggingface_hub.constants

    cache = tmp_path / "hf" / "hub"
    monkeypatch.setenv("HF_HOME", str(cache.parent))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.chdir(tmp_path)  # no .env of the working tree
    return cache


@pytest.fixture
def endpoint(repos: dict[str, FakeRepo], monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    for repo in repos.values():
        repo.requests.clear()
    with serve_hub(*repos.values()) as url:
        monkeypatch.setenv("HF_ENDPOINT", url)
        yield url


def roomfit(*args: str) -> typer.testing.Result:
    """`roomfit models ...` as cli/main.py registers it."""
    root = typer.Typer()
    root.callback()(lambda: None)
    root.add_typer(models_app, name="models")
    return CliRunner().invoke(root, ["models", *args])


def snapshot(hub: Path, repo: FakeRepo) -> Path:
    return hub / f"models--{repo.repo_id.replace('/', '--')}" / "snapshots" / repo.commit


def test_fetch_takes_what_roomfit_reads_and_the_loaders_find_it_offline(
    hub: Path, endpoint: str, repos: dict[str, FakeRepo], monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub.constants

    from models.base_model import load_base_model
    from models.detector import load_detector

    result = roomfit("fetch", "--base", PBE_ID, "--detector", DETR_ID)
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)["models"]
    assert [(m["setting"], m["revision"]) for m in report] == [
        ("ROOMFIT_BASE_MODEL", PINNED[PBE_ID]),
        ("ROOMFIT_DETECTOR", "no_timm"),
    ]
    pbe, detr = repos[PBE_ID], repos[DETR_ID]
    fetched = set(folder_files(snapshot(hub, pbe)))
    assert fetched == set(pbe.files) - set(PBE_UNREAD) - {"roomfit_tiny.json"}
    assert fetched == set(report[0]["files"])
    assert not [r for r in pbe.requests if r.startswith("GET") and r.endswith(PBE_UNREAD)]
    assert set(folder_files(snapshot(hub, detr))) == {
        "config.json",
        "preprocessor_config.json",
        "model.safetensors",
    }

    # offline now: the same cache, read the way a worker reads it
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.delenv("HF_ENDPOINT")
    base = load_base_model(PBE_ID, device="cpu")
    assert base.folder == snapshot(hub, pbe) and base.unet.config.in_channels == 9
    assert load_detector(DETR_ID).model.config.num_queries == 10  # the tiny DETR's, served as the real one


def test_metrics_take_safetensors_where_the_repository_has_them(
    hub: Path, endpoint: str, repos: dict[str, FakeRepo]
) -> None:
    result = roomfit("fetch", "--base", "tiny", "--detector", "tiny", "--metrics")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    files = {m["setting"]: set(m["files"]) for m in report["models"]}
    configs = {"config.json", "preprocessor_config.json"}
    assert files["--dino-model"] == configs | {"model.safetensors"}
    assert files["--clip-model"] == configs | {"pytorch_model.bin"}  # CLIP's repository has no safetensors
    assert set(folder_files(snapshot(hub, repos[CLIP_ID]))) == configs | {"pytorch_model.bin"}
    assert "roomfit[eval]" in report["inception"] or report["inception"].startswith("installed")


def test_tiny_needs_no_fetch(hub: Path, endpoint: str, repos: dict[str, FakeRepo]) -> None:
    from core.settings import get_settings

    get_settings.cache_clear()  # the settings' defaults: both `tiny`
    try:
        result = roomfit("fetch")
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.stderr
    notes = [m["note"] for m in json.loads(result.stdout)["models"]]
    assert len(notes) == 2 and all("nothing to fetch" in note for note in notes)
    assert not [r for repo in repos.values() for r in repo.requests] and not hub.exists()


def test_to_writes_one_folder_per_model(tmp_path: Path, hub: Path, endpoint: str) -> None:
    result = roomfit("fetch", "--base", PBE_ID, "--detector", "tiny", "--to", str(tmp_path / "weights"))
    assert result.exit_code == 0, result.stderr
    folder = tmp_path / "weights" / PBE_ID
    assert json.loads(result.stdout)["models"][0]["folder"] == str(folder.resolve())
    assert {f for f in folder_files(folder) if not f.startswith(".cache/")} == set(PBE.configs()) | {
        "unet/diffusion_pytorch_model.safetensors",
        "vae/diffusion_pytorch_model.safetensors",
        "image_encoder/model.safetensors",
    }


def one_line_failure(result: typer.testing.Result, *words: str) -> str:
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    error = json.loads(lines[0])
    assert error["error"] == "model_fetch_failed"
    for word in words:
        assert word in error["detail"]
    return str(error["detail"])


def test_network_down_is_one_line_naming_the_model(hub: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    result = roomfit("fetch", "--base", PBE_ID, "--detector", "tiny")
    one_line_failure(result, "ROOMFIT_BASE_MODEL", PBE_ID, "cannot fetch")


def test_a_wrong_revision_or_repository_is_one_line(hub: Path, endpoint: str) -> None:
    one_line_failure(roomfit("fetch", "--base", f"{PBE_ID}@nope", "--detector", "tiny"), f"{PBE_ID}@nope")
    one_line_failure(roomfit("fetch", "--base", "tiny", "--detector", "nobody/nothing"), "ROOMFIT_DETECTOR")
    one_line_failure(roomfit("fetch", "--base", "not an id", "--detector", "tiny"), "neither `tiny`")


def test_a_repository_without_safetensors_is_refused(
    hub: Path, repos: dict[str, FakeRepo], monkeypatch: pytest.MonkeyPatch
) -> None:
    weights = "vae/diffusion_pytorch_model"
    pickled = repos[PBE_ID].without(f"{weights}.safetensors").plus({f"{weights}.bin": b"b"})
    with serve_hub(pickled) as url:
        monkeypatch.setenv("HF_ENDPOINT", url)
        result = roomfit("fetch", "--base", PBE_ID, "--detector", "tiny")
    detail = one_line_failure(result, "ROOMFIT_BASE_MODEL", f"only {weights}.bin", "safetensors only")
    assert not hub.exists() and not [r for r in pickled.requests if "/resolve/" in r], detail


def test_layouts_choose_safetensors_shards_and_refuse_what_lacks() -> None:
    sharded = [
        "config.json",
        "preprocessor_config.json",
        "model.safetensors.index.json",
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
        "pytorch_model.bin",
    ]
    assert DINO.choose(sharded) == sharded[:5]
    assert (
        CLIP.choose(["config.json", "preprocessor_config.json", "pytorch_model.bin"])[-1]
        == "pytorch_model.bin"
    )
    with pytest.raises(ValueError, match=r"has no preprocessor_config\.json, model\.safetensors nor pytorch"):
        CLIP.choose(["config.json"])


def test_a_pinned_snapshot_is_found_before_main(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cache holding the pinned commit and another `main` (an earlier `hf download`): roomfit reads
    the pin; without the pin's snapshot, `main`."""
    import huggingface_hub.constants

    from models.base_model import resolve_model_folder
    from tests.models.hub_cache import write_cache

    hub = tmp_path / "hub"
    newer = pbe_repo(weights=False)
    newer.commit = "f" * 40
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hub))
    write_cache(hub, newer)
    assert resolve_model_folder(PBE_ID).name == newer.commit
    pinned = pbe_repo(weights=False)
    pinned.refs = ()
    write_cache(hub, pinned)
    assert resolve_model_folder(PBE_ID).name == PINNED[PBE_ID]
    assert lookup_revisions(PBE_ID, [None]) == [PINNED[PBE_ID], None]
    assert lookup_revisions(DETR_ID, ["no_timm", None]) == ["no_timm", None]
