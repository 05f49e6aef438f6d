"""Loading: tiny goes through save_pretrained/from_pretrained; named models never fall back."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from diffusers import UNet2DConditionModel

from models import BaseModel, ModelNotFoundError, base_weights_hash, load_base_model, resolve_model_folder
from models.lora import inject_lora


def test_tiny_is_a_real_model_folder(tiny_folder: Path, base: BaseModel) -> None:
    for sub in ("unet", "vae", "scheduler", "image_encoder", "feature_extractor"):
        assert (tiny_folder / sub).is_dir(), sub
    assert base.unet.config.in_channels == 9
    assert base.resolution == 64
    assert base.dtype == torch.float32 and base.device.type == "cpu"


def test_tiny_folder_loads_as_a_local_folder_with_the_same_weights(
    tiny_folder: Path, base: BaseModel
) -> None:
    again = load_base_model(str(tiny_folder), device="cpu")
    assert again.weights_hash == base.weights_hash


def test_unknown_hf_id_raises_naming_the_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError, match="ROOMFIT_BASE_MODEL") as caught:
        resolve_model_folder("Fantasy-Studio/Paint-by-Example")
    assert caught.value.code == "model_not_found"


def test_folder_without_unet_and_garbage_names_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError):
        resolve_model_folder(str(tmp_path))
    with pytest.raises(ModelNotFoundError):
        resolve_model_folder("not a model")


def test_weights_hash_ignores_lora_but_sees_any_weight_change(tiny_folder: Path) -> None:
    unet = UNet2DConditionModel.from_pretrained(tiny_folder, subfolder="unet")
    before = base_weights_hash(unet)
    inject_lora(unet, rank=2)
    assert base_weights_hash(unet) == before
    with torch.no_grad():
        unet.conv_in.weight.add_(1e-3)  # conv_in carries no LoRA
    assert base_weights_hash(unet) != before


def test_weights_hash_handles_tensors_of_real_size() -> None:
    # 29.5M elements: the size of the real UNet's largest tensors, where float index math overflows
    layer = torch.nn.Linear(1, 1)
    layer.weight = torch.nn.Parameter(torch.zeros(1280 * 4 * 5760, 1))
    assert len(base_weights_hash(layer)) == 64


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_loads_with_the_same_weights_hash(
    tiny_folder: Path, base: BaseModel, dtype: str
) -> None:
    half = load_base_model(str(tiny_folder), device="cpu", dtype=dtype)
    assert half.unet.dtype == getattr(torch, dtype)
    assert half.weights_hash == base.weights_hash  # adapters trained on a GPU in fp16 load on a CPU in fp32
