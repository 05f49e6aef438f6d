"""A training that diverges (its loss, then its weights, no longer numbers) fails with
`training_diverged` and writes nothing, instead of storing an adapter that paints noise; one
non-finite loss alone (an fp16 overflow the GradScaler skips) is not divergence."""

from __future__ import annotations

import math

import pytest

from models.base_model import BaseModel
from models.divergence import MAX_NONFINITE_STEPS, check_losses
from models.errors import TrainingDiverged
from models.training import TrainSettings, train_subject
from tests.models.training_fixtures import views


def test_a_diverging_training_fails_and_leaves_the_base_as_it_was(own_base: BaseModel) -> None:
    photos = views("checker", range(2))
    wild = TrainSettings(steps=40, learning_rate=1e8, batch_size=1, seed=1, max_grad_norm=None)
    with pytest.raises(TrainingDiverged, match="lower learning rate") as raised:
        train_subject(own_base, photos, wild)
    assert raised.value.code == "training_diverged"
    # The base's LoRA slots were put back: the next training of this worker is sound.
    sound = train_subject(own_base, photos, TrainSettings(steps=3, batch_size=1, seed=1))
    assert all(math.isfinite(loss) for loss in sound.summary.losses)


def test_losses_diverge_only_when_none_of_the_last_steps_was_a_number() -> None:
    nan, inf = math.nan, math.inf
    check_losses([0.5] + [nan] * (MAX_NONFINITE_STEPS - 1))  # recovering, or too few to tell
    check_losses([nan] * (MAX_NONFINITE_STEPS - 1) + [0.5])
    with pytest.raises(TrainingDiverged, match=f"{MAX_NONFINITE_STEPS} steps running"):
        check_losses([0.5] + [nan, inf, -inf] * MAX_NONFINITE_STEPS)
