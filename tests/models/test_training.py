"""Acceptance 1: training learns the product, not just photos in general.

A synthetic product ("checker": a white / light grey checkerboard diamond) is pasted in varied
poses (position, scale, rotation, flip) on varied random backgrounds. LoRA is trained on 6 views;
the denoising loss (painted cells, fixed noise and timesteps, identical for both models) is
measured on 12 HELD-OUT views of it and on the same 12 scenes with another object in its place
("stripes": a black / dark grey striped disc), untuned base vs tuned.

The base first goes through a domain stage (`training_fixtures.domain_stage`: every UNet weight,
300 steps at lr 1e-3, on 48 views of random objects that are neither checker nor stripes), so that
it has learnt what is general about such scenes, as a pretrained model has. From the random base,
97 % of what LoRA learns is that general denoising, shared by both objects: its lead was 0.3 to 0.7
points over seeds, and it went negative for one seed when the LoRA targets changed (which only
reorders the random draws). From the domain stage, four fifths of LoRA's gain is about the product.

Measured (torch 2.13 CPU, `bench/bench_learning_lead.py --domain-stage 300 --variants paper`,
seeds 1 to 3): the held-out checker loss drops 2.46 to 2.62 % (0.4837 before), the stripes loss 0.46
to 0.48 % (0.5038): the product leads by 2.00 to 2.15 points. Seed 1 is the test's. The thresholds
keep slack: a gain of at least 1.5 % and a lead of at least 1 point. The domain stage costs about a
minute; the test runs about 90 s.

The issue's target, a lead of 5 points, is not reached by LoRA here, and what limits it is LoRA's
reach in this tiny UNet, not the data or the loop: from the random base, rank 32 instead of 4, 600
steps, lr 1e-2, or the loss on the painted cells only lead by 0.2 to 1.5; from the domain stage,
more training lifts the lead to 3.4 only by raising the other object's loss. `--variants reach`
shows where the cap is: LoRA trained on the held-out views themselves gains no more (2.2 to 2.5 %),
every weight trained on them gains 6 %, and only LoRA on every resnet convolution leads by over 5
(5.85), an adapter of 5.1 MB at real size against the 2 MB goal; the layers that would still fit it
lead by 2.75 to 4.07 (`--variants small`), and with every time_emb_proj too (1.96 MB) by 4.11
(`--variants time-fit`). A tiny UNet twice as wide, or with 1 or 2 larger heads
instead of 8, leads by less (0.47, 1.37, 1.82: `--unet-channels`, `--unet-heads`); so does the loss
over the whole schedule (1.95) or its noisy half (0.80, `--timesteps`); its least noisy timesteps
lead by 2.40. A better-trained base leads by less: 1500 domain steps, or 480 scenes instead of 48,
leave LoRA 0.20 to 0.71 points (`--domain-stage`, `--domain-views`).
The same loop training every UNet weight from the random base leads by 6.8 (`--variants full`).
BENCHMARKS.md has the tables.

Why lr 3e-3 instead of the paper's 3e-5: the budget is 150 steps on a random tiny model, not 400+
steps on a trained one.

The tiny preset's VAE (version 2) has a scaling factor that puts its latents at unit std, as Stable
Diffusion chose its 0.18215 for its own VAE (`models.tiny.unit_variance_scale`); with SD's value the
random VAE's latents sat at std ~0.043, where noise drowns them at every timestep. Checked below.
"""

from __future__ import annotations

import pytest
import torch

from models.adapter_format import read_adapter
from models.base_model import BaseModel
from models.lora import lora_parameters
from models.training import TrainSettings, train_subject
from models.training_loss import encode_pairs, evaluation_loss
from models.training_pairs import evaluation_pairs
from tests.models.training_fixtures import domain_stage, views

# held-out views of both objects share their backgrounds and poses (same scene seeds): only the
# object differs, so the comparison measures the object, not which rooms were drawn
TRAIN_VIEWS, HELD_OUT = range(0, 6), range(100, 112)
SETTINGS = TrainSettings(steps=150, learning_rate=3e-3, batch_size=4, seed=1)
TIMESTEPS = (50, 150, 300, 450)  # where the clean latents still matter; above, denoising is generic
MIN_GAIN = 0.015  # relative drop of the held-out product's loss (measured 0.0246 at seed 1)
MIN_LEAD = 0.01  # gain minus the other object's gain (measured 0.0200 at seed 1)
DOMAIN_STEPS = 300


def test_the_tiny_vaes_latents_have_unit_spread(base: BaseModel) -> None:
    """The scaled latents of both objects' scenes (what training and painting see) have std ~1."""
    for kind in ("checker", "stripes"):
        pairs = evaluation_pairs(views(kind, HELD_OUT), resolution=base.resolution)
        latents = encode_pairs(base, pairs).latents  # [12,4,16,16]
        assert 0.8 < float(latents.std()) < 1.25, kind


@pytest.mark.slow
def test_training_learns_the_product(own_base: BaseModel) -> None:
    base = own_base
    domain_stage(base, DOMAIN_STEPS)
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
