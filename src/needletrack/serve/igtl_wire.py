"""OpenIGTLink framing for the needletrack service.

pyigtl's message classes pack and unpack message bodies; this module owns everything around them that
pyigtl's own client/server gets wrong for a long-running service: it validates the 58-byte header before
trusting it (version, type, device name, body size against a limit), checks the CRC, reads bodies with a
stall timeout, turns every decoding failure into an exception the caller can log, and packs outgoing
messages with the *input* frame's raw timestamp so receivers can match results to frames exactly.

Two failure levels:
- ``FramingError``: the byte stream can no longer be trusted (bad header, oversized body, stalled
  mid-message). The connection must be closed; the service keeps serving others and accepts reconnects.
- ``MessageError``: one message was framed correctly but its body is bad (CRC, truncated image, unknown
  encoding). That message is skipped; the connection stays open.
"""
from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass

import numpy as np

HEADER_SIZE = 58
_HEADER = struct.Struct(">H12s20sIIQQ")
_TS_OFFSET = 2 + 12 + 20  # byte offset of the timestamp (seconds, fraction) in the header
SUPPORTED_HEADER_VERSIONS = (1, 2)
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024  # one message body (a 4096x4096 RGBA frame fits)
DEFAULT_MAX_BUFFERED_BYTES = 256 * 1024 * 1024  # body bytes held at once across all connections


class FramingError(Exception):
    """The stream is unusable: close the connection."""


class StallError(FramingError):
    """The peer stopped sending in the middle of a message."""


class MessageError(Exception):
    """One message could not be decoded: skip it, keep the connection."""


@dataclass(frozen=True)
class Header:
    version: int
    type: str
    device: str
    ts_sec: int
    ts_frac: int
    body_size: int
    crc: int

    @property
    def timestamp(self) -> float:
        return timestamp_from_raw(self.ts_sec, self.ts_frac)

    @property
    def raw_timestamp(self) -> tuple[int, int]:
        return (self.ts_sec, self.ts_frac)


def timestamp_from_raw(sec: int, frac: int) -> float:
    """OpenIGTLink 64-bit timestamp (seconds, 32-bit binary fraction) -> float seconds."""
    return sec + frac / 4294967296.0


def timestamp_to_raw(t: float) -> tuple[int, int]:
    sec = int(t)
    frac = int(round((t - sec) * 4294967296.0))
    if frac >= 1 << 32:
        sec, frac = sec + 1, 0
    return sec, frac


def _ascii_field(raw: bytes, what: str) -> str:
    raw = raw.split(b"\0", 1)[0]
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise FramingError(f"header {what} is not ASCII ({raw[:20]!r})") from None
    if any(not (32 <= ord(c) < 127) for c in text):
        raise FramingError(f"header {what} has control characters ({raw[:20]!r})")
    return text.rstrip(" ")


def parse_header(data: bytes, max_body: int = DEFAULT_MAX_MESSAGE_BYTES) -> Header:
    """Validate and parse a 58-byte header; raises FramingError when the stream cannot be trusted."""
    if len(data) != HEADER_SIZE:
        raise FramingError(f"header is {len(data)} bytes, expected {HEADER_SIZE}")
    version, mtype, device, sec, frac, body_size, crc = _HEADER.unpack(data)
    if version not in SUPPORTED_HEADER_VERSIONS:
        raise FramingError(f"unsupported header version {version} (not an OpenIGTLink stream?)")
    mtype_s = _ascii_field(mtype, "message type")
    if not mtype_s or not mtype_s.replace("_", "").isalnum():
        raise FramingError(f"invalid message type {mtype[:12]!r}")
    device_s = _ascii_field(device, "device name")
    if body_size > max_body:
        raise FramingError(f"{mtype_s} message from device '{device_s}' is {body_size} bytes, over the "
                           f"{max_body}-byte limit")
    return Header(version, mtype_s, device_s, sec, frac, body_size, crc)


def crc64(data: bytes) -> int:
    from pyigtl.messages import CRC64

    return CRC64(data)


