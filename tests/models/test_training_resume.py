"""Acceptance 4: a training killed (SIGKILL, in a child process) after a checkpoint and started again
ends with the adapter an uninterrupted run with the same seed ends with."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from models.adapter_format import read_adapter
from models.base_model import BaseModel, load_base_model
from models.training import StopTraining, TrainProgress, train_subject
from models.training_checkpoint import CheckpointMismatch, checkpoint_step
from tests.models.training_fixtures import RESUME_PHOTOS, resume_settings, views

ROOT = Path(__file__).resolve().parents[2]
STEPS, EVERY, HANG_AFTER = 9, 3, 4  # checkpoints at 3, 6, 9; killed after step 4


@pytest.fixture(scope="module")
def own_base(tiny_folder: Path) -> BaseModel:
    """A base of this module's own: training must not depend on what other tests did to theirs."""
    return load_base_model("tiny", tiny_dir=tiny_folder, device="cpu")


def lora_of(artifact: bytes) -> dict[str, torch.Tensor]:
    return {k: v.float() for k, v in read_adapter(artifact).lora.items()}


@pytest.mark.slow
def test_resume_after_kill_equals_an_uninterrupted_run(
    own_base: BaseModel, tiny_folder: Path, tmp_path: Path
) -> None:
    checkpoints, marker = tmp_path / "ckpt", tmp_path / "hung"
    child = subprocess.Popen(
        [
            *(sys.executable, "-m", "tests.models.training_fixtures", str(tiny_folder), str(checkpoints)),
            *(str(STEPS), str(EVERY), str(HANG_AFTER), str(marker)),
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 240
        while not marker.exists():
            if child.poll() is not None:
                pytest.fail(f"the training child exited early: {child.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
            if time.monotonic() > deadline:
                pytest.fail("the training child did not reach its kill point")
            time.sleep(0.2)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()
        child.stderr.close()  # type: ignore[union-attr]
    assert child.returncode == -signal.SIGKILL
    assert checkpoint_step(checkpoints) == EVERY  # the last checkpoint before the kill

    photos = views("checker", RESUME_PHOTOS)
    resumed = train_subject(own_base, photos, resume_settings(STEPS, EVERY), checkpoint_dir=checkpoints)
    straight = train_subject(own_base, photos, resume_settings(STEPS, 0))

    assert resumed.summary.resumed_from_step == EVERY and straight.summary.resumed_from_step == 0
    assert resumed.summary.losses == pytest.approx(straight.summary.losses, rel=1e-6, abs=1e-7)
    a, b = lora_of(resumed.artifact), lora_of(straight.artifact)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], rtol=1e-3, atol=1e-6), key
    # B starts at zero: the adapter moved, so equal adapters are not two untrained ones
    moved = max(float(t.abs().max()) for k, t in b.items() if ".lora_B." in k)
    assert moved > 1e-3

    # a checkpoint of another run is refused, not silently mixed in
    with pytest.raises(CheckpointMismatch):
        train_subject(
            own_base,
            photos[:2],
            resume_settings(STEPS, EVERY),
            checkpoint_dir=checkpoints,
        )


def test_a_stop_asked_between_checkpoints_is_checkpointed_and_resumes_exactly(
    own_base: BaseModel, tmp_path: Path
) -> None:
    """A worker that is stopping raises StopTraining from its progress callback: the step it is at
    is checkpointed although none is due, and the next run goes on from exactly there."""
    photos = views("checker", RESUME_PHOTOS)
    checkpoints = tmp_path / "ckpt"
    seen: list[int] = []

    def stop_at_step_4(progress: TrainProgress) -> None:
        seen.append(progress.step)
        if progress.step == HANG_AFTER:
            raise StopTraining

    with pytest.raises(StopTraining):
        train_subject(
            own_base,
            photos,
            resume_settings(STEPS, EVERY),
            progress=stop_at_step_4,
            checkpoint_dir=checkpoints,
        )
    assert seen == [1, 2, 3, 4]
    assert checkpoint_step(checkpoints) == HANG_AFTER  # not 3, the last due one

    resumed = train_subject(own_base, photos, resume_settings(STEPS, EVERY), checkpoint_dir=checkpoints)
    straight = train_subject(own_base, photos, resume_settings(STEPS, 0))
    assert resumed.summary.resumed_from_step == HANG_AFTER
    assert resumed.summary.losses == pytest.approx(straight.summary.losses, rel=1e-6, abs=1e-7)
    a, b = lora_of(resumed.artifact), lora_of(straight.artifact)
    for key in a:
        assert torch.allclose(a[key], b[key], rtol=1e-3, atol=1e-6), key
