"""`roomfit eval`'s bench folder with garbage in it is refused with one clear error
(`InvalidBench`), never a traceback nor a silently different bench."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from models.eval_bench import InvalidBench, load_bench, make_synthetic_bench


def _bench(folder: Path, boxes_text: str) -> Path:
    """One subject (one 32x32 photo, boxes.json as given), one background with its mask."""
    subject = folder / "subjects" / "sofa"
    subject.mkdir(parents=True)
    Image.new("RGB", (32, 32), (200, 40, 40)).save(subject / "a.png")
    (subject / "boxes.json").write_text(boxes_text)
    rooms = folder / "backgrounds"
    rooms.mkdir()
    Image.new("RGB", (40, 30), (10, 120, 10)).save(rooms / "room.png")
    mask = Image.new("L", (40, 30), 0)
    mask.paste(255, (5, 5, 20, 20))
    mask.save(rooms / "room.mask.png")
    return folder


@pytest.mark.parametrize(
    "box",
    [
        "[NaN, 2, 20, 20]",  # json reads NaN: was clipped to 0, a box the file never gave
        "[2, 2, NaN, 20]",
        "[true, 2, 20, 20]",  # a boolean is no pixel coordinate
        "[2, 2, " + "9" * 400 + ", 20]",  # an int too large for a float: was an OverflowError
    ],
)
def test_a_box_of_garbage_is_invalid_bench(tmp_path: Path, box: str) -> None:
    bench = _bench(tmp_path, '{"a.png": ' + box + "}")
    with pytest.raises(InvalidBench, match=r"a\.png"):
        load_bench(bench)


def test_boxes_nested_too_deep_is_invalid_bench(tmp_path: Path) -> None:
    bench = _bench(tmp_path, "[" * 100_000)  # json.loads: RecursionError, not a ValueError
    with pytest.raises(InvalidBench, match=r"boxes\.json"):
        load_bench(bench)


def test_a_good_box_still_loads(tmp_path: Path) -> None:
    bench = load_bench(_bench(tmp_path, '{"a.png": [2, 2.5, 20, 40]}'))
    assert bench.subjects[0].photos[0].box == (2.0, 2.5, 20.0, 32.0)  # clipped to the photo


def test_two_rooms_of_one_name_are_invalid_bench(tmp_path: Path) -> None:
    """room.png and room.jpg are both background `room`: they shared one mask and one painted image
    per method (the second overwrote the first), and the report counted one of them."""
    bench = _bench(tmp_path, json.dumps({"a.png": [2, 2, 20, 20]}))
    Image.new("RGB", (40, 30), (90, 90, 200)).save(bench / "backgrounds" / "room.jpg")
    with pytest.raises(InvalidBench, match=r"two backgrounds are named 'room'"):
        load_bench(bench)


def test_make_synthetic_into_a_file_is_invalid_bench(tmp_path: Path) -> None:
    target = tmp_path / "bench"
    target.write_text("not a folder")
    with pytest.raises(InvalidBench, match=r"is not a folder"):
        make_synthetic_bench(target)
