"""A checkpoint keeps the CUDA RNG that LoRA dropout draws from on CUDA, so a run resumed there ends
with the adapter an uninterrupted one does; checkpoints written before it still load.

No GPU here: the training device is said to be CUDA and torch.cuda's RNG is a fake one that records
what restore sets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from models.training_checkpoint import (
    CHECKPOINT_FILE,
    Checkpoint,
    TrainingState,
    load_checkpoint,
    save_checkpoint,
)

FINGERPRINT = "run-1"


class FakeCudaRng:
    """torch.cuda.get_rng_state / set_rng_state of one device, without a GPU."""

    def __init__(self) -> None:
        self.state = torch.arange(16, dtype=torch.uint8)
        self.sets: list[tuple[torch.Tensor, torch.device]] = []

    def get(self, device: torch.device | int | str = "cuda") -> torch.Tensor:
        return self.state.clone()

    def set(self, state: torch.Tensor, device: torch.device | int | str = "cuda") -> None:
        self.sets.append((state.clone(), torch.device(device)))
        self.state = state.clone()


def _state() -> TrainingState:
    weight = torch.nn.Parameter(torch.ones(2, 2))
    return TrainingState(
        trainable={"w": weight},
        optimizer=torch.optim.AdamW([weight], lr=1e-3),
        scaler=torch.amp.GradScaler("cpu", enabled=False),
        rng=np.random.default_rng(1),
        generator=torch.Generator().manual_seed(1),
    )


@pytest.fixture
def cuda_rng(monkeypatch: pytest.MonkeyPatch) -> FakeCudaRng:
    """The trainable weights are said to be on cuda:0, whose RNG is `FakeCudaRng`."""
    fake = FakeCudaRng()
    monkeypatch.setattr(torch.cuda, "get_rng_state", fake.get)
    monkeypatch.setattr(torch.cuda, "set_rng_state", fake.set)
    monkeypatch.setattr(TrainingState, "cuda_device", lambda self: torch.device("cuda", 0), raising=False)
    return fake


def test_the_cuda_rng_is_saved_and_restored(cuda_rng: FakeCudaRng, tmp_path: Path) -> None:
    state = _state()
    saved = cuda_rng.state.clone()
    save_checkpoint(tmp_path, state.capture(step=3, fingerprint=FINGERPRINT, losses=[0.5]))
    cuda_rng.state = torch.full((16,), 99, dtype=torch.uint8)  # dropout drew on after the checkpoint

    checkpoint = load_checkpoint(tmp_path, FINGERPRINT)
    assert checkpoint is not None and checkpoint.torch_cuda is not None
    assert torch.equal(checkpoint.torch_cuda, saved)  # round-trips through the file
    state.restore(checkpoint)
    assert [(s.tolist(), d) for s, d in cuda_rng.sets] == [(saved.tolist(), torch.device("cuda", 0))]
    assert torch.equal(cuda_rng.state, saved)


def test_a_checkpoint_without_the_cuda_rng_still_loads(cuda_rng: FakeCudaRng, tmp_path: Path) -> None:
    """Written before the field existed: it resumes, leaving the CUDA RNG as the run's seed set it."""
    state = _state()
    old = dict(state.capture(step=3, fingerprint=FINGERPRINT, losses=[]).__dict__)
    old.pop("torch_cuda", None)
    torch.save(old, tmp_path / CHECKPOINT_FILE)

    checkpoint = load_checkpoint(tmp_path, FINGERPRINT)
    assert isinstance(checkpoint, Checkpoint) and checkpoint.torch_cuda is None
    state.restore(checkpoint)
    assert cuda_rng.sets == []


def test_on_the_cpu_no_cuda_rng_is_touched(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def no_cuda(*_: object) -> None:
        raise AssertionError("a CPU training read or set the CUDA RNG")

    monkeypatch.setattr(torch.cuda, "get_rng_state", no_cuda)
    monkeypatch.setattr(torch.cuda, "set_rng_state", no_cuda)
    state = _state()
    assert state.cuda_device() is None
    checkpoint = state.capture(step=1, fingerprint=FINGERPRINT, losses=[])
    assert checkpoint.torch_cuda is None
    checkpoint.torch_cuda = torch.zeros(
        16, dtype=torch.uint8
    )  # say, a CUDA run's (refused by its fingerprint)
    state.restore(checkpoint)
