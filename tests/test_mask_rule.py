"""Which pixels of a mask mean "paint here" (docs/api.md, "Masks: which pixels paint") is decided
twice: by the API when it checks an upload (api/ may not import models/) and by the engine when it
reads one. Both must paint exactly the pixels the rule says, for every kind of PNG a widget, a
drawing tool or a shop's backend may send — and the pictures in the docs must show what they do."""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from api.image_checks import check_mask
from api.multipart import UploadedFile
from api.problems import ApiError
from models import open_mask
from tests import make_mask_pictures

H, W = 24, 32
DRAWN = np.zeros((H, W), dtype=bool)
DRAWN[5:15, 8:20] = True  # the rectangle most cases draw
FAINT = np.zeros((H, W), dtype=bool)
FAINT[16:22, 2:30] = True  # a second stroke, where a case draws one that must not paint
NOTHING = np.zeros((H, W), dtype=bool)
EVERYTHING = np.ones((H, W), dtype=bool)


@dataclass(frozen=True)
class Case:
    image: Callable[[], Image.Image]
    paints: np.ndarray
    """Exactly the pixels the rule paints."""
    decoded: str
    """The Pillow mode the saved PNG decodes to, with " tRNS" when it has a `transparency` entry:
    the case really is the kind of PNG it is named after."""
    save: dict[str, object] | None = None


def _values(low: int, high: int, dtype: type = np.uint8) -> np.ndarray:
    """Random values in [low, high) inside the rectangle, 0 outside."""
    rng = np.random.default_rng(3)
    return (rng.integers(low, high, (H, W)) * DRAWN).astype(dtype)


def _rgba(colour: tuple[int, int, int], alpha: np.ndarray) -> Image.Image:
    rgba = np.zeros((H, W, 4), dtype=np.uint8)
    rgba[..., :3] = colour
    rgba[..., 3] = alpha
    return Image.fromarray(rgba, "RGBA")


def _palette(indices: np.ndarray, colours: list[int]) -> Image.Image:
    image = Image.fromarray(indices.astype(np.uint8), "P")
    image.putpalette(colours)
    return image


def _rgb(pixels: np.ndarray) -> Image.Image:
    return Image.fromarray(pixels.astype(np.uint8), "RGB")


def _dark_colours() -> np.ndarray:
    """Black, with the rectangle in colours so dark that their luminance rounds to 0: (0, 0, 1)."""
    pixels = np.zeros((H, W, 3), dtype=np.uint8)
    pixels[DRAWN] = (0, 0, 1)
    pixels[5, 8] = (1, 0, 0)
    pixels[6, 8] = (0, 1, 0)
    return pixels


def _bug_mask() -> Image.Image:
    """The issue's mask, as many tools export it: fully opaque RGBA, black with a white rectangle."""
    rgba = np.zeros((H, W, 4), dtype=np.uint8)
    rgba[..., 3] = 255
    rgba[DRAWN, :3] = 255
    return Image.fromarray(rgba, "RGBA")


