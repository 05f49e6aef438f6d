"""roomfit adapters as diffusers / peft LoRA files, and back.

Export writes what `UNet2DConditionModel.load_lora_adapter(path)` reads with its defaults:
  tensors   `transformer.<module>.lora_A.weight` [r, in], `transformer.<module>.lora_B.weight`
            [out, r]. `transformer` is load_lora_adapter's default `prefix`; `unet` suits
            StableDiffusion-style pipelines' `load_lora_weights`. alpha / r is folded into B
            (then fp32; fp16 as stored when alpha = r), so the file says alpha = r: diffusers 0.42's
            `load_lora_adapter(path)` reads no metadata for a file path unless `use_safetensors=True`
            (it then assumes alpha = r), while its pipelines do read it; folded, both paint alike.
  metadata  `lora_adapter_metadata`: JSON of the LoraConfig (`r`, `lora_alpha` = r,
            `target_modules`), its keys under the same prefix (`transformer.r`, ...) since
            load_lora_adapter filters the metadata by the prefix as it does the tensors. Plus
            `roomfit.*` provenance (alpha, base model, weights hash, reference embedding) that import
            reads back to restore the adapter exactly; diffusers ignores it.

Import takes such a file, or diffusers' `save_lora_adapter` (no prefix), the training scripts'
`save_lora_weights` (`unet.` prefix, `lora.down` / `lora.up` names) or a raw peft state dict, and
writes a roomfit adapter for a loaded base: same rank and layers as the base's LoRA slots
(`check_compatible` gives the one-line errors), alpha from the metadata (else per-module `.alpha`
tensors, else alpha = rank, diffusers' own rule). roomfit stores fp16, so an fp32 LoRA is rounded.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from typing import Any

import torch
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_save

from models.adapter_format import FORMAT, AdapterFile, check_compatible, read_adapter, write_adapter
from models.errors import AdapterCorrupt, AdapterFormatUnsupported
from models.full_weights_format import FULL_FORMAT, header_metadata
from models.lora import LoraSpec, lora_parameters, lora_spec_of, lora_targets_of_keys, without_inert

DIFFUSERS_PREFIX = "transformer"  # load_lora_adapter's default `prefix`
PIPELINE_PREFIX = "unet"  # StableDiffusionPipeline.load_lora_weights / save_lora_weights
METADATA_KEY = "lora_adapter_metadata"  # diffusers.loaders.lora_base.LORA_ADAPTER_METADATA_KEY
# Prefixes other tools put before the UNet's module names: diffusers (both), PeftModel.save_pretrained.
_KNOWN_PREFIXES = (f"{DIFFUSERS_PREFIX}.", f"{PIPELINE_PREFIX}.", "base_model.model.")
# diffusers' older names (convert_state_dict_to_diffusers) and a model.state_dict()'s adapter name.
_RENAMES = ((re.compile(r"\.lora\.down\.weight$"), ".lora_A.weight"),
            (re.compile(r"\.lora\.up\.weight$"), ".lora_B.weight"),
            (re.compile(r"\.(lora_[AB])\.[^.]+\.weight$"), r".\1.weight"))  # fmt: skip
# LoraConfig fields whose non-default value changes the arithmetic roomfit's slots do.
_UNSUPPORTED = {"use_dora": "DoRA", "lora_bias": "LoRA bias", "use_rslora": "rank-stabilised scaling"}


def export_diffusers(data: bytes, *, prefix: str | None = DIFFUSERS_PREFIX) -> bytes:
    """A roomfit adapter file as a diffusers LoRA file (prefix None: keys and metadata unprefixed,
    as `save_lora_adapter` writes them; diffusers then loads it with `prefix=None`)."""
    if header_metadata(data).get("roomfit.format") == FULL_FORMAT:
        raise AdapterFormatUnsupported("a full fine-tune (roomfit-unet) has no LoRA to export")
    return diffusers_lora(read_adapter(data), prefix=prefix)


def diffusers_lora(adapter: AdapterFile, *, prefix: str | None = DIFFUSERS_PREFIX) -> bytes:
    """Serialise a read adapter as a diffusers LoRA file (see the module's docstring)."""
    pack = f"{prefix}." if prefix else ""
    scale = adapter.spec.alpha / adapter.spec.rank
    tensors = {
        pack + key: (
            t if scale == 1.0 else t.float() * scale if ".lora_B." in key else t.float()
        ).contiguous()
        for key, t in sorted(adapter.lora.items())
    }  # fp32 times alpha / r is exactly what the AdapterCache copies into a UNet of alpha = r
    config = {
        "r": adapter.spec.rank,
        "lora_alpha": adapter.spec.rank,
        "target_modules": sorted(adapter.spec.targets),
    }
    embedding = adapter.reference_embedding.detach().to("cpu", torch.float32).contiguous()
    metadata = {
        "format": "pt",
        METADATA_KEY: json.dumps({pack + k: v for k, v in config.items()}, indent=2, sort_keys=True),
        "roomfit.alpha": repr(float(adapter.spec.alpha)),
        "roomfit.base_model_id": adapter.base_model_id,
        "roomfit.base_weights_hash": adapter.base_weights_hash,
        "roomfit.reference_embedding": base64.b64encode(embedding.numpy().tobytes()).decode(),
        "roomfit.info": json.dumps(adapter.info, sort_keys=True),
    }
    return safetensors_save(tensors, metadata=metadata)


@dataclass(frozen=True)
class Imported:  # alike: a frozen record of fields, shaped like any other
    """`import_diffusers`' result: the roomfit adapter file and what was read to make it."""

    data: bytes
    spec: LoraSpec
    layers: int  # LoRA-wrapped modules
    fp16_rounding: float  # largest |change| of a weight stored in fp16 (0 for an fp16 source)
    alpha_from: (
        str  # "argument", "roomfit export", "metadata", "alpha tensors", "rank (no alpha in the file)"
    )


def import_diffusers(
    data: bytes,
    *,
    unet: torch.nn.Module,
    base_model_id: str,
    base_weights_hash: str,
    reference_embedding: torch.Tensor | None = None,
    alpha: float | None = None,
    info: dict[str, Any] | None = None,
) -> Imported:
    """A diffusers / peft LoRA file as a roomfit adapter of this base (`unet` carries its LoRA slots).

    `reference_embedding` [1, D]: what a preview without a reference paints from; None takes the one
    a roomfit export recorded. `alpha` overrides what the file says. AdapterCorrupt: not a LoRA file;
    AdapterRankMismatch / AdapterTargetsMismatch: another rank or other layers than the slots;
    AdapterBaseMismatch: exported by roomfit from another base; ValueError: no reference embedding."""
    metadata = header_metadata(data)
    if metadata.get("roomfit.format") in (FORMAT, FULL_FORMAT):
        raise AdapterCorrupt(f"already a roomfit file ({metadata['roomfit.format']}): nothing to import")
    try:
        tensors = safetensors_load(data)
    except Exception as exc:  # safetensors' own error type varies by version
        raise AdapterCorrupt(f"not a readable safetensors file ({exc})") from exc
    lora, alphas = _peft_keys(tensors)
    lora = without_inert(lora)  # cross-attention's query and key over one token never change a pixel
    config = _lora_config(metadata)
    rank = _rank(lora)
    if config.get("r", rank) != rank:
        raise AdapterCorrupt(f"the metadata says rank {config['r']}, the tensors have rank {rank}")
    chosen, alpha_from = _alpha(alpha, config, alphas, rank)
    recorded = metadata.get("roomfit.alpha")
    if alpha is None and recorded is not None and chosen == rank:
        # a roomfit export: alpha / r was folded into B; unfolded, the fp16 values come back exactly
        lora = {k: t.float() / (float(recorded) / rank) if ".lora_B." in k else t for k, t in lora.items()}
        chosen, alpha_from = float(recorded), "roomfit export"
    embedding = reference_embedding if reference_embedding is not None else _recorded_embedding(metadata)
    width = int(unet.config.cross_attention_dim)  # type: ignore[union-attr]
    if embedding.numel() != width:
        raise ValueError(f"the reference embedding has {embedding.numel()} numbers, the UNet wants {width}")
    slots = lora_parameters(unet)
    adapter = AdapterFile(
        lora=lora,
        reference_embedding=embedding.reshape(1, -1),
        # a roomfit export says which base it came from; any other LoRA is bound to this one here
        base_model_id=metadata.get("roomfit.base_model_id", base_model_id),
        base_weights_hash=metadata.get("roomfit.base_weights_hash", base_weights_hash),
        spec=LoraSpec(rank=rank, alpha=chosen, targets=tuple(sorted(lora_targets_of_keys(set(lora))))),
    )
    spec = lora_spec_of(unet)
    check_compatible(
        adapter,
        base_model_id=base_model_id,
        base_weights_hash=base_weights_hash,
        spec=spec,
        slot_shapes={key: tuple(p.shape) for key, p in slots.items()},
    )
    rounding = max(float((t.float() - t.half().float()).abs().max()) for t in lora.values())
    written = LoraSpec(rank=rank, alpha=chosen, targets=spec.targets)
    imported_info = {**json.loads(metadata.get("roomfit.info", "{}")), **(info or {})}
    imported_info["imported_from"] = "diffusers-lora"
    out = write_adapter(
        lora,
        reference_embedding=adapter.reference_embedding,
        base_model_id=base_model_id,
        base_weights_hash=base_weights_hash,
        spec=written,
        info=imported_info,
    )
    return Imported(
        data=out, spec=written, layers=len(lora) // 2, fp16_rounding=rounding, alpha_from=alpha_from
    )


def _peft_keys(tensors: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """(LoRA tensors by roomfit's canonical key, per-module `.alpha` values); AdapterCorrupt for any
    other tensor, so a full checkpoint or another adapter kind is refused by name."""
    lora: dict[str, torch.Tensor] = {}
    alphas: dict[str, float] = {}
    other: list[str] = []
    for name, tensor in tensors.items():
        key = next((name.removeprefix(p) for p in _KNOWN_PREFIXES if name.startswith(p)), name)
        for pattern, replacement in _RENAMES:
            key = pattern.sub(replacement, key)
        if key.endswith((".lora_A.weight", ".lora_B.weight")):
            lora[key] = tensor
        elif key.endswith(".alpha") and tensor.numel() == 1:
            alphas[key.removesuffix(".alpha")] = float(tensor)
        else:
            other.append(name)
    if not lora:
        raise AdapterCorrupt("not a LoRA file: no lora_A / lora_B (or lora.down / lora.up) weights")
    if other:
        raise AdapterCorrupt(f"not a plain UNet LoRA: {len(other)} other tensors (e.g. {sorted(other)[0]!r})")
    halves = [{k.rsplit(".lora_", 1)[0] for k in lora if f".lora_{half}." in k} for half in "AB"]
    unpaired = halves[0] ^ halves[1]
    if unpaired:
        raise AdapterCorrupt(f"LoRA weights without their other half, e.g. {sorted(unpaired)[0]!r}")
    return lora, alphas


def _lora_config(metadata: dict[str, str]) -> dict[str, Any]:
    """The LoraConfig fields of `lora_adapter_metadata`, its prefix (if any) removed; {} if none."""
    raw = metadata.get(METADATA_KEY)
    if not raw:
        return {}
    try:
        packed = json.loads(raw)
    except ValueError as exc:
        raise AdapterCorrupt(f"{METADATA_KEY} is not JSON ({exc})") from exc
    config = packed
    for prefix in (f"{DIFFUSERS_PREFIX}.", f"{PIPELINE_PREFIX}."):  # a pipeline file packs each model's
        if any(k.startswith(prefix) for k in packed):
            config = {k.removeprefix(prefix): v for k, v in packed.items() if k.startswith(prefix)}
            break
    for field_name, what in _UNSUPPORTED.items():
        if config.get(field_name):
            raise AdapterFormatUnsupported(
                f"{what} ({field_name}) is not plain LoRA; roomfit cannot paint it"
            )
    for pattern in ("rank_pattern", "alpha_pattern"):
        if config.get(pattern):
            raise AdapterFormatUnsupported(
                f"per-module {pattern} {config[pattern]}: roomfit's LoRA is uniform"
            )
    return config


def _rank(lora: dict[str, torch.Tensor]) -> int:
    ranks = {int(t.shape[0]) for k, t in lora.items() if ".lora_A." in k}
    if len(ranks) != 1:
        raise AdapterFormatUnsupported(
            f"layers of different ranks {sorted(ranks)}: roomfit's LoRA is uniform"
        )
    return ranks.pop()


def _alpha(
    given: float | None, config: dict[str, Any], alphas: dict[str, float], rank: int
) -> tuple[float, str]:
    if given is not None:
        return float(given), "argument"
    if "lora_alpha" in config:
        return float(config["lora_alpha"]), "metadata"
    if alphas:
        if len(set(alphas.values())) != 1:
            raise AdapterFormatUnsupported(
                f"per-module alphas {sorted(set(alphas.values()))}: give one --alpha"
            )
        return next(iter(alphas.values())), "alpha tensors"
    return float(rank), "rank (no alpha in the file)"


def _recorded_embedding(metadata: dict[str, str]) -> torch.Tensor:
    raw = metadata.get("roomfit.reference_embedding")
    if raw is None:
        raise ValueError("a LoRA file has no reference embedding: give the product's photos (or an adapter)")
    values = bytearray(base64.b64decode(raw))  # writable: torch warns on read-only buffers
    return torch.frombuffer(values, dtype=torch.float32).reshape(1, -1).clone()
