"""Fine-tuning the Paint-by-Example UNet on self-supervised pairs: the settings, the loop, one step.

The paper's recipe (every choice, with the paper's words or why roomfit chose otherwise, is in
docs/method.md): LoRA on the UNet's attention projections (rank, alpha and targets of the base's
adapter config, `models.lora`; A Gaussian, B zero), AdamW at lr 3e-5, batch 16 (accumulated over
micro-batches where memory needs it), LoRA dropout 0.2, the reference replaced by the learned
unconditional vector 20 % of the time (so guidance still works), the VAE and image encoder frozen,
the ordinary denoising loss. "full" mode updates every UNet weight instead (the paper's "whole
params" row), and `models.domain_training.train_domain` trains over a folder of scene photos (the
paper's LSUN-bedroom pretraining); all return the same `TrainResult`. From a product's photos
without boxes, start at `models.subject_training.annotate_and_train` (detect, then `train_subject`).

    photos = [SubjectPhoto(image, (x0, y0, x1, y1)), ...]
    result = train_subject(base, photos, TrainSettings(steps=400, seed=1), progress=print,
                           checkpoint_dir=Path("var/ckpt/sub_1"))
    Path("sofa.safetensors").write_bytes(result.artifact)

Reproducible and resumable: pairs come from one numpy Generator, noise, timesteps and reference
dropout from one torch Generator (drawn for the whole batch, so micro-batching does not change them),
LoRA dropout from the (forked) global torch RNG (per forward pass: its masks do change with the
micro-batch size); a checkpoint stores all of them with the weights and the optimizer, so a killed
run resumed from its checkpoint ends with the same adapter.

Beside it: `training_pairs` (what a pair is), `training_loss` (the loss), `trainable_unet` (what is
trained), `training_checkpoint` (what is saved), `adapter_format` / `full_weights_format` (the files).
"""

from __future__ import annotations

import dataclasses
import logging
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

from models.adapter_format import export_adapter
from models.augmentation import AugmentSettings, crop_reference
from models.base_model import BaseModel
from models.conditioning import drop_references, product_embedding
from models.divergence import check_losses, check_weights
from models.full_weights_format import export_unet_weights
from models.trainable_unet import trainable_unet, unet_parameter_count
from models.training_checkpoint import (
    TrainingState,
    load_checkpoint,
    save_checkpoint,
    training_fingerprint,
    training_inputs_digest,
)
from models.training_loss import denoising_loss, draw_noise, encode_pairs
from models.training_pairs import SubjectPhoto, TrainingPair, sample_pairs

log = logging.getLogger(__name__)

# The paper's §5.1 values (docs/method.md): per-product LoRA stage, and the shared batch and dropout.
PAPER_LEARNING_RATE = 3e-5
PAPER_BATCH_SIZE = 16
PAPER_DROPOUT = 0.2
# Paint-by-Example trains with 20 % of its references replaced by the learned unconditional vector.
REFERENCE_DROPOUT = 0.2

# what an artifact's info says of the run that made it
RECORDED_SETTINGS = (
    "mode",
    "steps",
    "seed",
    "learning_rate",
    "batch_size",
    "lora_dropout",
    "reference_dropout",
)

PairSampler = Callable[[np.random.Generator, int], list[TrainingPair]]  # (rng, count) -> a batch


@dataclass(frozen=True)
class TrainSettings:
    steps: int = 400
    learning_rate: float = PAPER_LEARNING_RATE
    batch_size: int = PAPER_BATCH_SIZE  # pairs per optimiser step
    # pairs per forward pass; gradients of a step's micro-batches add up to the batch's. None: the
    # whole batch at once. The noise, timesteps and dropped references of a step do not depend on it;
    # LoRA dropout's masks do (drawn per forward pass), so with lora_dropout > 0 another size gives
    # another, statistically equivalent adapter; with lora_dropout = 0, the same up to float rounding.
    micro_batch_size: int | None = None
    mode: Literal["lora", "full"] = "lora"
    rank: int | None = None  # None: the rank already injected into the base, else models.lora's default
    alpha: float | None = None  # None: = rank (scaling 1), as models.lora.inject_lora
    lora_dropout: float = PAPER_DROPOUT  # on the LoRA branch's input, as peft's lora_dropout
    lora_init: Literal["gaussian", "kaiming"] = "gaussian"  # A's init (B = 0): the LoRA paper's, or peft's
    reference_dropout: float = REFERENCE_DROPOUT  # share of pairs trained on the unconditional vector
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


class StopTraining(Exception):
    """Raised by a progress callback to end the run after this step, with a checkpoint of it even
    between two due checkpoints: a worker that is stopping leaves the rest to the next one."""


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


