"""The roomfit adapter file: LoRA tensors (fp16) plus string metadata, in one safetensors file.

Layout (format version 1):
  tensors   `lora.<canonical key>`  fp16 LoRA A/B of every target module, e.g.
            `lora.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight` [r, in]
            `reference_embedding`   fp32 [1, D]: the product's Paint-by-Example image embedding (mean
            over its reference crops), since a preview request brings only a room and a mask
  metadata  roomfit.format = "roomfit-lora", roomfit.format_version = "1",
            roomfit.base_model_id, roomfit.base_weights_hash, roomfit.rank, roomfit.alpha,
            roomfit.targets (JSON list), roomfit.tensors_sha256, roomfit.info (JSON, free-form:
            training steps, subject id ...)
A file whose targets are all four projections of both attentions (written before
`models.lora.INERT_MODULES` were left out) is read without those: it paints exactly as it did.
`roomfit.tensors_sha256` covers every tensor's name, dtype, shape and bytes, so a flipped byte
anywhere in the data is caught even where safetensors would still parse the file.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from dataclasses import dataclass, field
from typing import Any

import torch
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_save

from models.errors import (
    AdapterBaseMismatch,
    AdapterCorrupt,
    AdapterFormatUnsupported,
    AdapterRankMismatch,
    AdapterTargetsMismatch,
)
from models.lora import (
    EVERY_ATTENTION_PROJECTION,
    LORA_TARGETS,
    LoraSpec,
    lora_spec_of,
    lora_state_dict,
    lora_targets_of_keys,
    without_inert,
)

FORMAT = "roomfit-lora"
FORMAT_VERSION = 1
LORA_PREFIX = "lora."
EMBEDDING_KEY = "reference_embedding"


@dataclass
class AdapterFile:
    lora: dict[str, torch.Tensor]  # canonical key -> fp16 tensor
    reference_embedding: torch.Tensor  # [1, D] fp32
    base_model_id: str
    base_weights_hash: str
    spec: LoraSpec
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.lora.values())


def tensors_sha256(tensors: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for key in sorted(tensors):
        tensor = tensors[key].detach().to("cpu").contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def write_adapter(
    lora: dict[str, torch.Tensor],
    *,
    reference_embedding: torch.Tensor,
    base_model_id: str,
    base_weights_hash: str,
    spec: LoraSpec,
    info: dict[str, Any] | None = None,
) -> bytes:
    """Serialise an adapter; `lora` maps canonical keys (see models.lora) to tensors of any float dtype."""
    tensors = {LORA_PREFIX + key: t.detach().to("cpu", torch.float16).contiguous() for key, t in lora.items()}
    tensors[EMBEDDING_KEY] = reference_embedding.detach().to("cpu", torch.float32).reshape(1, -1).contiguous()
    metadata = {
        "roomfit.format": FORMAT,
        "roomfit.format_version": str(FORMAT_VERSION),
        "roomfit.base_model_id": base_model_id,
        "roomfit.base_weights_hash": base_weights_hash,
        "roomfit.rank": str(spec.rank),
        "roomfit.alpha": repr(float(spec.alpha)),
        "roomfit.targets": json.dumps(list(spec.targets)),
        "roomfit.tensors_sha256": tensors_sha256(tensors),
        "roomfit.info": json.dumps(info or {}, sort_keys=True),
    }
    return safetensors_save(tensors, metadata=metadata)


def export_adapter(
    unet: torch.nn.Module,
    *,
    reference_embedding: torch.Tensor,
    base_model_id: str,
    base_weights_hash: str,
    info: dict[str, Any] | None = None,
) -> bytes:
    """The adapter file of a UNet whose injected LoRA was trained (for the training job)."""
    return write_adapter(
        lora_state_dict(unet),
        reference_embedding=reference_embedding,
        base_model_id=base_model_id,
        base_weights_hash=base_weights_hash,
        spec=lora_spec_of(unet),
        info=info,
    )


def _metadata(data: bytes) -> dict[str, str]:
    (header_len,) = struct.unpack("<Q", data[:8])
    if header_len > len(data) - 8:
        raise ValueError("header longer than the file")
    header = json.loads(data[8 : 8 + header_len])
    return dict(header.get("__metadata__") or {})


def read_adapter(data: bytes) -> AdapterFile:
    """Parse and verify an adapter file (structure and tensor hash; not its fit to a base model)."""
    try:
        metadata = _metadata(data)
        tensors = safetensors_load(data)
    except Exception as exc:  # truncated, garbage, bad JSON: all the same to the caller
        raise AdapterCorrupt(f"not a readable safetensors adapter file ({exc})") from exc
    if metadata.get("roomfit.format") != FORMAT:
        raise AdapterCorrupt("not a roomfit adapter (roomfit.format metadata missing)")
    if metadata.get("roomfit.format_version") != str(FORMAT_VERSION):
        raise AdapterFormatUnsupported(
            f"adapter format version {metadata.get('roomfit.format_version')!r}; "
            f"this roomfit reads {FORMAT_VERSION}"
        )
    if tensors_sha256(tensors) != metadata.get("roomfit.tensors_sha256"):
        raise AdapterCorrupt("the adapter's tensors do not match their recorded sha256")
    lora = {key.removeprefix(LORA_PREFIX): t for key, t in tensors.items() if key.startswith(LORA_PREFIX)}
    try:
        targets = tuple(json.loads(metadata["roomfit.targets"]))
        if set(targets) == set(EVERY_ATTENTION_PROJECTION):
            # written before cross-attention's query and key were left out: read as today's layout
            lora, targets = without_inert(lora), LORA_TARGETS
        alpha = float(metadata["roomfit.alpha"])
        if not math.isfinite(alpha) or alpha <= 0:  # a NaN alpha would paint NaN, 0 the base alone
            raise ValueError(f"roomfit.alpha is {metadata['roomfit.alpha']!r}, not a positive number")
        return AdapterFile(
            lora=lora,
            reference_embedding=tensors[EMBEDDING_KEY],
            base_model_id=metadata["roomfit.base_model_id"],
            base_weights_hash=metadata["roomfit.base_weights_hash"],
            spec=LoraSpec(rank=int(metadata["roomfit.rank"]), alpha=alpha, targets=targets),
            info=json.loads(metadata.get("roomfit.info", "{}")),
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise AdapterCorrupt(f"adapter metadata incomplete ({exc})") from exc


def check_compatible(
    adapter: AdapterFile,
    *,
    base_model_id: str,
    base_weights_hash: str,
    spec: LoraSpec,
    slot_shapes: dict[str, tuple[int, ...]],
) -> None:
    """Raise the specific error if `adapter` cannot be copied into the LoRA slots of this base model."""
    if adapter.base_weights_hash != base_weights_hash:
        raise AdapterBaseMismatch(
            f"adapter trained on base {adapter.base_model_id!r} (weights {adapter.base_weights_hash[:12]}), "
            f"loaded base is {base_model_id!r} (weights {base_weights_hash[:12]})"
        )
    if adapter.spec.rank != spec.rank:
        raise AdapterRankMismatch(f"adapter rank {adapter.spec.rank}, base model's LoRA rank {spec.rank}")
    targets = set(spec.targets)
    if set(adapter.spec.targets) != targets or lora_targets_of_keys(adapter.lora) != targets:
        raise AdapterTargetsMismatch(
            f"adapter targets {sorted(adapter.spec.targets)}, base model's LoRA targets {sorted(targets)}"
        )
    if adapter.lora.keys() != slot_shapes.keys():
        missing, extra = slot_shapes.keys() - adapter.lora.keys(), adapter.lora.keys() - slot_shapes.keys()
        raise AdapterTargetsMismatch(
            f"adapter covers other layers: {len(missing)} missing (e.g. {sorted(missing)[:1]}), "
            f"{len(extra)} unknown (e.g. {sorted(extra)[:1]})"
        )
    for key, shape in slot_shapes.items():
        if tuple(adapter.lora[key].shape) != shape:
            raise AdapterRankMismatch(f"{key}: adapter shape {tuple(adapter.lora[key].shape)}, slot {shape}")
