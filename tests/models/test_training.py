"""Acceptance 1: training learns the product, not just photos in general.

A synthetic product ("checker": a white / light grey checkerboard diamond) is pasted in varied
poses (position, scale, rotation, flip) on varied random backgrounds. LoRA is trained on 6 views;
the denoising loss (painted cells, fixed noise and timesteps, identical for both models) is
measured on 12 HELD-OUT views of it and on the same 12 scenes with another object in its place
("stripes": a black / dark grey striped disc), untuned base vs tuned.

Measured here (2 CPU cores, torch 2.13 CPU, these seeds; ~10 s on an idle machine): the held-out
checker loss drops 17.1 % (1.1449 -> 0.9489), the stripes loss 15.7 % (1.1313 -> 0.9537): the
product's own gain leads by 1.4 points (in a sweep: 0.7 at 50 steps, ~1.5 at 100-150, 1.2 at 300;
2.2 at 300 steps with lr 1e-2). Most of what any adapter learns in 150 steps on
a model with random weights is denoising in general (shared by both objects, whose views share
backgrounds and poses); the lead is what it learnt about this object. The thresholds keep slack:
a gain of at least 10 % and a lead of at least 0.5 points.

Two choices the test makes, and why:
- lr 3e-3 instead of the paper's 3e-5: the budget is 150 steps on a random tiny model, not 400+
  steps on a trained one.
- The tiny VAE's latents are rescaled to unit variance (as Stable Diffusion chose its 0.18215 for its
  VAE): `models.tiny` keeps SD's 0.18215, which leaves its random VAE's latents at std ~0.05, so
  noise drowns them at every timestep and no denoiser could tell one object from another.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from models.adapter_format import read_adapter
from models.base_model import BaseModel, load_base_model
from models.lora import inject_lora, lora_parameters
from models.training import TrainSettings, train_subject
from models.training_loss import encode_pairs, evaluation_loss
from models.training_pairs import evaluation_pairs
from tests.models.training_fixtures import views

# held-out views of both objects share their backgrounds and poses (same scene seeds): only the
# object differs, so the comparison measures the object, not which rooms were drawn
TRAIN_VIEWS, HELD_OUT = range(0, 6), range(100, 112)
SETTINGS = TrainSettings(steps=150, learning_rate=3e-3, batch_size=4, seed=1)
TIMESTEPS = (50, 150, 300, 450)  # where the clean latents still matter; above, denoising is generic
MIN_GAIN = 0.10  # relative drop of the held-out product's loss (measured 0.171)
MIN_LEAD = 0.005  # gain minus the other object's gain (measured 0.014)


@pytest.fixture(scope="module")
def calibrated_base(tiny_folder: Path) -> BaseModel:
    base = load_base_model("tiny", tiny_dir=tiny_folder, device="cpu")
    base.lora = inject_lora(base.unet, rank=4)
    raw = encode_pairs(base, evaluation_pairs(views("checker", TRAIN_VIEWS), resolution=base.resolution))[0]
    base.vae.register_to_config(scaling_factor=float(base.vae.config.scaling_factor / raw.std()))
    return base


@pytest.mark.slow
def test_training_learns_the_product(calibrated_base: BaseModel) -> None:
    base = calibrated_base
    held_out = evaluation_pairs(views("checker", HELD_OUT), resolution=base.resolution)
    other = evaluation_pairs(views("stripes", HELD_OUT), resolution=base.resolution)
    before = [evaluation_loss(base, pairs, timesteps=TIMESTEPS) for pairs in (held_out, other)]

    result = train_subject(base, views("checker", TRAIN_VIEWS), SETTINGS)
    adapter = read_adapter(result.artifact)
    with torch.no_grad():  # the adapter as a painter would load it (fp16 file)
        for key, param in lora_parameters(base.unet).items():
            param.copy_(adapter.lora[key].float())
    after = [evaluation_loss(base, pairs, timesteps=TIMESTEPS) for pairs in (held_out, other)]

    gain, other_gain = ((b - a) / b for b, a in zip(before, after, strict=True))
    print(
        f"LEARNS product {before[0]:.4f}->{after[0]:.4f} ({gain:.2%}), other {before[1]:.4f}->{after[1]:.4f}"
    )
    assert gain >= MIN_GAIN
    assert gain - other_gain >= MIN_LEAD
