"""The disk tier is a cache: when the worker's disk cannot take an adapter file (full, over a quota),
the adapter read from the blob store still paints, and the folder keeps no part of the file."""

from __future__ import annotations

import errno
import resource
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from models import BaseModel, Painter, PaintRequest
from tests.models.conftest import STEPS, make_adapter_bytes, random_room

A = "tenants/ten_t/subjects/sub_a/adapter/1.safetensors"
B = "tenants/ten_t/subjects/sub_b/adapter/1.safetensors"


@contextmanager
def files_bounded_to(size: int) -> Iterator[None]:
    """Writes that would grow any file of this process past `size` bytes fail with EFBIG, as they
    fail with ENOSPC on a full disk (Python ignores SIGXFSZ, so the write raises OSError)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def test_the_limit_really_fails_a_write(tmp_path: Path) -> None:
    with files_bounded_to(1000), pytest.raises(OSError) as caught:
        (tmp_path / "big").write_bytes(b"x" * 5000)
    assert caught.value.errno == errno.EFBIG


def test_a_disk_that_cannot_take_the_file_still_paints_the_adapter(base: BaseModel, tmp_path: Path) -> None:
    painter = Painter(
        base, lora_rank=4, cache_bytes=0, disk_dir=tmp_path / "adapter-cache", loader=lambda i: store[i]
    )  # no memory tier: each use of A reads it and tries to keep it on disk
    store = {A: make_adapter_bytes(base, seed=1), B: make_adapter_bytes(base, seed=2)}
    room = random_room(96, 80)
    mask = np.zeros((80, 96), bool)
    mask[16:64, 24:72] = True
    painter.adapters.activate(B)  # the folder and its index exist: only A's file is too big to write
    with files_bounded_to(len(store[A]) // 2):
        [out] = painter.paint([PaintRequest(room, mask, seed=3)], adapter_id=A, steps=STEPS)
        outcomes = painter.paint_mixed(
            [PaintRequest(room, mask, seed=3)] * 2, [A, B], steps=STEPS
        )  # the batch path too
    assert painter.adapters.active is None  # the mixed batch left the UNet's slots to the bank
    assert all(not isinstance(o, Exception) for o in outcomes)
    folder = tmp_path / "adapter-cache"
    assert not list(folder.glob("*.part"))  # no half-written file left behind
    assert not painter.adapters.disk.path(A).exists()  # type: ignore[union-attr]
    # what was painted is A: the same image as A painted once the disk has room again
    fresh = Painter(base, lora_rank=4, disk_dir=folder, loader=lambda i: store[i])
    [again] = fresh.paint([PaintRequest(room, mask, seed=3)], adapter_id=A, steps=STEPS)
    assert out.tobytes() == again.tobytes()
    assert fresh.adapters.disk.path(A).exists()  # type: ignore[union-attr]
