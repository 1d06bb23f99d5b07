"""The tracking decisions of the OpenIGTLink service, without sockets or threads.

``IgtlSession`` owns the tracker and its state across frames and decides, for each frame:
* the first-frame prompt: a label map (IMAGE on the init device) or two shaft points (POINT, in world
  coordinates); a newer prompt re-initialises a running track; without one, the frame is skipped (counted,
  logged once) unless ``auto_init`` is set;
* ``reset`` (the STRING command): tracking restarts on the next frame;
* a frame-size change: tracking restarts from the last mask rescaled, else automatically (``auto_init``),
  else waits for a new prompt;
* a tracker failure: logged (rate-limited), tracking restarts;
* the results: one bundle of IMAGE (mask), POINT (tip, world), TRANSFORM (needle pose) and STRING (status)
  messages with the frame's timestamp, header v2 metadata when ``header_version >= 2``.

:meth:`IgtlSession.interpret` turns one decoded message into a :class:`Frame`, a :class:`Prompt`, ``"reset"``
or None (ignored; logged). :meth:`IgtlSession.process` takes a frame (with the newest prompt and reset, if
any) and returns :class:`Output` (the messages to send, encoded) or None (nothing to send).
:class:`needletrack.serve.igtl.IgtlService` runs these on its reader and worker threads and sends the bundles.
"""
from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from needletrack.serve.igtl_wire import (
    encode_message,
    frame_from_image,
    mask_from_label_image,
    needle_pose,
    pixel_to_world,
    safe_matrix,
    world_to_pixel,
)
from needletrack.track.tracker import TrackResult

log = logging.getLogger("needletrack.serve.igtl")


@dataclass
class Frame:
    image: np.ndarray
    matrix: np.ndarray
    wcs: str
    raw_ts: tuple[int, int]
    ts: float
    t_recv: float
    peer: str


@dataclass
class Prompt:
    kind: str  # "mask" | "points"
    mask: np.ndarray | None = None
    points: list | None = None  # world coordinates
    peer: str = ""

    def describe(self) -> str:
        if self.kind == "mask":
            return f"first-frame label map received ({int(self.mask.sum())} needle pixels)"
        return "first-frame shaft points received"


@dataclass
class Output:
    messages: list  # pyigtl messages: mask IMAGE, tip POINT, pose TRANSFORM, status STRING
    data: bytes  # the same, encoded back to back
    meta: dict  # the status fields (also the STRING and the v2 metadata)
    step_s: float  # time spent in tracker.step


class RateLimited:
    """Log a repeated problem the first time, then once every ``every`` occurrences, per key."""

    def __init__(self, every: int = 100):
        self.every = every
        self.counts: collections.Counter = collections.Counter()
        self.lock = threading.Lock()

    def __call__(self, level: int, key, msg: str) -> None:
        with self.lock:
            self.counts[key] += 1
            n = self.counts[key]
        if n == 1 or n % self.every == 0:
            log.log(level, msg if n == 1 else f"{msg} ({n} times so far)")


