"""What the UNet is conditioned on (models.conditioning): the whole reference reaches the image
encoder, and training and painting build the conditioning with the same function."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from models import Painter, PaintRequest, read_adapter
from models.augmentation import crop_reference
from models.base_model import BaseModel
from models.conditioning import (
    choose_reference,
    encoder_pixels,
    encoder_size,
    product_embedding,
    reference_embeddings,
)
from models.training import TrainSettings, train_subject
from models.training_loss import encode_pairs
from models.training_pairs import evaluation_pairs
from tests.models.training_fixtures import views

MODELS = Path(__file__).resolve().parents[2] / "models"
RED, GREEN, BLUE = (230, 20, 20), (20, 230, 20), (20, 20, 230)


def thirds(width: int, height: int) -> Image.Image:
    """A wide reference: red left third, green middle, blue right third."""
    image = np.zeros((height, width, 3), np.uint8)
    image[:, : width // 3] = RED
    image[:, width // 3 : 2 * width // 3] = GREEN
    image[:, 2 * width // 3 :] = BLUE
    return Image.fromarray(image)


def as_rgb_pixels(base: BaseModel, pixels: torch.Tensor) -> np.ndarray:
    """[3,S,S] normalised encoder input -> [S,S,3] in 0..255."""
    mean = torch.tensor(base.feature_extractor.image_mean).reshape(3, 1, 1)
    std = torch.tensor(base.feature_extractor.image_std).reshape(3, 1, 1)
    return ((pixels.float().cpu() * std + mean) * 255).permute(1, 2, 0).numpy()


@pytest.mark.parametrize("wide", [True, False])
def test_a_3_to_1_reference_reaches_the_encoder_whole(base: BaseModel, wide: bool) -> None:
    # the processor's default (shorter side to S, then the centre square) would keep only the green
    # middle third; the whole reference, squeezed to the square, keeps red and blue at its ends
    reference = thirds(300, 100) if wide else thirds(300, 100).rotate(90, expand=True)  # 100 x 300
    [pixels] = encoder_pixels(base, [reference])
    side_w, side_h = encoder_size(base)
    assert pixels.shape == (3, side_h, side_w)
    rgb = as_rgb_pixels(base, pixels)
    # rotated a quarter turn anticlockwise, the red left third is at the bottom, blue at the top
    first, middle, last = (
        (rgb[:, 1], rgb[:, side_w // 2], rgb[:, -2]) if wide else (rgb[-2], rgb[side_h // 2], rgb[1])
    )
    assert np.abs(first - RED).max() < 30 and np.abs(last - BLUE).max() < 30
    assert np.abs(middle - GREEN).max() < 30


def test_painting_from_a_reference_uses_the_training_function(base: BaseModel) -> None:
    """A request's reference is painted exactly as its `reference_embeddings` vector."""
    painter = Painter(base, lora_rank=4)
    room = Image.fromarray(np.full((64, 64, 3), 120, np.uint8))
    mask = np.zeros((64, 64), bool)
    mask[16:48, 16:48] = True
    reference = thirds(90, 30)
    [by_image] = painter.paint([PaintRequest(room, mask, seed=2, reference=reference)], steps=2)
    embedding = reference_embeddings(base, [reference])[0]
    [by_vector] = painter.paint([PaintRequest(room, mask, seed=2, reference_embedding=embedding)], steps=2)
    assert np.array_equal(np.asarray(by_image), np.asarray(by_vector))


def calls_of(name: str) -> dict[str, list[str]]:
    """{module file: [enclosing function of each call]} of `name(...)` across models/."""
    found: dict[str, list[str]] = {}
    for path in sorted(MODELS.glob("*.py")):
        tree = ast.parse(path.read_text())
        for function in ast.walk(tree):
            if not isinstance(function, ast.FunctionDef):
                continue
            for node in ast.walk(function):
                if isinstance(node, ast.Call) and getattr(node.func, "id", None) == name:
                    found.setdefault(path.name, []).append(function.name)
    return found


def test_training_and_painting_build_the_conditioning_with_one_function() -> None:
    # one call site in training (every pair's reference), one in painting (a request's reference),
    # and the adapter's stored vector is chosen among the same function's outputs
    assert calls_of("reference_embeddings") == {
        "conditioning.py": ["product_embedding"],
        "sampler.py": ["_embedding"],
        "training_loss.py": ["encode_pairs"],
    }
    # nothing else runs the image encoder on pixels of its own
    for path in MODELS.glob("*.py"):
        if path.name not in ("conditioning.py", "tiny.py"):
            assert "image_encoder(" not in path.read_text(), path.name


def test_an_adapter_paints_from_one_real_crops_embedding(base: BaseModel) -> None:
    """The stored vector is one un-augmented crop's (the vector training gives that crop's pair),
    not the mean of all crops, which no training pair ever used."""
    photos = views("checker", range(3))
    result = train_subject(base, photos, TrainSettings(steps=1, batch_size=2, seed=1))
    stored = read_adapter(result.artifact).reference_embedding.float()  # [1,D]
    chosen = read_adapter(result.artifact).info["reference_photo"]
    per_photo = encode_pairs(base, evaluation_pairs(photos, resolution=base.resolution)).cond.float()
    assert torch.allclose(stored, per_photo[chosen], atol=1e-6)
    assert not torch.allclose(stored, per_photo.mean(dim=0), atol=1e-4)
    crops = [crop_reference(p.image, p.box) for p in photos]
    index, vector = product_embedding(base, crops)
    assert index == chosen and torch.equal(vector, stored)


def test_the_chosen_crop_is_the_most_typical_view() -> None:
    # three alike views and an odd one: the odd one is never chosen, however large
    # (the third of the alike views sits between the other two: the most like them)
    alike = torch.tensor([[1.0, 0.1, 0, 0], [1.0, 0, 0.1, 0], [1.0, 0.05, 0.05, 0], [0, 0, 0, 1.0]])
    assert choose_reference(alike[:, None, :], [10, 10, 10, 1000]) == 2
    # two crops always tie on similarity: the larger (more detail) wins, then the first
    pair = torch.tensor([[1.0, 0.0], [0.0, 1.0]])[:, None, :]
    assert choose_reference(pair, [10, 20]) == 1
    assert choose_reference(pair, [20, 20]) == 0
    assert choose_reference(torch.ones(1, 1, 4), [5]) == 0
