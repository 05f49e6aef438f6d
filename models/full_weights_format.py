"""The full fine-tune's file ("full" training mode): every UNet weight, in one safetensors file.

Tensors keyed as in diffusers' UNet2DConditionModel state dict (fp32: small updates vanish in
fp16, peft's `base_layer` renaming undone, no LoRA layers), plus `reference_embedding` [1, D] fp32.
Metadata: roomfit.format = "roomfit-unet", roomfit.base_model_id, roomfit.base_weights_hash,
roomfit.info (JSON). The LoRA adapter file is `models.adapter_format`.
"""

from __future__ import annotations

import json
from typing import Any

import torch
from safetensors.torch import save as safetensors_save

from models.base_model import BaseModel

FULL_FORMAT = "roomfit-unet"


def export_unet_weights(
    base: BaseModel, *, reference_embedding: torch.Tensor, info: dict[str, Any] | None = None
) -> bytes:
    """The file of a base model whose UNet was fine-tuned in full."""
    tensors = {
        name.replace(".base_layer.", "."): tensor.detach().to("cpu", torch.float32).contiguous()
        for name, tensor in base.unet.state_dict().items()
        if "lora_" not in name
    }
    tensors["reference_embedding"] = reference_embedding.detach().to("cpu", torch.float32).reshape(1, -1)
    metadata = {
        "roomfit.format": FULL_FORMAT,
        "roomfit.base_model_id": base.model_id,
        "roomfit.base_weights_hash": base.weights_hash,
        "roomfit.info": json.dumps(info or {}, sort_keys=True),
    }
    return safetensors_save(tensors, metadata=metadata)
