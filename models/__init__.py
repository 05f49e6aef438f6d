"""roomfit's inpainting engine: Paint-by-Example + per-product LoRA adapters.

Imports nothing from api/, worker/, core/ or cli/, so it can be used on its own:

    base = load_base_model("tiny")                       # or a HF id / model folder
    painter = Painter(base, loader=blob_store.read)      # injects LoRA, owns the AdapterCache
    room = open_image("room.jpg"); mask = open_mask("mask.png", room.size)
    [out] = painter.paint([PaintRequest(room, mask, seed=1)], adapter_id="tenants/t/...", steps=30)
"""

from models.adapter_cache import ActiveAdapter, AdapterCache, CacheStats
from models.adapter_format import (
    AdapterFile,
    check_compatible,
    export_adapter,
    read_adapter,
    write_adapter,
)
from models.base_model import (
    BaseModel,
    base_weights_hash,
    get_base_model,
    load_base_model,
    resolve_device_dtype,
    resolve_model_folder,
)
from models.compositing import CropBox, crop_box_around_mask, paste_masked
from models.errors import (
    AdapterBaseMismatch,
    AdapterCorrupt,
    AdapterError,
    AdapterFormatUnsupported,
    AdapterNotFound,
    AdapterRankMismatch,
    AdapterTargetsMismatch,
    InvalidImageError,
    ModelNotFoundError,
    RoomfitModelError,
    TrainingDiverged,
    TrainingOutOfMemory,
)
from models.images import open_image, open_mask
from models.lora import LORA_TARGETS, LoraSpec, inject_lora, lora_parameters, lora_spec_of, lora_state_dict
from models.painter import Painter
from models.sampler import DEFAULT_GUIDANCE_SCALE, SCHEDULERS, InpaintPipeline, PaintRequest, make_scheduler
from models.tiny import ensure_tiny_model
from models.unet_input import build_unet_input, keep_mask_from_paint_mask, latent_keep_mask, masked_image

__all__ = [
    "DEFAULT_GUIDANCE_SCALE",
    "LORA_TARGETS",
    "SCHEDULERS",
    "ActiveAdapter",
    "AdapterBaseMismatch",
    "AdapterCache",
    "AdapterCorrupt",
    "AdapterError",
    "AdapterFile",
    "AdapterFormatUnsupported",
    "AdapterNotFound",
    "AdapterRankMismatch",
    "AdapterTargetsMismatch",
    "BaseModel",
    "CacheStats",
    "CropBox",
    "InpaintPipeline",
    "InvalidImageError",
    "LoraSpec",
    "ModelNotFoundError",
    "PaintRequest",
    "Painter",
    "RoomfitModelError",
    "TrainingDiverged",
    "TrainingOutOfMemory",
    "base_weights_hash",
    "build_unet_input",
    "check_compatible",
    "crop_box_around_mask",
    "ensure_tiny_model",
    "export_adapter",
    "get_base_model",
    "inject_lora",
    "keep_mask_from_paint_mask",
    "latent_keep_mask",
    "load_base_model",
    "lora_parameters",
    "lora_spec_of",
    "lora_state_dict",
    "make_scheduler",
    "masked_image",
    "open_image",
    "open_mask",
    "paste_masked",
    "read_adapter",
    "resolve_device_dtype",
    "resolve_model_folder",
    "write_adapter",
]
