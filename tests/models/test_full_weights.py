"""Full fine-tunes ("full" training mode) read back and painted: through `Painter` and `roomfit paint
--adapter`, the base weights back bit for bit afterwards, their errors, and the bound on how many
stay cached."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import typer
from PIL import Image
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_save
from typer.testing import CliRunner

from cli.engine import paint as paint_command
from models import (
    AdapterBaseMismatch,
    AdapterCorrupt,
    AdapterFormatUnsupported,
    AdapterNotFound,
    BaseModel,
    InpaintPipeline,
    Painter,
    PaintRequest,
    load_base_model,
    open_image,
    open_mask,
)
from models.full_weights_format import (
    check_unet_weights,
    file_format,
    header_metadata,
    read_unet_weights,
    unet_own_tensors,
)
from models.full_weights_slot import unet_weights_kept
from models.training import TrainSettings, train_subject
from tests.models.conftest import STEPS, make_adapter_bytes, random_room
from tests.models.training_fixtures import views


@pytest.fixture(scope="module")
def full_file(tiny_folder: Path) -> bytes:
    """A tiny full fine-tune, trained for real (2 steps at a high rate, so every weight moves)."""
    own = load_base_model("tiny", tiny_dir=tiny_folder, device="cpu")  # full mode trains it in place
    settings = TrainSettings(steps=2, batch_size=2, mode="full", learning_rate=1e-2, seed=5)
    return train_subject(own, views("checker", range(2)), settings, info={"subject": "sub_full"}).artifact


def rewritten(
    data: bytes, *, drop: str | None = None, scale: float = 1.0, metadata: dict[str, str] | None = None
) -> bytes:
    """The file with one tensor dropped, its UNet weights scaled, or its metadata changed."""
    tensors = safetensors_load(data)
    if drop is not None:
        del tensors[drop]
    tensors = {k: t if k == "reference_embedding" else t * scale for k, t in tensors.items()}
    meta = {**header_metadata(data), **(metadata or {})}
    return safetensors_save(tensors, metadata=meta)


def scene() -> tuple[Image.Image, np.ndarray]:
    room = random_room(120, 90, seed=4)
    mask = np.zeros((90, 120), bool)
    mask[20:70, 30:100] = True
    return room, mask


def paint_bytes(painter: Painter, adapter_id: str | None, embedding: torch.Tensor | None = None) -> bytes:
    room, mask = scene()
    request = PaintRequest(room, mask, seed=9, reference_embedding=embedding)
    return np.asarray(painter.paint([request], adapter_id=adapter_id, steps=STEPS)[0]).tobytes()


def own_weights(base: BaseModel) -> dict[str, torch.Tensor]:
    return {k: t.clone() for k, t in unet_own_tensors(base.unet).items()}


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_the_file_reads_back(base: BaseModel, painter: Painter, full_file: bytes) -> None:
    weights = read_unet_weights(full_file)
    assert weights.base_model_id == "tiny" and weights.base_weights_hash == base.weights_hash
    assert weights.info["mode"] == "full" and weights.info["subject"] == "sub_full"
    assert weights.reference_embedding.shape == (1, 32)
    live = unet_own_tensors(base.unet)  # LoRA injected: peft's base_layer names mapped back
    assert weights.tensors.keys() == live.keys()
    assert all(t.dtype == torch.float32 for t in weights.tensors.values())
    moved = sum(not torch.equal(weights.tensors[k], live[k]) for k in live)
    assert moved > len(live) // 2  # it trained
    check_unet_weights(
        weights,
        base_model_id=base.model_id,
        base_weights_hash=base.weights_hash,
        shapes={k: tuple(t.shape) for k, t in live.items()},
    )


def test_file_format_from_the_header(base: BaseModel, painter: Painter, full_file: bytes) -> None:
    assert file_format(full_file) == "roomfit-unet"
    assert file_format(make_adapter_bytes(base, 1)) == "roomfit-lora"
    assert file_format(full_file[:100_000]) == "roomfit-unet"  # tensors are never read
    with pytest.raises(AdapterFormatUnsupported):
        file_format(rewritten(full_file, metadata={"roomfit.format": "roomfit-unet2"}))
    with pytest.raises(AdapterCorrupt):
        file_format(b"\x01\x02")
    with pytest.raises(AdapterFormatUnsupported, match="LoRA adapter"):
        read_unet_weights(make_adapter_bytes(base, 1))


def test_a_full_fine_tune_paints_inside_the_mask_and_the_base_comes_back(
    base: BaseModel, full_file: bytes
) -> None:
    store = {"full": full_file}
    painter = Painter(base, lora_rank=4, loader=store.__getitem__)
    store["lora"] = make_adapter_bytes(base, 1)  # once the painter injected LoRA
    embedding = read_unet_weights(full_file).reference_embedding
    weights_before = own_weights(base)

    base_before = paint_bytes(painter, None, embedding)
    lora_before = paint_bytes(painter, "lora")  # a LoRA adapter is active when the full one comes
    assert not painter.full_weights.holds_base_copy  # made only once a full fine-tune paints
    full = paint_bytes(painter, "full")  # no reference: the file's embedding
    assert painter.full_weights.holds_base_copy

    room, mask = scene()
    out, plain = np.frombuffer(full, np.uint8).reshape(90, 120, 3), np.asarray(room)
    base_out = np.frombuffer(base_before, np.uint8).reshape(90, 120, 3)
    assert np.array_equal(out[~mask], plain[~mask])  # outside the mask: the room, byte for byte
    assert (out[mask] != base_out[mask]).mean() > 0.5  # inside: not what the base paints

    # the base weights are back, bit for bit, and every other adapter paints as before
    assert_same(own_weights(base), weights_before)
    assert paint_bytes(painter, None, embedding) == base_before
    assert paint_bytes(painter, "lora") == lora_before
    assert paint_bytes(painter, "full") == full  # and again, from the cache

    # what it painted is exactly the fine-tuned UNet alone (weights in place, no LoRA on top)
    reference = load_base_model("tiny", tiny_dir=base.folder, device="cpu")  # no LoRA at all
    reference.unet.load_state_dict(read_unet_weights(full_file).tensors)
    [expected] = InpaintPipeline(reference)(
        [PaintRequest(room, mask, seed=9, reference_embedding=embedding)], steps=STEPS
    )
    assert np.asarray(expected).tobytes() == full


def test_roomfit_paint_takes_a_full_fine_tune(
    base: BaseModel, full_file: bytes, tiny_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from core.settings import get_settings

    monkeypatch.setenv("ROOMFIT_BASE_MODEL", str(tiny_folder))
    monkeypatch.setenv("ROOMFIT_DEVICE", "cpu")
    get_settings.cache_clear()
    app = typer.Typer()
    app.command()(paint_command)
    app.command("noop", hidden=True)(lambda: None)
    room, mask = scene()
    paths = {name: tmp_path / name for name in ("room.png", "mask.png", "full.safetensors")}
    room.save(paths["room.png"])
    Image.fromarray(mask.astype(np.uint8) * 255).save(paths["mask.png"])
    paths["full.safetensors"].write_bytes(full_file)
    common = ["paint", "--room", str(paths["room.png"]), "--mask", str(paths["mask.png"]), "--seed", "9"]

    def run(adapter: Path, out: Path) -> tuple[int, str]:
        args = [*common, "--steps", str(STEPS), "--adapter", str(adapter), "--out", str(out)]
        result = CliRunner().invoke(app, args)
        return result.exit_code, result.output

    try:
        code, output = run(paths["full.safetensors"], tmp_path / "out.png")
        assert code == 0, output
        painted = np.asarray(Image.open(tmp_path / "out.png").convert("RGB"))
        painter = Painter(base, lora_rank=4, loader=lambda _: full_file)
        room_read, mask_read = open_image(paths["room.png"], "room"), open_mask(paths["mask.png"], room.size)
        [expected] = painter.paint([PaintRequest(room_read, mask_read, seed=9)], adapter_id="f", steps=STEPS)
        embedding = read_unet_weights(full_file).reference_embedding
        [base_out] = painter.paint(
            [PaintRequest(room_read, mask_read, seed=9, reference_embedding=embedding)], steps=STEPS
        )
        assert np.array_equal(painted, np.asarray(expected))
        assert np.array_equal(painted[~mask], np.asarray(room)[~mask])
        assert (painted[mask] != np.asarray(base_out)[mask]).mean() > 0.5

        other = tmp_path / "other.safetensors"
        other.write_bytes(rewritten(full_file, metadata={"roomfit.base_weights_hash": "0" * 64}))
        code, output = run(other, tmp_path / "x.png")
        assert code == 2 and "adapter_base_mismatch" in output
        cut = tmp_path / "cut.safetensors"
        cut.write_bytes(full_file[:-1000])
        code, output = run(cut, tmp_path / "y.png")
        assert code == 2 and "adapter_corrupt" in output
    finally:
        get_settings.cache_clear()


@pytest.mark.parametrize(
    ("name", "error", "code"),
    [
        ("another_base", AdapterBaseMismatch, "adapter_base_mismatch"),
        ("truncated", AdapterCorrupt, "adapter_corrupt"),
        ("half", AdapterCorrupt, "adapter_corrupt"),
        ("a_weight_missing", AdapterCorrupt, "adapter_corrupt"),
        ("no_embedding", AdapterCorrupt, "adapter_corrupt"),
        ("unknown_format", AdapterFormatUnsupported, "adapter_format_unsupported"),
    ],
)
def test_a_bad_file_is_refused_and_touches_nothing(
    base: BaseModel, painter: Painter, full_file: bytes, name: str, error: type, code: str
) -> None:
    some_weight = sorted(read_unet_weights(full_file).tensors)[3]
    bad = {
        "another_base": lambda: rewritten(full_file, metadata={"roomfit.base_weights_hash": "0" * 64}),
        "truncated": lambda: full_file[:-100],
        "half": lambda: full_file[: len(full_file) // 2],
        "a_weight_missing": lambda: rewritten(full_file, drop=some_weight),
        "no_embedding": lambda: rewritten(full_file, drop="reference_embedding"),
        "unknown_format": lambda: rewritten(full_file, metadata={"roomfit.format": "roomfit-unet2"}),
    }[name]()
    store = {"lora": make_adapter_bytes(base, 2), "bad": bad}  # `painter` injected LoRA first
    painter = Painter(base, lora_rank=4, loader=store.__getitem__)
    lora_before = paint_bytes(painter, "lora")
    weights_before = own_weights(base)
    swaps = painter.adapters.stats.swaps

    with pytest.raises(error) as caught:
        paint_bytes(painter, "bad")
    assert caught.value.code == code
    assert_same(own_weights(base), weights_before)
    assert painter.adapters.stats.swaps == swaps  # the active adapter was not touched
    assert painter.full_weights.cached_ids() == [] and not painter.full_weights.holds_base_copy
    assert paint_bytes(painter, "lora") == lora_before


@pytest.mark.parametrize(
    ("cached", "order", "reads"),
    [
        (1, ["A", "A", "B", "A", "lora", "A"], {"A": 2, "B": 1, "lora": 1}),
        (2, ["A", "B", "A", "B", "C", "A", "B"], {"A": 2, "B": 2, "C": 1}),
        (0, ["A", "A"], {"A": 2}),
    ],
)
def test_at_most_n_full_fine_tunes_stay_cached(
    base: BaseModel, full_file: bytes, cached: int, order: list[str], reads: dict[str, int]
) -> None:
    Painter(base, lora_rank=4)  # LoRA injected, so the LoRA file below fits
    store = {
        "A": full_file,
        "B": rewritten(full_file, scale=1.01),
        "C": rewritten(full_file, scale=0.99),
        "lora": make_adapter_bytes(base, 3),
    }
    counted: Counter[str] = Counter()

    def loader(adapter_id: str) -> bytes:
        counted[adapter_id] += 1
        return store[adapter_id]

    painter = Painter(base, lora_rank=4, loader=loader, full_weights_cached=cached)
    for adapter_id in order:
        room, mask = scene()
        painter.paint([PaintRequest(room, mask, seed=1)], adapter_id=adapter_id, steps=1)
        assert len(painter.full_weights.cached_ids()) <= cached
    assert dict(counted) == reads
    if cached:
        assert painter.full_weights.cached_ids()[-1] == order[-1]


def test_threads_paint_with_what_they_asked_for(base: BaseModel, full_file: bytes) -> None:
    Painter(base, lora_rank=4)
    store = {"A": full_file, "B": rewritten(full_file, scale=1.05), "lora": make_adapter_bytes(base, 4)}
    painter = Painter(base, lora_rank=4, loader=store.__getitem__)
    embedding = read_unet_weights(full_file).reference_embedding
    ids: list[str | None] = ["A", "lora", None, "B"]
    expected = {i: paint_bytes(painter, i, embedding if i is None else None) for i in ids}
    assert len(set(expected.values())) == 4
    results: dict[tuple[str | None, int], bytes] = {}

    def worker(adapter_id: str | None) -> None:
        for n in range(2):
            own_embedding = embedding if adapter_id is None else None
            results[adapter_id, n] = paint_bytes(painter, adapter_id, own_embedding)

    threads = [threading.Thread(target=worker, args=(i,)) for i in ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(results[i, n] == expected[i] for i in ids for n in range(2))


@pytest.fixture
def scratch_base(tiny_folder: Path) -> Iterator[BaseModel]:
    yield load_base_model("tiny", tiny_dir=tiny_folder, device="cpu")


def test_weights_kept_around_a_full_fine_tuning(scratch_base: BaseModel) -> None:
    before = own_weights(scratch_base)
    settings = TrainSettings(steps=1, batch_size=1, mode="full", learning_rate=1e-2, seed=2)
    with unet_weights_kept(scratch_base.unet):
        train_subject(scratch_base, views("checker", range(1)), settings)
        assert not all(torch.equal(t, before[k]) for k, t in unet_own_tensors(scratch_base.unet).items())
    assert_same(own_weights(scratch_base), before)


def test_a_full_fine_tune_gone_from_the_store_fails_its_own_rows_only(
    base: BaseModel, full_file: bytes
) -> None:
    """Read again after its eviction, a full fine-tune whose blob was deleted meanwhile (its subject
    deleted) is `adapter_not_found` for its rows; the batch's other rows are painted."""
    Painter(base, lora_rank=4)  # LoRA injected, so the LoRA file below fits
    store = {"A": full_file, "B": rewritten(full_file, scale=1.01), "lora": make_adapter_bytes(base, 3)}
    painter = Painter(base, lora_rank=4, loader=store.__getitem__, full_weights_cached=1)
    room, mask = scene()
    for adapter_id in ("A", "B"):  # A painted, then evicted by B
        painter.paint([PaintRequest(room, mask, seed=1)], adapter_id=adapter_id, steps=1)
    del store["A"]
    rows = [PaintRequest(room, mask, seed=1), PaintRequest(room, mask, seed=1)]
    gone, kept = painter.paint_mixed(rows, ["A", "lora"], steps=1)
    assert isinstance(gone, AdapterNotFound) and gone.code == "adapter_not_found"
    assert isinstance(kept, Image.Image)