def decode_message(header: Header, body: bytes, check_crc: bool = True):
    """Body bytes -> a pyigtl message, or None for a message type pyigtl does not know.

    Raises MessageError for a CRC mismatch or a body that does not decode.
    """
    from pyigtl.messages import MessageBase

    if check_crc and header.crc != 0 and crc64(body) != header.crc:
        raise MessageError(f"{header.type} message from device '{header.device}' failed its CRC check")
    msg = MessageBase.create_message(header.type)
    if msg is None:
        return None
    fields = {"header_version": header.version, "message_type": header.type, "device_name": header.device,
              "timestamp": header.timestamp, "body_size": header.body_size}
    try:
        if header.version > 1 and len(body) < 12:
            raise ValueError("body shorter than the extended header")
        msg.unpack(fields, body)
        if header.type == "IMAGE" and getattr(msg, "image", None) is None:
            raise ValueError("no voxels")
    except Exception as e:  # noqa: BLE001 - pyigtl raises anything (struct.error, ValueError, TypeError)
        raise MessageError(f"malformed {header.type} message from device '{header.device}': "
                           f"{type(e).__name__}: {e}") from None
    msg.timestamp = header.timestamp
    return msg


def encode_message(msg, raw_timestamp: tuple[int, int] | None = None) -> bytes:
    """Pack a pyigtl message; with ``raw_timestamp`` the header carries exactly that timestamp."""
    data = msg.pack()
    if raw_timestamp is not None:
        data = data[:_TS_OFFSET] + struct.pack(">II", *raw_timestamp) + data[_TS_OFFSET + 8:]
    return data


class ByteBudget:
    """A byte budget shared by every connection of a service: message bodies being received count against
    it, so that many clients each claiming a large body cannot together exhaust memory (thread-safe)."""

    def __init__(self, limit: int):
        import threading

        self.limit = int(limit)
        self.used = 0
        self._lock = threading.Lock()

    def reserve(self, n: int) -> bool:
        with self._lock:
            if self.used + n > self.limit:
                return False
            self.used += n
            return True

    def release(self, n: int) -> None:
        with self._lock:
            self.used = max(0, self.used - n)


class MessageReader:
    """Reads whole messages from a blocking socket that has a short timeout set.

    ``read()`` returns ``(header, body, t_received)``, or None when the peer closed the connection cleanly
    between messages, or when ``should_stop()`` became true while idle. Idle waiting between messages is
    never an error; once a message has started, a stall longer than ``stall_timeout`` raises StallError.

    A body is read in chunks of at most ``CHUNK`` bytes and grows only with the bytes that actually arrived
    (a header's claimed size is never allocated up front). ``buffered`` is the number of body bytes held for
    the current message; with a shared ``budget`` (:class:`ByteBudget`) each chunk is reserved before it is
    kept, and a connection whose body would exceed the budget gets a FramingError (only that connection is
    closed). The reservation is given back by :meth:`release` (called by the next ``read()``).
    """

    CHUNK = 1 << 20

    def __init__(self, sock: socket.socket, max_body: int = DEFAULT_MAX_MESSAGE_BYTES,
                 stall_timeout: float = 5.0, should_stop=lambda: False, budget: ByteBudget | None = None):
        self.sock = sock
        self.max_body = max_body
        self.stall_timeout = stall_timeout
        self.should_stop = should_stop
        self.budget = budget
        self.buffered = 0

    def release(self) -> None:
        """Give the current body's bytes back to the shared budget."""
        if self.budget is not None and self.buffered:
            self.budget.release(self.buffered)
        self.buffered = 0

    def _read_exact(self, n: int, started: bool, what: str) -> bytes | None:
        buf = bytearray()
        last_progress = time.monotonic()
        budgeted = self.budget is not None and started
        try:
            while len(buf) < n:
                try:
                    chunk = self.sock.recv(min(self.CHUNK, n - len(buf)))
                except socket.timeout:
                    if self.should_stop():
                        return None
                    if (started or buf) and time.monotonic() - last_progress > self.stall_timeout:
                        raise StallError(f"peer stalled for {self.stall_timeout:g} s in the middle of {what} "
                                         f"({len(buf)} of {n} bytes)") from None
                    continue
                k = len(chunk)
                if k == 0:
                    if started or buf:
                        raise FramingError(f"connection closed in the middle of {what} ({len(buf)} of {n} bytes)")
                    return None
                if budgeted:
                    if not self.budget.reserve(k):
                        raise FramingError(f"{what} ({n} bytes) would exceed the {self.budget.limit}-byte buffer "
                                           f"shared by all connections ({self.budget.used} bytes in use)")
                    self.buffered += k
                buf += chunk
                del chunk
                last_progress = time.monotonic()
            return bytes(buf)
        except BaseException:
            if budgeted:
                self.release()
            raise

    def read(self):
        self.release()
        head = self._read_exact(HEADER_SIZE, False, "a message header")
        if head is None:
            return None
        header = parse_header(head, self.max_body)
        body = (self._read_exact(header.body_size, True, f"the body of a message ({header.type})")
                if header.body_size else b"")
        if body is None:
            self.release()
            return None
        return header, body, time.monotonic()


