"""The OpenIGTLink service: live frames in (from PLUS or any sender), needle mask / tip / pose out (to 3D Slicer).

Threads (all daemon threads, all stopped by ``IgtlService.stop()``; no signal handlers are touched):
- an accept thread on the listening socket (any number of clients up to ``max_clients``, unlike pyigtl's
  one-at-a-time server);
- optionally a source thread that connects to a PlusServer-like source and reconnects when it goes away;
- per connection, a reader thread (frames and commands in) and a writer thread (results out, from a small
  bounded queue that drops the oldest result bundle for a client that does not keep up, so a slow or stuck
  receiver never blocks tracking);
- one worker thread that runs the tracker on the newest frame only: incoming frames overwrite a one-frame
  slot, and each overwritten frame is counted as dropped;
- a monitor thread that logs a status line every ``log_interval_s`` and notices a stalled sender.

The tracker is anything with ``step(frame, mask=None, first_line=None, auto=False)`` and ``reset()``
returning a result with ``mask`` (HxW bool), ``visible``, ``score``, ``tip``, ``tail``, ``angle_deg``
(see needletrack.track.Tracker); only the worker thread calls it.
"""
from __future__ import annotations

import collections
import logging
import socket
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from needletrack.serve.igtl_wire import (
    DEFAULT_MAX_BUFFERED_BYTES,
    DEFAULT_MAX_MESSAGE_BYTES,
    ByteBudget,
    FramingError,
    MessageError,
    MessageReader,
    decode_message,
    encode_message,
    frame_from_image,
    mask_from_label_image,
    needle_pose,
    pixel_to_world,
    safe_matrix,
    world_to_pixel,
)

log = logging.getLogger("needletrack.serve.igtl")

DEFAULT_SOURCE_PORT = 18944  # PlusServer's default
DEFAULT_PORT = 18945  # ours, so that we can run next to a PlusServer on the same machine


@dataclass
class IgtlConfig:
    host: str = "127.0.0.1"
    port: int | None = DEFAULT_PORT  # None: no listening socket (source only); 0: ephemeral
    source: tuple[str, int] | None = None
    image_device: str = "Image_Reference"  # "" or "*": any IMAGE that is not the init device
    init_device: str = "NeedleInit"  # label-map IMAGE or two-point POINT prompt
    mask_device: str = "NeedleMask"
    tip_device: str = "NeedleTip"
    pose_device: str = "NeedleToReference"
    status_device: str = "NeedleStatus"
    auto_init: bool = False  # no prompt yet: wait for one (True: look for the needle, reported unconfirmed)
    mask_value: int = 255
    header_version: int = 2  # 2 carries metadata (visible, score, ...) on every output message
    send_to_source: bool = False
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES  # one message body; larger claimed: connection closed
    max_buffered_bytes: int = DEFAULT_MAX_BUFFERED_BYTES  # body bytes held across all connections at once
    max_image_side: int = 4096
    stall_timeout_s: float = 5.0  # a message that stops arriving half-way: connection closed
    idle_warning_s: float = 5.0  # no frame for this long after frames were arriving: one log line
    log_interval_s: float = 10.0
    max_clients: int = 8
    client_queue: int = 8  # result bundles queued per client before the oldest is dropped
    send_timeout_s: float = 5.0
    reconnect_interval_s: float = 1.0
    check_crc: bool = True


@dataclass
class _Frame:
    image: np.ndarray
    matrix: np.ndarray
    wcs: str
    raw_ts: tuple[int, int]
    ts: float
    t_recv: float
    peer: str


@dataclass
class _Prompt:
    kind: str  # "mask" | "points"
    mask: np.ndarray | None = None
    points: list | None = None  # world coordinates
    peer: str = ""


class _RateLimited:
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


