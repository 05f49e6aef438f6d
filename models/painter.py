"""Painter: the base model, its LoRA adapters, full fine-tunes and the sampler, as one object a worker
or the CLI holds.

An adapter id names a LoRA adapter (`models.adapter_format`, swapped by the `AdapterCache`) or a full
fine-tune (`models.full_weights_format`, painted through the `FullWeightsSlot`); the loader's bytes
tell which. A full fine-tune costs host memory: one CPU copy of the base UNet's own weights, made the
first time one is painted (3.4 GB fp32 / 1.7 GB fp16 for the real UNet), plus the cached fine-tunes
(`full_weights_cached`, the same size each).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image

from models.adapter_bank import AdapterBank
from models.adapter_cache import ActiveAdapter, AdapterCache, AdapterLoader
from models.base_model import BaseModel
from models.errors import AdapterCorrupt, AdapterError
from models.full_weights_format import file_format
from models.full_weights_slot import FullWeights, FullWeightsSlot
from models.images import rgb_profile
from models.lora import DEFAULT_RANK, inject_lora, lora_spec_of
from models.sampler import DEFAULT_GUIDANCE_SCALE, InpaintPipeline, PaintRequest, ProgressCallback, cfg_rows


class FullWeightsFound(Exception):
    """The Painter's adapter loader found a full fine-tune: its bytes go to the FullWeightsSlot,
    never into the AdapterCache (which reads LoRA adapters only)."""

    def __init__(self, adapter_id: str, data: bytes) -> None:
        super().__init__(f"{adapter_id!r} is a full fine-tune, not a LoRA adapter")
        self.adapter_id = adapter_id
        self.data: bytes | None = data

    def take(self) -> bytes:
        """The bytes, no longer held here (nor by the traceback): a full file is gigabytes."""
        data, self.data = self.data, None
        assert data is not None
        return data


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
        full_weights_cached: int = 1,
        adapter_slots: int = 8,
    ) -> None:
        """`loader(adapter_id) -> bytes` reads either kind of file; `full_weights_cached`: how many
        full fine-tunes stay in host memory ready to paint (LRU; others are read again);
        `adapter_slots`: how many different adapters one batch of `paint_mixed` may hold."""
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
            loader=None if loader is None else self._lora_loader,
        )
        self.full_weights = FullWeightsSlot(
            base.unet,
            base_model_id=base.model_id,
            base_weights_hash=base.weights_hash,
            loader=loader,
            max_cached=full_weights_cached,
        )
        self.bank = AdapterBank(base.unet, self.adapters, slots=adapter_slots)
        self._loader = loader
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
        """Paint requests sharing one adapter or full fine-tune (None: the base model) as one batch.

        A request without its own reference uses the adapter's stored reference embedding. A full
        fine-tune paints with the LoRA slots zeroed, and the base weights are back when this returns.
        """
        full = self.full_weights.cached(adapter_id) if adapter_id is not None else None
        if full is None:
            try:
                with self.adapters.use(adapter_id) as active:
                    return self._sample(requests, active, steps, guidance_scale, progress)
            except FullWeightsFound as found:  # read once: its bytes come with it
                data = found.take()
            full = self.full_weights.load(adapter_id, data)  # outside `except`: its errors stand alone
            del data  # gigabytes: not held while painting
        # The AdapterCache's lock holds the UNet for the whole paint, as for a LoRA adapter.
        with self.adapters.use(None), self.full_weights.applied(full):
            return self._sample(requests, full, steps, guidance_scale, progress)

    def paint_mixed(
        self,
        requests: Sequence[PaintRequest],
        adapter_ids: Sequence[str | None],
        *,
        steps: int,
        guidance_scale: float = DEFAULT_GUIDANCE_SCALE,
        progress: ProgressCallback | None = None,
    ) -> list[Image.Image | AdapterError]:
        """Paint requests, each with its own adapter (None: the base model), in one UNet batch.

        Returns, per request, its image, or the AdapterError (not found, corrupt, another base) that
        kept it out of the batch: one bad adapter fails its own request only. When every request
        uses the same adapter this is `paint` (the swap path); full fine-tunes, which change every
        weight, are painted on their own after the batch.
        """
        if len(requests) != len(adapter_ids):
            raise ValueError("paint_mixed needs one adapter id per request")
        outcomes: list[Image.Image | AdapterError | None] = [None] * len(requests)
        entries: dict[str, ActiveAdapter] = {}
        alone: list[str] = []  # full fine-tunes

        def fail(adapter_id: str, exc: AdapterError) -> None:
            for i, wanted in enumerate(adapter_ids):
                if wanted == adapter_id:
                    outcomes[i] = exc

        for adapter_id in dict.fromkeys(i for i in adapter_ids if i is not None):
            if self.full_weights.cached(adapter_id) is not None:
                alone.append(adapter_id)
                continue
            data: bytes | None = None
            try:
                entries[adapter_id] = self.adapters.entry(adapter_id)
            except FullWeightsFound as found:
                data = found.take()
            except AdapterError as exc:
                fail(adapter_id, exc)
            if data is None:
                continue
            try:  # outside `except`, as in `paint`; another base or a damaged file fails its own rows only
                self.full_weights.load(adapter_id, data)
                alone.append(adapter_id)
            except AdapterError as exc:
                fail(adapter_id, exc)
            del data  # gigabytes: not held while the others load
        batch = [i for i, a in enumerate(adapter_ids) if outcomes[i] is None and a not in alone]
        ids = [adapter_ids[i] for i in batch]
        if len(set(ids)) == 1:  # one adapter (or none) for the whole batch: the swap path
            images = self.paint(
                [requests[i] for i in batch],
                adapter_id=ids[0],
                steps=steps,
                guidance_scale=guidance_scale,
                progress=progress,
            )
        elif batch:
            images = self._paint_bank(
                [requests[i] for i in batch], ids, entries, steps, guidance_scale, progress
            )
        for i, image in zip(batch, images if batch else [], strict=True):
            outcomes[i] = image
        for adapter_id in alone:
            mine = [i for i, a in enumerate(adapter_ids) if a == adapter_id]
            try:
                # read again when the slot kept no copy (full_weights_cached=0, or evicted by the
                # previous one): that read may fail too, and must not cost the other rows theirs
                painted = self.paint([requests[i] for i in mine], adapter_id=adapter_id, steps=steps,
                                     guidance_scale=guidance_scale)  # fmt: skip
            except AdapterError as exc:
                fail(adapter_id, exc)
                continue
            for i, image in zip(mine, painted, strict=True):
                outcomes[i] = image
        return outcomes  # type: ignore[return-value]

    def _paint_bank(
        self,
        requests: list[PaintRequest],
        adapter_ids: list[str | None],
        entries: dict[str, ActiveAdapter],
        steps: int,
        guidance_scale: float,
        progress: ProgressCallback | None,
    ) -> list[Image.Image]:
        requests = [
            r
            if a is None or r.reference is not None or r.reference_embedding is not None
            else dataclasses.replace(r, reference_embedding=entries[a].reference_embedding)
            for r, a in zip(requests, adapter_ids, strict=True)
        ]
        # The AdapterCache's lock holds the UNet (no swap meanwhile); peft's slots are bypassed.
        with self.adapters.use(None):
            slots = torch.tensor(self.bank.place(adapter_ids))
            with self.bank.rows(cfg_rows(slots, guidance_scale)):
                images = self.pipeline(
                    requests, steps=steps, guidance_scale=guidance_scale, progress=progress
                )
        return _with_room_profiles(requests, images)

    @property
    def swap_seconds(self) -> float:
        """Time spent putting adapters and full fine-tunes in place (and the base back)."""
        return self.adapters.stats.swap_seconds + self.full_weights.stats.swap_seconds

    def _sample(
        self,
        requests: Sequence[PaintRequest],
        active: ActiveAdapter | FullWeights | None,
        steps: int,
        guidance_scale: float,
        progress: ProgressCallback | None,
    ) -> list[Image.Image]:
        if active is not None:
            requests = [
                r
                if r.reference is not None or r.reference_embedding is not None
                else dataclasses.replace(r, reference_embedding=active.reference_embedding)
                for r in requests
            ]
        images = self.pipeline(requests, steps=steps, guidance_scale=guidance_scale, progress=progress)
        return _with_room_profiles(requests, images)

    def _lora_loader(self, adapter_id: str) -> bytes:
        """The AdapterCache's loader: a full fine-tune's bytes leave it by FullWeightsFound."""
        assert self._loader is not None
        data = self._loader(adapter_id)
        try:
            kind = file_format(data)  # the header only; an unknown roomfit.format raises here
        except AdapterCorrupt:
            return data  # read_adapter says what is wrong with it, as it always did
        if kind == "roomfit-lora":
            return data
        found = FullWeightsFound(adapter_id, data)
        del data  # only `found` holds the bytes now, and gives them up in `take`
        raise found


def _with_room_profiles(requests: Sequence[PaintRequest], images: list[Image.Image]) -> list[Image.Image]:
    """Each painted image with its room's ICC profile, which a PNG or JPEG saved from it embeds: its
    pixels outside the mask are the room's, and only with the room's profile do they show the room's
    colours (a phone's Display P3 photo read as sRGB looks washed out). Only an RGB profile."""
    for request, image in zip(requests, images, strict=True):
        if (profile := rgb_profile(request.room.info.get("icc_profile"))) is not None:
            image.info["icc_profile"] = profile
    return images
