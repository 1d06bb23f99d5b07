"""Training-free peers that every tracking evaluation reports beside the model.

:class:`FlowPropagator` carries the previous mask forward by dense optical flow (OpenCV Farneback, frame to
frame). It never decides that the needle is gone, and it needs the first mask.
"""
from __future__ import annotations

import cv2
import numpy as np


class FlowPropagator:
    """``step(frame_u8, mask=None) -> bool mask``: the first call needs ``mask``; later calls warp the
    previous (soft) mask by the backward flow from the new frame to the previous one, and threshold at 0.5."""

    def __init__(self, pyr_scale: float = 0.5, levels: int = 3, winsize: int = 15, iterations: int = 3,
                 poly_n: int = 5, poly_sigma: float = 1.2):
        self.params = (pyr_scale, levels, winsize, iterations, poly_n, poly_sigma, 0)
        self.prev = None
        self.soft = None
        self._grid = None

    def step(self, frame, mask=None) -> np.ndarray:
        f = np.asarray(frame)
        if f.ndim == 3:
            f = cv2.cvtColor(f, cv2.COLOR_RGB2GRAY)
        if f.dtype != np.uint8:
            f = np.clip(f, 0, 255).astype(np.uint8)
        if mask is not None:
            self.prev = f
            self.soft = np.asarray(mask, bool).astype(np.float32)
            return self.soft >= 0.5
        if self.prev is None:
            raise ValueError("the first frame needs a mask")
        # flow from the new frame to the previous one: new(y, x) ~ prev(y + fy, x + fx)
        flow = cv2.calcOpticalFlowFarneback(f, self.prev, None, *self.params)
        h, w = f.shape
        if self._grid is None or self._grid[0].shape != (h, w):
            yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
            self._grid = (xx, yy)
        xx, yy = self._grid
        self.soft = cv2.remap(self.soft, xx + flow[..., 0], yy + flow[..., 1], cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        self.prev = f
        return self.soft >= 0.5
