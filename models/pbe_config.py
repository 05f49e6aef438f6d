"""Paint-by-Example's real UNet configuration (Fantasy-Studio/Paint-by-Example `unet/config.json`):
SD-1.x layout, 9 input channels, cross-attention on 768-d CLIP image embeddings. ~860M parameters.

Used by the benchmarks to build a UNet of the real size with random weights, where the checkpoint
cannot be downloaded.
"""

from __future__ import annotations

from typing import Any

PBE_UNET_CONFIG: dict[str, Any] = {
    "sample_size": 64,
    "in_channels": 9,
    "out_channels": 4,
    "block_out_channels": (320, 640, 1280, 1280),
    "layers_per_block": 2,
    "cross_attention_dim": 768,
    "attention_head_dim": 8,
    "down_block_types": (
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "DownBlock2D",
    ),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    "norm_num_groups": 32,
}
