"""The 9-channel UNet input of Paint-by-Example and the mask polarity: one place, shared by
inference (`models.sampler`) and training.

roomfit's masks say what to paint (non-zero = paint). Paint-by-Example's mask channel says what to
keep (1 = keep, 0 = paint). Only `keep_mask_from_paint_mask` turns one into the other.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def keep_mask_from_paint_mask(paint_mask: torch.Tensor) -> torch.Tensor:
    """[B,1,H,W] user mask (non-zero / > 0.5 = paint) -> [B,1,H,W] float keep-mask (1 = keep, 0 = paint)."""
    return (paint_mask <= 0.5).to(torch.float32)


def masked_image(image: torch.Tensor, keep_mask: torch.Tensor) -> torch.Tensor:
    """[B,3,H,W] image in [-1,1] with the region to paint set to 0 (grey), as Paint-by-Example was trained."""
    return image * keep_mask.to(image.dtype)


def latent_keep_mask(keep_mask: torch.Tensor, latent_size: tuple[int, int]) -> torch.Tensor:
    """[B,1,H,W] pixel keep-mask -> [B,1,h,w] at latent resolution.

    A latent cell is "paint" (0) if ANY of its pixels is to be painted (a min-pool of the keep-mask),
    so a mask of a few pixels still opens a latent cell. Paint-by-Example used nearest resizing, which
    can drop masks smaller than a cell.
    """
    # min-pool == -max-pool(-x)
    return -F.adaptive_max_pool2d(-keep_mask, latent_size)


def build_unet_input(
    noisy_latents: torch.Tensor, masked_image_latents: torch.Tensor, latent_keep: torch.Tensor
) -> torch.Tensor:
    """Paint-by-Example's UNet input, in its channel order.

    noisy_latents [B,4,h,w] + masked_image_latents [B,4,h,w] + latent_keep [B,1,h,w] -> [B,9,h,w]
    """
    if not (noisy_latents.shape[-2:] == masked_image_latents.shape[-2:] == latent_keep.shape[-2:]):
        raise ValueError(
            f"spatial sizes differ: latents {tuple(noisy_latents.shape)}, masked image latents "
            f"{tuple(masked_image_latents.shape)}, mask {tuple(latent_keep.shape)}"
        )
    dtype = noisy_latents.dtype
    return torch.cat([noisy_latents, masked_image_latents.to(dtype), latent_keep.to(dtype)], dim=1)
