"""One TCP connection of the OpenIGTLink service (a client, or the source it connects to): a reader thread
that frames and decodes messages and hands them to the service, and a writer thread that sends result
bundles from a small bounded queue (the oldest bundle is dropped for a peer that does not keep up, so a slow
or stuck receiver never blocks tracking). Owned by :class:`needletrack.serve.igtl.IgtlService`."""
from __future__ import annotations

import collections
import logging
import socket
import threading
import time
from needletrack.serve.igtl_wire import FramingError, MessageError, MessageReader, decode_message

log = logging.getLogger("needletrack.serve.igtl")


class Peer:
    """One TCP connection: a reader thread and a writer thread with a bounded result queue."""

    def __init__(self, service, sock: socket.socket, name: str, kind: str):
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
