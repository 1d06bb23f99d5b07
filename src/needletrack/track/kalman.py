"""Constant-velocity Kalman filter on the needle's tip and tail (pixels).

State ``[tip_x, tip_y, tail_x, tail_y, v_tip_x, v_tip_y, v_tail_x, v_tail_y]``, one step per frame.
Process noise is white acceleration (``accel_std`` px/frame²); measurement noise ``meas_std`` px. A
measurement far outside the prediction (Mahalanobis distance above ``gate``) is taken as a new needle
position (re-detection, a jump) and restarts the filter there instead of being averaged in.
"""
from __future__ import annotations

import numpy as np


class TipTailKalman:
    def __init__(self, meas_std: float = 2.0, accel_std: float = 0.5, gate: float = 6.0, max_coast: int = 10):
        self.meas_std = float(meas_std)
        self.accel_std = float(accel_std)
        self.gate = float(gate)
        self.max_coast = int(max_coast)
        f = np.eye(8)
        f[:4, 4:] = np.eye(4)
        self.F = f
        self.H = np.hstack([np.eye(4), np.zeros((4, 4))])
        # white-acceleration process noise for dt = 1
        g = np.array([[0.25, 0.5], [0.5, 1.0]]) * self.accel_std ** 2
        q = np.zeros((8, 8))
        for i in range(4):
            q[np.ix_([i, i + 4], [i, i + 4])] = g
        self.Q = q
        self.R = np.eye(4) * self.meas_std ** 2
        self.reset()

    def reset(self) -> None:
        self.x: np.ndarray | None = None
        self.P: np.ndarray | None = None
        self.coast = 0

    @property
    def initialised(self) -> bool:
        return self.x is not None

    def _start(self, z: np.ndarray) -> None:
        self.x = np.concatenate([z, np.zeros(4)])
        self.P = np.diag([self.meas_std ** 2] * 4 + [4.0 ** 2] * 4)
        self.coast = 0

    def predict(self) -> np.ndarray | None:
        """Advance one frame without a measurement; returns the predicted ``[tip_x, tip_y, tail_x, tail_y]``."""
        if self.x is None:
            return None
        self.x = self.F @ self.x
        self.P = self.F @ self.P @ self.F.T + self.Q
        self.coast += 1
        if self.coast > self.max_coast:
            self.reset()
            return None
        return self.x[:4].copy()

    def update(self, tip, tail) -> tuple[tuple[float, float], tuple[float, float]]:
        """Advance one frame with a measurement; returns the smoothed (tip, tail)."""
        z = np.array([tip[0], tip[1], tail[0], tail[1]], dtype=np.float64)
        if not np.all(np.isfinite(z)):
            raise ValueError("tip/tail must be finite")
        if self.x is None:
            self._start(z)
        else:
            x = self.F @ self.x
            p = self.F @ self.P @ self.F.T + self.Q
            s = self.H @ p @ self.H.T + self.R
            y = z - self.H @ x
            d2 = float(y @ np.linalg.solve(s, y))
            if d2 > self.gate ** 2 * 4:  # 4 dof: ~gate sigma per coordinate
                self._start(z)
            else:
                k = p @ self.H.T @ np.linalg.inv(s)
                self.x = x + k @ y
                self.P = (np.eye(8) - k @ self.H) @ p
                self.coast = 0
        return (float(self.x[0]), float(self.x[1])), (float(self.x[2]), float(self.x[3]))

    def step(self, tip=None, tail=None):
        """One frame: update with (tip, tail) if given, else predict. Returns (tip, tail) or (None, None)."""
        if tip is None or tail is None:
            z = self.predict()
            if z is None:
                return None, None
            return (float(z[0]), float(z[1])), (float(z[2]), float(z[3]))
        return self.update(tip, tail)
