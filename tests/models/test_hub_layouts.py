"""The real models' Hugging Face layouts load through roomfit's own loaders, offline, from a fake
cache holding the real file names and configs (`hub_cache`), and every way a cache can be wrong is
one line naming the setting and `roomfit models fetch`."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from models.base_model import load_base_model
from models.detector import DetectorNotFoundError, load_detector
from models.errors import ModelNotFoundError
from tests.models.hub_cache import (
    DETR_ID,
    DETR_NO_TIMM_COMMIT,
    IMAGE_ENCODER_CONFIG,
    PBE_COMMIT,
    PBE_ID,
    FakeRepo,
    detr_repo,
    pbe_repo,
    write_cache,
)


def use_cache(monkeypatch: pytest.MonkeyPatch, hub: Path) -> None:
    """Point huggingface_hub at `hub`, offline: the variables for what reads them at call time, the
    constants for what read them at import (snapshot_download's default cache_dir)."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HOME", str(hub.parent))
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hub))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


@pytest.fixture(scope="module")
def real_hub(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Both real repositories at their real configs' shapes (the UNet narrower), built once."""
    return write_cache(tmp_path_factory.mktemp("hf") / "hub", pbe_repo(), detr_repo())


def all_zero(tensor: torch.Tensor) -> bool:
    return bool((tensor == 0).all())


def test_paint_by_example_loads_from_its_hub_layout(real_hub: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    use_cache(monkeypatch, real_hub)
    base = load_base_model(PBE_ID, device="cpu", dtype="float32")
    assert base.folder.name == PBE_COMMIT  # the pinned snapshot
    assert base.unet.config.in_channels == 9 and base.unet.config.cross_attention_dim == 768
    assert base.resolution == 512  # sample_size 64 x the VAE's factor 8
    vision = base.image_encoder.config
    assert (vision.hidden_size, vision.num_hidden_layers, vision.patch_size) == (1024, 24, 14)
    assert base.image_encoder.proj_out.out_features == IMAGE_ENCODER_CONFIG["projection_dim"]
    assert base.scheduler_config["_class_name"] == "PNDMScheduler"
    assert base.feature_extractor.crop_size == {"height": 224, "width": 224}
    # the zeros come from the files: random initialisation never leaves these all zero
    embeddings = base.image_encoder.model.get_input_embeddings().weight
    assert all_zero(embeddings) and tuple(embeddings.shape) == (1024, 3, 14, 14)
    assert all_zero(base.vae.encoder.conv_in.weight) and all_zero(base.unet.conv_in.weight)


def test_detr_loads_from_its_no_timm_revision(real_hub: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    use_cache(monkeypatch, real_hub)
    detector = load_detector(DETR_ID)
    config = detector.model.config
    # transformers' own ResNet-50 (the `no_timm` revision's point), no timm, nothing downloaded
    assert config.backbone_config.model_type == "resnet" and config.backbone_config.depths == [3, 4, 6, 3]
    assert config.num_queries == 100
    assert config.id2label[63] == "couch"
    assert all_zero(detector.model.class_labels_classifier.weight)
    assert detector.model.class_labels_classifier.weight.shape == (92, 256)  # 91 COCO ids + no-object


def broken_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, repo: FakeRepo) -> None:
    use_cache(monkeypatch, write_cache(tmp_path / "hub", repo))


def assert_one_line(error: Exception, setting: str) -> str:
    message = str(error)
    assert "\n" not in message
    assert setting in message and "roomfit models fetch" in message
    return message


def test_a_missing_component_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    broken_cache(tmp_path, monkeypatch, pbe_repo(weights=False).without("vae/"))
    with pytest.raises(ModelNotFoundError) as caught:
        load_base_model(PBE_ID, device="cpu")
    message = assert_one_line(caught.value, "ROOMFIT_BASE_MODEL")
    assert "vae/config.json" in message and "vae/diffusion_pytorch_model.safetensors" in message
    assert f"roomfit models fetch --base {PBE_ID}" in message


def test_a_pickle_only_component_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    weights = "unet/diffusion_pytorch_model"
    repo = pbe_repo(weights=False).without(f"{weights}.safetensors").plus({f"{weights}.bin": b""})
    broken_cache(tmp_path, monkeypatch, repo)
    with pytest.raises(ModelNotFoundError) as caught:
        load_base_model(PBE_ID, device="cpu")
    message = assert_one_line(caught.value, "ROOMFIT_BASE_MODEL")
    assert f"only {weights}.bin" in message and "safetensors only" in message


def test_a_detector_without_its_processor_or_safetensors_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = detr_repo(weights=False).without("preprocessor_config.json", "model.safetensors")
    broken_cache(tmp_path, monkeypatch, repo.plus({"pytorch_model.bin": b""}))
    with pytest.raises(DetectorNotFoundError) as caught:
        load_detector(DETR_ID)
    message = assert_one_line(caught.value, "ROOMFIT_DETECTOR")
    assert "preprocessor_config.json" in message
    assert "model.safetensors (only pytorch_model.bin" in message


def test_a_wrong_revision_is_one_line(real_hub: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    use_cache(monkeypatch, real_hub)
    with pytest.raises(ModelNotFoundError) as caught:
        load_base_model(f"{PBE_ID}@nope", device="cpu")
    message = assert_one_line(caught.value, "ROOMFIT_BASE_MODEL")
    assert "not in the local Hugging Face cache" in message
    assert f"roomfit models fetch --base {PBE_ID}@nope" in message
    with pytest.raises(DetectorNotFoundError) as detr:
        load_detector(f"{DETR_ID}@nope")
    assert_one_line(detr.value, "ROOMFIT_DETECTOR")


def test_an_explicit_revision_finds_its_snapshot(real_hub: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from models.detector import DETECTOR
    from models.model_folder import find_model_folder

    use_cache(monkeypatch, real_hub)
    for name in (f"{DETR_ID}@no_timm", f"{DETR_ID}@{DETR_NO_TIMM_COMMIT}", DETR_ID):
        assert find_model_folder(name, DETECTOR).name == DETR_NO_TIMM_COMMIT
