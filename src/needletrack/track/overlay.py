"""Drawing the tracker's result on a frame, and an H.264 MP4 writer (PyAV)."""
from __future__ import annotations

import numpy as np

TINT = (0, 200, 255)        # RGB of the mask tint
SHAFT = (255, 220, 0)
TIP = (255, 40, 40)
PATH = (80, 255, 120)


def draw_overlay(frame, result, alpha: float = 0.45) -> np.ndarray:
    """H×W×3 uint8 RGB: the frame with the mask tinted, the shaft, the tip, the predicted path (dashed)
    and the frame number."""
    import cv2

    f = np.asarray(frame)
    if f.dtype != np.uint8:
        from needletrack.track.frames import to_float01

        f = (to_float01(f) * 255.0 + 0.5).astype(np.uint8)
    if f.ndim == 2:
        rgb = np.repeat(f[:, :, None], 3, axis=2)
    else:
        rgb = np.ascontiguousarray(f[:, :, :3])
    h, w = rgb.shape[:2]
    s = max(1, int(round(min(h, w) / 256)))
    if result is not None and result.mask is not None and result.mask.any():
        m = result.mask
        tint = np.array(TINT, dtype=np.float32)
        rgb[m] = (rgb[m].astype(np.float32) * (1 - alpha) + tint * alpha).astype(np.uint8)
    if result is not None and result.tip is not None:
        tip = tuple(int(round(v)) for v in result.tip)
        tail = tuple(int(round(v)) for v in result.tail)
        if result.path is not None:
            _dashed(rgb, result.path[0], result.path[1], PATH, s)
        cv2.line(rgb, tail, tip, SHAFT, s, cv2.LINE_AA)
        cv2.circle(rgb, tip, 2 + 2 * s, TIP, -1, cv2.LINE_AA)
    if result is not None:
        label = f"#{result.frame_index}"
        if not result.visible:
            label += " no needle"
        elif result.angle_deg is not None:
            label += f" {result.angle_deg:.0f} deg  score {result.score:.2f}"
        scale = 0.35 * s + 0.1
        cv2.putText(rgb, label, (4 * s, 12 * s + 2), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 3 * s, cv2.LINE_AA)
        cv2.putText(rgb, label, (4 * s, 12 * s + 2), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), s,
                    cv2.LINE_AA)
    return rgb


def _dashed(img, p0, p1, color, thickness, dash: int = 8):
    import cv2

    p0 = np.asarray(p0, dtype=np.float64)
    p1 = np.asarray(p1, dtype=np.float64)
    n = float(np.hypot(*(p1 - p0)))
    if n < 1:
        return
    d = (p1 - p0) / n
    t = 0.0
    while t < n:
        a = p0 + d * t
        b = p0 + d * min(t + dash, n)
        cv2.line(img, (int(round(a[0])), int(round(a[1]))), (int(round(b[0])), int(round(b[1]))), color, thickness,
                 cv2.LINE_AA)
        t += 2 * dash


class Mp4Writer:
    """Write RGB frames to an H.264 MP4 (yuv420p; odd sizes are padded by one pixel)."""

    def __init__(self, path, fps: float = 25.0):
        import av

        self.path = str(path)
        self.fps = fps if fps and fps > 0 else 25.0
        self.container = av.open(self.path, mode="w", format="mp4")
        self.stream = None
        self.n = 0

    def _open_stream(self, h, w):
        from fractions import Fraction

        rate = Fraction(self.fps).limit_denominator(1001)
        codec = "libx264"
        try:
            self.stream = self.container.add_stream(codec, rate=rate)
        except Exception:  # noqa: BLE001 - a PyAV build without libx264
            self.stream = self.container.add_stream("mpeg4", rate=rate)
        self.stream.width = w + (w % 2)
        self.stream.height = h + (h % 2)
        self.stream.pix_fmt = "yuv420p"
        if self.stream.codec_context.name in ("libx264", "h264"):
            self.stream.options = {"crf": "23", "preset": "veryfast"}

    def write(self, rgb: np.ndarray) -> None:
        import av

        h, w = rgb.shape[:2]
        if self.stream is None:
            self._open_stream(h, w)
        if (w % 2) or (h % 2):
            rgb = np.pad(rgb, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        for pkt in self.stream.encode(frame):
            self.container.mux(pkt)
        self.n += 1

    def close(self) -> None:
        if self.container is None:
            return
        try:
            if self.stream is not None:
                for pkt in self.stream.encode():
                    self.container.mux(pkt)
        finally:
            self.container.close()
            self.container = None
