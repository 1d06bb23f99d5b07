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

Rooms: this module owns the sockets, threads, the frame slot and the statistics; ``igtl_peer.Peer`` is one
connection (reader + writer threads); ``igtl_session.IgtlSession`` makes every tracking decision (prompt,
reset, re-initialisation, frame-size change, the result messages) without sockets; ``igtl_wire`` is the
framing and the image / pose conversions.
"""
from __future__ import annotations

import collections
import logging
import socket
import threading
import time
from dataclasses import dataclass

import numpy as np

from needletrack.serve.igtl_peer import Peer
from needletrack.serve.igtl_session import Frame, IgtlSession, Prompt, RateLimited
from needletrack.serve.igtl_wire import DEFAULT_MAX_BUFFERED_BYTES, DEFAULT_MAX_MESSAGE_BYTES, ByteBudget

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


class IgtlService:
    """Run a tracker on a live OpenIGTLink image stream. ``start()``, then ``stop()`` (or use ``with``)."""

    def __init__(self, tracker, config: IgtlConfig | None = None):
        self.tracker = tracker
        self.config = config or IgtlConfig()
        self._stopping = threading.Event()
        self._started = False
        self._lock = threading.Lock()  # stats and peers
        self._cond = threading.Condition()  # slot, prompt, reset
        self._slot: Frame | None = None
        self._prompt: Prompt | None = None
        self._reset_requested = False
        self._peers: list[Peer] = []
        self._source_peer: Peer | None = None
        self._listener: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self._ratelog = RateLimited()
        self._budget = ByteBudget(self.config.max_buffered_bytes)
        self.counters: collections.Counter = collections.Counter()
        self.latencies: collections.deque = collections.deque(maxlen=20000)  # receive -> results queued, s
        self.proc_times: collections.deque = collections.deque(maxlen=20000)
        self._last_frame_t: float | None = None
        self._idle_warned = False
        self._t_start = time.monotonic()
        self.address: tuple[str, int] | None = None
        # tracking state and decisions (worker thread only; prompts and frames are read on the reader threads)
        self.session = IgtlSession(tracker, self.config, count=self._count, ratelog=self._ratelog)

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
            self._add_peer(Peer(self, sock, name, "client"))

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
            peer = Peer(self, sock, name, "source")
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

    def _add_peer(self, peer: Peer) -> None:
        with self._lock:
            self._peers.append(peer)
            self.counters["connections"] += 1
        note = ""
        if self.session.initialised:
            note = " (tracking continues; send the STRING 'reset' to restart it)"
        log.info("%s connected%s", peer.name, note)
        peer.start()

    def _peer_closed(self, peer: Peer, reason: str | None) -> None:
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
    def _on_message(self, peer: Peer, header, msg, t_recv: float) -> None:
        got = self.session.interpret(header, msg, t_recv, peer.name)
        if isinstance(got, Frame):
            self._count("received")
            with self._cond:  # drop-to-newest: a frame still waiting in the slot is replaced and counted
                if self._slot is not None:
                    self._count("dropped")
                self._slot = got
                self._cond.notify()
            self._last_frame_t = time.monotonic()
        elif isinstance(got, Prompt):
            self._set_prompt(got)
            log.info("%s: %s", peer.name, got.describe())
        elif got == "reset":
            with self._cond:
                self._reset_requested = True
                self._prompt = None
                self._cond.notify()
            self._count("resets")
            log.info("%s: 'reset' received; tracking restarts on the next frame", peer.name)

    def _set_prompt(self, prompt: Prompt) -> None:
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

    def _process(self, fr: Frame, prompt: Prompt | None, reset: bool) -> None:
        out = self.session.process(fr, prompt, reset)
        if out is None:
            return
        self._broadcast(out.data)
        t2 = time.monotonic()
        with self._lock:
            self.counters["processed"] += 1
            self.proc_times.append(out.step_s)
            self.latencies.append(t2 - fr.t_recv)

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
