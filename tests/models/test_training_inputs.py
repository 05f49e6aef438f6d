"""Training feeds the UNet Paint-by-Example's channel order (models/training_loss.py) and pairs whose
reference is the augmented crop, not the plain one (models/training_pairs.py)."""

from __future__ import annotations

import numpy as np
import torch
from diffusers import DDPMScheduler

from models.augmentation import crop_reference
from models.base_model import BaseModel
from models.training_loss import EncodedPairs, denoising_loss
from models.training_pairs import SubjectPhoto, make_pair
from tests.models.conftest import random_room


def test_the_training_step_feeds_noisy_latents_then_masked_latents_then_the_keep_mask(
    base: BaseModel,
) -> None:
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn((2, 4, 16, 16), generator=generator)
    encoded = EncodedPairs(
        latents=latents,
        masked_latents=torch.randn((2, 4, 16, 16), generator=generator),
        keep_latent=(torch.rand((2, 1, 16, 16), generator=generator) > 0.5).float(),
        cond=torch.randn((2, 1, base.image_encoder.proj_size), generator=generator),
    )
    noise = torch.randn((2, 4, 16, 16), generator=generator)
    timesteps = torch.tensor([10, 600])
    scheduler = DDPMScheduler.from_config(base.scheduler_config)
    seen: list[torch.Tensor] = []
    handle = base.unet.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach().clone()))
    try:
        with torch.no_grad():
            denoising_loss(base.unet, scheduler, encoded, noise, timesteps)
    finally:
        handle.remove()
    [unet_input] = seen
    assert unet_input.shape == (2, 9, 16, 16)
    assert torch.allclose(unet_input[:, :4], scheduler.add_noise(latents, noise, timesteps))
    assert torch.equal(unet_input[:, 4:8], encoded.masked_latents)
    assert torch.equal(unet_input[:, 8:], encoded.keep_latent)


def test_a_training_pair_references_the_augmented_crop() -> None:
    photo = SubjectPhoto(image=random_room(120, 90, seed=1), box=(20.0, 15.0, 90.0, 70.0))
    plain = np.asarray(crop_reference(photo.image, photo.box))
    pairs = [make_pair(photo, np.random.default_rng(seed), resolution=64) for seed in range(4)]
    references = [np.asarray(pair.reference) for pair in pairs]
    # every default pair flips, turns, zooms or re-lights the product: never the plain crop
    assert all(r.shape != plain.shape or not np.array_equal(r, plain) for r in references)
    assert not all(np.array_equal(references[0], r) for r in references[1:])
