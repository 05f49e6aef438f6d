"""Training checkpoints: everything a killed training needs to continue as if it never stopped.

A checkpoint holds the trainable weights, the optimizer (and grad scaler) state, every random state
the loop draws from (numpy pair sampler, torch noise generator, torch global RNG for dropout on the
CPU, the training device's CUDA RNG for dropout there, Python's `random`) and the step. Written
atomically (temp file + rename), so a kill mid-write leaves the previous checkpoint readable.
`fingerprint` (`training_fingerprint`) ties it to its inputs: resuming with other photos, settings
or base weights is refused rather than silently mixed.
`TrainingState` is the loop's live side of a checkpoint: what `capture` saves and `restore` sets.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image

from models.base_model import BaseModel
from models.errors import RoomfitModelError

if TYPE_CHECKING:
    from models.training import TrainSettings

CHECKPOINT_FILE = "checkpoint.pt"
STATUS_FILE = "checkpoint.json"  # the step, readable without torch (for ops and tests)


class CheckpointMismatch(RoomfitModelError):
    """The checkpoint folder holds a checkpoint of another training (other inputs or settings)."""

    code = "checkpoint_mismatch"


@dataclass
class Checkpoint:
    step: int
    fingerprint: str
    trainable: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    numpy_rng: dict[str, Any]
    torch_generator: torch.Tensor
    torch_global: torch.Tensor
    python_random: tuple[Any, ...]
    scaler: dict[str, Any] | None = None
    losses: list[float] = field(default_factory=list)
    # the training device's CUDA RNG (LoRA dropout on CUDA); None on CPU, and in checkpoints written
    # before it was saved (those resume with it as the run's seed left it)
    torch_cuda: torch.Tensor | None = None


@dataclass
class TrainingState:
    """The training loop's objects that a checkpoint captures and restores (with the torch global,
    CUDA and Python `random` states, which have no object)."""

    trainable: dict[str, torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    rng: np.random.Generator  # pairs and their augmentation
    generator: torch.Generator  # noise and timesteps

    def capture(self, *, step: int, fingerprint: str, losses: list[float]) -> Checkpoint:
        return Checkpoint(
            step=step,
            fingerprint=fingerprint,
            trainable={k: p.detach().cpu().clone() for k, p in self.trainable.items()},
            optimizer=self.optimizer.state_dict(),
            numpy_rng=self.rng.bit_generator.state,
            torch_generator=self.generator.get_state(),
            torch_global=torch.get_rng_state(),
            python_random=random.getstate(),
            scaler=self.scaler.state_dict() if self.scaler.is_enabled() else None,
            losses=losses,
            torch_cuda=torch.cuda.get_rng_state(cuda) if (cuda := self.cuda_device()) else None,
        )

    def restore(self, checkpoint: Checkpoint) -> None:
        with torch.no_grad():
            for name, param in self.trainable.items():
                param.copy_(checkpoint.trainable[name])
        self.optimizer.load_state_dict(checkpoint.optimizer)
        if checkpoint.scaler:
            self.scaler.load_state_dict(checkpoint.scaler)
        self.rng.bit_generator.state = checkpoint.numpy_rng
        self.generator.set_state(checkpoint.torch_generator)
        torch.set_rng_state(checkpoint.torch_global)
        if checkpoint.torch_cuda is not None and (cuda := self.cuda_device()) is not None:
            torch.cuda.set_rng_state(checkpoint.torch_cuda, cuda)
        random.setstate(checkpoint.python_random)

    def cuda_device(self) -> torch.device | None:
        """The CUDA device the trainable weights (and so dropout's draws) are on; None off CUDA."""
        device = next(iter(self.trainable.values())).device if self.trainable else None
        return device if device is not None and device.type == "cuda" else None


def training_inputs_digest(items: Sequence[tuple[Image.Image, Any]]) -> str:
    """sha256 of a training's inputs: each image's pixels with its box (None in domain training)."""
    digest = hashlib.sha256()
    for image, box in items:
        rgb = image.convert("RGB")
        digest.update(f"{rgb.size}|{box}|".encode())
        digest.update(rgb.tobytes())
    return digest.hexdigest()


def training_fingerprint(base: BaseModel, settings: TrainSettings, inputs: str) -> str:
    """What a checkpoint must match to be resumed: inputs (`training_inputs_digest`), base weights
    and every setting that changes the result (not `steps` or `checkpoint_every`: a run may be
    extended or checkpointed more often; not `micro_batch_size`: a step's noise, timesteps and dropped
    references do not depend on it, nor, up to LoRA dropout's masks (drawn per forward pass, so other
    draws of the same rate), its gradients, so a run that ran out of memory resumes at a smaller one)."""
    relevant = dataclasses.asdict(settings)
    for free in ("steps", "checkpoint_every", "micro_batch_size"):
        relevant.pop(free)
    payload = json.dumps(
        {
            "settings": relevant,
            "base": base.weights_hash,
            "inputs": inputs,
            "device": base.device.type,
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def save_checkpoint(folder: Path | str, checkpoint: Checkpoint) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / CHECKPOINT_FILE
    fd, tmp = tempfile.mkstemp(prefix=".checkpoint-", dir=folder)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(checkpoint.__dict__, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    status = {"step": checkpoint.step, "fingerprint": checkpoint.fingerprint}
    (folder / STATUS_FILE).write_text(json.dumps(status))
    return target


def load_checkpoint(folder: Path | str, fingerprint: str) -> Checkpoint | None:
    """The folder's checkpoint, None when there is none; CheckpointMismatch when it is another run's."""
    path = Path(folder) / CHECKPOINT_FILE
    if not path.is_file():
        return None
    # weights_only: a checkpoint folder may be shared storage; never unpickle arbitrary objects
    data = torch.load(path, map_location="cpu", weights_only=True)
    checkpoint = Checkpoint(**data)
    if checkpoint.fingerprint != fingerprint:
        raise CheckpointMismatch(
            f"{path} belongs to another training (other photos, settings or base model); "
            "use another checkpoint folder or delete it"
        )
    return checkpoint


def checkpoint_step(folder: Path | str) -> int | None:
    """The step of the folder's last complete checkpoint, without loading it."""
    try:
        return int(json.loads((Path(folder) / STATUS_FILE).read_text())["step"])
    except (OSError, ValueError, KeyError):
        return None
