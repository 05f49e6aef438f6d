"""Subject training: fine-tune the Paint-by-Example UNet on self-supervised pairs from a product's photos.

The paper's recipe: LoRA on the UNet's attention projections (rank, alpha and targets of the base's
adapter config, `models.lora`), AdamW at lr 3e-5, the VAE and image encoder frozen, the ordinary
denoising loss. "full" mode updates every UNet weight instead (the paper's "whole params" row), and
`train_domain` trains over a folder of scene photos with random boxes (the paper's LSUN-bedroom
pretraining); all return the same `TrainResult`.

    annotations = annotate_photos(images, detector=load_detector("tiny"), boxes=None, label="couch")
    photos = [SubjectPhoto(images[a.index], a.box) for a in annotations if a.usable]
    result = train_subject(base, photos, TrainSettings(steps=400, seed=1), progress=print,
                           checkpoint_dir=Path("var/ckpt/sub_1"))
    Path("sofa.safetensors").write_bytes(result.artifact)

Reproducible and resumable: pairs come from one numpy Generator, noise and timesteps from one torch
Generator, dropout from the (forked) global torch RNG; a checkpoint stores all of them with the
weights and the optimizer, so a killed run resumed from its checkpoint ends with the same adapter.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
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
import torch.nn.functional as F
from diffusers import DDPMScheduler
from PIL import Image
from safetensors.torch import save as safetensors_save

from models.adapter_format import export_adapter
from models.augmentation import AugmentSettings, crop_reference, random_box
from models.base_model import BaseModel
from models.lora import ADAPTER_NAME, DEFAULT_RANK, inject_lora, lora_parameters, lora_spec_of
from models.sampler import InpaintPipeline
from models.training_checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from models.training_pairs import SubjectPhoto, TrainingPair, make_pair, sample_pairs
from models.unet_input import build_unet_input, keep_mask_from_paint_mask, latent_keep_mask, masked_image

PAPER_LEARNING_RATE = 3e-5
FULL_FORMAT = "roomfit-unet"  # the artifact of a full fine-tune: every UNet weight, fp32

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
    artifact: bytes  # an adapter file (models.adapter_format) in lora mode; UNet weights in full mode
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
    """Learn one product from its photos and boxes (see models.detector.annotate_photos)."""
    if not photos:
        raise ValueError("training needs at least one photo with a box")
    resolution = settings.resolution or base.resolution

    def sample(rng: np.random.Generator, count: int) -> list[TrainingPair]:
        return sample_pairs(photos, rng, count=count, resolution=resolution, settings=settings.augment)

    digest = _inputs_digest([(p.image, p.box) for p in photos])
    return fine_tune(
        base,
        sample,
        references=[crop_reference(p.image, p.box) for p in photos],
        settings=settings,
        inputs_digest=digest,
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
        inputs_digest=_inputs_digest([(im, None) for im in images]),
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
    fingerprint = _fingerprint(base, settings, inputs_digest)

    with _trainable_unet(base, settings) as trainable, _forked_rngs(device):
        # Every random draw of the run comes from these, seeded here and restored on resume.
        torch.manual_seed(settings.seed)  # LoRA dropout
        random.seed(settings.seed)
        rng = np.random.default_rng(settings.seed)  # pairs and their augmentation
        generator = torch.Generator().manual_seed(settings.seed)  # noise and timesteps
        optimizer = torch.optim.AdamW(
            list(trainable.values()), lr=settings.learning_rate, weight_decay=settings.weight_decay
        )
        scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
        step, losses = 0, []

        checkpoint = load_checkpoint(checkpoint_dir, fingerprint) if checkpoint_dir is not None else None
        if checkpoint is not None:
            with torch.no_grad():
                for name, param in trainable.items():
                    param.copy_(checkpoint.trainable[name])
            optimizer.load_state_dict(checkpoint.optimizer)
            if checkpoint.scaler:
                scaler.load_state_dict(checkpoint.scaler)
            rng.bit_generator.state = checkpoint.numpy_rng
            generator.set_state(checkpoint.torch_generator)
            torch.set_rng_state(checkpoint.torch_global)
            random.setstate(checkpoint.python_random)
            step, losses = checkpoint.step, list(checkpoint.losses)
        resumed_from, loop_started = step, time.perf_counter()

        while step < settings.steps:
            pairs = sample(rng, settings.batch_size)
            optimizer.zero_grad(set_to_none=True)
            loss = training_step(
                base,
                pairs,
                noise_scheduler,
                generator,
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
                    checkpoint_dir,
                    Checkpoint(
                        step=step,
                        fingerprint=fingerprint,
                        trainable={k: p.detach().cpu().clone() for k, p in trainable.items()},
                        optimizer=optimizer.state_dict(),
                        numpy_rng=rng.bit_generator.state,
                        torch_generator=generator.get_state(),
                        torch_global=torch.get_rng_state(),
                        python_random=random.getstate(),
                        scaler=scaler.state_dict() if scaler.is_enabled() else None,
                        losses=losses,
                    ),
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
    latents, masked_latents, keep_latent, cond = encode_pairs(base, pairs)  # [B,4,h,w] x2, [B,1,h,w], [B,1,D]
    batch = latents.shape[0]
    # drawn on the CPU generator whatever the device: the same stream on CPU and GPU, and resumable
    noise = torch.randn(latents.shape, generator=generator).to(latents.device, latents.dtype)  # [B,4,h,w]
    timesteps = torch.randint(
        0, noise_scheduler.config.num_train_timesteps, (batch,), generator=generator
    ).to(latents.device)  # [B]
    return denoising_loss(
        base.unet,
        noise_scheduler,
        latents,
        masked_latents,
        keep_latent,
        cond,
        noise,
        timesteps,
        amp_dtype,
        painted_only=painted_only,
    )


@torch.no_grad()
def encode_pairs(
    base: BaseModel, pairs: Sequence[TrainingPair]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The frozen half of a step: VAE latents of the source and of the masked source, the keep-mask
    at latent size, and the image encoder's embedding of each reference."""
    device, dtype, vae = base.device, base.dtype, base.vae
    source = torch.stack([p.source for p in pairs]).to(device, dtype)  # [B,3,R,R] in [-1,1]
    paint = torch.stack([p.paint_mask for p in pairs]).to(device, dtype)  # [B,1,R,R] 1 = paint
    keep = keep_mask_from_paint_mask(paint).to(dtype)  # [B,1,R,R] 1 = keep
    batch = source.shape[0]
    # One VAE pass for both; the posterior mode (not a sample) for the target too, as inference
    # encodes the masked room: the VAE's posterior std is tiny and a sample would only add noise.
    both = vae.encode(torch.cat([source, masked_image(source, keep)])).latent_dist.mode()  # [2B,4,h,w]
    both = both * vae.config.scaling_factor
    latents, masked_latents = both[:batch], both[batch:]  # [B,4,h,w] each
    keep_latent = latent_keep_mask(keep, tuple(latents.shape[-2:]))  # [B,1,h,w]
    pixels = base.feature_extractor(images=[p.reference.convert("RGB") for p in pairs], return_tensors="pt")
    cond = base.image_encoder(pixels.pixel_values.to(device, dtype))  # [B,1,D]
    return latents, masked_latents, keep_latent, cond


