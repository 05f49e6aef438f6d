"""Fine-tuning the Paint-by-Example UNet on self-supervised pairs: the settings, the loop, one step.

The paper's recipe: LoRA on the UNet's attention projections (rank, alpha and targets of the base's
adapter config, `models.lora`), AdamW at lr 3e-5, the VAE and image encoder frozen, the ordinary
denoising loss. "full" mode updates every UNet weight instead (the paper's "whole params" row), and
`train_domain` trains over a folder of scene photos with random boxes (the paper's LSUN-bedroom
pretraining); all return the same `TrainResult`. From a product's photos without boxes, start at
`models.subject_training.annotate_and_train` (detect, then `train_subject`).

    photos = [SubjectPhoto(image, (x0, y0, x1, y1)), ...]
    result = train_subject(base, photos, TrainSettings(steps=400, seed=1), progress=print,
                           checkpoint_dir=Path("var/ckpt/sub_1"))
    Path("sofa.safetensors").write_bytes(result.artifact)

Reproducible and resumable: pairs come from one numpy Generator, noise and timesteps from one torch
Generator, dropout from the (forked) global torch RNG; a checkpoint stores all of them with the
weights and the optimizer, so a killed run resumed from its checkpoint ends with the same adapter.

Beside it: `training_pairs` (what a pair is), `training_loss` (the loss), `trainable_unet` (what is
trained), `training_checkpoint` (what is saved), `adapter_format` / `full_weights_format` (the files).
"""

from __future__ import annotations

import dataclasses
import math
import random
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from diffusers import DDPMScheduler
from PIL import Image

from models.adapter_format import export_adapter
from models.augmentation import AugmentSettings, crop_reference, random_box
from models.base_model import BaseModel
from models.full_weights_format import export_unet_weights
from models.sampler import InpaintPipeline
from models.trainable_unet import trainable_unet, unet_parameter_count
from models.training_checkpoint import (
    TrainingState,
    load_checkpoint,
    save_checkpoint,
    training_fingerprint,
    training_inputs_digest,
)
from models.training_loss import denoising_loss, draw_noise, encode_pairs
from models.training_pairs import SubjectPhoto, TrainingPair, make_pair, sample_pairs

PAPER_LEARNING_RATE = 3e-5

PairSampler = Callable[[np.random.Generator, int], list[TrainingPair]]  # (rng, count) -> a batch


@dataclass(frozen=True)
class TrainSettings:
    steps: int = 400
    learning_rate: float = PAPER_LEARNING_RATE
    batch_size: int = 4
    mode: Literal["lora", "full"] = "lora"
    rank: int | None = None  # None: the rank already injected into the base, else models.lora's default
    alpha: float | None = None  # None: = rank (scaling 1), as models.lora.inject_lora
    lora_dropout: float = 0.0
    # "all": the paper's loss over the whole latent; "painted": only the cells to paint (what
    # inpainting keeps), which spends the budget on the product rather than the room around it
    loss_on: Literal["all", "painted"] = "all"
    weight_decay: float = 1e-2
    max_grad_norm: float | None = 1.0
    seed: int = 0
    resolution: int | None = None  # training crop side in pixels; None: the base model's
    checkpoint_every: int = 0  # steps between checkpoints (0: none); needs a checkpoint folder
    mixed_precision: Literal["auto", "no", "fp16", "bf16"] = "auto"  # auto: bf16/fp16 on CUDA, fp32 on CPU
    gradient_checkpointing: bool | None = None  # None: on CUDA only (saves memory, costs time)
    augment: AugmentSettings = field(default_factory=AugmentSettings)


@dataclass(frozen=True)
class TrainProgress:
    step: int  # steps done
    total: int
    loss: float  # this step's loss
    eta_s: float | None  # seconds left at the pace since this (re)start


ProgressCallback = Callable[[TrainProgress], None]


@dataclass
class TrainSummary:
    mode: str
    steps: int
    resumed_from_step: int
    trainable_params: int
    unet_params: int  # the UNet's own weights (LoRA layers not counted)
    artifact_bytes: int
    seconds: float
    losses: list[float]
    device: str

    @property
    def trainable_fraction(self) -> float:
        return self.trainable_params / self.unet_params

    @property
    def final_loss(self) -> float:
        """Mean of the last 10 step losses (one step's loss is noisy)."""
        tail = self.losses[-10:]
        return sum(tail) / len(tail) if tail else math.nan

    def as_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data.update(trainable_fraction=self.trainable_fraction, final_loss=self.final_loss)
        return data


