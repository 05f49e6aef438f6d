"""The 9-channel UNet input and the mask polarity (one function each, shared with training)."""

from __future__ import annotations

import torch

from models import build_unet_input, keep_mask_from_paint_mask, latent_keep_mask, masked_image


def test_user_mask_nonzero_means_paint_and_pbe_channel_zero_means_paint() -> None:
    paint = torch.zeros(1, 1, 8, 8)
    paint[..., 2:4, 2:4] = 1.0
    keep = keep_mask_from_paint_mask(paint)
    assert keep[0, 0, 2, 2] == 0 and keep[0, 0, 0, 0] == 1
    assert torch.equal(keep + paint, torch.ones_like(keep))


def test_masked_image_blanks_only_the_region_to_paint() -> None:
    image = torch.rand(1, 3, 8, 8) * 2 - 1
    paint = torch.zeros(1, 1, 8, 8)
    paint[..., :4, :] = 1
    out = masked_image(image, keep_mask_from_paint_mask(paint))
    assert torch.all(out[..., :4, :] == 0)
    assert torch.equal(out[..., 4:, :], image[..., 4:, :])


def test_a_single_painted_pixel_opens_its_latent_cell() -> None:
    paint = torch.zeros(1, 1, 64, 64)
    paint[0, 0, 9, 9] = 1  # lies in latent cell (1, 1) at factor 8
    latent = latent_keep_mask(keep_mask_from_paint_mask(paint), (8, 8))
    assert latent.shape == (1, 1, 8, 8)
    assert latent[0, 0, 1, 1] == 0
    assert latent.sum() == 63


def test_channel_order_is_latents_then_masked_image_latents_then_mask() -> None:
    noisy = torch.full((2, 4, 8, 8), 1.0)
    masked = torch.full((2, 4, 8, 8), 2.0)
    keep = torch.full((2, 1, 8, 8), 3.0)
    out = build_unet_input(noisy, masked, keep)
    assert out.shape == (2, 9, 8, 8)
    assert torch.all(out[:, :4] == 1) and torch.all(out[:, 4:8] == 2) and torch.all(out[:, 8] == 3)


def test_mismatched_sizes_are_refused() -> None:
    try:
        build_unet_input(torch.zeros(1, 4, 8, 8), torch.zeros(1, 4, 4, 4), torch.zeros(1, 1, 8, 8))
    except ValueError:
        return
    raise AssertionError("expected ValueError")
