import math

import numpy as np
import pytest

from needletrack.geometry import (angle_difference_deg, line_angle_deg, line_mask, midpoint_offset, needle_from_mask,
                                  shallow_first)


@pytest.mark.parametrize("angle", [0.0, 15.0, 30.0, 45.0, 60.0, 75.0, 89.0])
@pytest.mark.parametrize("side", ["left", "right"])
def test_drawn_line_angle_tip_tail(angle, side):
    h, w = 160, 200
    length = 110.0
    a = math.radians(angle)
    if side == "left":
        tail = (0.0, 10.0)
        tip = (tail[0] + length * math.cos(a), tail[1] + length * math.sin(a))
    else:
        tail = (w - 1.0, 10.0)
        tip = (tail[0] - length * math.cos(a), tail[1] + length * math.sin(a))
    m = line_mask((h, w), tail, tip, 3)
    g = needle_from_mask(m)
    assert g is not None
    assert abs(g.angle_deg - angle) < 1.5
    assert math.dist(g.tip, tip) < 2.5
    assert math.dist(g.tail, tail) < 2.5
    assert abs(g.length_px - length) < 3.0


def test_entry_side_override_swaps_tip():
    m = line_mask((100, 100), (20, 50), (80, 50), 3)
    assert needle_from_mask(m, entry_side="left").tip[0] > 70
    assert needle_from_mask(m, entry_side="right").tip[0] < 30


def test_empty_and_single_pixel():
    assert needle_from_mask(np.zeros((10, 10), bool)) is None
    m = np.zeros((10, 10), bool)
    m[3, 4] = True
    g = needle_from_mask(m)
    assert g.tip == (4.0, 3.0) and g.length_px == 0.0


def test_tip_above_tail_gives_negative_angle():
    m = line_mask((100, 100), (0, 80), (60, 20), 3)  # enters left, goes up
    g = needle_from_mask(m)
    assert g.angle_deg == pytest.approx(-45, abs=1.5)


def test_line_mask_width():
    m = line_mask((50, 50), (5, 25), (45, 25), 5)
    assert m[:, 25].sum() == 5
    assert m[25, 5] and m[25, 45] and not m[25, 48]
    thin = line_mask((50, 50), (5, 5), (45, 45), 0.5)
    assert thin[20, 20] and thin.sum() >= 41


def test_angle_difference_folds():
    assert angle_difference_deg(10, 170) == pytest.approx(20)
    assert angle_difference_deg(-80, 80) == pytest.approx(20)
    assert angle_difference_deg(30, 30) == 0


@pytest.mark.parametrize("deg", [0.0, 12.5, 45.0, 89.0, 135.0, 180.0])
def test_line_angle_is_unsigned_and_folded(deg):
    a = math.radians(deg)
    d = (10 * math.cos(a), 10 * math.sin(a))
    got = line_angle_deg((0, 0), (10, 0), (3, 3), (3 + d[0], 3 + d[1]))
    assert got == pytest.approx(min(deg % 180, 180 - deg % 180), abs=1e-6)
    # either end first: the same line
    assert line_angle_deg((10, 0), (0, 0), (3, 3), (3 + d[0], 3 + d[1])) == pytest.approx(got, abs=1e-6)
    assert line_angle_deg((0, 0), (0, 0), (1, 1), (2, 2)) is None


def test_midpoint_offset_and_shallow_first():
    # the midpoint of (0,4)-(10,4) is (5,4): 4 px from the x axis, whatever the axis segment's extent
    assert midpoint_offset((0, 4), (10, 4), (-50, 0), (-40, 0)) == pytest.approx(4.0)
    assert midpoint_offset((0, 0), (10, 10), (0, 0), (1, 1)) == pytest.approx(0.0)
    assert midpoint_offset((0, 0), (6, 8), (0, 0), (0, 0)) == pytest.approx(5.0)   # b is a point: distance to it
    assert shallow_first((5, 9), (1, 2)) == ((1, 2), (5, 9))
    assert shallow_first((1, 2), (5, 9)) == ((1, 2), (5, 9))
