"""Acceptance 3: augmented pairs stay consistent (the mask covers the object, the reference is the object)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from models.augmentation import (
    NO_AUGMENTATION,
    AugmentSettings,
    augment_mask,
    augment_reference,
    crop_reference,
    pixel_box,
)
from models.training_pairs import SubjectPhoto, evaluation_pairs, make_pair, sample_pairs
from tests.models.training_fixtures import scene, textured_object

SIZE = (120, 90)
BOX = (30.4, 20.0, 70.0, 61.7)


def object_like(image: Image.Image) -> np.ndarray:
    """[H,W] bool: pixels of the "checker" object's palette (white / light grey: strong red and green)."""
    rgb = np.asarray(image.convert("RGB")).astype(int)
    return (rgb[..., 0] > 150) & (rgb[..., 1] > 150)


@pytest.mark.parametrize("seed", range(40))
def test_every_mask_covers_the_box_and_stays_in_the_image(seed: int) -> None:
    mask = augment_mask(BOX, SIZE, np.random.default_rng(seed))
    assert mask.shape == (SIZE[1], SIZE[0]) and mask.dtype == bool
    x0, y0, x1, y1 = pixel_box(BOX, SIZE)
    assert mask[y0:y1, x0:x1].all()


def test_masks_grow_into_varied_larger_shapes() -> None:
    rng = np.random.default_rng(0)
    x0, y0, x1, y1 = pixel_box(BOX, SIZE)
    box_area = (x1 - x0) * (y1 - y0)
    masks = [augment_mask(BOX, SIZE, rng) for _ in range(60)]
    areas = np.array([m.sum() for m in masks])
    assert (areas >= box_area).all() and (areas > 1.2 * box_area).mean() > 0.5
    # irregular shapes: many masks are not the rectangle of their own bounding box
    not_rectangles = 0
    for m in masks:
        rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
        not_rectangles += int(m.sum() < (rows[-1] - rows[0] + 1) * (cols[-1] - cols[0] + 1))
    assert not_rectangles > 20
    assert len({m.tobytes() for m in masks}) == len(masks)


def test_a_box_at_the_border_is_clipped() -> None:
    mask = augment_mask((0, 0, 20, 90), SIZE, np.random.default_rng(3))
    assert mask[:, :20].all() and mask.shape == (90, 120)


def test_without_augmentation_the_mask_is_the_box_and_the_reference_the_crop() -> None:
    photo = scene("checker", seed=5)
    mask = augment_mask(photo.box, photo.image.size, np.random.default_rng(0), NO_AUGMENTATION)
    x0, y0, x1, y1 = pixel_box(photo.box, photo.image.size)
    expected = np.zeros_like(mask)
    expected[y0:y1, x0:x1] = True
    assert (mask == expected).all()
    crop = crop_reference(photo.image, photo.box)
    same = augment_reference(crop, np.random.default_rng(0), NO_AUGMENTATION)
    assert np.array_equal(np.asarray(same), np.asarray(crop))


@pytest.mark.parametrize("seed", range(10))
def test_the_augmented_reference_is_still_the_object(seed: int) -> None:
    obj = textured_object("checker")
    photo = Image.new("RGB", (100, 100), (20, 90, 200))  # a blue room: nothing object-like
    photo.paste(obj, (30, 20), obj)
    x0, y0, x1, y1 = obj.getchannel("A").getbbox()
    crop = crop_reference(photo, (30 + x0, 20 + y0, 30 + x1, 20 + y1))
    reference = augment_reference(crop, np.random.default_rng(seed))
    assert reference.size == crop.size
    # the diamond fills half its box; augmentation keeps most of it (crop >= 70 % of the area,
    # small rotation, mild colour jitter) and adds nothing object-like from outside
    assert object_like(reference).mean() > 0.3
    assert object_like(crop).mean() > 0.4


def test_reference_augmentation_changes_the_image_and_is_seeded() -> None:
    crop = textured_object("checker").convert("RGB")
    settings = AugmentSettings(flip_p=1.0)
    a = augment_reference(crop, np.random.default_rng(1), settings)
    b = augment_reference(crop, np.random.default_rng(1), settings)
    c = augment_reference(crop, np.random.default_rng(2), settings)
    assert np.array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(a), np.asarray(c))
    assert not np.array_equal(np.asarray(a), np.asarray(crop))


@pytest.mark.parametrize("seed", range(12))
def test_training_pair_masks_cover_the_object_in_the_crop(seed: int) -> None:
    photo = scene("checker", seed=seed)
    pair = make_pair(photo, np.random.default_rng(seed), resolution=64)
    assert pair.source.shape == (3, 64, 64) and pair.paint_mask.shape == (1, 64, 64)
    assert pair.source.min() >= -1 and pair.source.max() <= 1
    obj = pair.object_mask.bool()
    assert obj.any() and pair.paint_mask.bool()[obj].all()
    # the object's colours are inside its box in the training crop: the source shows the product
    pixels = ((pair.source + 1) * 127.5).permute(1, 2, 0).numpy().astype(np.uint8)
    inside = object_like(Image.fromarray(pixels))[obj[0].numpy()]
    assert inside.mean() > 0.2
    assert object_like(pair.reference).mean() > 0.2


def test_evaluation_pairs_are_unaugmented_and_deterministic() -> None:
    photos = [scene("checker", seed=s) for s in range(3)]
    first, second = evaluation_pairs(photos, resolution=64), evaluation_pairs(photos, resolution=64)
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a.source, b.source) and torch.equal(a.paint_mask, b.paint_mask)
        assert torch.equal(a.paint_mask, a.object_mask)  # mask = box


def test_one_rng_drives_everything() -> None:
    photos = [scene("checker", seed=s) for s in range(3)] + [
        SubjectPhoto(Image.new("RGB", (70, 50)), (5, 5, 30, 30))
    ]
    one = sample_pairs(photos, np.random.default_rng(9), count=5, resolution=32)
    two = sample_pairs(photos, np.random.default_rng(9), count=5, resolution=32)
    other = sample_pairs(photos, np.random.default_rng(10), count=5, resolution=32)
    assert all(
        torch.equal(a.source, b.source) and torch.equal(a.paint_mask, b.paint_mask)
        for a, b in zip(one, two, strict=True)
    )
    assert all(
        np.array_equal(np.asarray(a.reference), np.asarray(b.reference))
        for a, b in zip(one, two, strict=True)
    )
    assert any(not torch.equal(a.paint_mask, b.paint_mask) for a, b in zip(one, other, strict=True))


def test_random_crops_keep_the_products_shape() -> None:
    """A round product stays round: every random crop zooms both axes alike (within 2 %), where a
    crop at another aspect resized back would make it up to 15 % wider or taller."""
    reference = Image.new("RGB", (600, 200), "white")
    ImageDraw.Draw(reference).ellipse((260, 60, 340, 140), fill="black")  # a circle, 80 px across
    settings = AugmentSettings(max_rotation_deg=0.0, blur_p=0.0)  # rotation would turn its box
    zoomed = 0
    for seed in range(60):
        out = augment_reference(reference, np.random.default_rng(seed), settings)
        assert out.size == reference.size
        dark = np.asarray(out.convert("L")) < 128
        rows, cols = np.nonzero(dark)
        width, height = cols.max() - cols.min() + 1, rows.max() - rows.min() + 1
        assert abs(width / height - 1) <= 0.02, (seed, width, height)
        zoomed += width > 84  # the crop did zoom in (scale < 1) in most draws
    assert zoomed > 30
