"""A training that diverged: its loss is no longer a number, or its weights are not.

Such a run would write an adapter (or fine-tune) that paints noise, stored as the product's and
painted into every preview of it. Training stops at the first sure sign instead, with
`TrainingDiverged` (`training_diverged`), which a training job reports as its failure.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

from models.errors import TrainingDiverged

# Not one non-finite loss: under fp16 autocast a step whose numbers overflow is normal, and the
# GradScaler skips its update and lowers its scale. Ten in a row it does not recover from.
MAX_NONFINITE_STEPS = 10


def check_losses(losses: Sequence[float]) -> None:
    """Raise TrainingDiverged when the last MAX_NONFINITE_STEPS step losses are all NaN or infinite."""
    tail = losses[-MAX_NONFINITE_STEPS:]
    if len(tail) == MAX_NONFINITE_STEPS and not any(math.isfinite(loss) for loss in tail):
        raise TrainingDiverged(
            f"training diverged: the loss was not a number for {MAX_NONFINITE_STEPS} steps running "
            f"(to step {len(losses)}); try a lower learning rate"
        )


def check_weights(trainable: Mapping[str, torch.Tensor]) -> None:
    """Raise TrainingDiverged when any trained weight is NaN or infinite (before it is written)."""
    for name, weight in trainable.items():
        if not bool(torch.isfinite(weight).all()):
            raise TrainingDiverged(
                f"training diverged: weight {name} is not a number; nothing was written. "
                "Try a lower learning rate"
            )