class IgtlSession:
    """Tracking state and decisions of one service (see the module docstring). ``config``: an
    :class:`needletrack.serve.igtl.IgtlConfig`. ``count(key)`` and ``ratelog(level, key, msg)`` report
    events (default: ``self.counters`` and a :class:`RateLimited`). :meth:`process` is not thread-safe: one
    thread (the service's worker) calls it."""

    def __init__(self, tracker, config, count: Callable[[str], None] | None = None,
                 ratelog: Callable | None = None):
        self.tracker = tracker
        self.config = config
        self.counters: collections.Counter = collections.Counter()
        self._count = count or (lambda key, n=1: self.counters.update({key: n}))
        self._ratelog = ratelog or RateLimited()
        self.initialised = False
        self._waiting_logged = False
        self.size: tuple[int, int] | None = None
        self.last_mask: np.ndarray | None = None
        self.last_pose: np.ndarray | None = None
        self.last_tip_world: np.ndarray | None = None
        self.frame_index = 0

    # ------------------------------------------------------------------ incoming messages
    def matches_image_device(self, device: str) -> bool:
        want = self.config.image_device
        return device == want or (want in ("", "*") and device != self.config.init_device)

    def interpret(self, header, msg, t_recv: float, peer: str = ""):
        """One decoded message -> a Frame (to track), a Prompt (the caller logs ``prompt.describe()`` once it
        is in place), ``"reset"``, or None (ignored or rejected, logged and counted)."""
        cfg = self.config
        mtype, device = header.type, header.device
        if mtype == "IMAGE" and device == cfg.init_device:
            try:
                mask = mask_from_label_image(msg)
                if not mask.any():
                    raise ValueError("it has no needle (non-zero) pixels")
            except ValueError as e:
                self._count("rejected")
                log.warning("%s: label map '%s' ignored: %s", peer, device, e)
                return None
            return Prompt("mask", mask=mask, peer=peer)
        if mtype == "IMAGE" and self.matches_image_device(device):
            try:
                image = frame_from_image(msg, cfg.max_image_side)
            except ValueError as e:
                self._count("rejected")
                self._ratelog(logging.WARNING, ("img", peer, str(e)), f"{peer}: frame from '{device}' rejected: {e}")
                return None
            return Frame(image, safe_matrix(msg.ijk_to_world_matrix), msg.world_coordinate_system,
                         header.raw_timestamp, header.timestamp, t_recv, peer)
        if mtype == "IMAGE":
            self._ratelog(logging.WARNING, ("dev", device),
                          f"{peer}: ignoring IMAGE from device '{device}' (frames are read from "
                          f"'{cfg.image_device}', prompts from '{cfg.init_device}'; see --image-device)")
        elif mtype == "POINT" and device == cfg.init_device:
            pts = [tuple(float(v) for v in p) for p in (msg.positions or [])]
            if len(pts) < 2:
                self._count("rejected")
                log.warning("%s: POINT prompt '%s' ignored: it has %d point(s); two (the shaft ends) are "
                            "needed", peer, device, len(pts))
                return None
            if len(pts) > 2:
                log.info("%s: POINT prompt has %d points; using the first two", peer, len(pts))
            return Prompt("points", points=pts[:2], peer=peer)
        elif mtype == "STRING":
            text = (msg.string or "").strip()
            if text.lower() == "reset":
                return "reset"
            self._ratelog(logging.INFO, ("str", text[:40]),
                          f"{peer}: ignoring STRING '{text[:40]}' from '{device}' (commands: reset)")
        else:
            self._ratelog(logging.INFO, ("other", mtype, device), f"{peer}: ignoring {mtype} from '{device}'")
        return None

    # ------------------------------------------------------------------ tracking
    def restart(self) -> None:
        try:
            self.tracker.reset()
        except Exception as e:  # noqa: BLE001
            log.warning("tracker reset failed: %s: %s", type(e).__name__, e)
        self.initialised = False
        self._waiting_logged = False

    def process(self, fr: Frame, prompt: Prompt | None = None, reset: bool = False) -> Output | None:
        """Track one frame, with the newest prompt and a pending reset, if any. Returns the result bundle to
        send, or None (waiting for a prompt, tracker failure, results that cannot be encoded)."""
        h, w = fr.image.shape
        kwargs: dict = {}
        if reset:
            self.restart()
            self.last_mask = None
            self.last_pose = None
        if self.initialised and self.size is not None and self.size != (h, w):
            kwargs = self._size_changed(fr, h, w)
        if prompt is not None:
            init = self._prompt_init(fr, prompt, h, w)
            if init is not None:
                if self.initialised:
                    log.info("new prompt: tracking re-initialised")
                    self.restart()
                kwargs = init
        if not self.initialised and not kwargs:
            if self.config.auto_init:
                kwargs = {"auto": True}
            else:
                if not self._waiting_logged:     # logged before it is counted: a reader of stats() sees both
                    log.info("waiting for a first-frame prompt (label map or POINT on '%s')",
                             self.config.init_device)
                    self._waiting_logged = True
                self._count("skipped")
                return None
        t0 = time.monotonic()
        try:
            result = self.tracker.step(fr.image, **kwargs)
            mask = np.asarray(result.mask).astype(bool)
            if mask.shape != (h, w):
                raise ValueError(f"tracker returned a {mask.shape} mask for a {w}x{h} frame")
        except Exception as e:  # noqa: BLE001 - the tracker must never take the service down
            self._count("errors")
            self._ratelog(logging.ERROR, ("trk", type(e).__name__),
                          f"tracker failed on a {w}x{h} frame from {fr.peer}: {type(e).__name__}: {e}; "
                          "tracking restarted")
            self.restart()
            return None
        step_s = time.monotonic() - t0
        self.initialised = True
        self.size = (h, w)
        self.last_mask = mask
        try:
            msgs, meta = self.result_messages(fr, result, mask)
            data = b"".join(encode_message(m, fr.raw_ts) for m in msgs)
        except Exception as e:  # noqa: BLE001 - e.g. a tracker result pyigtl cannot pack
            self._count("errors")
            self._ratelog(logging.ERROR, ("enc", type(e).__name__),
                          f"could not encode the results of a frame from {fr.peer}: {type(e).__name__}: {e}")
            return None
        self.frame_index += 1
        return Output(msgs, data, meta, step_s)

    def _size_changed(self, fr: Frame, h: int, w: int) -> dict:
        """Restart after a frame-size change; the tracker arguments to re-initialise with ({}: wait)."""
        old = self.size
        carry = None
        if self.last_mask is not None and self.last_mask.any():
            import cv2

            carry = cv2.resize(self.last_mask.astype(np.uint8), (w, h),
                               interpolation=cv2.INTER_NEAREST).astype(bool)
        self.restart()
        kwargs: dict = {}
        if carry is not None and carry.any():
            kwargs["mask"] = carry
            how = "re-initialised from the last mask, rescaled"
        elif self.config.auto_init:
            kwargs["auto"] = True
            how = "re-initialised automatically"
        else:
            how = "waiting for a new prompt"
        log.warning("frame size changed from %dx%d to %dx%d (%s); tracking restarted, %s",
                    old[1], old[0], w, h, fr.peer, how)
        return kwargs

    def _prompt_init(self, fr: Frame, prompt: Prompt, h: int, w: int) -> dict | None:
        """The tracker arguments of a prompt on this frame, or None when it does not fit (logged, counted)."""
        try:
            if prompt.kind == "mask":
                if prompt.mask.shape != (h, w):
                    raise ValueError(f"label map is {prompt.mask.shape[1]}x{prompt.mask.shape[0]} but "
                                     f"the frame is {w}x{h}")
                return {"mask": prompt.mask}
            (x0, y0), (x1, y1) = (world_to_pixel(fr.matrix, p) for p in prompt.points)
            return {"first_line": (x0, y0, x1, y1)}
        except ValueError as e:
            self._count("rejected")
            log.warning("%s: prompt ignored: %s", prompt.peer, e)
            return None

    def result_messages(self, fr: Frame, result, mask: np.ndarray) -> tuple[list, dict]:
        """The four output messages of one tracked frame (and the status fields). Updates the last pose and
        tip: a frame without a fresh pose repeats the last one (``pose_current=false``)."""
        from pyigtl.messages import ImageMessage, PointMessage, StringMessage, TransformMessage

        cfg = self.config
        rec = TrackResult.as_record(result)  # the one formatting of a result (as in needle.csv)
        visible = bool(mask.any()) if rec["visible"] is None else rec["visible"]
        score = (rec["score"] if hasattr(result, "score") else float(mask.any())) or 0.0
        tip = getattr(result, "tip", None)
        tail = getattr(result, "tail", None)
        pose = None
        if visible and tip is not None and tail is not None:
            pose = needle_pose(fr.matrix, tip, tail)
        if pose is not None:
            self.last_pose = pose
            self.last_tip_world = pose[:3, 3].copy()
        elif visible and tip is not None:
            self.last_tip_world = pixel_to_world(fr.matrix, *tip)
        fresh = pose is not None or (visible and tip is not None)
        tip_world = self.last_tip_world if self.last_tip_world is not None else fr.matrix[:3, 3]
        pose_out = self.last_pose if self.last_pose is not None else np.eye(4)
        meta = {
            "frame": str(self.frame_index),
            "visible": "true" if visible else "false",
            "confirmed": "true" if rec["confirmed"] else "false",
            "score": f"{score:.4f}",
            "angle_deg": "" if rec["angle_deg"] is None else f"{rec['angle_deg']:.2f}",
            "tip_px": "" if tip is None else f"{rec['tip_x']:.2f},{rec['tip_y']:.2f}",
            "pose_current": "true" if fresh else "false",
        }
        status = " ".join(f"{k}={v}" for k, v in meta.items())
        value = np.uint8(max(1, min(255, int(cfg.mask_value))))
        msgs = [
            ImageMessage((mask.astype(np.uint8) * value)[None], ijk_to_world_matrix=fr.matrix,
                         world_coordinate_system=fr.wcs, device_name=cfg.mask_device),
            PointMessage(positions=np.asarray(tip_world, np.float32).reshape(1, 3), names=["tip"],
                         device_name=cfg.tip_device),
            TransformMessage(pose_out, device_name=cfg.pose_device),
            StringMessage(status, device_name=cfg.status_device),
        ]
        for m in msgs:
            m.timestamp = fr.ts
            m.header_version = 2 if cfg.header_version >= 2 else 1
            if m.header_version >= 2:
                m.metadata = dict(meta)
        return msgs, meta