@dataclass
class TrainResult:
    artifact: bytes  # an adapter file (models.adapter_format) in lora mode, else models.full_weights_format
    reference_embedding: torch.Tensor  # [1, D]
    summary: TrainSummary


# --- entry points ------------------------------------------------------------------------------


# alike: the two entry points take the same arguments and differ only in how they sample pairs.
def train_subject(
    base: BaseModel,
    photos: Sequence[SubjectPhoto],
    settings: TrainSettings = TrainSettings(),
    *,
    progress: ProgressCallback | None = None,
    checkpoint_dir: Path | str | None = None,
    info: dict[str, Any] | None = None,
) -> TrainResult:
    """Learn one product from its photos and boxes (see models.detector.annotate_photos)."""
    if not photos:
        raise ValueError("training needs at least one photo with a box")
    resolution = settings.resolution or base.resolution

    def sample(rng: np.random.Generator, count: int) -> list[TrainingPair]:
        return sample_pairs(photos, rng, count=count, resolution=resolution, settings=settings.augment)

    return fine_tune(
        base,
        sample,
        references=[crop_reference(p.image, p.box) for p in photos],
        settings=settings,
        inputs_digest=training_inputs_digest([(p.image, p.box) for p in photos]),
        progress=progress,
        checkpoint_dir=checkpoint_dir,
        info={"kind": "subject", "photos": len(photos), **(info or {})},
    )


def train_domain(
    base: BaseModel,
    images: Sequence[Image.Image],
    settings: TrainSettings = TrainSettings(),
    *,
    progress: ProgressCallback | None = None,
    checkpoint_dir: Path | str | None = None,
    info: dict[str, Any] | None = None,
) -> TrainResult:
    """Domain pretraining over scene photos (the paper's LSUN-bedroom stage): no product, so each
    pair masks a random box of a random photo and uses that box's crop as the reference."""
    if not images:
        raise ValueError("domain training needs at least one image")
    resolution = settings.resolution or base.resolution

    def sample(rng: np.random.Generator, count: int) -> list[TrainingPair]:
        pairs = []
        for index in rng.integers(0, len(images), size=count):
            image = images[int(index)]
            photo = SubjectPhoto(image, random_box(image.size, rng))
            pairs.append(make_pair(photo, rng, resolution=resolution, settings=settings.augment))
        return pairs

    return fine_tune(
        base,
        sample,
        references=list(images),
        settings=settings,
        inputs_digest=training_inputs_digest([(im, None) for im in images]),
        progress=progress,
        checkpoint_dir=checkpoint_dir,
        info={"kind": "domain", "images": len(images), **(info or {})},
    )


# --- the loop ----------------------------------------------------------------------------------


