"""Synthetic product photos for the training tests: a textured object pasted in varied poses
(position, scale, rotation, flip) on varied random backgrounds, with its exact box.

Two objects that differ in shape, brightness and texture: "checker" (a white / light grey
checkerboard diamond) and "stripes" (a black / dark grey striped disc), so a test can tell learning
*this* object from learning photos in general. Bright against dark on purpose: the tiny model's
random VAE keeps brightness in its latents far better than texture, and a difference the latents
do not carry cannot be learnt.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from models.training_pairs import SubjectPhoto

OBJECT_SIDE = 48


def textured_object(
    kind: str, side: int = OBJECT_SIDE, rng: np.random.Generator | None = None
) -> Image.Image:
    """RGBA: the object's texture where alpha = 255, transparent around its shape. `random` (drawn
    from `rng`): two random colours in checks, diagonal stripes or speckles, as a diamond, a disc or
    an upright bar; a domain of objects that are neither of the other two."""
    y, x = np.mgrid[0:side, 0:side]
    if kind == "random":
        assert rng is not None
        return _random_object(rng, side, x, y)
    if kind == "checker":
        cells = ((x // 6) + (y // 6)) % 2
        texture = np.where(cells[..., None], [255, 255, 255], [215, 215, 200])  # white / light grey
        shape = Image.new("L", (side, side), 0)
        ImageDraw.Draw(shape).polygon(
            [(side / 2, 0), (side - 1, side / 2), (side / 2, side - 1), (0, side / 2)], 255
        )
    elif kind == "stripes":
        stripes = ((x + y) // 4) % 3
        palette = np.array([[0, 0, 0], [40, 40, 50], [15, 10, 30]])  # black / dark greys
        texture = palette[stripes]
        shape = Image.new("L", (side, side), 0)
        ImageDraw.Draw(shape).ellipse((0, 0, side - 1, side - 1), 255)
    else:
        raise ValueError(kind)
    image = Image.fromarray(texture.astype(np.uint8)).convert("RGBA")
    image.putalpha(shape)
    return image


def _random_object(rng: np.random.Generator, side: int, x: np.ndarray, y: np.ndarray) -> Image.Image:
    colours = rng.integers(0, 256, (2, 3))
    period = int(rng.integers(3, 9))
    pattern = [((x // period) + (y // period)) % 2, ((x + y) // period) % 2, rng.random((side, side)) < 0.5]
    texture = colours[pattern[int(rng.integers(0, 3))].astype(int)]
    shape = Image.new("L", (side, side), 0)
    draw, which = ImageDraw.Draw(shape), int(rng.integers(0, 3))
    if which == 0:
        draw.polygon([(side / 2, 0), (side - 1, side / 2), (side / 2, side - 1), (0, side / 2)], 255)
    elif which == 1:
        draw.ellipse((0, 0, side - 1, side - 1), 255)
    else:
        draw.rectangle((side // 6, 0, side - 1 - side // 6, side - 1), 255)
    image = Image.fromarray(texture.astype(np.uint8)).convert("RGBA")
    image.putalpha(shape)
    return image


def random_background(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    """A smooth two-colour gradient plus noise: a different 'room' every time."""
    width, height = size
    a, b = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    angle = rng.uniform(0, 2 * math.pi)
    y, x = np.mgrid[0:height, 0:width]
    ramp = (np.cos(angle) * x / width + np.sin(angle) * y / height + 1) / 2
    pixels = a * (1 - ramp[..., None]) + b * ramp[..., None] + rng.normal(0, 12, (height, width, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def scene(kind: str, seed: int, size: tuple[int, int] = (96, 96)) -> SubjectPhoto:
    """The object in a random pose on a random background; its box is exact (from the alpha)."""
    rng = np.random.default_rng(seed)
    obj = textured_object(kind, rng=rng)
    scale = rng.uniform(0.7, 1.2)
    side = max(8, round(OBJECT_SIDE * scale))
    obj = obj.resize((side, side), Image.Resampling.BILINEAR)
    if rng.random() < 0.5:
        obj = obj.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    obj = obj.rotate(rng.uniform(-30, 30), resample=Image.Resampling.BILINEAR, expand=True)
    background = random_background(rng, size)
    x = int(rng.integers(0, size[0] - obj.width + 1))
    y = int(rng.integers(0, size[1] - obj.height + 1))
    background.paste(obj, (x, y), obj)
    x0, y0, x1, y1 = obj.getchannel("A").getbbox()
    return SubjectPhoto(background, (float(x + x0), float(y + y0), float(x + x1), float(y + y1)))


def views(kind: str, seeds: range | list[int]) -> list[SubjectPhoto]:
    return [scene(kind, seed) for seed in seeds]


DOMAIN_VIEWS = range(10_000, 10_048)  # scenes of their own: no background is an evaluation scene's


def domain_stage(base: Any, steps: int, view_count: int = len(DOMAIN_VIEWS)) -> bytes:
    """Train every UNet weight of `base` for `steps` on views of random objects (neither checker nor
    stripes), in place: what is general about denoising such scenes is then learnt, as a pretrained
    model has, before a product's LoRA starts from it. Returns the weights file, for other bases.
    `view_count` other than the test's 48 is for `bench/bench_learning_lead.py --domain-views`."""
    from models.full_weights_slot import start_from_unet_weights
    from models.training import TrainSettings, train_subject

    settings = TrainSettings(steps=steps, learning_rate=1e-3, batch_size=4, seed=99, mode="full")
    scenes = range(DOMAIN_VIEWS.start, DOMAIN_VIEWS.start + view_count)
    artifact = train_subject(base, views("random", scenes), settings).artifact
    start_from_unet_weights(base, artifact)
    return artifact


# --- a training run in a child process, for the kill-and-resume test -----------------------------

RESUME_PHOTOS = range(0, 4)


def resume_settings(steps: int, checkpoint_every: int) -> Any:
    from models.training import TrainSettings

    # a large lr so the adapter moves far from its init: a resume that got anything wrong shows
    return TrainSettings(
        steps=steps,
        learning_rate=1e-3,
        batch_size=2,
        seed=7,
        lora_dropout=0.1,
        checkpoint_every=checkpoint_every,
    )


def _child(
    tiny_folder: str, checkpoint_dir: str, steps: int, every: int, hang_after: int, marker: str
) -> None:
    """Train with checkpoints; after step `hang_after`, say so in `marker` and hang until killed."""
    import time

    from models.base_model import load_base_model
    from models.training import TrainProgress, train_subject

    base = load_base_model("tiny", tiny_dir=tiny_folder, device="cpu")

    def progress(p: TrainProgress) -> None:
        if p.step == hang_after:
            Path(marker).write_text(str(p.step))
            time.sleep(600)

    train_subject(
        base,
        views("checker", RESUME_PHOTOS),
        resume_settings(steps, every),
        progress=progress,
        checkpoint_dir=checkpoint_dir,
    )


if __name__ == "__main__":
    import sys

    folder, ckpt, n, k, hang, mark = sys.argv[1:7]
    _child(folder, ckpt, int(n), int(k), int(hang), mark)
