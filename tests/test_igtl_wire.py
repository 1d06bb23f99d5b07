"""OpenIGTLink framing, image conversion and pose geometry (no sockets beyond a socketpair)."""
from __future__ import annotations

import socket
import struct
import threading

import numpy as np
import pytest

import pyigtl

from needletrack.serve.igtl_wire import (  # noqa: E402
    HEADER_SIZE,
    FramingError,
    MessageError,
    MessageReader,
    StallError,
    decode_message,
    encode_message,
    frame_from_image,
    mask_from_label_image,
    needle_pose,
    parse_header,
    safe_matrix,
    timestamp_from_raw,
    timestamp_to_raw,
    world_to_pixel,
)


def _roundtrip(msg):
    data = encode_message(msg)
    h = parse_header(data[:HEADER_SIZE])
    return h, decode_message(h, data[HEADER_SIZE:])


def test_image_roundtrip_keeps_voxels_matrix_and_metadata():
    img = np.arange(12 * 10, dtype=np.uint8).reshape(1, 12, 10)
    m = np.diag([0.3, 0.3, 1.0, 1.0])
    m[:3, 3] = (1, 2, 3)
    msg = pyigtl.ImageMessage(img, ijk_to_world_matrix=m, device_name="Image_Reference", timestamp=12.5)
    msg.header_version = 2
    msg.metadata = {"visible": "true"}
    h, out = _roundtrip(msg)
    assert (h.type, h.device, h.version) == ("IMAGE", "Image_Reference", 2)
    assert np.array_equal(out.image, img)
    assert np.allclose(out.ijk_to_world_matrix, m, atol=1e-5)
    assert out.metadata == {"visible": "true"}
    assert out.timestamp == pytest.approx(12.5, abs=1e-8)


def test_raw_timestamp_is_copied_exactly():
    raw = timestamp_to_raw(1717171717.123456789)
    data = encode_message(pyigtl.StringMessage("x", device_name="S", timestamp=5.0), raw)
    h = parse_header(data[:HEADER_SIZE])
    assert h.raw_timestamp == raw
    assert h.timestamp == pytest.approx(1717171717.123456789, abs=1e-6)
    assert timestamp_to_raw(timestamp_from_raw(*raw)) == raw
    decode_message(h, data[HEADER_SIZE:])  # the CRC still matches (the timestamp is not in the body)


@pytest.mark.parametrize("mutate, words", [
    (lambda b: b"\x00\x07" + b[2:], "header version 7"),
    (lambda b: b[:2] + b"IM\xffGE\0\0\0\0\0\0\0" + b[14:], "not ASCII"),
    (lambda b: b[:2] + b"IM\x01GE\0\0\0\0\0\0\0" + b[14:], "control characters"),
    (lambda b: b[:2] + b"\0" * 12 + b[14:], "invalid message type"),
    (lambda b: b[:42] + struct.pack(">Q", 1 << 40) + b[50:], "limit"),
])
def test_bad_headers_are_framing_errors(mutate, words):
    data = encode_message(pyigtl.StringMessage("reset", device_name="Cmd"))
    with pytest.raises(FramingError, match=words):
        parse_header(mutate(data[:HEADER_SIZE]), max_body=1 << 20)


def test_bad_bodies_are_message_errors_and_unknown_types_are_none():
    data = bytearray(encode_message(pyigtl.TransformMessage(np.eye(4), device_name="T")))
    h = parse_header(bytes(data[:HEADER_SIZE]))
    data[-1] ^= 1
    with pytest.raises(MessageError, match="CRC"):
        decode_message(h, bytes(data[HEADER_SIZE:]))
    # a body too short for a TRANSFORM, with a CRC that matches
    short = bytes(data[HEADER_SIZE:HEADER_SIZE + 20])
    with pytest.raises(MessageError, match="malformed TRANSFORM"):
        decode_message(h, short, check_crc=False)
    hdr = struct.pack(">H12s20sIIQQ", 1, b"STATUS", b"dev", 0, 0, 0, 0)
    assert decode_message(parse_header(hdr), b"") is None


def test_reader_reads_split_messages_and_detects_stall_and_eof():
    a, b = socket.socketpair()
    try:
        b.settimeout(0.05)
        reader = MessageReader(b, stall_timeout=0.3)
        data = encode_message(pyigtl.StringMessage("hello", device_name="S"))
        # delivered one byte at a time from another thread
        t = threading.Thread(target=lambda: [a.send(data[i:i + 1]) for i in range(len(data))])
        t.start()
        h, body, _ = reader.read()
        t.join()
        assert decode_message(h, body).string == "hello"
        a.sendall(data[:30])
        with pytest.raises(StallError, match="stalled"):
            reader.read()
    finally:
        a.close()
        b.close()
    c, d = socket.socketpair()
    d.settimeout(0.05)
    c.close()
    assert MessageReader(d).read() is None  # clean EOF between messages
    d.close()


def test_frame_conversion():
    gray = np.full((1, 20, 30), 7, np.uint8)
    assert frame_from_image(pyigtl.ImageMessage(gray)).shape == (20, 30)
    rgb = np.zeros((1, 20, 30, 3), np.uint8)
    rgb[..., 1] = 200
    f = frame_from_image(pyigtl.ImageMessage(rgb))
    assert f.shape == (20, 30) and f.dtype == np.uint8 and abs(int(f[0, 0]) - round(0.587 * 200)) <= 1
    with pytest.raises(ValueError, match="volume"):
        frame_from_image(pyigtl.ImageMessage(np.zeros((3, 20, 30), np.uint8)))
    with pytest.raises(ValueError, match="uint8"):
        frame_from_image(pyigtl.ImageMessage(np.zeros((1, 20, 30), np.uint16)))
    with pytest.raises(ValueError, match="outside"):
        frame_from_image(pyigtl.ImageMessage(np.zeros((1, 20, 30), np.uint8)), max_side=16)
    lab = np.zeros((1, 20, 30), np.int16)
    lab[0, 5, 6] = 3
    m = mask_from_label_image(pyigtl.ImageMessage(lab))
    assert m.dtype == bool and m.sum() == 1 and m[5, 6]


def test_pose_and_coordinate_conversions():
    m = np.array([[0, -0.5, 0, 10], [0.5, 0, 0, 20], [0, 0, 0.5, 30], [0, 0, 0, 1]], float)
    pose = needle_pose(m, tip=(10, 4), tail=(2, 4))
    assert np.allclose(pose[:3, 3], m[:3, :3] @ [10, 4, 0] + m[:3, 3])
    assert np.allclose(pose[:3, 0], [0, 1, 0])  # pixel +x maps to world +y here
    assert np.allclose(pose[:3, 2], [0, 0, 1])
    assert np.allclose(np.linalg.det(pose[:3, :3]), 1.0)
    assert needle_pose(m, tip=(3, 3), tail=(3, 3)) is None
    assert np.allclose(world_to_pixel(m, pose[:3, 3]), (10, 4))
    flat = m.copy()
    flat[:3, 2] = 0  # no slice axis: replaced by the unit normal
    assert np.allclose(safe_matrix(flat)[:3, 2], [0, 0, 1])
    assert np.array_equal(safe_matrix(np.full((4, 4), np.nan)), np.eye(4))
