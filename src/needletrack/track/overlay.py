"""Drawing the tracker's result on a frame (with a text band and legend under it), and an H.264 MP4 writer
(PyAV) that plays at a watchable rate (:func:`playback_fps`)."""
from __future__ import annotations

import numpy as np

TINT = (0, 200, 255)        # RGB of the mask tint
SHAFT = (255, 220, 0)
TIP = (255, 40, 40)
PATH = (80, 255, 120)


MIN_PLAYBACK_FPS = 10.0     # slower loops (the demo's sample is 2.5-5 fps) are sped up to this
MAX_PLAYBACK_FPS = 60.0
DEFAULT_PLAYBACK_FPS = 25.0  # when the input gives no frame rate
BAND = (24, 24, 24)          # the text band under the image
TEXT = (235, 235, 235)


def playback_fps(source_fps: float | None) -> float:
    """The overlay video's frame rate: the source's, kept between 10 and 60 frames/s (25 when unknown).

    A cine sampled every 5-10 acquisition frames (2.5-5 fps) would otherwise play as a slide show; the
    frame index in the band and needle.csv's ``time_s`` keep the real timing."""
    if not source_fps or not np.isfinite(source_fps) or source_fps <= 0:
        return DEFAULT_PLAYBACK_FPS
    return float(min(MAX_PLAYBACK_FPS, max(MIN_PLAYBACK_FPS, source_fps)))


def _scale(h: int, w: int) -> int:
    return max(1, int(round(min(h, w) / 256)))


def band_height(h: int, w: int) -> int:
    """Height in pixels of the text band drawn under a frame of h×w (two lines: status and legend)."""
    return 34 * _scale(h, w)


def draw_overlay(frame, result, alpha: float = 0.45, band: bool = True) -> np.ndarray:
    """(H + band)×W×3 uint8 RGB: the frame with the mask tinted, the shaft, the tip and the predicted path
    (dashed); under it, outside the image so no burned-in scanner text is covered, a band with the frame
    number, angle and score, and a legend of the colours. ``band=False``: the frame alone (H×W×3)."""
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
    s = _scale(h, w)
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
    if not band:
        return rgb
    bh = band_height(h, w)
    out = np.empty((h + bh, w, 3), np.uint8)
    out[:h] = rgb
    out[h:] = BAND
    font, scale, th = cv2.FONT_HERSHEY_SIMPLEX, 0.38 * s, 1 if s == 1 else s
    y1, y2 = h + 13 * s, h + 28 * s
    if result is not None:
        label = f"frame {result.frame_index}"
        if not result.visible:
            label += "   no needle"
        elif result.angle_deg is not None:
            label += f"   angle {result.angle_deg:.0f} deg   score {result.score:.2f}"
        cv2.putText(out, label, (4 * s, y1), font, scale, TEXT, th, cv2.LINE_AA)
    x = 4 * s                                    # legend: a swatch and its name, left to right
    for name, color, kind in (("mask", TINT, "box"), ("shaft", SHAFT, "line"), ("tip", TIP, "dot"),
                              ("path", PATH, "dash")):
        cy = y2 - 4 * s
        if kind == "box":                        # swatches without anti-aliasing: their exact colours
            cv2.rectangle(out, (x, cy - 4 * s), (x + 10 * s, cy + 3 * s), color, -1)
        elif kind == "line":
            cv2.line(out, (x, cy), (x + 10 * s, cy), color, 2 * s)
        elif kind == "dot":
            cv2.circle(out, (x + 5 * s, cy), 3 * s, color, -1)
        else:
            cv2.line(out, (x, cy), (x + 3 * s, cy), color, s)
            cv2.line(out, (x + 7 * s, cy), (x + 10 * s, cy), color, s)
        x += 13 * s
        cv2.putText(out, name, (x, y2), font, scale, TEXT, th, cv2.LINE_AA)
        (tw, _), _ = cv2.getTextSize(name, font, scale, th)
        x += tw + 9 * s
    return out


def labelled_tile(rgb: np.ndarray, label: str, width: int) -> np.ndarray:
    """An overlay frame shrunk to ``width`` px with a one-line label above it (the docs' overlay strips)."""
    import cv2

    h, w = rgb.shape[:2]
    tile = cv2.resize(rgb, (width, round(h * width / w)), interpolation=cv2.INTER_AREA)
    band = np.zeros((18, width, 3), np.uint8)
    cv2.putText(band, label, (3, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.33, (255, 255, 255), 1, cv2.LINE_AA)
    return np.vstack([band, tile])


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
        """``fps``: the source's frame rate; the video plays at :func:`playback_fps` of it."""
        import av

        self.path = str(path)
        self.fps = playback_fps(fps)
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