def denoising_loss(
    unet: torch.nn.Module,
    noise_scheduler: DDPMScheduler,
    latents: torch.Tensor,
    masked_latents: torch.Tensor,
    keep_latent: torch.Tensor,
    cond: torch.Tensor,
    noise: torch.Tensor,
    timesteps: torch.Tensor,
    amp_dtype: torch.dtype | None = None,
    *,
    painted_only: bool = False,
) -> torch.Tensor:
    """MSE of the UNet's prediction; `painted_only` averages over the latent cells to paint only
    (what inpainting keeps: everything else is pasted back from the room)."""
    noisy = noise_scheduler.add_noise(latents, noise, timesteps)  # [B,4,h,w]
    unet_input = build_unet_input(noisy, masked_latents, keep_latent)  # [B,9,h,w]
    with torch.autocast(latents.device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
        prediction = unet(unet_input, timesteps, encoder_hidden_states=cond).sample  # [B,4,h,w]
    if noise_scheduler.config.prediction_type == "v_prediction":
        target = noise_scheduler.get_velocity(latents, noise, timesteps)
    else:
        target = noise
    if not painted_only:
        return F.mse_loss(prediction.float(), target.float())
    paint = (1 - keep_latent.float()).expand_as(prediction)  # [B,4,h,w] 1 = painted cell
    return ((prediction.float() - target.float()) ** 2 * paint).sum() / paint.sum().clamp(min=1)


@torch.no_grad()
def evaluation_loss(
    base: BaseModel,
    pairs: Sequence[TrainingPair],
    *,
    timesteps: Sequence[int] = (50, 150, 300, 500, 700, 900),
    seed: int = 0,
    painted_only: bool = True,
) -> float:
    """Mean denoising loss over `pairs` x `timesteps` with fixed noise: the same numbers for any
    adapter, so two models (base vs tuned) are compared on identical inputs. By default over the
    painted cells only: the product, not the room around it."""
    noise_scheduler = DDPMScheduler.from_config(base.scheduler_config)
    latents, masked_latents, keep_latent, cond = encode_pairs(base, pairs)
    generator = torch.Generator().manual_seed(seed)
    total = 0.0
    for t in timesteps:
        noise = torch.randn(latents.shape, generator=generator).to(latents.device, latents.dtype)
        steps = torch.full((latents.shape[0],), t, dtype=torch.long, device=latents.device)
        total += float(
            denoising_loss(
                base.unet,
                noise_scheduler,
                latents,
                masked_latents,
                keep_latent,
                cond,
                noise,
                steps,
                painted_only=painted_only,
            )
        )
    return total / len(timesteps)


# --- what is trained ---------------------------------------------------------------------------


@contextmanager
def _trainable_unet(base: BaseModel, settings: TrainSettings) -> Iterator[dict[str, torch.nn.Parameter]]:
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
        _init_lora(trainable, settings.seed)
        dropout_slots = _lora_dropout_slots(unet)
        for slot in dropout_slots:
            slot[ADAPTER_NAME] = torch.nn.Dropout(settings.lora_dropout)
    else:
        trainable = {name: p for name, p in unet.named_parameters() if "lora_" not in name}
    original_dtype = next(iter(trainable.values())).dtype
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
            param.data = saved[key] if lora_mode else param.data.to(original_dtype)


def _init_lora(params: dict[str, torch.nn.Parameter], seed: int) -> None:
    """peft's default LoRA init (A Kaiming-uniform, B = 0: starts as the base), but seeded."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, param in params.items():
            if ".lora_A." in key:
                weight = torch.empty(param.shape, dtype=torch.float32)
                torch.nn.init.kaiming_uniform_(weight, a=math.sqrt(5), generator=generator)
                param.copy_(weight)
            else:
                param.zero_()


def _lora_dropout_slots(unet: torch.nn.Module) -> list[torch.nn.ModuleDict]:
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


def export_unet_weights(
    base: BaseModel, *, reference_embedding: torch.Tensor, info: dict[str, Any] | None = None
) -> bytes:
    """A full fine-tune's artifact: every UNet weight (fp32: small updates vanish in fp16), keyed as
    in diffusers' UNet2DConditionModel state dict, plus the reference embedding and metadata."""
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


def _inputs_digest(items: Sequence[tuple[Image.Image, Any]]) -> str:
    digest = hashlib.sha256()
    for image, box in items:
        rgb = image.convert("RGB")
        digest.update(f"{rgb.size}|{box}|".encode())
        digest.update(rgb.tobytes())
    return digest.hexdigest()


def _fingerprint(base: BaseModel, settings: TrainSettings, inputs_digest: str) -> str:
    """What a checkpoint must match to be resumed: inputs, base weights and every setting that
    changes the result (not `steps` or `checkpoint_every`: a run may be extended or checkpointed
    more often)."""
    relevant = dataclasses.asdict(settings)
    relevant.pop("steps")
    relevant.pop("checkpoint_every")
    payload = json.dumps(
        {
            "settings": relevant,
            "base": base.weights_hash,
            "inputs": inputs_digest,
            "device": base.device.type,
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def list_images(folder: Path | str) -> list[Path]:
    """The image files of a folder (domain training), sorted so a run is reproducible."""
    suffixes = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}
    return sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in suffixes)
