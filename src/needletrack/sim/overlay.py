"""Scanner screen furniture: burned-in text, depth ruler, focus marker, grey bar.

Built once per sequence as an 8-bit layer and a bool alpha; pasted over every frame. Text goes
mostly in the black border, sometimes over the image corner, as real screen captures do.
"""
from __future__ import annotations

import cv2
import numpy as np

_WORDS = ["L12-5", "L14-6", "L18-4", "C5-2", "BREAST", "RT", "LT", "BIOPSY", "Gn", "DR", "FR", "MI", "TIS",
          "TIb", "THI", "Res", "Pen", "Gen", "CF", "12:34", "BR", "10H", "2CM FN", "ROI", "HD", "Lin"]


def _ri(rng, lo, hi) -> int:
    """Integer in [lo, hi), or lo when the range is empty."""
    lo, hi = int(lo), int(hi)
    return lo if hi <= lo else int(rng.integers(lo, hi))


def _text(rng) -> str:
    k = int(rng.integers(1, 4))
    parts = []
    for _ in range(k):
        w = _WORDS[int(rng.integers(len(_WORDS)))]
        if rng.random() < 0.6:
            w += f" {rng.integers(1, 99)}"
            if rng.random() < 0.3:
                w += f".{rng.integers(0, 9)}"
        parts.append(w)
    return " ".join(parts)


def make_overlay(rng, probe, focus_px: float | None = None):
    """(layer_u8 HxW, alpha_bool HxW) or None."""
    H, W = probe.H, probe.W
    layer = np.zeros((H, W), np.uint8)
    x0, y0, x1, y1 = probe.box
    font = cv2.FONT_HERSHEY_SIMPLEX if rng.random() < 0.7 else cv2.FONT_HERSHEY_PLAIN
    scale = rng.uniform(0.3, 0.45) * H / 448 * (1.0 if font == cv2.FONT_HERSHEY_SIMPLEX else 2.0)
    grey = int(rng.integers(150, 256))
    # text lines in the left/right border (or over the image's top corners when there is no border)
    n = int(rng.integers(2, 7))
    for i in range(n):
        left_room = x0 > 40
        right_room = W - x1 > 40
        if left_room and (not right_room or rng.random() < 0.5):
            x = _ri(rng, 2, x0 - 30)
        elif right_room:
            x = _ri(rng, x1 + 2, W - 30)
        else:
            x = _ri(rng, 2, W // 5) if rng.random() < 0.5 else _ri(rng, W * 3 // 4, W - 40)
        y = int(12 + i * rng.uniform(12, 18) * H / 448)
        if y >= H - 2:
            break
        cv2.putText(layer, _text(rng), (x, y), font, scale, grey, 1, cv2.LINE_AA)
    # depth ruler: ticks every 5 or 10 mm along one side of the image
    if rng.random() < 0.8:
        step = 10.0 if probe.depth_mm > 45 else 5.0
        xr = x1 + 3 if W - x1 > 8 else x1 - 6
        k = 0
        while True:
            y = y0 + k * step / probe.sp
            if y >= y1 - 1:
                break
            L = 5 if k % 2 == 0 else 3
            cv2.line(layer, (int(xr), int(y)), (int(xr + L), int(y)), grey, 1)
            k += 1
    # focus marker (small triangle)
    if focus_px is not None and rng.random() < 0.7:
        xf = x1 + 10 if W - x1 > 14 else x1 - 12
        yf = y0 + focus_px
        if 4 < yf < H - 4:
            pts = np.array([[xf, yf], [xf + 5, yf - 4], [xf + 5, yf + 4]], np.int32)
            cv2.fillPoly(layer, [pts], grey)
    # grey bar
    if rng.random() < 0.3 and x0 > 14:
        h = int((y1 - y0) * 0.4)
        bar = np.linspace(255, 0, h).astype(np.uint8)[:, None]
        layer[y0 + 10:y0 + 10 + h, 4:10] = bar
    alpha = layer > 0
    if not alpha.any():
        return None
    return layer, alpha