class _Peer:
    """One TCP connection: a reader thread and a writer thread with a bounded result queue."""

    def __init__(self, service: "IgtlService", sock: socket.socket, name: str, kind: str):
        self.service = service
        self.sock = sock
        self.name = name
        self.kind = kind  # "client" | "source"
        self.closed = threading.Event()
        self.queue: collections.deque = collections.deque()
        self.cond = threading.Condition()
        self.dropped_bundles = 0
        sock.settimeout(0.2)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        self.reader = threading.Thread(target=self._read_loop, name=f"igtl-read-{name}", daemon=True)
        self.writer = threading.Thread(target=self._write_loop, name=f"igtl-write-{name}", daemon=True)

    def start(self) -> None:
        self.reader.start()
        self.writer.start()

    def send(self, data: bytes) -> None:
        """Queue one result bundle; never blocks. A full queue drops its oldest bundle."""
        if self.closed.is_set():
            return
        with self.cond:
            if len(self.queue) >= self.service.config.client_queue:
                self.queue.popleft()
                self.dropped_bundles += 1
                self.service._count("send_dropped")
            self.queue.append(data)
            self.cond.notify()

    def close(self, reason: str | None = None) -> None:
        if self.closed.is_set():
            return
        self.closed.set()
        with self.cond:
            self.cond.notify_all()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            self.sock.close()
        except OSError:
            pass
        self.service._peer_closed(self, reason)

    def _read_loop(self) -> None:
        svc = self.service
        reader = MessageReader(self.sock, svc.config.max_message_bytes, svc.config.stall_timeout_s,
                               should_stop=lambda: self.closed.is_set() or svc._stopping.is_set(),
                               budget=svc._budget)
        self.reader_state = reader
        reason = None
        try:
            while not self.closed.is_set():
                got = reader.read()
                if got is None:
                    reason = "disconnected" if not svc._stopping.is_set() else None
                    break
                header, body, t_recv = got
                got = None
                svc._count("messages")
                try:
                    try:
                        msg = decode_message(header, body, svc.config.check_crc)
                    finally:
                        body = None
                        reader.release()
                except MessageError as e:
                    svc._count("malformed")
                    svc._ratelog(logging.WARNING, ("msg", self.name, str(e)[:24]),
                                 f"{self.name}: skipped a message: {e}")
                    continue
                if msg is None:
                    svc._ratelog(logging.INFO, ("type", header.type),
                                 f"{self.name}: ignoring {header.type} messages (not used by needletrack)")
                    continue
                svc._on_message(self, header, msg, t_recv)
        except FramingError as e:
            svc._count("malformed")
            reason = f"closed the connection: {e}"
        except OSError as e:
            if not self.closed.is_set() and not svc._stopping.is_set():
                reason = f"connection error: {e}"
        except Exception as e:  # noqa: BLE001 - never let a reader thread die silently
            log.exception("%s: unexpected error while reading", self.name)
            reason = f"closed after an unexpected error: {type(e).__name__}: {e}"
        finally:
            reader.release()
        self.close(reason)

    def _write_loop(self) -> None:
        timeout = self.service.config.send_timeout_s
        while True:
            with self.cond:
                while not self.queue and not self.closed.is_set():
                    self.cond.wait(0.5)
                if self.closed.is_set():
                    return
                data = self.queue.popleft()
            try:
                self._send_all(data, timeout)
            except OSError as e:
                self.close(f"send failed: {e}")
                return

    def _send_all(self, data: bytes, timeout: float) -> None:
        """Send one bundle. A peer that stops reading is not disconnected (it may be a sender that never
        reads, and its frames still count): this bundle waits, newer ones replace older ones in the bounded
        queue, and a log line says so."""
        view = memoryview(data)
        deadline = time.monotonic() + timeout
        stalled = False
        while view:
            if self.closed.is_set():
                return
            try:
                n = self.sock.send(view)
            except socket.timeout:
                if not stalled and time.monotonic() > deadline:
                    stalled = True
                    self.service._count("send_stalls")
                    self.service._ratelog(
                        logging.WARNING, ("stall", self.name),
                        f"{self.name} has not read results for {timeout:g} s; results to it are dropped "
                        "until it reads again (its input is still served)")
                continue
            view = view[n:]
        if stalled:
            log.info("%s is reading results again", self.name)