def train_subject(
    base: BaseModel,
    photos: Sequence[SubjectPhoto],
    settings: TrainSettings = TrainSettings(),
    *,
    progress: ProgressCallback | None = None,
    checkpoint_dir: Path | str | None = None,
    info: dict[str, Any] | None = None,
) -> TrainResult:
    """Learn one product from its photos and boxes (see models.detector.annotate_photos). The adapter
    stores the embedding of the photo previews will be painted from (`models.conditioning`)."""
    if not photos:
        raise ValueError("training needs at least one photo with a box")
    resolution = settings.resolution or base.resolution

    def sample(rng: np.random.Generator, count: int) -> list[TrainingPair]:
        return sample_pairs(photos, rng, count=count, resolution=resolution, settings=settings.augment)

    chosen, reference_embedding = product_embedding(base, [crop_reference(p.image, p.box) for p in photos])
    return fine_tune(
        base,
        sample,
        reference_embedding=reference_embedding,
        settings=settings,
        inputs_digest=training_inputs_digest([(p.image, p.box) for p in photos]),
        progress=progress,
        checkpoint_dir=checkpoint_dir,
        info={"kind": "subject", "photos": len(photos), "reference_photo": chosen, **(info or {})},
    )


# --- the loop ----------------------------------------------------------------------------------


def fine_tune(
    base: BaseModel,
    sample: PairSampler,
    *,
    reference_embedding: torch.Tensor,
    settings: TrainSettings,
    inputs_digest: str,
    progress: ProgressCallback | None = None,
    checkpoint_dir: Path | str | None = None,
    info: dict[str, Any] | None = None,
) -> TrainResult:
    """Train `base.unet` on pairs from `sample`; the base is left as it was (LoRA mode) or holding
    the fine-tuned weights (full mode: give it a base model of its own). `reference_embedding` [1,D]
    is what the artifact paints from."""
    if settings.checkpoint_every and checkpoint_dir is None:
        raise ValueError("checkpoint_every needs a checkpoint folder")
    if settings.micro_batch_size is not None and settings.micro_batch_size < 1:
        raise ValueError("micro_batch_size must be at least 1 (or None: the whole batch)")
    started = time.perf_counter()
    device = base.device
    amp_dtype = _amp_dtype(settings.mixed_precision, device)
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
        optimizer, scaler, step, losses = state.optimizer, state.scaler, 0, []

        checkpoint = load_checkpoint(checkpoint_dir, fingerprint) if checkpoint_dir is not None else None
        if checkpoint is not None and checkpoint.trainable.keys() != trainable.keys():
            # left by a roomfit whose LoRA had other targets: its optimizer state fits nothing here
            log.warning("checkpoint in %s is of another LoRA layout: starting over", checkpoint_dir)
            checkpoint = None
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
                settings,
                backward=lambda part: scaler.scale(part).backward(),
                amp_dtype=amp_dtype,
            )
            if settings.max_grad_norm:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(list(trainable.values()), settings.max_grad_norm)
            scaler.step(optimizer)
            scaler.update()
            step += 1
            losses.append(loss)
            check_losses(losses)

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
                try:
                    progress(TrainProgress(step, settings.steps, losses[-1], pace * (settings.steps - step)))
                except StopTraining:
                    if checkpoint_dir is not None and not due:
                        save_checkpoint(
                            checkpoint_dir, state.capture(step=step, fingerprint=fingerprint, losses=losses)
                        )
                    raise

        check_weights(trainable)
        trainable_params = sum(p.numel() for p in trainable.values())
        run_info = {**(info or {}), **{name: getattr(settings, name) for name in RECORDED_SETTINGS}}
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
    settings: TrainSettings,
    *,
    backward: Callable[[torch.Tensor], None] = torch.Tensor.backward,
    amp_dtype: torch.dtype | None = None,
) -> float:
    """One batch's gradients (`backward` is called once per micro-batch with its share of the loss)
    and its mean denoising loss: noise the product's latents at a random timestep and predict that
    noise from the noisy latents, the masked photo and the reference embedding (or, for the dropped
    references, the unconditional vector)."""
    size = settings.micro_batch_size or len(pairs)
    uncond = base.image_encoder.uncond_vector  # [1,1,D]
    draws: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
    total = 0.0
    for start in range(0, len(pairs), size):
        chunk = pairs[start : start + size]
        # latents [b,4,h,w], masked_latents [b,4,h,w], keep_latent [b,1,h,w], cond [b,1,D]
        encoded = encode_pairs(base, chunk)
        if draws is None:  # the whole batch's draws, in one order whatever the micro-batch size
            draws = _batch_draws(len(pairs), encoded.latents, noise_scheduler, generator, settings)
        noise, timesteps, drop = (d[start : start + len(chunk)] for d in draws)
        encoded = encoded._replace(cond=drop_references(encoded.cond, uncond, drop))
        loss = denoising_loss(
            base.unet,
            noise_scheduler,
            encoded,
            noise.to(encoded.latents.device),
            timesteps.to(encoded.latents.device),
            amp_dtype=amp_dtype,
            painted_only=settings.loss_on == "painted",
        )
        share = len(chunk) / len(pairs)
        backward(loss * share)
        total += float(loss.detach()) * share
    return total


def _batch_draws(
    count: int,
    latents: torch.Tensor,
    noise_scheduler: DDPMScheduler,
    generator: torch.Generator,
    settings: TrainSettings,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Noise [count,4,h,w], timesteps [count] and dropped references [count] bool for one batch."""
    noise = draw_noise(latents.new_empty((count, *latents.shape[1:])), generator)
    timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (count,), generator=generator)
    drop = torch.rand((count,), generator=generator) < settings.reference_dropout
    return noise, timesteps, drop


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
