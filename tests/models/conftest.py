"""Fixtures for the engine's tests: one tiny Paint-by-Example folder per session, loaded like a real model."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from models import BaseModel, Painter, load_base_model, write_adapter
from models.lora import lora_parameters, lora_spec_of

STEPS = 3


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from models import ensure_tiny_model

    return ensure_tiny_model(tmp_path_factory.mktemp("models") / "tiny-pbe")


@pytest.fixture(scope="session")
def base(tiny_folder: Path) -> BaseModel:
    """The tiny model read back from its saved folder by the same loader as the real one."""
    return load_base_model("tiny", tiny_dir=tiny_folder, device="cpu")


@pytest.fixture(scope="module")
def own_base(tiny_folder: Path) -> BaseModel:
    """A base of the test module's own (LoRA injected, as a worker's), apart from the engine tests'
    one: training must not depend on what other modules did to theirs."""
    from models.lora import inject_lora

    base = load_base_model("tiny", tiny_dir=tiny_folder, device="cpu")
    base.lora = inject_lora(base.unet, rank=4)
    return base


@pytest.fixture
def painter(base: BaseModel) -> Painter:
    """A fresh Painter (and AdapterCache) on the session's base: starts with no adapter active."""
    return Painter(base, lora_rank=4)


@pytest.fixture(scope="session")
def reference() -> Image.Image:
    rng = np.random.default_rng(7)
    return Image.fromarray(rng.integers(0, 256, (80, 60, 3), dtype=np.uint8))


def random_room(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    # smooth-ish content plus noise, so resampling differences would show
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([(x * 255 // max(width - 1, 1)), (y * 255 // max(height - 1, 1)), (x + y) % 256], -1)
    noise = rng.integers(-20, 21, (height, width, 3))
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))


def make_adapter_bytes(base: BaseModel, seed: int, **overrides: object) -> bytes:
    """A random (but non-trivial) adapter of `base`, as a trained one would be written."""
    generator = torch.Generator().manual_seed(seed)
    spec = lora_spec_of(base.unet)
    lora = {
        key: torch.randn(tuple(param.shape), generator=generator) * 0.5
        for key, param in lora_parameters(base.unet).items()
    }
    embedding = torch.randn((1, base.image_encoder.proj_size), generator=generator)
    kwargs: dict = {
        "reference_embedding": embedding,
        "base_model_id": base.model_id,
        "base_weights_hash": base.weights_hash,
        "spec": spec,
        "info": {"seed": seed},
    }
    kwargs.update(overrides)
    return write_adapter(kwargs.pop("lora", lora), **kwargs)


@pytest.fixture
def adapter_bytes(base: BaseModel, painter: Painter) -> Callable[..., bytes]:
    # `painter` first: LoRA must be injected before the slot shapes can be read
    return lambda seed, **overrides: make_adapter_bytes(base, seed, **overrides)
