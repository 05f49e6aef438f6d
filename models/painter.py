"""Painter: the base model, its LoRA adapters and the sampler, as one object a worker or the CLI holds."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from models.adapter_cache import AdapterCache, AdapterLoader
from models.base_model import BaseModel
from models.lora import DEFAULT_RANK, inject_lora, lora_spec_of
from models.sampler import DEFAULT_GUIDANCE_SCALE, InpaintPipeline, PaintRequest, ProgressCallback


class Painter:
    def __init__(
        self,
        base: BaseModel,
        *,
        lora_rank: int = DEFAULT_RANK,
        cache_bytes: int = 512 * 1024 * 1024,
        disk_dir: Path | str | None = None,
        loader: AdapterLoader | None = None,
        scheduler: str = "ddim",
    ) -> None:
        if getattr(base.unet, "roomfit_lora", None) is None:
            base.lora = inject_lora(base.unet, rank=lora_rank)
        elif lora_spec_of(base.unet).rank != lora_rank:
            raise ValueError(f"the UNet already carries LoRA of rank {lora_spec_of(base.unet).rank}")
        self.base = base
        self.adapters = AdapterCache(
            base.unet,
            base_model_id=base.model_id,
            base_weights_hash=base.weights_hash,
            memory_bytes=cache_bytes,
            disk_dir=disk_dir,
            loader=loader,
        )
        self.pipeline = InpaintPipeline(base, scheduler=scheduler)

    def paint(
        self,
        requests: Sequence[PaintRequest],
        *,
        adapter_id: str | None = None,
        steps: int,
        guidance_scale: float = DEFAULT_GUIDANCE_SCALE,
        progress: ProgressCallback | None = None,
    ) -> list[Image.Image]:
        """Paint requests sharing one adapter (None: the base model) as one batch.

        A request without its own reference uses the adapter's stored reference embedding.
        """
        with self.adapters.use(adapter_id) as active:
            if active is not None:
                requests = [
                    r
                    if r.reference is not None or r.reference_embedding is not None
                    else dataclasses.replace(r, reference_embedding=active.reference_embedding)
                    for r in requests
                ]
            return self.pipeline(requests, steps=steps, guidance_scale=guidance_scale, progress=progress)
