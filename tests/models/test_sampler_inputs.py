"""What the sampler feeds the UNet at every step, read from the UNet itself (models/sampler.py):
Paint-by-Example's channel order (latents, masked room latents, keep-mask) and classifier-free
guidance that moves from the unconditional prediction towards the reference's."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image

from models import Painter, PaintRequest
from models.sampler import make_scheduler
from tests.models.conftest import random_room

STEPS = 3


def _request(reference: Image.Image, seed: int) -> PaintRequest:
    room = random_room(64, 64, seed=seed)  # the crop is the whole room: latents 16 x 16
    mask = np.zeros((64, 64), bool)
    mask[16:48, 12:52] = True
    return PaintRequest(room, mask, seed=seed, reference=reference)


def _record(painter: Painter, request: PaintRequest, guidance_scale: float) -> list[dict[str, Any]]:
    """Each UNet call of one paint: its input, its conditioning and its prediction."""
    calls: list[dict[str, Any]] = []

    def hook(_module: torch.nn.Module, args: tuple, kwargs: dict, output: Any) -> None:  # type: ignore[type-arg]
        calls.append(
            {
                "input": args[0].detach().clone(),
                "cond": kwargs["encoder_hidden_states"].detach().clone(),
                "noise": output.sample.detach().clone(),
            }
        )

    handle = painter.base.unet.register_forward_hook(hook, with_kwargs=True)
    try:
        painter.paint([request], steps=STEPS, guidance_scale=guidance_scale)
    finally:
        handle.remove()
    return calls


def test_each_step_feeds_latents_then_the_masked_room_then_the_mask(
    painter: Painter, reference: Image.Image
) -> None:
    calls = _record(painter, _request(reference, seed=3), guidance_scale=5.0)
    assert len(calls) == STEPS
    inputs = [call["input"] for call in calls]  # [2, 9, 16, 16] each: both guidance rows
    # the first step denoises the request's own seeded noise (DDIM: no input scaling)
    noise = torch.randn((1, 4, 16, 16), generator=torch.Generator("cpu").manual_seed(3))
    assert torch.allclose(inputs[0][:, :4], noise.expand(2, -1, -1, -1).to(inputs[0].dtype), atol=1e-6)
    # the masked room's latents and the keep-mask are the same at every step; the latents move
    for later in inputs[1:]:
        assert torch.equal(later[:, 4:], inputs[0][:, 4:])
        assert not torch.allclose(later[:, :4], inputs[0][:, :4])
    keep = inputs[0][:, 8]
    assert set(keep.unique().tolist()) == {0.0, 1.0}


def test_guidance_extrapolates_from_the_unconditional_to_the_conditional_prediction(
    painter: Painter, reference: Image.Image
) -> None:
    scale = 3.0
    calls = _record(painter, _request(reference, seed=4), guidance_scale=scale)
    first, second = calls[0], calls[1]
    uncond_vector = painter.base.image_encoder.uncond_vector.to(first["cond"].dtype)  # [1,1,D]
    is_uncond = [torch.equal(row, uncond_vector[0]) for row in first["cond"]]
    assert sorted(is_uncond) == [False, True]  # one unconditional row, one with the reference
    u, c = is_uncond.index(True), is_uncond.index(False)
    guided = first["noise"][u] + scale * (first["noise"][c] - first["noise"][u])
    scheduler = make_scheduler("ddim", painter.base.scheduler_config)
    scheduler.set_timesteps(STEPS)
    latents = first["input"][c : c + 1, :4]
    expected = scheduler.step(guided[None], scheduler.timesteps[0], latents).prev_sample
    # the second step's latents are the first step's, moved by the guided prediction
    assert torch.allclose(second["input"][c, :4], expected[0], atol=1e-5)
    assert torch.equal(second["input"][u, :4], second["input"][c, :4])
