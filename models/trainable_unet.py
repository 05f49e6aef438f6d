"""What training updates: the UNet's LoRA slots (seeded init, dropout on) or every UNet weight,
made trainable for the run and put back as they were afterwards.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch

from models.base_model import BaseModel
from models.lora import ADAPTER_NAME, DEFAULT_RANK, inject_lora, lora_parameters, lora_spec_of

if TYPE_CHECKING:
    from models.training import TrainSettings


@contextmanager
def trainable_unet(base: BaseModel, settings: TrainSettings) -> Iterator[dict[str, torch.nn.Parameter]]:
    """Make the trained parameters trainable (fp32 master copies), and undo it all afterwards.

    LoRA mode re-initialises the LoRA slots from the seed and puts back whatever adapter they held,
    so a worker's base model paints as before once training ends.
    """
    unet = base.unet
    lora_mode = settings.mode == "lora"
    if settings.mode not in ("lora", "full"):
        raise ValueError(f"unknown training mode {settings.mode!r}; expected lora or full")
    saved: dict[str, torch.Tensor] = {}
    dropout_slots: list[torch.nn.ModuleDict] = []
    if lora_mode:
        if getattr(unet, "roomfit_lora", None) is None:
            base.lora = inject_lora(unet, rank=settings.rank or DEFAULT_RANK, alpha=settings.alpha)
        spec = lora_spec_of(unet)
        if settings.rank is not None and settings.rank != spec.rank:
            raise ValueError(
                f"rank {settings.rank} asked, but the base model's LoRA has rank {spec.rank}: every "
                "adapter of a base model shares its rank (ROOMFIT_LORA_RANK)"
            )
        trainable = lora_parameters(unet)
        saved = {key: param.detach().clone() for key, param in trainable.items()}
        init_lora(trainable, settings.seed, settings.lora_init)
        dropout_slots = lora_dropout_slots(unet)
        for slot in dropout_slots:
            slot[ADAPTER_NAME] = torch.nn.Dropout(settings.lora_dropout)
    else:
        trainable = {name: p for name, p in unet.named_parameters() if "lora_" not in name}
    # the tensors others hold on to (the adapter cache's slots): training's results are copied back
    # into these, so a swap after training still reaches the UNet
    storage = {key: param.data for key, param in trainable.items()}
    for param in trainable.values():
        # fp32 master weights even when the base runs in fp16: lr 3e-5 updates vanish in fp16
        param.data = param.data.float()
        param.requires_grad_(True)
    checkpointing = settings.gradient_checkpointing
    if checkpointing is None:
        checkpointing = base.device.type == "cuda"
    if checkpointing:
        unet.enable_gradient_checkpointing()
    unet.train()
    try:
        yield trainable
    finally:
        unet.eval()
        if checkpointing:
            unet.disable_gradient_checkpointing()
        for slot in dropout_slots:
            slot[ADAPTER_NAME] = torch.nn.Identity()
        for key, param in trainable.items():
            param.requires_grad_(False)
            param.grad = None
            kept = storage[key]
            kept.copy_(saved[key] if lora_mode else param.data)  # back in the UNet's dtype
            param.data = kept


def init_lora(params: dict[str, torch.nn.Parameter], seed: int, kind: str = "gaussian") -> None:
    """Seeded LoRA init, B = 0 so training starts from the base. A: "gaussian" is the LoRA paper's
    (normal, std 1/rank, as peft's `init_lora_weights="gaussian"`), which the paper follows;
    "kaiming" is peft's default (Kaiming-uniform)."""
    if kind not in ("gaussian", "kaiming"):
        raise ValueError(f"unknown LoRA init {kind!r}; expected gaussian or kaiming")
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, param in params.items():
            if ".lora_A." in key:
                weight = torch.empty(param.shape, dtype=torch.float32)
                if kind == "gaussian":
                    torch.nn.init.normal_(weight, std=1 / param.shape[0], generator=generator)  # [r, in]
                else:
                    torch.nn.init.kaiming_uniform_(weight, a=math.sqrt(5), generator=generator)
                param.copy_(weight)
            else:
                param.zero_()


def lora_dropout_slots(unet: torch.nn.Module) -> list[torch.nn.ModuleDict]:
    """peft's per-adapter dropout modules (Identity as injected with dropout 0)."""
    return [
        module.lora_dropout
        for module in unet.modules()
        if isinstance(getattr(module, "lora_dropout", None), torch.nn.ModuleDict)
        and ADAPTER_NAME in module.lora_dropout
    ]


def unet_parameter_count(unet: torch.nn.Module) -> int:
    """The UNet's own weights, without injected LoRA layers."""
    return sum(p.numel() for name, p in unet.named_parameters() if "lora_" not in name)
