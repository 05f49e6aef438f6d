"""Load the Paint-by-Example base model once per process, from a HF id, a folder, or `tiny`.

Every source goes through one loader that reads each component from its subfolder of a model
folder (`unet`, `vae`, `scheduler`, `image_encoder`, `feature_extractor`): the layout of the
Fantasy-Studio/Paint-by-Example repository and of `models.tiny`'s saved folder. diffusers'
`PaintByExamplePipeline.from_pretrained` is not used: it is deprecated and cannot reload a saved folder.

On CUDA the weights are fp16 (`resolve_device_dtype`) and every attention layer runs through torch's
fused `scaled_dot_product_attention` (`use_sdpa_attention`, set explicitly rather than trusted to the
library defaults). `compile=True` (`ROOMFIT_COMPILE`) compiles the UNet for painting
(`compile_unet`); adapter swaps and adapter-bank fills are in-place copies into tensors of fixed
shape, so they never recompile it (tests/models/test_compile.py).
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from diffusers.models.attention_processor import AttnProcessor2_0
from diffusers.utils import logging as diffusers_logging
from transformers import CLIPVisionConfig

from models.errors import ModelNotFoundError
from models.model_folder import ModelSetting, find_model_folder
from models.pbe_components import ClipImageProcessor, PaintByExampleImageEncoder
from models.tiny import ensure_tiny_model

SETTING = "ROOMFIT_BASE_MODEL"
DEFAULT_BASE_MODEL = "Fantasy-Studio/Paint-by-Example"
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class BaseModel:
    """The loaded components plus what identifies them (for adapter compatibility checks)."""

    model_id: str  # what the user named: HF id, folder or "tiny"
    folder: Path
    unet: UNet2DConditionModel
    vae: AutoencoderKL
    image_encoder: PaintByExampleImageEncoder
    feature_extractor: ClipImageProcessor
    scheduler_config: dict[str, Any]
    weights_hash: str  # base_weights_hash() of the fp32 weights, before any LoRA injection
    device: torch.device
    dtype: torch.dtype
    lora: Any = field(default=None)  # models.lora.LoraSpec once inject_lora() ran
    compiled: bool = False  # the UNet paints through torch.compile (compile_unet)

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def resolution(self) -> int:
        """Side in pixels of the square the UNet paints (512 for the real model, 64 for tiny)."""
        return int(self.unet.config.sample_size) * self.vae_scale_factor

    @property
    def is_tiny(self) -> bool:
        return self.model_id == "tiny"


def resolve_device_dtype(device: str = "auto", dtype: str = "auto") -> tuple[torch.device, torch.dtype]:
    """`auto` means CUDA with fp16 when available, else CPU with fp32 (half precision is slow on CPU)."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dtype == "auto":
        return dev, (torch.float16 if dev.type == "cuda" else torch.float32)
    if dtype not in _DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; expected auto, {', '.join(_DTYPES)}")
    return dev, _DTYPES[dtype]


BASE_MODEL = ModelSetting(
    setting=SETTING,
    error=ModelNotFoundError,
    build_tiny=ensure_tiny_model,
    required="unet/",
    required_label="a unet/ subfolder",
    folder_label="a model folder",
    tiny_label="the small random test model",
)


def resolve_model_folder(name: str, tiny_dir: Path | str | None = None) -> Path:
    """Turn the `ROOMFIT_BASE_MODEL` value into a local folder, never downloading and never falling back."""
    return find_model_folder(name, BASE_MODEL, tiny_dir)


def base_weights_hash(*modules: torch.nn.Module, samples_per_tensor: int = 8) -> str:
    """A cheap fingerprint of a model's weights: every tensor's name and shape plus a few of its values.

    Reads ~8 values per tensor (milliseconds for the 860M-parameter UNet, against seconds for a full
    sha256), in float32, so fine-tuning any tensor or changing the architecture changes the hash.
    LoRA layers are skipped and peft's `base_layer` renaming undone, so the hash of a UNet is the
    same before and after `inject_lora`. Compute it on the fp32 weights: values rounded to fp16 hash
    differently.
    """
    digest = hashlib.sha256()
    for index, module in enumerate(modules):
        state = module.state_dict()
        for name in sorted(state):
            if "lora_" in name:
                continue
            tensor = state[name].detach()
            flat = tensor.reshape(-1)
            count = min(samples_per_tensor, flat.numel())
            # integer arithmetic: float linspace rounds past the end on 30M-element tensors
            picks = torch.arange(count) * max(flat.numel() - 1, 0) // max(count - 1, 1)
            canonical = name.replace(".base_layer.", ".")
            digest.update(f"{index}:{canonical}:{tuple(tensor.shape)}".encode())
            digest.update(flat[picks].to(device="cpu", dtype=torch.float32).numpy().tobytes())
    return digest.hexdigest()


def use_sdpa_attention(*modules: UNet2DConditionModel | AutoencoderKL) -> None:
    """Route every attention layer of these diffusers models through torch's fused
    `scaled_dot_product_attention` (flash / memory-efficient kernels on CUDA). diffusers picks this
    processor itself when torch has SDPA; set here so that no model folder or library default can
    fall back to the classic processor, which builds the whole [tokens x tokens] score matrix."""
    for module in modules:
        module.set_attn_processor(AttnProcessor2_0())


