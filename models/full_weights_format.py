"""The full fine-tune's file ("full" training mode): every UNet weight, in one safetensors file.

Tensors keyed as in diffusers' UNet2DConditionModel state dict (fp32: small updates vanish in
fp16, peft's `base_layer` renaming undone, no LoRA layers), plus `reference_embedding` [1, D] fp32.
Metadata: roomfit.format = "roomfit-unet", roomfit.base_model_id, roomfit.base_weights_hash,
roomfit.info (JSON). The LoRA adapter file is `models.adapter_format`; `file_format` tells the two
apart from the safetensors header alone. Painting with one: `models.full_weights_slot`.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_save

from models.adapter_format import EMBEDDING_KEY
from models.adapter_format import FORMAT as LORA_FORMAT
from models.base_model import BaseModel
from models.errors import AdapterBaseMismatch, AdapterCorrupt, AdapterFormatUnsupported

FULL_FORMAT = "roomfit-unet"
FileFormat = Literal["roomfit-lora", "roomfit-unet"]


@dataclass
class UnetWeights:  # alike: adapter_format.AdapterFile, the other file's fields; they share only the shape
    tensors: dict[str, torch.Tensor]  # UNet state-dict key (no LoRA, no base_layer) -> fp32 tensor
    reference_embedding: torch.Tensor  # [1, D] fp32
    base_model_id: str
    base_weights_hash: str  # of the base the fine-tune started from
    info: dict[str, Any] = field(default_factory=dict)


def unet_own_tensors(unet: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The UNet's own weights by the file's keys: LoRA layers left out, peft's `base_layer`
    renaming undone. Each tensor shares storage with the live UNet (an in-place copy changes it)."""
    return {
        name.replace(".base_layer.", "."): tensor.detach()
        for name, tensor in unet.state_dict(keep_vars=True).items()
        if "lora_" not in name
    }


def export_unet_weights(
    base: BaseModel, *, reference_embedding: torch.Tensor, info: dict[str, Any] | None = None
) -> bytes:
    """The file of a base model whose UNet was fine-tuned in full."""
    own = unet_own_tensors(base.unet)
    tensors = {name: tensor.to("cpu", torch.float32).contiguous() for name, tensor in own.items()}
    tensors[EMBEDDING_KEY] = reference_embedding.detach().to("cpu", torch.float32).reshape(1, -1)
    metadata = {
        "roomfit.format": FULL_FORMAT,
        "roomfit.base_model_id": base.model_id,
        "roomfit.base_weights_hash": base.weights_hash,
        "roomfit.info": json.dumps(info or {}, sort_keys=True),
    }
    return safetensors_save(tensors, metadata=metadata)


def header_metadata(data: bytes) -> dict[str, str]:
    """The safetensors header's string metadata, without reading any tensor; AdapterCorrupt if the
    header cannot be read."""
    try:
        if len(data) < 8:
            raise ValueError(f"{len(data)} bytes: shorter than a safetensors header")
        (header_len,) = struct.unpack("<Q", data[:8])
        if header_len > len(data) - 8:
            raise ValueError("header longer than the file")
        header = json.loads(bytes(data[8 : 8 + header_len]))
        metadata = header.get("__metadata__") or {}
        if not isinstance(metadata, dict):
            raise ValueError("__metadata__ is not a mapping")
    except (ValueError, AttributeError, struct.error) as exc:  # JSONDecodeError is a ValueError
        raise AdapterCorrupt(f"not a readable safetensors file ({exc})") from exc
    return {str(k): str(v) for k, v in metadata.items()}


def file_format(data: bytes) -> FileFormat:
    """ "roomfit-lora" (an adapter, models.adapter_format) or "roomfit-unet" (a full fine-tune), from
    the header alone. AdapterCorrupt: no readable header or no roomfit.format; AdapterFormatUnsupported:
    another format string."""
    found = header_metadata(data).get("roomfit.format")
    if found is None:
        raise AdapterCorrupt("not a roomfit file (roomfit.format metadata missing)")
    if found == LORA_FORMAT:
        return "roomfit-lora"
    if found == FULL_FORMAT:
        return "roomfit-unet"
    raise AdapterFormatUnsupported(
        f"file format {found!r}; this roomfit reads {LORA_FORMAT} and {FULL_FORMAT}"
    )


def read_unet_weights(data: bytes) -> UnetWeights:
    """Parse a full fine-tune's file (structure only; `check_unet_weights` decides its fit to a base).

    While it runs, the file is held twice (its bytes and its tensors)."""
    kind = file_format(data)
    if kind != "roomfit-unet":
        raise AdapterFormatUnsupported(
            f"a {kind} file (a LoRA adapter), not a full fine-tune ({FULL_FORMAT})"
        )
    metadata = header_metadata(data)
    try:
        tensors = safetensors_load(data)
    except Exception as exc:  # truncated, overlapping offsets, ...: all the same to the caller
        raise AdapterCorrupt(f"not a readable safetensors full fine-tune ({exc})") from exc
    embedding = tensors.pop(EMBEDDING_KEY, None)
    if embedding is None or embedding.ndim != 2 or embedding.shape[0] != 1:
        raise AdapterCorrupt(f"the full fine-tune has no {EMBEDDING_KEY} [1, D]")
    if not tensors:
        raise AdapterCorrupt("the full fine-tune holds no UNet weight")
    odd = sorted(key for key, tensor in tensors.items() if tensor.dtype != torch.float32)
    if odd:
        raise AdapterCorrupt(f"the full fine-tune's weights are fp32; not {odd[0]} ({tensors[odd[0]].dtype})")
    try:
        return UnetWeights(
            tensors=tensors,
            reference_embedding=embedding.float(),
            base_model_id=metadata["roomfit.base_model_id"],
            base_weights_hash=metadata["roomfit.base_weights_hash"],
            info=json.loads(metadata.get("roomfit.info", "{}")),
        )
    except (KeyError, ValueError) as exc:
        raise AdapterCorrupt(f"full fine-tune metadata incomplete ({exc})") from exc


def check_unet_weights(
    weights: UnetWeights, *, base_model_id: str, base_weights_hash: str, shapes: dict[str, tuple[int, ...]]
) -> None:
    """Raise the specific error if `weights` cannot be copied into a UNet whose own weights have
    `shapes` (by file key, as `unet_own_tensors`): another base, or a file missing weights."""
    if weights.base_weights_hash != base_weights_hash:
        raise AdapterBaseMismatch(
            f"full fine-tune of base {weights.base_model_id!r} (weights {weights.base_weights_hash[:12]}), "
            f"loaded base is {base_model_id!r} (weights {base_weights_hash[:12]})"
        )
    if weights.tensors.keys() != shapes.keys():
        missing, extra = shapes.keys() - weights.tensors.keys(), weights.tensors.keys() - shapes.keys()
        raise AdapterCorrupt(
            f"the full fine-tune is incomplete: {len(missing)} UNet weights missing "
            f"(e.g. {sorted(missing)[:1]}), {len(extra)} unknown (e.g. {sorted(extra)[:1]})"
        )
    for key, shape in shapes.items():
        if tuple(weights.tensors[key].shape) != shape:
            found = tuple(weights.tensors[key].shape)
            raise AdapterCorrupt(f"{key}: full fine-tune shape {found}, UNet {shape}")
