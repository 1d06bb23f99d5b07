"""Shared helpers for the OpenIGTLink tests: a scriptable fake tracker, synthetic frames, a recording
pyigtl client. Everything runs on 127.0.0.1 with ephemeral ports and bounded waits."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np


def wait_until(pred, timeout: float = 5.0, step: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return bool(pred())


def needle_frame(i: int, h: int = 64, w: int = 64, seed: int = 0) -> np.ndarray:
    """Dark speckle with a bright straight needle from the upper left, advancing with i."""
    rng = np.random.default_rng(seed + i)
    img = rng.integers(0, 60, size=(h, w), dtype=np.uint8)
    x1 = min(w - 4, 12 + i)
    y1 = min(h - 4, 8 + i // 2)
    n = 4 * max(w, h)
    xs = np.linspace(2, x1, n).round().astype(int)
    ys = np.linspace(2, y1, n).round().astype(int)
    img[ys, xs] = 255
    return img


@dataclass
class FakeResult:
    mask: np.ndarray
    visible: bool
    score: float
    tip: tuple | None
    tail: tuple | None
    angle_deg: float | None


class FakeTracker:
    """Tracker stand-in: segments bright pixels, records every call, optionally slow or failing."""

    def __init__(self, delay: float = 0.0, fail_on: set | None = None):
        self.delay = delay
        self.fail_on = fail_on or set()
        self.calls: list[dict] = []
        self.resets = 0
        self.lock = threading.Lock()

    def reset(self):
        with self.lock:
            self.resets += 1

    def step(self, frame, mask=None, first_line=None, auto=False):
        with self.lock:
            n = len(self.calls)
            self.calls.append({"shape": frame.shape, "mask": None if mask is None else np.array(mask),
                               "first_line": first_line, "auto": auto, "t": time.monotonic()})
        if self.delay:
            time.sleep(self.delay)
        if n in self.fail_on:
            raise RuntimeError("synthetic tracker failure")
        m = frame >= 200
        ys, xs = np.nonzero(m)
        if len(xs) == 0:
            return FakeResult(m, False, 0.0, None, None, None)
        i_tip = int(np.argmax(xs + ys))
        i_tail = int(np.argmin(xs + ys))
        tip = (float(xs[i_tip]), float(ys[i_tip]))
        tail = (float(xs[i_tail]), float(ys[i_tail]))
        angle = float(np.degrees(np.arctan2(tip[1] - tail[1], tip[0] - tail[0])))
        return FakeResult(m, True, 0.9, tip, tail, angle)


class _Recorder(dict):
    """Stands in for pyigtl's one-message-per-device dict: keeps every message with its arrival time."""

    def __init__(self, sink, lock):
        super().__init__()
        self.sink = sink
        self.lock = lock

    def __setitem__(self, key, value):
        with self.lock:
            self.sink.append((time.time(), value))


class RecordingClient:
    """A real pyigtl.OpenIGTLinkClient whose received messages are all kept (pyigtl keeps only the latest
    per device)."""

    def __init__(self, port: int):
        import pyigtl

        self.messages: list = []
        self.lock = threading.Lock()
        self.client = pyigtl.OpenIGTLinkClient(host="127.0.0.1", port=port, start_now=False)
        self.client.incoming_messages = _Recorder(self.messages, self.lock)
        self.client.start()

    def wait_connected(self, timeout=5.0) -> bool:
        return wait_until(self.client.is_connected, timeout)

    def send(self, msg, wait=True):
        assert self.client.send_message(msg, wait=wait)

    def of(self, device: str, mtype: str | None = None) -> list:
        with self.lock:
            return [m for _, m in self.messages
                    if m.device_name == device and (mtype is None or m.message_type == mtype)]

    def timed(self, device: str) -> list:
        with self.lock:
            return [(t, m) for t, m in self.messages if m.device_name == device]

    def stop(self):
        self.client.stop()
        if self.client.socket is not None:
            try:
                self.client.socket.close()
            except OSError:
                pass


def image_message(frame, ts, device="Image_Reference", matrix=None):
    import pyigtl

    return pyigtl.ImageMessage(np.asarray(frame)[None], ijk_to_world_matrix=matrix, timestamp=ts,
                               device_name=device)