def attention_processors(module: torch.nn.Module) -> set[str]:
    """The class names of a diffusers model's attention processors (one, once `use_sdpa_attention` ran)."""
    return {type(p).__name__ for p in getattr(module, "attn_processors", {}).values()}


def compile_unet(unet: torch.nn.Module, *, backend: str = "inductor", mode: str | None = None) -> None:
    """Paint through `torch.compile(unet.forward)`; training calls stay eager.

    Only inference (grad off, eval mode) takes the compiled path: training turns grads, dropout and
    `requires_grad` on and off, each a guard that would recompile, and a train worker gains nothing
    from compiling its short jobs. Compilation happens at the first painting call, so LoRA injected
    after this (the Painter's) is in the graph. Adapters never recompile it: a swap copies into the
    same LoRA tensors and the adapter bank's slots never change shape (tests/models/test_compile.py);
    a new batch size compiles once more, with that dimension dynamic from then on.
    """
    if getattr(unet, "roomfit_compiled", False):
        return  # compiling the compiled forward again would nest two dynamo frames
    eager = unet.forward
    compiled = torch.compile(eager, backend=backend, mode=mode)

    def forward(*args: Any, **kwargs: Any) -> Any:
        if unet.training or torch.is_grad_enabled():
            return eager(*args, **kwargs)
        return compiled(*args, **kwargs)

    unet.forward = forward  # type: ignore[method-assign]
    unet.roomfit_compiled = True  # type: ignore[assignment]


def load_base_model(
    name: str,
    *,
    device: str = "auto",
    dtype: str = "auto",
    tiny_dir: Path | str | None = None,
    compile: bool = False,
) -> BaseModel:
    """Load all components from the model folder `name` resolves to, in eval mode, on device/dtype,
    attention through SDPA; `compile`: the UNet paints through torch.compile (`compile_unet`)."""
    folder = resolve_model_folder(name, tiny_dir)
    dev, torch_dtype = resolve_device_dtype(device, dtype)
    try:
        # fp32 first: the weights hash must not depend on the dtype a worker runs in.
        unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet", torch_dtype=torch.float32)
        vae = AutoencoderKL.from_pretrained(folder, subfolder="vae", torch_dtype=torch.float32)
        encoder_dir = folder / "image_encoder"
        image_encoder = PaintByExampleImageEncoder.from_pretrained(
            encoder_dir,
            config=CLIPVisionConfig.from_pretrained(encoder_dir),
            torch_dtype=torch.float32,
            attn_implementation="sdpa",  # transformers' own default too, but said, as for the UNet
        )
        feature_extractor = ClipImageProcessor.from_pretrained(folder / "feature_extractor")
        scheduler_config = dict(DDIMScheduler.load_config(folder / "scheduler"))
    except OSError as exc:
        raise ModelNotFoundError(
            f"{SETTING}={name!r}: {folder} is not a complete model folder: {exc}"
        ) from exc
    if unet.config.in_channels != 9:
        raise ModelNotFoundError(
            f"{SETTING}={name!r}: its UNet has {unet.config.in_channels} input channels, "
            "not Paint-by-Example's 9 (latents + masked-image latents + mask)"
        )
    weights_hash = base_weights_hash(unet, image_encoder)
    # diffusers warns on every `.to(dtype=...)` that `torch_dtype=` in from_pretrained is preferred;
    # roomfit loads fp32 on purpose (the hash above), so the cast is deliberate.
    verbosity = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()
    try:
        for module in (unet, vae, image_encoder):
            module.eval().requires_grad_(False)
            module.to(device=dev, dtype=torch_dtype)
    finally:
        diffusers_logging.set_verbosity(verbosity)
    use_sdpa_attention(unet, vae)
    if compile:
        compile_unet(unet)
    return BaseModel(
        model_id=name,
        folder=folder,
        unet=unet,
        vae=vae,
        image_encoder=image_encoder,
        feature_extractor=feature_extractor,
        scheduler_config=scheduler_config,
        weights_hash=weights_hash,
        device=dev,
        dtype=torch_dtype,
        compiled=compile,
    )


_loaded: dict[tuple[str, str, str, str, bool], BaseModel] = {}
_loaded_lock = threading.Lock()


def get_base_model(
    name: str,
    *,  # alike: load_base_model's parameters, spelled out so that both stay typed
    device: str = "auto",
    dtype: str = "auto",
    tiny_dir: Path | str | None = None,
    compile: bool = False,
) -> BaseModel:
    """`load_base_model`, once per process and arguments: workers and the CLI share one copy."""
    key = (name, device, dtype, str(tiny_dir), compile)
    with _loaded_lock:
        if key not in _loaded:
            _loaded[key] = load_base_model(
                name, device=device, dtype=dtype, tiny_dir=tiny_dir, compile=compile
            )
        return _loaded[key]
