"""The letterbox (any frame size/aspect <-> a model's input) and a model's input size.

Below the engines: ``engine.py`` (which re-exports these names), ``onnx_engine.py``, ``onnx_export.py`` and
``onnx_quant.py`` all use them, and none of them needs to import another engine module for it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_INPUT_SIZE = 448


# ----------------------------------------------------------------------------------------------------------
# letterbox: any frame size/aspect <-> the model's input
# ----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Letterbox:
    """Resize a frame (keeping its aspect) to fit ``in_hw`` and pad the rest with zeros (centred), and back."""

    frame_hw: tuple[int, int]
    in_hw: tuple[int, int]

    @property
    def scale(self) -> float:
        return min(self.in_hw[0] / self.frame_hw[0], self.in_hw[1] / self.frame_hw[1])

    @property
    def inner_hw(self) -> tuple[int, int]:
        s = self.scale
        return (max(1, min(self.in_hw[0], int(round(self.frame_hw[0] * s)))),
                max(1, min(self.in_hw[1], int(round(self.frame_hw[1] * s)))))

    @property
    def offset(self) -> tuple[int, int]:
        ih, iw = self.inner_hw
        return ((self.in_hw[0] - ih) // 2, (self.in_hw[1] - iw) // 2)

    def _resize(self, img: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
        import cv2

        if img.shape[:2] == tuple(hw):
            return img
        shrink = hw[0] < img.shape[0] or hw[1] < img.shape[1]
        return cv2.resize(img, (hw[1], hw[0]), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)

    def forward(self, img: np.ndarray) -> np.ndarray:
        """Frame-sized float32 image -> model-input-sized float32 image (zero padding)."""
        img = np.asarray(img, dtype=np.float32)
        out = np.zeros(self.in_hw, dtype=np.float32)
        (oy, ox), (ih, iw) = self.offset, self.inner_hw
        out[oy:oy + ih, ox:ox + iw] = self._resize(img, (ih, iw))
        return out

    def backward(self, img: np.ndarray) -> np.ndarray:
        """Model-input-sized map -> frame-sized map (crop the padding, resize back)."""
        (oy, ox), (ih, iw) = self.offset, self.inner_hw
        crop = np.ascontiguousarray(np.asarray(img, dtype=np.float32)[oy:oy + ih, ox:ox + iw])
        return self._resize(crop, self.frame_hw)

    def to_input_xy(self, xy) -> tuple[float, float]:
        s, (oy, ox) = self.scale, self.offset
        return (float(xy[0]) * s + ox, float(xy[1]) * s + oy)


def _hw(size) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)):
        return (int(size), int(size))
    h, w = size
    return (int(h), int(w))


def model_input_hw(model, override=None) -> tuple[int, int]:
    """The (H, W) a model wants: ``override``, else its config's input size, else 448. Multiples of 32."""
    size = override
    if size is None:
        cfg = getattr(model, "cfg", None)
        for attr in ("input_size", "image_size", "size", "input_hw"):
            val = getattr(cfg, attr, None) if cfg is not None else None
            if val:
                size = val
                break
    hw = _hw(size if size else DEFAULT_INPUT_SIZE)
    if hw[0] % 32 or hw[1] % 32 or min(hw) < 32:
        raise ValueError(f"model input size must be a multiple of 32, got {hw}")
    return hw
