"""A damaged copy in the disk tier is read from the blob store again, whatever byte was hit.

`roomfit.tensors_sha256` covers the tensors only: a flipped bit in the header's metadata (alpha,
the base's weights hash, the rank, the targets, the format version) passes it. Such a copy used to
raise adapter_base_mismatch / _rank_ / _targets_ / _format_unsupported on every preview of the
product (the copy stamped as used at each read, so never evicted), or paint with another alpha,
while the blob store held the adapter intact."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from models import AdapterCache, BaseModel, Painter
from models.lora import lora_parameters
from tests.models.conftest import make_adapter_bytes

ID = "tenants/ten_t/subjects/sub_a/adapter/1.safetensors"

# (what the header says, the offset of the hit byte after it): one bit of that byte flipped
HITS = {
    "alpha": (b'"roomfit.alpha":"', 0),  # 4.0 -> 5.0: paints silently with 1.25 x the LoRA
    "weights_hash": (b'"roomfit.base_weights_hash":"', 5),
    "format_version": (b'"roomfit.format_version":"', 0),
    "rank": (b'"roomfit.rank":"', 0),
    "targets": (b'"roomfit.targets":"[\\"attn1.to_', 0),
}


def flipped(data: bytes, marker: bytes, offset: int) -> bytes:
    at = data.index(marker) + len(marker) + offset
    assert at < 8 + int.from_bytes(data[:8], "little")  # inside the header
    damaged = bytearray(data)
    damaged[at] ^= 0x01
    return bytes(damaged)


def slots(base: BaseModel) -> dict[str, torch.Tensor]:
    return {key: param.detach().clone() for key, param in lora_parameters(base.unet).items()}


@pytest.mark.parametrize("hit", list(HITS))
def test_a_header_bit_flipped_on_disk_is_fetched_again(base: BaseModel, tmp_path: Path, hit: str) -> None:
    Painter(base, lora_rank=4)  # LoRA slots injected, as on a worker
    good = make_adapter_bytes(base, seed=1)
    calls: list[str] = []

    def cache() -> AdapterCache:  # one more worker process on the machine's folder
        def loader(adapter_id: str) -> bytes:
            calls.append(adapter_id)
            return good

        return AdapterCache(
            base.unet,
            base_model_id=base.model_id,
            base_weights_hash=base.weights_hash,
            memory_bytes=0,
            disk_dir=tmp_path / "adapter-cache",
            loader=loader,
        )

    first = cache()
    first.activate(ID)
    painted = slots(base)
    path = first.disk.path(ID)  # type: ignore[union-attr]
    assert path.read_bytes() == good
    path.write_bytes(flipped(good, *HITS[hit]))

    again = cache()
    again.activate(ID)  # not adapter_*_mismatch, and not another alpha: the blob store's copy
    assert calls == [ID, ID]
    now = slots(base)
    assert all(torch.equal(now[key], painted[key]) for key in painted)
    assert path.read_bytes() == good  # the damaged copy replaced: the next read is a disk hit
    cache().activate(ID)
    assert calls == [ID, ID]
