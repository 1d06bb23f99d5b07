"""Fuzzing (hypothesis, time-bounded) of what reads untrusted bytes: the OpenIGTLink message parser and the
MetaImage, DICOM and image-folder readers. Random bytes and mutated valid files must give either a valid
result or the project's own errors (InputError / NeedletrackError; FramingError / MessageError for IGTL),
never another exception."""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

import hypothesis
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from needletrack.errors import NeedletrackError  # noqa: E402
from needletrack.io import open_cine  # noqa: E402
from needletrack.io import samples as S  # noqa: E402

FUZZ = settings(max_examples=150, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def mutations(seed_bytes: bytes):
    """A strategy of byte strings derived from a valid file: flipped bytes, truncations, splices."""
    n = len(seed_bytes)
    flips = st.lists(st.tuples(st.integers(0, max(0, n - 1)), st.integers(0, 255)), min_size=1, max_size=12)

    def flip(edits):
        b = bytearray(seed_bytes)
        for i, v in edits:
            b[i] = v
        return bytes(b)

    return st.one_of(
        flips.map(flip),
        st.integers(0, n).map(lambda k: seed_bytes[:k]),
        st.tuples(st.integers(0, n), st.binary(max_size=64)).map(lambda t: seed_bytes[:t[0]] + t[1]
                                                                 + seed_bytes[t[0]:]),
        st.binary(max_size=512),
    )


def read_all(path: Path) -> None:
    """Open and decode every frame (the whole reader path)."""
    with open_cine(path) as c:
        assert c.width > 0 and c.height > 0
        for img, _ in c:
            assert img.dtype == np.uint8 and img.shape[:2] == (c.height, c.width)


def must_be_ok_or_ours(path: Path) -> None:
    try:
        read_all(path)
    except NeedletrackError:
        pass


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    d = tmp_path_factory.mktemp("seeds")
    return {
        "mha": S.write_mha(d / "a.mha", n=2, h=8, w=10).read_bytes(),
        "dicom": S.write_dicom(d / "a.dcm", "mono8", n=2).read_bytes(),
        "dicom_jpeg": S.write_dicom(d / "b.dcm", "ybr_jpeg", n=2).read_bytes(),
        "png": _png(np.arange(80, dtype=np.uint8).reshape(8, 10)),
        "png16": _png(np.arange(80, dtype=np.uint16).reshape(8, 10) * 800),
    }


def _png(img) -> bytes:
    import cv2

    return cv2.imencode(".png", img)[1].tobytes()


@pytest.fixture
def work(tmp_path):
    return tmp_path


# ---------------------------------------------------------------------------------------------- IGTL
def _igtl_seed() -> bytes:
    import pyigtl
    from needletrack.serve.igtl_wire import encode_message

    msg = pyigtl.ImageMessage(np.arange(64, dtype=np.uint8).reshape(1, 8, 8), device_name="Image_Reference")
    return encode_message(msg)


@FUZZ
@given(data=st.data())
def test_fuzz_igtl_parser(data):
    from needletrack.serve.igtl_wire import (
        HEADER_SIZE,
        FramingError,
        MessageError,
        decode_message,
        frame_from_image,
        parse_header,
    )

    seed = _igtl_seed()
    raw = data.draw(mutations(seed))
    head, body = raw[:HEADER_SIZE], raw[HEADER_SIZE:]
    try:
        h = parse_header(head, max_body=1 << 20)
    except FramingError:
        return
    try:
        msg = decode_message(h, body[:h.body_size], check_crc=data.draw(st.booleans()))
    except MessageError:
        return
    if msg is not None and h.type == "IMAGE":
        try:
            frame_from_image(msg)
        except ValueError:
            pass


@FUZZ
@given(data=st.data())
def test_fuzz_igtl_reader_over_a_socket(data):
    import socket
    import threading

    from needletrack.serve.igtl_wire import ByteBudget, FramingError, MessageError, MessageReader, decode_message

    raw = data.draw(mutations(_igtl_seed()))
    a, b = socket.socketpair()
    budget = ByteBudget(1 << 20)
    try:
        b.settimeout(0.02)
        t = threading.Thread(target=lambda: (a.sendall(raw), a.shutdown(socket.SHUT_WR)), daemon=True)
        t.start()
        reader = MessageReader(b, max_body=1 << 20, stall_timeout=0.2, budget=budget)
        try:
            while True:
                got = reader.read()
                if got is None:
                    break
                try:
                    decode_message(got[0], got[1])
                except MessageError:
                    pass
        except FramingError:
            pass
        reader.release()
        assert budget.used == 0
        t.join(2)
    finally:
        a.close()
        b.close()


# ---------------------------------------------------------------------------------------------- readers
@FUZZ
@given(data=st.data())
def test_fuzz_metaimage_reader(data, seeds, work):
    raw = data.draw(mutations(seeds["mha"]))
    p = work / "f.mha"
    p.write_bytes(raw)
    must_be_ok_or_ours(p)


@FUZZ
@given(data=st.data())
def test_fuzz_metaimage_header_fields(data, work):
    """Header lines with random values: sizes, types, data-file references."""
    dims = data.draw(st.sampled_from(["8 6 2", "0 0 0", "-1 5 2", "99999 99999 99999", "8", "a b c", ""]))
    etype = data.draw(st.sampled_from(["MET_UCHAR", "MET_USHORT", "MET_FLOAT", "MET_DOUBLE", "MET_NONE", "x"]))
    ref = data.draw(st.sampled_from(["LOCAL", "/etc/passwd", "../x.raw", "LIST", "f%03d.raw", "", "a.raw"]))
    ndims = data.draw(st.sampled_from(["3", "2", "1", "9", "x"]))
    payload = data.draw(st.binary(max_size=400))
    head = (f"ObjectType = Image\nNDims = {ndims}\nDimSize = {dims}\nElementType = {etype}\n"
            f"ElementDataFile = {ref}\n").encode()
    p = work / "h.mha"
    p.write_bytes(head + payload)
    must_be_ok_or_ours(p)


@FUZZ
@given(data=st.data())
def test_fuzz_dicom_reader(data, seeds, work):
    key = data.draw(st.sampled_from(["dicom", "dicom_jpeg"]))
    raw = data.draw(mutations(seeds[key]))
    p = work / "f.dcm"
    p.write_bytes(raw)
    must_be_ok_or_ours(p)


@FUZZ
@given(data=st.data())
def test_fuzz_image_folder_reader(data, seeds, work):
    folder = work / "frames"
    folder.mkdir(exist_ok=True)
    for old in folder.iterdir():
        old.unlink()
    n = data.draw(st.integers(1, 3))
    for i in range(n):
        key = data.draw(st.sampled_from(["png", "png16"]))
        raw = data.draw(mutations(seeds[key])) if data.draw(st.booleans()) else seeds[key]
        ext = data.draw(st.sampled_from([".png", ".png", ".tif", ".jpg"]))
        (folder / f"{i:05d}{ext}").write_bytes(raw)
    must_be_ok_or_ours(folder)


@FUZZ
@given(w=st.integers(0, 2**31 - 1), h=st.integers(0, 2**31 - 1), depth=st.sampled_from([1, 8, 16]),
       color=st.sampled_from([0, 2, 6]))
def test_fuzz_png_header_claims(w, h, depth, color, work):
    """Any size a PNG header may claim: refused from the header or read, never decoded past the limit."""
    import zlib

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, color, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    folder = work / "claims"
    folder.mkdir(exist_ok=True)
    (folder / "00000.png").write_bytes(png)
    must_be_ok_or_ours(folder)
    from needletrack.io.masks import read_mask

    try:
        read_mask(folder / "00000.png")
    except NeedletrackError:
        pass