CASES: dict[str, Case] = {
    # --- fully opaque: a pixel paints unless it is black -----------------------------------------
    "L 0/255": Case(lambda: Image.fromarray((DRAWN * 255).astype(np.uint8), "L"), DRAWN, "L"),
    "L any non-zero, even 1": Case(lambda: Image.fromarray(_values(1, 256), "L"), DRAWN, "L"),
    "1 bit": Case(lambda: Image.fromarray(DRAWN).convert("1"), DRAWN, "1"),
    "P palette, black and white": Case(lambda: _palette(DRAWN, [0, 0, 0, 255, 255, 255]), DRAWN, "P"),
    "P palette, black and dark blue": Case(lambda: _palette(DRAWN, [0, 0, 0, 0, 0, 1]), DRAWN, "P"),
    "P palette, no black at all": Case(lambda: _palette(DRAWN, [9, 9, 9, 255, 255, 255]), EVERYTHING, "P"),
    "RGB coloured strokes": Case(
        lambda: _rgb(np.stack([_values(1, 256), _values(1, 256) // 2, _values(1, 256) // 3], -1)),
        DRAWN,
        "RGB",
    ),
    "RGB dark colours (luminance 0) still paint": Case(lambda: _rgb(_dark_colours()), DRAWN, "RGB"),
    "RGBA fully opaque, black with a white rectangle (the bug)": Case(_bug_mask, DRAWN, "RGBA"),
    "RGBA fully opaque, dark colours": Case(lambda: _rgb(_dark_colours()).convert("RGBA"), DRAWN, "RGBA"),
    "LA fully opaque": Case(
        lambda: Image.fromarray(np.stack([DRAWN * 255, np.full((H, W), 255)], -1).astype(np.uint8), "LA"),
        DRAWN,
        "LA",
    ),
    "I;16, any non-zero": Case(lambda: Image.fromarray(_values(1, 65536, np.uint16)), DRAWN, "I;16"),
    "I;16, values below 256": Case(lambda: Image.fromarray(_values(1, 256, np.uint16)), DRAWN, "I;16"),
    "L with a tRNS value no pixel has": Case(
        lambda: Image.fromarray(_values(1, 200), "L"), DRAWN, "L tRNS", {"transparency": 250}
    ),
    # --- with transparency: alpha >= 128 paints, whatever the colour ---------------------------
    "RGBA white drawn on transparent": Case(lambda: _rgba((255, 255, 255), DRAWN * 200), DRAWN, "RGBA"),
    "RGBA black drawn on transparent": Case(lambda: _rgba((0, 0, 0), DRAWN * 255), DRAWN, "RGBA"),
    "RGBA semi-transparent strokes: 200 paints, 100 does not": Case(
        lambda: _rgba((255, 40, 120), DRAWN * 200 + FAINT * 100), DRAWN, "RGBA"
    ),
    "RGBA alpha 128 paints, 127 does not": Case(
        lambda: _rgba((255, 255, 255), DRAWN * 128 + FAINT * 127), DRAWN, "RGBA"
    ),
    "RGBA one pixel below 255: alpha decides for all": Case(
        lambda: _rgba((0, 0, 0), np.where(DRAWN, 254, 255)), EVERYTHING, "RGBA"
    ),
    "LA drawn on transparent": Case(
        lambda: Image.fromarray(np.stack([np.full((H, W), 255), DRAWN * 255], -1).astype(np.uint8), "LA"),
        DRAWN,
        "LA",
    ),
    "P with tRNS: transparent white, opaque black": Case(
        lambda: _palette(DRAWN, [255, 255, 255, 0, 0, 0]), DRAWN, "P tRNS", {"transparency": 0}
    ),
    "P with tRNS alphas 0, 200, 100": Case(
        lambda: _palette(DRAWN * 1 + FAINT * 2, [255, 255, 255, 0, 0, 0, 0, 0, 0]),
        DRAWN,
        "P tRNS",
        {"transparency": bytes([0, 200, 100])},
    ),
    "L with tRNS 0: black is the transparent canvas": Case(
        lambda: Image.fromarray(_values(1, 256), "L"), DRAWN, "L tRNS", {"transparency": 0}
    ),
    "L with tRNS 255: black strokes on a transparent white canvas": Case(
        lambda: Image.fromarray(((~DRAWN) * 255).astype(np.uint8), "L"),
        DRAWN,
        "L tRNS",
        {"transparency": 255},
    ),
    "1 bit with tRNS": Case(
        lambda: Image.fromarray(DRAWN).convert("1"), DRAWN, "1 tRNS", {"transparency": 0}
    ),
    "RGB with tRNS white": Case(
        lambda: _rgb(np.where(DRAWN[..., None], 0, 255) * np.ones(3)),
        DRAWN,
        "RGB tRNS",
        {"transparency": (255, 255, 255)},
    ),
    "I;16 with tRNS 255: compared at 16 bits, 300 is not 255": Case(
        lambda: Image.fromarray(np.where(DRAWN, 300, 255).astype(np.uint16)),
        DRAWN,
        "I;16 tRNS",
        {"transparency": 255},
    ),
    "I;16 with tRNS": Case(
        lambda: Image.fromarray(np.where(DRAWN, 0, 40000).astype(np.uint16)),
        DRAWN,
        "I;16 tRNS",
        {"transparency": 40000},
    ),
}

EMPTY: dict[str, Case] = {
    "L all black": Case(lambda: Image.new("L", (W, H)), NOTHING, "L"),
    "RGB all black": Case(lambda: Image.new("RGB", (W, H)), NOTHING, "RGB"),
    "RGBA fully opaque black": Case(lambda: _rgba((0, 0, 0), np.full((H, W), 255)), NOTHING, "RGBA"),
    "RGBA white, all transparent": Case(lambda: _rgba((255, 255, 255), NOTHING), NOTHING, "RGBA"),
    "RGBA white, alpha 127 everywhere": Case(
        lambda: _rgba((255, 255, 255), np.full((H, W), 127)), NOTHING, "RGBA"
    ),
    "P all transparent": Case(
        lambda: _palette(DRAWN, [9, 9, 9, 255, 255, 255]), NOTHING, "P tRNS", {"transparency": bytes([0, 0])}
    ),
}


def _png(case: Case) -> bytes:
    buffer = io.BytesIO()
    case.image().save(buffer, format="PNG", **(case.save or {}))
    data = buffer.getvalue()
    decoded = Image.open(io.BytesIO(data))
    kind = decoded.mode + (" tRNS" if "transparency" in decoded.info else "")
    assert kind == case.decoded, f"the PNG decodes to {kind}, not {case.decoded}"
    return data


def api_paints(data: bytes, size: tuple[int, int] = (W, H)) -> np.ndarray:
    upload = UploadedFile(field="mask", filename="mask.png", file=io.BytesIO(data), size=len(data))
    checked = check_mask(upload, size=size, max_pixels=size[0] * size[1])
    assert checked.mode == "L" and set(np.unique(np.asarray(checked)).tolist()) <= {0, 255}
    return np.asarray(checked) > 0


@pytest.mark.parametrize("name", list(CASES))
def test_api_and_engine_paint_what_the_rule_says(name: str) -> None:
    case = CASES[name]
    data = _png(case)
    api_paint = api_paints(data)
    engine_paint = open_mask(data, (W, H))
    assert np.array_equal(api_paint, case.paints), "the API paints other pixels than the rule's"
    assert np.array_equal(engine_paint, case.paints), "the engine paints other pixels than the rule's"


@pytest.mark.parametrize("name", list(EMPTY))
def test_a_mask_with_nothing_to_paint_is_refused(name: str) -> None:
    data = _png(EMPTY[name])
    with pytest.raises(ApiError) as raised:
        api_paints(data)
    assert raised.value.code == "mask_empty"
    assert not open_mask(data, (W, H)).any()


def test_the_api_stores_what_the_engine_reads_back_alike() -> None:
    """The worker reads the stored mask (8-bit L, 0/255) with the same rule: it paints the same."""
    data = _png(CASES["RGBA fully opaque, black with a white rectangle (the bug)"])
    upload = UploadedFile(field="mask", filename="mask.png", file=io.BytesIO(data), size=len(data))
    stored = io.BytesIO()
    check_mask(upload, size=(W, H), max_pixels=W * H).save(stored, "PNG")
    assert np.array_equal(open_mask(stored.getvalue(), (W, H)), DRAWN)


# --- the pictures of docs/api.md ---------------------------------------------------------------
def test_the_docs_pictures_are_what_the_script_makes_now() -> None:
    """docs/masks/*.png are made by `python -m tests.make_mask_pictures`; they cannot drift from
    the rule: the script paints them with the engine's reading, checked against the API's."""
    made = make_mask_pictures.pictures()
    folder = make_mask_pictures.FOLDER
    assert sorted(p.name for p in folder.glob("*.png")) == sorted(made), "run the script again"
    for name, picture in made.items():
        committed = Image.open(folder / name)
        assert committed.mode == picture.mode and committed.size == picture.size, name
        assert np.array_equal(np.asarray(committed), np.asarray(picture)), f"{name}: run the script again"
        assert (folder / name).stat().st_size < 8_000, f"{name} is meant to be tiny"


def test_the_docs_show_every_picture_in_the_mask_section() -> None:
    text = (Path(__file__).resolve().parent.parent / "docs" / "api.md").read_text()
    section = text[text.index("## Masks: which pixels paint") :]
    section = section[: section.index("\n## ", 1)]
    for name in make_mask_pictures.pictures():
        assert f"masks/{name}" in section, f"docs/api.md does not show {name}"