class IgtlService:
    """Run a tracker on a live OpenIGTLink image stream. ``start()``, then ``stop()`` (or use ``with``)."""

    def __init__(self, tracker, config: IgtlConfig | None = None):
        self.tracker = tracker
        self.config = config or IgtlConfig()
        self._stopping = threading.Event()
        self._started = False
        self._lock = threading.Lock()  # stats and peers
        self._cond = threading.Condition()  # slot, prompt, reset
        self._slot: _Frame | None = None
        self._prompt: _Prompt | None = None
        self._reset_requested = False
        self._peers: list[_Peer] = []
        self._source_peer: _Peer | None = None
        self._listener: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self._ratelog = _RateLimited()
        self._budget = ByteBudget(self.config.max_buffered_bytes)
        self.counters: collections.Counter = collections.Counter()
        self.latencies: collections.deque = collections.deque(maxlen=20000)  # receive -> results queued, s
        self.proc_times: collections.deque = collections.deque(maxlen=20000)
        self._last_frame_t: float | None = None
        self._idle_warned = False
        self._t_start = time.monotonic()
        self.address: tuple[str, int] | None = None
        # tracking state (worker thread only)
        self._initialised = False
        self._waiting_logged = False
        self._size: tuple[int, int] | None = None
        self._last_mask: np.ndarray | None = None
        self._last_pose: np.ndarray | None = None
        self._last_tip_world: np.ndarray | None = None
        self._frame_index = 0

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> "IgtlService":
        if self._started:
            return self
        self._started = True
        cfg = self.config
        if cfg.port is not None:
            ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                ls.bind((cfg.host, cfg.port))
            except OSError as e:
                ls.close()
                from needletrack.errors import NeedletrackError

                raise NeedletrackError(f"cannot listen on {cfg.host}:{cfg.port}: {e.strerror or e}") from None
            ls.listen(8)
            ls.settimeout(0.2)
            self._listener = ls
            self.address = ls.getsockname()[:2]
            self._spawn(self._accept_loop, "igtl-accept")
            log.info("listening for OpenIGTLink clients on %s:%d", *self.address)
        if cfg.source is not None:
            self._spawn(self._source_loop, "igtl-source")
        self._spawn(self._work_loop, "igtl-worker")
        self._spawn(self._monitor_loop, "igtl-monitor")
        return self

    def stop(self) -> dict:
        """Stop all threads, close all sockets, log and return the final statistics. Idempotent."""
        if self._stopping.is_set():
            return self.stats()
        self._stopping.set()
        with self._cond:
            self._cond.notify_all()
        if self._listener is not None:
            try:
                self._listener.close()
            except OSError:
                pass
        with self._lock:
            peers = list(self._peers)
        for p in peers:
            p.close(None)
        for t in self._threads:
            t.join(timeout=5.0)
        for p in peers:
            p.reader.join(timeout=2.0)
            p.writer.join(timeout=2.0)
        with self._cond:
            if self._slot is not None:  # received but never processed
                self._slot = None
                self._count("dropped")
        st = self.stats()
        log.info("stopped: %s", self.format_stats(st))
        return st

    def __enter__(self) -> "IgtlService":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def serve_forever(self, poll_s: float = 0.5) -> None:
        """Block until stop() is called from another thread (Ctrl-C in the caller ends it)."""
        while not self._stopping.wait(poll_s):
            pass

    def wait(self, timeout: float | None = None) -> bool:
        """Wait up to ``timeout`` seconds for the service to stop; True if it has."""
        return self._stopping.wait(timeout)

    def _spawn(self, fn, name: str) -> None:
        t = threading.Thread(target=self._guard(fn, name), name=name, daemon=True)
        self._threads.append(t)
        t.start()

    def _guard(self, fn, name):
        def run():
            while not self._stopping.is_set():
                try:
                    fn()
                    return
                except Exception:  # noqa: BLE001 - a service thread must not die silently
                    log.exception("%s thread failed; restarting it", name)
                    time.sleep(0.5)
        return run

    # ------------------------------------------------------------------ statistics
    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.counters[key] += n

    def stats(self) -> dict:
        with self._lock:
            c = dict(self.counters)
            lat = np.array(self.latencies, dtype=np.float64) * 1000.0
            pt = np.array(self.proc_times, dtype=np.float64) * 1000.0
            clients = sum(1 for p in self._peers if p.kind == "client")
            source = self._source_peer is not None
        out = {k: int(c.get(k, 0)) for k in ("received", "processed", "dropped", "skipped", "errors",
                                            "rejected", "malformed", "messages", "send_dropped", "send_stalls",
                                            "connections", "disconnects", "resets", "prompts")}
        out["clients"] = clients
        out["buffered_bytes"] = int(self._budget.used)
        out["source_connected"] = source
        out["uptime_s"] = round(time.monotonic() - self._t_start, 3)
        for name, arr in (("latency_ms", lat), ("process_ms", pt)):
            if arr.size:
                out[name] = {"p50": round(float(np.percentile(arr, 50)), 2),
                             "p95": round(float(np.percentile(arr, 95)), 2),
                             "max": round(float(arr.max()), 2)}
            else:
                out[name] = None
        return out

    @staticmethod
    def format_stats(st: dict) -> str:
        s = (f"received {st['received']}, processed {st['processed']}, dropped {st['dropped']}")
        for k in ("skipped", "errors", "rejected", "malformed", "send_dropped"):
            if st.get(k):
                s += f", {k.replace('_', ' ')} {st[k]}"
        lat = st.get("latency_ms")
        if lat:
            s += f"; latency p50 {lat['p50']:.1f} ms, p95 {lat['p95']:.1f} ms"
        pt = st.get("process_ms")
        if pt:
            s += f"; tracker {pt['p50']:.1f} ms/frame"
        s += f"; {st['clients']} client(s)"
        if st.get("source_connected"):
            s += ", source connected"
        return s

    # ------------------------------------------------------------------ network threads
    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                sock, addr = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                if self._stopping.is_set():
                    return
                time.sleep(0.1)
                continue
            with self._lock:
                clients = sum(1 for p in self._peers if p.kind == "client")
            name = f"client {addr[0]}:{addr[1]}"
            if clients >= self.config.max_clients:
                log.warning("%s refused: already %d clients (the limit)", name, clients)
                sock.close()
                continue
            self._add_peer(_Peer(self, sock, name, "client"))

    def _source_loop(self) -> None:
        host, port = self.config.source
        name = f"source {host}:{port}"
        outage_logged = False
        ever_connected = False
        while not self._stopping.is_set():
            try:
                sock = socket.create_connection((host, port), timeout=2.0)
            except OSError as e:
                if not outage_logged:
                    log.warning("%s: cannot connect (%s); retrying every %g s", name, e.strerror or e,
                                self.config.reconnect_interval_s)
                    outage_logged = True
                self._stopping.wait(self.config.reconnect_interval_s)
                continue
            outage_logged = False
            peer = _Peer(self, sock, name, "source")
            if ever_connected:
                log.info("%s: reconnected", name)
            ever_connected = True
            with self._lock:
                self._source_peer = peer
            self._add_peer(peer)
            while not peer.closed.wait(0.2):
                if self._stopping.is_set():
                    return
            with self._lock:
                self._source_peer = None
            self._stopping.wait(self.config.reconnect_interval_s)

    def _add_peer(self, peer: _Peer) -> None:
        with self._lock:
            self._peers.append(peer)
            self.counters["connections"] += 1
        note = ""
        if self._initialised:
            note = " (tracking continues; send the STRING 'reset' to restart it)"
        log.info("%s connected%s", peer.name, note)
        peer.start()

    def _peer_closed(self, peer: _Peer, reason: str | None) -> None:
        with self._lock:
            if peer in self._peers:
                self._peers.remove(peer)
                if not self._stopping.is_set():
                    self.counters["disconnects"] += 1
        if reason and not self._stopping.is_set():
            level = logging.WARNING if reason != "disconnected" else logging.INFO
            log.log(level, "%s %s", peer.name, reason)

    def _broadcast(self, data: bytes) -> int:
        with self._lock:
            targets = [p for p in self._peers if p.kind == "client" or self.config.send_to_source]
        for p in targets:
            p.send(data)
        return len(targets)

    # ------------------------------------------------------------------ incoming messages
    def _matches_image_device(self, device: str) -> bool:
        want = self.config.image_device
        return device == want or (want in ("", "*") and device != self.config.init_device)

    def _on_message(self, peer: _Peer, header, msg, t_recv: float) -> None:
        cfg = self.config
        mtype, device = header.type, header.device
        if mtype == "IMAGE" and device == cfg.init_device:
            try:
                mask = mask_from_label_image(msg)
                if not mask.any():
                    raise ValueError("it has no needle (non-zero) pixels")
            except ValueError as e:
                self._count("rejected")
                log.warning("%s: label map '%s' ignored: %s", peer.name, device, e)
                return
            self._set_prompt(_Prompt("mask", mask=mask, peer=peer.name))
            log.info("%s: first-frame label map received (%d needle pixels)", peer.name, int(mask.sum()))
        elif mtype == "IMAGE" and self._matches_image_device(device):
            try:
                image = frame_from_image(msg, cfg.max_image_side)
            except ValueError as e:
                self._count("rejected")
                self._ratelog(logging.WARNING, ("img", peer.name, str(e)),
                              f"{peer.name}: frame from '{device}' rejected: {e}")
                return
            fr = _Frame(image, safe_matrix(msg.ijk_to_world_matrix), msg.world_coordinate_system,
                        header.raw_timestamp, header.timestamp, t_recv, peer.name)
            self._count("received")
            with self._cond:  # drop-to-newest: a frame still waiting in the slot is replaced and counted
                if self._slot is not None:
                    self._count("dropped")
                self._slot = fr
                self._cond.notify()
            self._last_frame_t = time.monotonic()
        elif mtype == "IMAGE":
            self._ratelog(logging.WARNING, ("dev", device),
                          f"{peer.name}: ignoring IMAGE from device '{device}' (frames are read from "
                          f"'{cfg.image_device}', prompts from '{cfg.init_device}'; see --image-device)")
        elif mtype == "POINT" and device == cfg.init_device:
            pts = [tuple(float(v) for v in p) for p in (msg.positions or [])]
            if len(pts) < 2:
                self._count("rejected")
                log.warning("%s: POINT prompt '%s' ignored: it has %d point(s); two (the shaft ends) are "
                            "needed", peer.name, device, len(pts))
                return
            if len(pts) > 2:
                log.info("%s: POINT prompt has %d points; using the first two", peer.name, len(pts))
            self._set_prompt(_Prompt("points", points=pts[:2], peer=peer.name))
            log.info("%s: first-frame shaft points received", peer.name)
        elif mtype == "STRING":
            text = (msg.string or "").strip()
            if text.lower() == "reset":
                with self._cond:
                    self._reset_requested = True
                    self._prompt = None
                    self._cond.notify()
                self._count("resets")
                log.info("%s: 'reset' received; tracking restarts on the next frame", peer.name)
            else:
                self._ratelog(logging.INFO, ("str", text[:40]),
                              f"{peer.name}: ignoring STRING '{text[:40]}' from '{device}' (commands: reset)")
        else:
            self._ratelog(logging.INFO, ("other", mtype, device),
                          f"{peer.name}: ignoring {mtype} from '{device}'")

    def _set_prompt(self, prompt: _Prompt) -> None:
        with self._cond:
            self._prompt = prompt
            self._cond.notify()
        self._count("prompts")

    # ------------------------------------------------------------------ worker
    def _work_loop(self) -> None:
        while not self._stopping.is_set():
            with self._cond:
                while self._slot is None and not self._stopping.is_set():
                    self._cond.wait(0.2)
                if self._stopping.is_set():
                    return
                fr, self._slot = self._slot, None
                prompt, self._prompt = self._prompt, None
                reset, self._reset_requested = self._reset_requested, False
            self._process(fr, prompt, reset)

    def _restart(self) -> None:
        try:
            self.tracker.reset()
        except Exception as e:  # noqa: BLE001
            log.warning("tracker reset failed: %s: %s", type(e).__name__, e)
        self._initialised = False
        self._waiting_logged = False

    def _process(self, fr: _Frame, prompt: _Prompt | None, reset: bool) -> None:
        h, w = fr.image.shape
        kwargs: dict = {}
        if reset:
            self._restart()
            self._last_mask = None
            self._last_pose = None
        if self._initialised and self._size is not None and self._size != (h, w):
            old = self._size
            carry = None
            if self._last_mask is not None and self._last_mask.any():
                import cv2

                carry = cv2.resize(self._last_mask.astype(np.uint8), (w, h),
                                   interpolation=cv2.INTER_NEAREST).astype(bool)
            self._restart()
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
        if prompt is not None:
            try:
                if prompt.kind == "mask":
                    if prompt.mask.shape != (h, w):
                        raise ValueError(f"label map is {prompt.mask.shape[1]}x{prompt.mask.shape[0]} but "
                                         f"the frame is {w}x{h}")
                    init = {"mask": prompt.mask}
                else:
                    (x0, y0), (x1, y1) = (world_to_pixel(fr.matrix, p) for p in prompt.points)
                    init = {"first_line": (x0, y0, x1, y1)}
            except ValueError as e:
                self._count("rejected")
                log.warning("%s: prompt ignored: %s", prompt.peer, e)
            else:
                if self._initialised:
                    log.info("new prompt: tracking re-initialised")
                    self._restart()
                kwargs = init
        if not self._initialised and not kwargs:
            if self.config.auto_init:
                kwargs = {"auto": True}
            else:
                self._count("skipped")
                if not self._waiting_logged:
                    log.info("waiting for a first-frame prompt (label map or POINT on '%s')",
                             self.config.init_device)
                    self._waiting_logged = True
                return
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
            self._restart()
            return
        t1 = time.monotonic()
        self._initialised = True
        self._size = (h, w)
        self._last_mask = mask
        try:
            data = self._encode_results(fr, result, mask)
        except Exception as e:  # noqa: BLE001 - e.g. a tracker result pyigtl cannot pack
            self._count("errors")
            self._ratelog(logging.ERROR, ("enc", type(e).__name__),
                          f"could not encode the results of a frame from {fr.peer}: {type(e).__name__}: {e}")
            return
        self._broadcast(data)
        t2 = time.monotonic()
        with self._lock:
            self.counters["processed"] += 1
            self.proc_times.append(t1 - t0)
            self.latencies.append(t2 - fr.t_recv)
        self._frame_index += 1

    def _encode_results(self, fr: _Frame, result, mask: np.ndarray) -> bytes:
        from pyigtl.messages import ImageMessage, PointMessage, StringMessage, TransformMessage

        cfg = self.config
        visible = bool(getattr(result, "visible", mask.any()))
        score = float(getattr(result, "score", float(mask.any())) or 0.0)
        tip = getattr(result, "tip", None)
        tail = getattr(result, "tail", None)
        angle = getattr(result, "angle_deg", None)
        pose = None
        if visible and tip is not None and tail is not None:
            pose = needle_pose(fr.matrix, tip, tail)
        if pose is not None:
            self._last_pose = pose
            self._last_tip_world = pose[:3, 3].copy()
        elif visible and tip is not None:
            self._last_tip_world = pixel_to_world(fr.matrix, *tip)
        fresh = pose is not None or (visible and tip is not None)
        tip_world = self._last_tip_world if self._last_tip_world is not None else fr.matrix[:3, 3]
        pose_out = self._last_pose if self._last_pose is not None else np.eye(4)
        meta = {
            "frame": str(self._frame_index),
            "visible": "true" if visible else "false",
            "confirmed": "true" if bool(getattr(result, "confirmed", True)) else "false",
            "score": f"{score:.4f}",
            "angle_deg": "" if angle is None else f"{float(angle):.2f}",
            "tip_px": "" if tip is None else f"{float(tip[0]):.2f},{float(tip[1]):.2f}",
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
        parts = []
        for m in msgs:
            m.timestamp = fr.ts
            m.header_version = 2 if cfg.header_version >= 2 else 1
            if m.header_version >= 2:
                m.metadata = dict(meta)
            parts.append(encode_message(m, fr.raw_ts))
        return b"".join(parts)

    # ------------------------------------------------------------------ monitor
    def _monitor_loop(self) -> None:
        cfg = self.config
        next_log = time.monotonic() + cfg.log_interval_s
        last = self.stats()
        last_t = time.monotonic()
        while not self._stopping.wait(0.25):
            now = time.monotonic()
            lf = self._last_frame_t
            if lf is not None and now - lf > cfg.idle_warning_s:
                if not self._idle_warned:
                    log.warning("no frames for %.0f s (sender stalled or stopped); still serving, tracking "
                                "state kept", now - lf)
                    self._idle_warned = True
            elif lf is not None:
                if self._idle_warned:
                    log.info("frames arriving again")
                self._idle_warned = False
            if cfg.log_interval_s > 0 and now >= next_log:
                st = self.stats()
                dt = max(now - last_t, 1e-9)
                rate_in = (st["received"] - last["received"]) / dt
                rate_out = (st["processed"] - last["processed"]) / dt
                log.info("status: %s; last %.0f s: %.1f fps in, %.1f fps tracked", self.format_stats(st), dt,
                         rate_in, rate_out)
                last, last_t = st, now
                next_log = now + cfg.log_interval_s
