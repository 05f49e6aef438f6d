"""Adapter files and the AdapterCache; acceptance 3: wrong adapters fail with their own error and the
active adapter stays as it was."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_save

from models import (
    AdapterBaseMismatch,
    AdapterCache,
    AdapterCorrupt,
    AdapterFormatUnsupported,
    AdapterNotFound,
    AdapterRankMismatch,
    AdapterTargetsMismatch,
    BaseModel,
    LoraSpec,
    Painter,
    PaintRequest,
    export_adapter,
    load_base_model,
    read_adapter,
)
from models.full_weights_format import header_metadata
from models.lora import LORA_TARGETS, inject_lora, lora_parameters
from tests.models.conftest import STEPS, random_room


def lora_snapshot(painter: Painter) -> dict[str, torch.Tensor]:
    return {k: p.detach().clone() for k, p in lora_parameters(painter.base.unet).items()}


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_file_round_trip_keeps_tensors_metadata_and_embedding(base: BaseModel, adapter_bytes) -> None:
    data = adapter_bytes(1)
    adapter = read_adapter(data)
    assert adapter.base_model_id == "tiny" and adapter.base_weights_hash == base.weights_hash
    assert adapter.spec == LoraSpec(rank=4, alpha=4.0, targets=LORA_TARGETS)
    assert adapter.info == {"seed": 1}
    assert adapter.reference_embedding.shape == (1, 32)
    assert all(t.dtype == torch.float16 for t in adapter.lora.values())
    assert adapter.lora.keys() == lora_parameters(base.unet).keys()


def test_export_from_a_trained_unet(base: BaseModel, painter: Painter) -> None:
    with torch.no_grad():
        for param in lora_parameters(base.unet).values():
            param.fill_(0.25)
    data = export_adapter(
        base.unet,
        reference_embedding=torch.ones(1, 32),
        base_model_id=base.model_id,
        base_weights_hash=base.weights_hash,
        info={"steps": 3},
    )
    painter.adapters.activate(None)  # back to the base model for the other tests
    adapter = read_adapter(data)
    assert all(torch.all(t == 0.25) for t in adapter.lora.values())
    painter.adapters.put("trained", data)
    painter.adapters.activate("trained")
    assert all(torch.all(p == 0.25) for p in lora_parameters(base.unet).values())


@pytest.fixture
def with_active_a(painter: Painter, adapter_bytes) -> tuple[Painter, dict[str, bytes]]:
    store = {"A": adapter_bytes(1)}
    painter.adapters.loader = store.__getitem__
    painter.adapters.activate("A")
    return painter, store


def other_base_adapter(tmp_path: Path, tiny_folder: Path) -> bytes:
    """An adapter trained on a fine-tuned copy of the tiny model (same architecture, other weights)."""
    other = load_base_model(str(tiny_folder), device="cpu")
    with torch.no_grad():
        other.unet.conv_in.weight.mul_(1.01)
    folder = tmp_path / "other-base"
    other.unet.save_pretrained(folder / "unet")
    for name in ("vae", "image_encoder"):
        getattr(other, name).save_pretrained(folder / name)
    other.feature_extractor.save_pretrained(folder / "feature_extractor")
    (folder / "scheduler").mkdir()
    (folder / "scheduler" / "scheduler_config.json").write_text(
        (tiny_folder / "scheduler" / "scheduler_config.json").read_text()
    )
    other = load_base_model(str(folder), device="cpu")
    inject_lora(other.unet, rank=4)
    with torch.no_grad():
        for param in lora_parameters(other.unet).values():
            param.normal_()
    return export_adapter(
        other.unet,
        reference_embedding=torch.ones(1, 32),
        base_model_id=str(folder),
        base_weights_hash=other.weights_hash,
    )


def other_rank_adapter(tiny_folder: Path) -> bytes:
    other = load_base_model(str(tiny_folder), device="cpu")
    inject_lora(other.unet, rank=8)
    with torch.no_grad():
        for param in lora_parameters(other.unet).values():
            param.normal_()
    return export_adapter(
        other.unet,
        reference_embedding=torch.ones(1, 32),
        base_model_id="tiny",
        base_weights_hash=other.weights_hash,
    )


def corrupted(data: bytes, at: int) -> bytes:
    damaged = bytearray(data)
    damaged[at] ^= 0x5A
    return bytes(damaged)


def test_each_wrong_adapter_fails_with_its_own_error_and_a_stays_active(
    with_active_a, adapter_bytes, tiny_folder: Path, tmp_path: Path
) -> None:
    painter, store = with_active_a
    room = random_room(120, 100)
    mask = np.zeros((100, 120), bool)
    mask[20:80, 30:90] = True
    before_params = lora_snapshot(painter)
    before_image = painter.paint([PaintRequest(room, mask, seed=4)], adapter_id="A", steps=STEPS)[0].tobytes()

    good = adapter_bytes(2)
    store["other_base"] = other_base_adapter(tmp_path, tiny_folder)
    store["other_rank"] = other_rank_adapter(tiny_folder)
    store["other_targets"] = adapter_bytes(
        3,
        spec=LoraSpec(rank=4, alpha=4.0, targets=("to_q", "to_v")),
        lora={k: v for k, v in read_adapter(good).lora.items() if ".to_q." in k or ".to_v." in k},
    )
    store["flipped_tensor_byte"] = corrupted(good, len(good) - 100)
    store["flipped_header_byte"] = corrupted(good, 20)
    store["truncated"] = good[: len(good) // 2]
    store["not_safetensors"] = b"\x89PNG\r\n\x1a\n" + b"\0" * 64
    expected = {
        "other_base": (AdapterBaseMismatch, "adapter_base_mismatch"),
        "other_rank": (AdapterRankMismatch, "adapter_rank_mismatch"),
        "other_targets": (AdapterTargetsMismatch, "adapter_targets_mismatch"),
        "flipped_tensor_byte": (AdapterCorrupt, "adapter_corrupt"),
        "flipped_header_byte": (AdapterCorrupt, "adapter_corrupt"),
        "truncated": (AdapterCorrupt, "adapter_corrupt"),
        "not_safetensors": (AdapterCorrupt, "adapter_corrupt"),
    }
    for adapter_id, (error, code) in expected.items():
        with pytest.raises(error) as caught:
            painter.paint([PaintRequest(room, mask, seed=4)], adapter_id=adapter_id, steps=STEPS)
        assert caught.value.code == code, adapter_id
        assert painter.adapters.active is not None and painter.adapters.active.adapter_id == "A"
        assert_same(lora_snapshot(painter), before_params)
        assert adapter_id not in painter.adapters.cached_ids()

    after_image = painter.paint([PaintRequest(room, mask, seed=4)], adapter_id="A", steps=STEPS)[0].tobytes()
    assert after_image == before_image


def test_unsupported_format_version(base: BaseModel, adapter_bytes) -> None:
    data = adapter_bytes(1).replace(b'"roomfit.format_version":"1"', b'"roomfit.format_version":"9"')
    with pytest.raises(AdapterFormatUnsupported):
        read_adapter(data)


def test_unknown_adapter_without_loader(painter: Painter) -> None:
    with pytest.raises(AdapterNotFound):
        painter.adapters.activate("nope")


def test_lru_is_bounded_in_bytes_and_counts(base: BaseModel, adapter_bytes) -> None:
    store = {name: adapter_bytes(i) for i, name in enumerate("ABC")}
    calls: list[str] = []

    def loader(adapter_id: str) -> bytes:
        calls.append(adapter_id)
        return store[adapter_id]

    one = sum(p.numel() * p.element_size() for p in lora_parameters(base.unet).values())
    cache = AdapterCache(
        base.unet,
        base_model_id=base.model_id,
        base_weights_hash=base.weights_hash,
        memory_bytes=2 * one,
        loader=loader,
    )
    for adapter_id in "ABAC":
        cache.activate(adapter_id)
    assert cache.cached_ids() == ["A", "C"]  # B was least recently used
    assert cache.memory_used == 2 * one
    assert calls == ["A", "B", "C"]
    cache.activate("B")  # evicted: loaded again
    assert calls == ["A", "B", "C", "B"]
    assert cache.stats.hits == 1 and cache.stats.misses == 4 and cache.stats.evictions == 2
    assert cache.stats.swaps == 1 + 5  # the initial "no adapter" plus five activations
    assert cache.stats.swap_seconds > 0
    cache.activate(None)
    assert all(torch.all(p == 0) for k, p in lora_parameters(base.unet).items() if ".lora_B." in k)


def test_disk_cache_sits_between_memory_and_loader(base: BaseModel, adapter_bytes, tmp_path: Path) -> None:
    store = {"tenants/t1/subjects/s1/adapter/1.safetensors": adapter_bytes(5)}
    calls: list[str] = []

    def loader(adapter_id: str) -> bytes:
        calls.append(adapter_id)
        return store[adapter_id]

    def fresh() -> AdapterCache:
        return AdapterCache(
            base.unet,
            base_model_id=base.model_id,
            base_weights_hash=base.weights_hash,
            memory_bytes=0,
            disk_dir=tmp_path / "adapters",
            loader=loader,
        )

    (adapter_id,) = store
    fresh().activate(adapter_id)
    cache = fresh()
    cache.activate(adapter_id)
    assert calls == [adapter_id]
    assert cache.stats.disk_hits == 1
    # a damaged disk copy is dropped and fetched again
    (path,) = (tmp_path / "adapters").glob("*.safetensors")
    path.write_bytes(corrupted(path.read_bytes(), path.stat().st_size - 10))
    fresh().activate(adapter_id)
    assert calls == [adapter_id, adapter_id]


def test_alpha_is_folded_into_b(base: BaseModel, painter: Painter, adapter_bytes) -> None:
    plain = adapter_bytes(1)
    double = adapter_bytes(1, spec=LoraSpec(rank=4, alpha=8.0, targets=LORA_TARGETS))
    painter.adapters.put("plain", plain)
    painter.adapters.put("double", double)
    painter.adapters.activate("plain")
    first = lora_snapshot(painter)
    painter.adapters.activate("double")
    second = lora_snapshot(painter)
    for key in first:
        factor = 2 if ".lora_B." in key else 1
        assert torch.allclose(second[key], first[key] * factor)


def test_threads_paint_with_the_adapter_they_asked_for(painter: Painter, adapter_bytes) -> None:
    store = {"A": adapter_bytes(1), "B": adapter_bytes(2)}
    painter.adapters.loader = store.__getitem__
    room = random_room(64, 64)
    mask = np.zeros((64, 64), bool)
    mask[10:50, 10:50] = True
    expected = {
        a: painter.paint([PaintRequest(room, mask, seed=1)], adapter_id=a, steps=2)[0].tobytes() for a in "AB"
    }
    results: list[tuple[str, bytes]] = []
    errors: list[BaseException] = []

    def work(adapter_id: str) -> None:
        try:
            for _ in range(2):
                out = painter.paint([PaintRequest(room, mask, seed=1)], adapter_id=adapter_id, steps=2)[0]
                results.append((adapter_id, out.tobytes()))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(a,)) for a in "ABB"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len(results) == 6
    assert all(out == expected[a] for a, out in results)


def test_loader_is_not_called_when_bytes_were_put(
    painter: Painter, adapter_bytes: Callable[..., bytes]
) -> None:
    painter.adapters.loader = None
    painter.adapters.put("X", adapter_bytes(3))
    assert painter.adapters.activate("X").adapter_id == "X"


def test_two_caches_on_one_unet_never_trust_a_stale_active_adapter(base: BaseModel, adapter_bytes) -> None:
    data = {"A": adapter_bytes(1), "B": adapter_bytes(2)}
    first = AdapterCache(
        base.unet, base_model_id="tiny", base_weights_hash=base.weights_hash, loader=data.get
    )
    first.activate("A")
    a_params = {k: p.detach().clone() for k, p in lora_parameters(base.unet).items()}
    second = AdapterCache(
        base.unet, base_model_id="tiny", base_weights_hash=base.weights_hash, loader=data.get
    )
    second.activate("B")
    first.activate("A")  # must copy again, not answer "already active"
    assert_same({k: p.detach().clone() for k, p in lora_parameters(base.unet).items()}, a_params)


@pytest.mark.parametrize("targets", ["5", '[["to_q"]]', "not json"], ids=["number", "nested", "not-json"])
def test_malformed_targets_metadata_is_corrupt(adapter_bytes, targets: str) -> None:  # type: ignore[no-untyped-def]
    good = adapter_bytes(1)
    metadata = {**header_metadata(good), "roomfit.targets": targets}
    with pytest.raises(AdapterCorrupt, match="adapter metadata incomplete"):
        read_adapter(safetensors_save(safetensors_load(good), metadata=metadata))


@pytest.mark.parametrize("alpha", ["nan", "inf", "0.0", "-4.0"])
def test_an_alpha_that_is_not_a_positive_number_is_corrupt(adapter_bytes, alpha: str) -> None:  # type: ignore[no-untyped-def]
    """A NaN alpha would paint NaN everywhere the mask is; 0 or below, the base alone or the product
    pushed away: none is a file roomfit writes."""
    good = adapter_bytes(1)
    metadata = {**header_metadata(good), "roomfit.alpha": alpha}
    with pytest.raises(AdapterCorrupt, match=r"roomfit\.alpha"):
        read_adapter(safetensors_save(safetensors_load(good), metadata=metadata))
