"""roomfit's Paint-by-Example sampler: paint a batch of room crops guided by a reference embedding.

Reads like the algorithm: crop -> encode reference -> encode masked crops -> prepare latents ->
denoising loop with classifier-free guidance -> decode -> paste back. diffusers' deprecated
`PaintByExamplePipeline` is not used (it has no LoRA loader); the UNet may carry roomfit's LoRA,
whose active adapter the caller chose (see `models.painter`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from PIL import Image

from models.base_model import BaseModel
from models.compositing import CropPlan, crop_box_around_mask, crop_mask, crop_pixels, paste_masked, plan_crop
from models.conditioning import reference_embeddings
from models.errors import InvalidImageError
from models.images import as_rgb
from models.unet_input import build_unet_input, keep_mask_from_paint_mask, latent_keep_mask, masked_image

SCHEDULERS = ("ddim", "dpmsolver++")
DEFAULT_GUIDANCE_SCALE = 5.0  # classifier-free guidance; 1 (or less) turns it off
ProgressCallback = Callable[[int, int], None]  # (steps done, total steps)


@dataclass
class PaintRequest:
    room: Image.Image  # RGB, upright (models.images.open_image)
    mask: np.ndarray  # [H, W] bool, True = paint; same size as room
    seed: int = 0
    reference: Image.Image | None = None  # the product crop; or ...
    reference_embedding: torch.Tensor | None = None  # ... its embedding [1, D] (from an adapter file:
    # models.conditioning.product_embedding)


def cfg_rows(per_request: torch.Tensor, guidance_scale: float) -> torch.Tensor:
    """Per-request values laid out as the UNet batch's rows: with classifier-free guidance the batch
    is [every request's unconditional row; every request's conditional row], so both rows of a
    request get its value (its latents, its mask, its adapter slot)."""
    return torch.cat([per_request] * 2) if guidance_scale > 1.0 else per_request


def make_scheduler(name: str, config: dict) -> SchedulerMixin:
    """A fresh scheduler per call: schedulers keep per-run state, and workers paint from several threads."""
    if name == "ddim":
        return DDIMScheduler.from_config(config)
    if name == "dpmsolver++":
        return DPMSolverMultistepScheduler.from_config(config, algorithm_type="dpmsolver++")
    raise ValueError(f"unknown scheduler {name!r}; expected one of {SCHEDULERS}")


class InpaintPipeline:
    def __init__(
        self,
        base: BaseModel,
        *,
        scheduler: str = "ddim",
        margin: float = 0.25,
        feather_px: int = 2,
    ) -> None:
        make_scheduler(scheduler, base.scheduler_config)  # fail now on a bad name
        self.base = base
        self.scheduler_name = scheduler
        self.margin = margin
        self.feather_px = feather_px

    @property
    def resolution(self) -> int:
        return self.base.resolution

    @torch.no_grad()
    def __call__(
        self,
        requests: Sequence[PaintRequest],
        *,
        steps: int,
        guidance_scale: float = DEFAULT_GUIDANCE_SCALE,
        progress: ProgressCallback | None = None,
    ) -> list[Image.Image]:
        """Paint every request in one batch; each output has its room's size."""
        if not requests:
            return []
        base, unet, vae = self.base, self.base.unet, self.base.vae
        device, dtype = base.device, base.dtype
        batch = len(requests)
        do_cfg = guidance_scale > 1.0

        # 1. Crop a square around each mask and bring it to the model's resolution; the square is
        # never built at its own size (models.crop_plan), however long the room's side.
        rooms = [as_rgb(r.room) for r in requests]
        masks = [np.asarray(r.mask) != 0 for r in requests]  # [H,W] bool, True = paint
        plans = [self._plan(room, mask) for room, mask in zip(rooms, masks, strict=True)]
        crops = torch.stack([crop_pixels(room, plan) for room, plan in zip(rooms, plans, strict=True)])
        paint = torch.stack([crop_mask(mask, plan) for mask, plan in zip(masks, plans, strict=True)])
        crops, paint = crops.to(device, dtype), paint.to(device, dtype)  # [B,3,R,R] in [-1,1], [B,1,R,R]

        # 2. Reference embeddings; the negative branch is the encoder's learned unconditional vector.
        cond = self._embeddings(requests)  # [B,1,D]
        if do_cfg:
            uncond = base.image_encoder.uncond_vector.to(device, dtype).expand(batch, 1, -1)  # [B,1,D]
            cond = torch.cat([uncond, cond])  # [2B,1,D]

        # 3. Encode the crops with the region to paint blanked out; the mask goes to latent size.
        keep = keep_mask_from_paint_mask(paint).to(dtype)  # [B,1,R,R], 1 = keep
        masked_latents = vae.encode(masked_image(crops, keep)).latent_dist.mode()  # [B,4,R/f,R/f]
        masked_latents = masked_latents * vae.config.scaling_factor
        keep_latent = latent_keep_mask(keep, tuple(masked_latents.shape[-2:]))  # [B,1,R/f,R/f]
        masked_latents = cfg_rows(masked_latents, guidance_scale)
        keep_latent = cfg_rows(keep_latent, guidance_scale)

        # 4. Initial noise, one generator per request: an output never depends on its batch-mates.
        scheduler = make_scheduler(self.scheduler_name, base.scheduler_config)
        scheduler.set_timesteps(steps, device=device)
        shape = (1, vae.config.latent_channels, *masked_latents.shape[-2:])
        latents = torch.cat(
            [torch.randn(shape, generator=torch.Generator("cpu").manual_seed(r.seed)) for r in requests]
        ).to(device, dtype)  # [B,4,h,w]
        latents = latents * scheduler.init_noise_sigma

        # 5. Denoise.
        for i, t in enumerate(scheduler.timesteps):
            model_latents = cfg_rows(latents, guidance_scale)  # [2B,4,h,w]
            model_latents = scheduler.scale_model_input(model_latents, t)
            unet_input = build_unet_input(model_latents, masked_latents, keep_latent)  # [2B,9,h,w]
            noise = unet(unet_input, t, encoder_hidden_states=cond).sample  # [2B,4,h,w]
            if do_cfg:
                noise_uncond, noise_cond = noise.chunk(2)
                noise = noise_uncond + guidance_scale * (noise_cond - noise_uncond)
            latents = scheduler.step(noise, t, latents).prev_sample
            if progress is not None:
                progress(i + 1, len(scheduler.timesteps))

        # 6. Decode, then paste each painted crop back into its full-size room.
        images = vae.decode(latents / vae.config.scaling_factor).sample  # [B,3,R,R] in [-1,1]
        images = ((images.float() / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8)
        images = images.permute(0, 2, 3, 1).cpu().numpy()  # [B,R,R,3]
        outputs = []
        for room, painted, mask, plan in zip(rooms, images, masks, plans, strict=True):
            pasted = paste_masked(
                np.asarray(room), Image.fromarray(painted), mask, plan.box, feather_px=self.feather_px
            )
            outputs.append(Image.fromarray(pasted))
        return outputs

    # --- per-request preparation ---------------------------------------------------------------

    def _plan(self, room: Image.Image, mask: np.ndarray) -> CropPlan:
        if mask.shape != (room.height, room.width):
            raise InvalidImageError(
                f"the mask is {mask.shape[1]}x{mask.shape[0]} but the room is {room.width}x{room.height}"
            )
        box = crop_box_around_mask(mask, margin=self.margin, min_side=self.resolution // 2)
        return plan_crop(box, room.size, self.resolution)

    def _embeddings(self, requests: Sequence[PaintRequest]) -> torch.Tensor:
        """-> [B,1,D] on the UNet's device and dtype. Each row moves before the stack: an adapter's
        embedding comes from its file (CPU), an encoded reference from the encoder's device (CUDA)."""
        device, dtype = self.base.device, self.base.dtype
        return torch.stack([self._embedding(r).to(device, dtype) for r in requests])

    def _embedding(self, request: PaintRequest) -> torch.Tensor:
        """-> [1,D]"""
        if request.reference_embedding is not None:
            return request.reference_embedding.reshape(1, -1)
        if request.reference is not None:
            # the same function as training's (models.conditioning): the whole crop, no centre cut
            return reference_embeddings(self.base, [request.reference])[0]
        raise InvalidImageError("a paint request needs a reference image or an adapter with one")
