"""Training checkpoints: everything a killed training needs to continue as if it never stopped.

A checkpoint holds the trainable weights, the optimizer (and grad scaler) state, every random state
the loop draws from (numpy pair sampler, torch noise generator, torch global RNG for dropout, Python's
`random`) and the step. Written atomically (temp file + rename), so a kill mid-write leaves the
previous checkpoint readable. `fingerprint` ties it to its inputs: resuming with other photos,
settings or base weights is refused rather than silently mixed.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from models.errors import RoomfitModelError

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