def fine_tune(
    base: BaseModel,
    sample: PairSampler,
    *,
    references: Sequence[Image.Image],
    settings: TrainSettings,
    inputs_digest: str,
    progress: ProgressCallback | None = None,
    checkpoint_dir: Path | str | None = None,
    info: dict[str, Any] | None = None,
) -> TrainResult:
    """Train `base.unet` on pairs from `sample`; the base is left as it was (LoRA mode) or holding
    the fine-tuned weights (full mode: give it a base model of its own)."""
    if settings.checkpoint_every and checkpoint_dir is None:
        raise ValueError("checkpoint_every needs a checkpoint folder")
    started = time.perf_counter()
    device = base.device
    amp_dtype = _amp_dtype(settings.mixed_precision, device)
    reference_embedding = InpaintPipeline(base).encode_reference(references)  # [1, D]
    noise_scheduler = DDPMScheduler.from_config(base.scheduler_config)
    fingerprint = training_fingerprint(base, settings, inputs_digest)

    with trainable_unet(base, settings) as trainable, _forked_rngs(device):
        # Every random draw of the run comes from these, seeded here and restored on resume.
        torch.manual_seed(settings.seed)  # LoRA dropout
        random.seed(settings.seed)
        state = TrainingState(
            trainable=trainable,
            optimizer=torch.optim.AdamW(
                list(trainable.values()), lr=settings.learning_rate, weight_decay=settings.weight_decay
            ),
            scaler=torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16),
            rng=np.random.default_rng(settings.seed),  # pairs and their augmentation
            generator=torch.Generator().manual_seed(settings.seed),  # noise and timesteps
        )
        optimizer, scaler = state.optimizer, state.scaler
        step, losses = 0, []

        checkpoint = load_checkpoint(checkpoint_dir, fingerprint) if checkpoint_dir is not None else None
        if checkpoint is not None:
            state.restore(checkpoint)
            step, losses = checkpoint.step, list(checkpoint.losses)
        resumed_from, loop_started = step, time.perf_counter()

        while step < settings.steps:
            pairs = sample(state.rng, settings.batch_size)
            optimizer.zero_grad(set_to_none=True)
            loss = training_step(
                base,
                pairs,
                noise_scheduler,
                state.generator,
                amp_dtype=amp_dtype,
                painted_only=settings.loss_on == "painted",
            )
            scaler.scale(loss).backward()
            if settings.max_grad_norm:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(list(trainable.values()), settings.max_grad_norm)
            scaler.step(optimizer)
            scaler.update()
            step += 1
            losses.append(float(loss.detach()))

            # checkpoint before reporting: a callback that cancels (raises) keeps this step
            due = settings.checkpoint_every and (
                step % settings.checkpoint_every == 0 or step == settings.steps
            )
            if checkpoint_dir is not None and due:
                save_checkpoint(
                    checkpoint_dir, state.capture(step=step, fingerprint=fingerprint, losses=losses)
                )
            if progress is not None:
                pace = (time.perf_counter() - loop_started) / (step - resumed_from)
                progress(TrainProgress(step, settings.steps, losses[-1], pace * (settings.steps - step)))

        trainable_params = sum(p.numel() for p in trainable.values())
        run_info = {
            **(info or {}),
            "mode": settings.mode,
            "steps": settings.steps,
            "seed": settings.seed,
            "learning_rate": settings.learning_rate,
            "batch_size": settings.batch_size,
        }
        if settings.mode == "lora":
            artifact = export_adapter(
                base.unet,
                reference_embedding=reference_embedding,
                base_model_id=base.model_id,
                base_weights_hash=base.weights_hash,
                info=run_info,
            )
        else:
            artifact = export_unet_weights(base, reference_embedding=reference_embedding, info=run_info)

    summary = TrainSummary(
        mode=settings.mode,
        steps=settings.steps,
        resumed_from_step=resumed_from,
        trainable_params=trainable_params,
        unet_params=unet_parameter_count(base.unet),
        artifact_bytes=len(artifact),
        seconds=time.perf_counter() - started,
        losses=losses,
        device=str(device),
    )
    return TrainResult(artifact=artifact, reference_embedding=reference_embedding, summary=summary)


# --- one step ----------------------------------------------------------------------------------


def training_step(
    base: BaseModel,
    pairs: Sequence[TrainingPair],
    noise_scheduler: DDPMScheduler,
    generator: torch.Generator,
    *,
    amp_dtype: torch.dtype | None = None,
    painted_only: bool = False,
) -> torch.Tensor:
    """The denoising loss of the UNet on one batch: noise the product's latents at a random timestep
    and predict that noise from the noisy latents, the masked photo and the reference embedding."""
    # latents [B,4,h,w], masked_latents [B,4,h,w], keep_latent [B,1,h,w], cond [B,1,D]
    encoded = encode_pairs(base, pairs)
    latents = encoded.latents
    noise = draw_noise(latents, generator)  # [B,4,h,w]
    timesteps = torch.randint(
        0, noise_scheduler.config.num_train_timesteps, (latents.shape[0],), generator=generator
    ).to(latents.device)  # [B]
    return denoising_loss(
        base.unet, noise_scheduler, encoded, noise, timesteps, amp_dtype=amp_dtype, painted_only=painted_only
    )


# --- plumbing ----------------------------------------------------------------------------------


def _amp_dtype(setting: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype; None = plain fp32. Mixed precision only on CUDA: CPU autocast is slow."""
    if setting == "no" or (setting == "auto" and device.type != "cuda"):
        return None
    if setting == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if setting in ("fp16", "bf16"):
        return torch.float16 if setting == "fp16" else torch.bfloat16
    raise ValueError(f"unknown mixed_precision {setting!r}; expected auto, no, fp16, bf16")


@contextmanager
def _forked_rngs(device: torch.device) -> Iterator[None]:
    """Training reseeds the global torch RNG (dropout); the caller's RNG state is given back after."""
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        state = random.getstate()
        try:
            yield
        finally:
            random.setstate(state)
