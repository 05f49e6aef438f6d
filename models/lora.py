"""LoRA on the UNet's attention projections (less cross-attention's inert query and key): one rank
and one target set per base model.

Because every adapter of a base model has the same shapes, activating an adapter is an in-place copy
into the parameters injected here (see `models.adapter_cache`), never a re-injection.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from peft import LoraConfig, inject_adapter_in_model

# The reference reaches the UNet as ONE token (Paint-by-Example's image encoder gives [B, 1, D]), so
# each cross-attention (attn2) takes a softmax over one key, which is 1 whatever its query and key
# projections compute: LoRA on attn2.to_q / attn2.to_k would never change a pixel (its B stays 0 in
# training) yet weigh a quarter of every adapter. tests/models/test_lora_targets.py holds the premise.
LORA_TARGETS: tuple[str, ...] = (
    "attn1.to_q",
    "attn1.to_k",
    "attn1.to_v",
    "attn1.to_out.0",
    "attn2.to_v",
    "attn2.to_out.0",
)
# What adapters written before carried (and what LoRA trainers for diffusion UNets usually write):
# the four projections of both attentions. Read as LORA_TARGETS by dropping the inert ones.
EVERY_ATTENTION_PROJECTION: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0")
INERT_MODULES: tuple[str, ...] = ("attn2.to_q", "attn2.to_k")
DEFAULT_RANK = 4
ADAPTER_NAME = "roomfit"  # peft's slot name inside the UNet; never appears in adapter files


@dataclass(frozen=True)
class LoraSpec:
    rank: int
    alpha: float
    targets: tuple[str, ...]

    @property
    def scaling(self) -> float:
        return self.alpha / self.rank


def inject_lora(
    unet: torch.nn.Module,
    rank: int = DEFAULT_RANK,
    alpha: float | None = None,
    targets: tuple[str, ...] = LORA_TARGETS,
) -> LoraSpec:
    """Add LoRA layers (B = 0, so the model still paints like the base) to the UNet, once."""
    if getattr(unet, "roomfit_lora", None) is not None:
        raise ValueError(f"the UNet already carries LoRA {unet.roomfit_lora}")
    spec = LoraSpec(rank=rank, alpha=float(alpha if alpha is not None else rank), targets=tuple(targets))
    config = LoraConfig(
        r=spec.rank, lora_alpha=spec.alpha, target_modules=list(spec.targets), init_lora_weights=True
    )
    inject_adapter_in_model(config, unet, adapter_name=ADAPTER_NAME)
    # peft's injection follows the base layer's dtype/device for the new layers only partly;
    # pin them to the UNet's so a swap is a same-dtype copy.
    reference = next(p for n, p in unet.named_parameters() if "lora_" not in n)
    for param in lora_parameters(unet).values():
        param.data = param.data.to(device=reference.device, dtype=reference.dtype)
        param.requires_grad_(False)
    unet.roomfit_lora = spec  # type: ignore[assignment]
    return spec


def lora_spec_of(unet: torch.nn.Module) -> LoraSpec:
    spec = getattr(unet, "roomfit_lora", None)
    if spec is None:
        raise ValueError("the UNet has no roomfit LoRA: call models.lora.inject_lora first")
    return spec


def canonical_key(peft_name: str) -> str:
    """`...attn1.to_q.lora_A.roomfit.weight` -> `...attn1.to_q.lora_A.weight` (the adapter file's key)."""
    return peft_name.replace(f".{ADAPTER_NAME}.", ".")


def lora_parameters(unet: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    """The injected LoRA parameters by canonical key, sorted: the slots an adapter is copied into."""
    found = {
        canonical_key(name): param
        for name, param in unet.named_parameters()
        if ".lora_A." in name or ".lora_B." in name
    }
    return dict(sorted(found.items()))


def lora_state_dict(unet: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of the LoRA weights by canonical key (what a trained adapter consists of)."""
    return {key: param.detach().to("cpu").clone() for key, param in lora_parameters(unet).items()}


def lora_targets_of_keys(keys: list[str] | set[str]) -> set[str]:
    """The target names (`attn1.to_q`, `attn2.to_out.0`) a set of canonical keys covers: a module's
    name from its attention on (its last component where it has no attention above it)."""
    targets = set()
    for key in keys:
        parts = key.rsplit(".lora_", 1)[0].split(".")
        name = 2 if parts[-2:] == ["to_out", "0"] else 1  # components of the projection's own name
        above = parts[-name - 1] if len(parts) > name else ""
        targets.add(".".join(parts[-name - 1 :] if above.startswith("attn") else parts[-name:]))
    return targets


def without_inert(lora: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`lora` less the tensors of INERT_MODULES: an adapter written with every attention projection,
    in the form a base's LORA_TARGETS slots take, painting exactly as before."""
    return {
        key: t
        for key, t in lora.items()
        if not any(f".{module}.lora_" in f".{key}" for module in INERT_MODULES)
    }
