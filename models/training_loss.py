"""The denoising loss: what a training step minimises, and what compares two models afterwards.

`encode_pairs` is the frozen half of a step (VAE and image encoder, no gradients), `denoising_loss`
the UNet's half (the paper's objective), and `evaluation_loss` the same loss with fixed noise and
timesteps, so a base and a tuned model are measured on identical inputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler

from models.base_model import BaseModel
from models.conditioning import reference_embeddings
from models.training_pairs import TrainingPair
from models.unet_input import build_unet_input, keep_mask_from_paint_mask, latent_keep_mask, masked_image


class EncodedPairs(NamedTuple):
    """A batch of training pairs through the frozen encoders."""

    latents: torch.Tensor  # [B,4,h,w] the source photo (the denoising target)
    masked_latents: torch.Tensor  # [B,4,h,w] the source with the region to paint blanked out
    keep_latent: torch.Tensor  # [B,1,h,w] 1 = keep
    cond: torch.Tensor  # [B,1,D] each pair's reference embedding (models.conditioning)


@torch.no_grad()
def encode_pairs(base: BaseModel, pairs: Sequence[TrainingPair]) -> EncodedPairs:
    """The frozen half of a step: VAE latents of the source and of the masked source, the keep-mask
    at latent size, and the image encoder's embedding of each reference."""
    device, dtype, vae = base.device, base.dtype, base.vae
    source = torch.stack([p.source for p in pairs]).to(device, dtype)  # [B,3,R,R] in [-1,1]
    paint = torch.stack([p.paint_mask for p in pairs]).to(device, dtype)  # [B,1,R,R] 1 = paint
    keep = keep_mask_from_paint_mask(paint).to(dtype)  # [B,1,R,R] 1 = keep
    batch = source.shape[0]
    # One VAE pass for both; the posterior mode (not a sample) for the target too, as inference
    # encodes the masked room: the VAE's posterior std is tiny and a sample would only add noise.
    both = vae.encode(torch.cat([source, masked_image(source, keep)])).latent_dist.mode()  # [2B,4,h,w]
    both = both * vae.config.scaling_factor
    latents, masked_latents = both[:batch], both[batch:]  # [B,4,h,w] each
    keep_latent = latent_keep_mask(keep, tuple(latents.shape[-2:]))  # [B,1,h,w]
    cond = reference_embeddings(base, [p.reference for p in pairs])  # [B,1,D], as painting makes it
    return EncodedPairs(latents, masked_latents, keep_latent, cond)


def draw_noise(latents: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Noise shaped like `latents`, drawn on the CPU generator whatever the device: the same stream
    on CPU and GPU, and resumable from the generator's saved state."""
    return torch.randn(latents.shape, generator=generator).to(latents.device, latents.dtype)


def denoising_loss(
    unet: torch.nn.Module,
    noise_scheduler: DDPMScheduler,
    encoded: EncodedPairs,
    noise: torch.Tensor,
    timesteps: torch.Tensor,
    *,
    amp_dtype: torch.dtype | None = None,
    painted_only: bool = False,
) -> torch.Tensor:
    """MSE of the UNet's prediction; `painted_only` averages over the latent cells to paint only
    (what inpainting keeps: everything else is pasted back from the room)."""
    latents = encoded.latents  # [B,4,h,w]
    noisy = noise_scheduler.add_noise(latents, noise, timesteps)  # [B,4,h,w]
    unet_input = build_unet_input(noisy, encoded.masked_latents, encoded.keep_latent)  # [B,9,h,w]
    with torch.autocast(latents.device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
        prediction = unet(unet_input, timesteps, encoder_hidden_states=encoded.cond).sample  # [B,4,h,w]
    if noise_scheduler.config.prediction_type == "v_prediction":
        target = noise_scheduler.get_velocity(latents, noise, timesteps)
    else:
        target = noise
    if not painted_only:
        return F.mse_loss(prediction.float(), target.float())
    paint = (1 - encoded.keep_latent.float()).expand_as(prediction)  # [B,4,h,w] 1 = painted cell
    return ((prediction.float() - target.float()) ** 2 * paint).sum() / paint.sum().clamp(min=1)


@torch.no_grad()
def evaluation_loss(
    base: BaseModel,
    pairs: Sequence[TrainingPair],
    *,
    timesteps: Sequence[int] = (50, 150, 300, 500, 700, 900),
    seed: int = 0,
    painted_only: bool = True,
) -> float:
    """Mean denoising loss over `pairs` x `timesteps` with fixed noise: the same numbers for any
    adapter, so two models (base vs tuned) are compared on identical inputs. By default over the
    painted cells only: the product, not the room around it."""
    noise_scheduler = DDPMScheduler.from_config(base.scheduler_config)
    encoded = encode_pairs(base, pairs)
    generator = torch.Generator().manual_seed(seed)
    batch, device = encoded.latents.shape[0], encoded.latents.device
    total = 0.0
    for t in timesteps:
        noise = draw_noise(encoded.latents, generator)  # [B,4,h,w]
        steps = torch.full((batch,), t, dtype=torch.long, device=device)  # [B]
        total += float(
            denoising_loss(base.unet, noise_scheduler, encoded, noise, steps, painted_only=painted_only)
        )
    return total / len(timesteps)
