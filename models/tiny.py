"""`tiny`: the presets built in code and saved like real checkpoint folders, for tests and demos.

The Paint-by-Example model (`ensure_tiny_model`) has the same component classes as
Fantasy-Studio/Paint-by-Example (9-channel UNet, KL VAE, Paint-by-Example
image encoder on a CLIP vision tower, CLIP image processor, scheduler config), at sizes that paint
64x64 crops in a fraction of a second on a CPU. Weights are random but seeded, so every build is
identical. The folder is written with `save_pretrained` and then read back by the same loader as a
real model (`models.base_model.load_base_model`), so tests exercise the real loading path.
Its images are noise; everything around them is real.

The DETR detector (`ensure_tiny_detector`): a small ResNet backbone and one encoder/decoder layer,
no timm and no pretrained weights, read back by `models.detector.load_detector` like the real one;
its boxes are meaningless.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from transformers import CLIPVisionConfig

from models.detr_components import COCO_LABELS, detr_processor_class
from models.model_folder import build_folder_once
from models.pbe_components import ClipImageProcessor, PaintByExampleImageEncoder

# Bump a version when any size below, or what a build writes, changes: the default cache folder's
# name and every folder's marker carry it, so a stale build is rebuilt (`build_folder_once`).
# 2: the VAE's scaling factor puts its latents at unit std (`unit_variance_scale`).
TINY_VERSION = 2
TINY_SEED = 1234
TINY_RESOLUTION = 64  # pixels painted per crop; VAE factor 4 -> 16x16 latents
MARKER = "roomfit_tiny.json"
DETECTOR_VERSION = 1
DETECTOR_SEED = 4321
DETECTOR_MARKER = "roomfit_tiny_detector.json"


def _cache_folder(name: str) -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "roomfit" / name


def default_tiny_dir() -> Path:
    return _cache_folder(f"tiny-pbe-v{TINY_VERSION}")


def default_tiny_detector_dir() -> Path:
    return _cache_folder(f"tiny-detr-v{DETECTOR_VERSION}")


def build_tiny_components(
    embed_dim: int = 32,
    unet_channels: tuple[int, int] = (32, 64),
    unet_heads: int = 8,
    attention_levels: tuple[int, ...] = (0,),
) -> dict[str, object]:
    """The five components of a tiny Paint-by-Example model, deterministic for a given torch build.

    Other UNet widths, head counts and levels with attention (0: the 32-channel one, 1: the other;
    the middle block always has it) are for `bench/bench_learning_lead.py` (does LoRA's reach grow
    with them?); the preset, and its version, is the defaults."""
    down = tuple("CrossAttnDownBlock2D" if i in attention_levels else "DownBlock2D" for i in range(2))
    up = tuple("CrossAttnUpBlock2D" if i in attention_levels else "UpBlock2D" for i in (1, 0))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_SEED)
        unet = UNet2DConditionModel(
            sample_size=TINY_RESOLUTION // 4,
            in_channels=9,  # 4 noisy latents + 4 masked-image latents + 1 keep-mask
            out_channels=4,
            block_out_channels=unet_channels,
            layers_per_block=1,
            down_block_types=down,
            up_block_types=up,
            cross_attention_dim=embed_dim,
            attention_head_dim=unet_heads,  # diffusers' misnomer: the number of heads
            norm_num_groups=8,
        )
        torch.manual_seed(TINY_SEED + 1)
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * 3,
            up_block_types=("UpDecoderBlock2D",) * 3,
            block_out_channels=(16, 32, 32),
            layers_per_block=1,
            latent_channels=4,
            norm_num_groups=8,
            sample_size=TINY_RESOLUTION,
        )
        vae.register_to_config(scaling_factor=unit_variance_scale(vae))
        torch.manual_seed(TINY_SEED + 2)
        vision_config = CLIPVisionConfig(
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=4,  # the mapper gets (4 + 1) // 5 = 1 transformer block, like the real 24 -> 5
            num_attention_heads=4,
            image_size=32,
            patch_size=4,
            projection_dim=embed_dim,
        )
        image_encoder = PaintByExampleImageEncoder(vision_config, proj_size=embed_dim)
    # The real checkpoint ships a PNDM config; DDIM with the same betas reads the same way.
    scheduler = DDIMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    feature_extractor = ClipImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}, do_convert_rgb=True
    )
    return {
        "unet": unet,
        "vae": vae,
        "image_encoder": image_encoder,
        "scheduler": scheduler,
        "feature_extractor": feature_extractor,
    }


@torch.no_grad()
def unit_variance_scale(vae: AutoencoderKL, images: int = 8) -> float:
    """The scaling factor that puts this VAE's latents at unit std, as Stable Diffusion chose its
    0.18215 for its own VAE: SD's value on this random VAE leaves latents at std ~0.043, so the
    diffusion noise drowns them at every timestep and no denoiser can tell one object from another.
    Measured on seeded noise images: for a random VAE the latents' spread barely depends on what the
    image shows (0.043 on noise, 0.043-0.045 on the synthetic product scenes of the tests)."""
    generator = torch.Generator().manual_seed(TINY_SEED + 3)
    pixels = torch.rand(images, 3, TINY_RESOLUTION, TINY_RESOLUTION, generator=generator) * 2 - 1  # [N,3,R,R]
    latents = vae.encode(pixels).latent_dist.mode()  # [N,4,R/4,R/4]
    return round(1.0 / float(latents.std()), 3)


def ensure_tiny_model(folder: Path | str | None = None) -> Path:
    """Build the tiny model folder once (atomically) and return it; later calls reuse it."""

    def build(staging: Path) -> None:
        for name, component in build_tiny_components().items():
            component.save_pretrained(staging / name)  # type: ignore[attr-defined]

    folder = Path(folder) if folder is not None else default_tiny_dir()
    return build_folder_once(folder, MARKER, {"version": TINY_VERSION, "seed": TINY_SEED}, build)


# --- the tiny DETR detector ----------------------------------------------------------------------


def build_tiny_detector() -> tuple[torch.nn.Module, object]:
    """A DETR with a small ResNet backbone, no timm and no pretrained weights: nothing downloads."""
    from transformers import DetrConfig, DetrForObjectDetection, ResNetConfig

    backbone = ResNetConfig(
        num_channels=3,
        embedding_size=16,
        hidden_sizes=[16, 32, 64, 64],
        depths=[1, 1, 1, 1],
        layer_type="basic",
        out_features=["stage4"],
    )
    config = DetrConfig(
        use_timm_backbone=False,
        use_pretrained_backbone=False,
        backbone_config=backbone,
        d_model=32,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        num_queries=10,
        num_labels=len(COCO_LABELS),
        id2label=dict(enumerate(COCO_LABELS)),
        label2id={name: i for i, name in enumerate(COCO_LABELS) if name != "N/A"},
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(DETECTOR_SEED)
        model = DetrForObjectDetection(config)
    processor = detr_processor_class()(size={"shortest_edge": 64, "longest_edge": 96})
    return model, processor


def ensure_tiny_detector(folder: Path | str | None = None) -> Path:
    """Build the tiny detector folder once (atomically) and return it."""

    def build(staging: Path) -> None:
        model, processor = build_tiny_detector()
        model.save_pretrained(staging)  # type: ignore[attr-defined]
        processor.save_pretrained(staging)  # type: ignore[attr-defined]

    folder = Path(folder) if folder is not None else default_tiny_detector_dir()
    meta = {"version": DETECTOR_VERSION, "seed": DETECTOR_SEED}
    return build_folder_once(folder, DETECTOR_MARKER, meta, build)
