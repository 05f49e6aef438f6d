"""A photo's box is stored to 0.1 px, rounded outwards: a training started again trains on the
stored box, so it must still hold the product, and a thin box a shop gave must keep a width."""

from __future__ import annotations

import pytest

from core.subjects import stored_box


@pytest.mark.parametrize(
    ("box", "stored"),
    [
        ([10, 10, 10.04, 50], [10.0, 10.0, 10.1, 50.0]),  # rounded to nearest: x0 == x1, untrainable
        ([0.05, 0.04, 99.96, 49.95], [0.0, 0.0, 100.0, 50.0]),  # still every pixel it touched
        ([10.3, 20.7, 30.3, 40.7], [10.3, 20.7, 30.3, 40.7]),  # tenths stay (10.3 * 10 is 103.000...01)
        ([1.25, 2.35, 3.45, 4.55], [1.2, 2.3, 3.5, 4.6]),
    ],
)
def test_a_box_is_stored_to_tenths_rounded_outwards(box: list[float], stored: list[float]) -> None:
    assert stored_box(box) == stored


def test_a_stored_box_of_a_box_within_a_photo_stays_within_it() -> None:
    """The photo's sides are whole pixels, so rounding up to a tenth never passes them."""
    for width in (1, 7, 640, 4033):
        x1 = width - 1e-9
        assert stored_box([0, 0, x1, x1])[2] <= width
