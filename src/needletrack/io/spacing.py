"""Pixel spacing as stored in a sequence's meta.json: one parser for every reader and scorer."""
from __future__ import annotations

import math

from needletrack.errors import InputError


def parse_spacing(value, source: object = None) -> tuple[float, float] | None:
    """``[row, col]`` spacing in mm from meta.json (a list of two positive numbers, one number, or null)."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = [value, value]
    try:
        sy, sx = (float(v) for v in value)
    except (TypeError, ValueError):
        raise InputError(f"pixel_spacing_mm must be [row_mm, col_mm], got {value!r}", source) from None
    if not (sy > 0 and sx > 0 and math.isfinite(sy) and math.isfinite(sx)):
        raise InputError(f"pixel_spacing_mm must be positive, got {value!r}", source)
    return sy, sx