# ---------------------------------------------------------------------------------------------------------
# images and coordinates


def frame_from_image(msg, max_side: int = 4096) -> np.ndarray:
    """An IMAGE message's voxels -> HxW uint8 grayscale frame; ValueError says why not."""
    img = np.asarray(msg.image)
    if img.ndim == 3:
        img = img[..., None]
    if img.ndim != 4:
        raise ValueError(f"image has {img.ndim} dimensions")
    k, h, w, c = img.shape
    if k != 1:
        raise ValueError(f"image is a {w}x{h}x{k} volume; only 2D frames (one slice) are tracked")
    if img.dtype != np.uint8:
        raise ValueError(f"image scalar type is {img.dtype}; only uint8 frames are supported")
    if not (8 <= h <= max_side and 8 <= w <= max_side):
        raise ValueError(f"image size {w}x{h} is outside 8..{max_side} pixels")
    if c == 1:
        return np.ascontiguousarray(img[0, :, :, 0])
    if c in (3, 4):
        rgb = img[0, :, :, :3].astype(np.float32)
        gray = rgb @ np.array([0.299, 0.587, 0.114], np.float32)
        return np.clip(gray + 0.5, 0, 255).astype(np.uint8)
    raise ValueError(f"image has {c} components; expected 1 (grayscale), 3 (RGB) or 4 (RGBA)")


def mask_from_label_image(msg) -> np.ndarray:
    """A label-map IMAGE -> HxW bool mask (non-zero = needle)."""
    img = np.asarray(msg.image)
    if img.ndim == 4 and img.shape[-1] == 1:
        img = img[..., 0]
    if img.ndim != 3 or img.shape[0] != 1:
        raise ValueError(f"label map has shape {img.shape}; expected one 2D slice with one component")
    if img.dtype.kind == "f":
        return img[0] > 0.5
    if img.dtype.kind not in "iub":
        raise ValueError(f"label map scalar type {img.dtype} is not supported")
    return img[0] != 0


def pixel_to_world(matrix: np.ndarray, x: float, y: float) -> np.ndarray:
    return (np.asarray(matrix, np.float64) @ np.array([x, y, 0.0, 1.0]))[:3]


def world_to_pixel(matrix: np.ndarray, point) -> tuple[float, float]:
    m = np.asarray(matrix, np.float64)
    p = np.array([float(point[0]), float(point[1]), float(point[2]), 1.0])
    try:
        ijk = np.linalg.solve(m, p)
    except np.linalg.LinAlgError:
        raise ValueError("the image's ijk-to-world matrix is singular") from None
    return float(ijk[0]), float(ijk[1])


def safe_matrix(matrix) -> np.ndarray:
    """A usable 4x4 ijk-to-world matrix: fall back to identity when the sender's is degenerate."""
    m = np.asarray(matrix, np.float64)
    if m.shape != (4, 4) or not np.all(np.isfinite(m)):
        return np.eye(4)
    if abs(np.linalg.det(m[:3, :2].T @ m[:3, :2])) < 1e-12:
        return np.eye(4)
    if np.linalg.norm(m[:3, 2]) < 1e-9:  # 2D image with no slice axis: use the in-plane normal, unit length
        n = np.cross(m[:3, 0], m[:3, 1])
        m = m.copy()
        m[:3, 2] = n / np.linalg.norm(n)
    return m


def needle_pose(matrix: np.ndarray, tip, tail) -> np.ndarray | None:
    """4x4 pose in world coordinates: origin at the tip, +x along the shaft from tail to tip, +z the image
    normal (k axis), +y = z × x. None when the shaft direction is undefined."""
    m = np.asarray(matrix, np.float64)
    tip_w = pixel_to_world(m, *tip)
    x = tip_w - pixel_to_world(m, *tail)
    nx = np.linalg.norm(x)
    if not np.isfinite(nx) or nx < 1e-9:
        return None
    x = x / nx
    z = m[:3, 2].copy()
    z = z - x * float(z @ x)
    nz = np.linalg.norm(z)
    if nz < 1e-9:
        z = np.cross(m[:3, 0], m[:3, 1])
        z = z - x * float(z @ x)
        nz = np.linalg.norm(z)
        if nz < 1e-9:
            return None
    z = z / nz
    y = np.cross(z, x)
    pose = np.eye(4)
    pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = x, y, z, tip_w
    return pose
