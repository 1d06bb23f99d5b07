"""The bad-input catalogue (issue 14): every command and both servers, fed what a careless user or an
attacker would feed them. Each CLI case asserts exit code 2, exactly one line on stderr (file-descriptor
level, so native library noise counts), no traceback, and that nothing already on disk changed (every
file under the case's folder byte-identical, no new file or folder: a pre-existing --out keeps its earlier
outputs, a failed first run leaves no folder). serve-web cases assert an HTTP 4xx with a one-line detail;
serve-igtl cases assert that only the offending connection is dropped while another client is served.
CLI cases run in-process (needletrack.cli.main), so the whole catalogue takes seconds."""
from __future__ import annotations

import errno
import json
import os
import socket
import struct
import time
import warnings
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from needletrack.cli import main
from needletrack.io import samples as S

H, W = 48, 64


# ---------------------------------------------------------------------------------------------- helpers
def png_claiming(w: int, h: int) -> bytes:
    """A valid-looking PNG of a few hundred bytes whose header claims w x h pixels."""
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 4000))
            + chunk(b"IEND", b""))


def snapshot(root: Path) -> dict:
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        out[rel] = p.read_bytes() if p.is_file() else "<dir>"
    return out


def write_seq(root: Path, name="s1", n=4, mask_fn=None) -> Path:
    seq = root / name
    (seq / "frames").mkdir(parents=True)
    (seq / "masks").mkdir()
    for i in range(n):
        f = np.full((20, 30), 40 + i, np.uint8)
        m = np.zeros((20, 30), np.uint8)
        m[5:8, 3 + i:20 + i] = 255
        cv2.imwrite(str(seq / "frames" / f"{i:05d}.png"), f)
        cv2.imwrite(str(seq / "masks" / f"{i:05d}.png"), m if mask_fn is None else mask_fn(i, m))
    return seq


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """Inputs shared by the cases (read only)."""
    d = tmp_path_factory.mktemp("catalogue")
    from needletrack.models import build_model, save_model

    save_model(build_model("stnan_tiny"), d / "tiny.safetensors")
    S.write_mp4(d / "clip.mp4", n=3, h=H, w=W)
    (d / "notes.txt").write_text("not a video\n")
    (d / "notes.mp4").write_text("not a video\n" * 20)
    (d / "bomb.png").write_bytes(png_claiming(100000, 100000))
    (d / "bombdir").mkdir()
    (d / "bombdir" / "00000.png").write_bytes(png_claiming(100000, 100000))
    (d / "emptydir").mkdir()
    (d / "mixed").mkdir()
    cv2.imwrite(str(d / "mixed" / "a1.png"), np.zeros((20, 30), np.uint8))
    cv2.imwrite(str(d / "mixed" / "a2.png"), np.zeros((21, 30), np.uint8))
    (d / "truncpng").mkdir()
    good = cv2.imencode(".png", np.random.default_rng(0).integers(0, 255, (40, 50), np.uint8))[1].tobytes()
    (d / "truncpng" / "00000.png").write_bytes(good[: len(good) // 2])
    (d / "textpng.png").write_text("hello")
    dcm = S.write_dicom(d / "ok.dcm", "mono8", n=3)
    (d / "trunc300.dcm").write_bytes(dcm.read_bytes()[:300])
    (d / "zeros.dcm").write_bytes(b"\0" * 300)
    mha = S.write_mha(d / "ok.mha", n=3)
    raw = mha.read_bytes()
    (d / "halfmha.mha").write_bytes(raw[: len(raw) // 2])
    (d / "noheader.mha").write_bytes(b"ObjectType = Image\nNDims = 2\n")
    (d / "passwd.mhd").write_text("ObjectType = Image\nNDims = 2\nDimSize = 16 1\nElementType = MET_UCHAR\n"
                                  "ElementDataFile = /etc/passwd\n")
    (d / "dotdot.mhd").write_text("ObjectType = Image\nNDims = 2\nDimSize = 16 1\nElementType = MET_UCHAR\n"
                                  "ElementDataFile = ../x.raw\n")
    (d / "file.txt").write_text("a file\n")
    cv2.imwrite(str(d / "wrongsize.png"), np.full((10, 10), 255, np.uint8))
    cv2.imwrite(str(d / "emptymask.png"), np.zeros((H, W), np.uint8))
    nan = np.zeros((H, W), np.float32)
    nan[10:12, 5:40] = np.nan
    cv2.imwrite(str(d / "nanmask.tif"), nan)
    (d / "garbage.safetensors").write_bytes(os.urandom(300))
    (d / "bad.yaml").write_text("steps: [1, 2\n  : oops")
    (d / "list_ckpt").mkdir()
    import torch

    torch.save([1, 2, 3], d / "list_ckpt" / "checkpoint.pt")
    (d / "tiny_train.yaml").write_text(json.dumps({
        "seed": 1, "model": "stnan_tiny", "size": 64, "steps": 2, "batch_size": 1, "log_every": 1,
        "clip": {"frames": 3, "gap": [1, 2]},
        "data": {"sources": [{"kind": "folder", "root": str(d / "gt")}], "num_workers": 0},
        "val": {"root": str(d / "gt"), "every": 0}, "checkpoint_every": 0, "tensorboard": False}))
    gt = d / "gt"
    write_seq(gt, "s1")
    (d / "pred" / "s1").mkdir(parents=True)
    for i in range(4):
        m = np.zeros((20, 30), np.uint8)
        m[5:8, 3:20] = 255
        cv2.imwrite(str(d / "pred" / "s1" / f"{i:05d}.png"), m)
    (d / "pred_missing" / "s1").mkdir(parents=True)
    cv2.imwrite(str(d / "pred_missing" / "s1" / "00001.png"), np.zeros((20, 30), np.uint8))
    (d / "pred_size" / "s1").mkdir(parents=True)
    (d / "pred_nan" / "s1").mkdir(parents=True)
    for i in range(4):
        cv2.imwrite(str(d / "pred_size" / "s1" / f"{i:05d}.png"), np.zeros((21, 30), np.uint8))
        z = np.zeros((20, 30), np.float32)
        z[3, 3] = np.nan
        cv2.imwrite(str(d / "pred_nan" / "s1" / f"{i:05d}.tif"), z)
    (d / "nomasks" / "s1" / "frames").mkdir(parents=True)
    cv2.imwrite(str(d / "nomasks" / "s1" / "frames" / "00000.png"), np.zeros((20, 30), np.uint8))
    (d / "full").mkdir()
    (d / "full" / "keep.txt").write_text("keep")
    (d / "exportdir").mkdir()
    (d / "exportdir" / "other.txt").write_text("not an export")
    return d


@pytest.fixture
def case_dir(tmp_path):
    """A folder with a previous track run's outputs in ``prev/`` (must survive every failed run)."""
    prev = tmp_path / "prev"
    (prev / "masks").mkdir(parents=True)
    cv2.imwrite(str(prev / "masks" / "00000.png"), np.zeros((H, W), np.uint8))
    (prev / "needle.csv").write_text("frame,time_s\n0,0\n")
    (prev / "summary.json").write_text('{"frames": 1}\n')
    (prev / "overlay.mp4").write_bytes(b"old overlay")
    return tmp_path


def _argv(spec, base: Path, case: Path) -> list[str]:
    return [str(a).replace("{B}", str(base)).replace("{C}", str(case)) for a in spec]


TRACK = ["track", "{B}/clip.mp4", "--model", "{B}/tiny.safetensors", "--quiet", "--out", "{C}/prev"]

# (id, argv with {B} = shared inputs, {C} = this case's folder, a substring the one line must hold)
CLI_CASES = [
    ("no-command", [], "a command is required"),
    ("unknown-command", ["frobnicate"], "invalid choice"),
    ("track-unknown-option", TRACK + ["--auto", "--bogus"], "unrecognized arguments"),
    ("track-no-prompt", TRACK, "needs a prompt"),
    ("track-two-prompts", TRACK + ["--auto", "--first-line", "1,2,3,4"], "not allowed with"),
    ("track-line-3-numbers", TRACK + ["--first-line", "1,2,3"], "four numbers"),
    ("track-line-nan", TRACK + ["--first-line", "nan,1,2,3"], "four numbers"),
    ("track-line-outside", TRACK + ["--first-line", "0,0,500,3"], "outside"),
    ("track-mask-missing", TRACK + ["--first-mask", "{B}/nope.png"], "no such mask file"),
    ("track-mask-wrong-size", TRACK + ["--first-mask", "{B}/wrongsize.png"], "10×10 px"),
    ("track-mask-empty", TRACK + ["--first-mask", "{B}/emptymask.png"], "mask is empty"),
    ("track-mask-bomb-png", TRACK + ["--first-mask", "{B}/bomb.png"], "refused before decoding"),
    ("track-mask-nan-tiff", TRACK + ["--first-mask", "{B}/nanmask.tif"], "NaN"),
    ("track-mask-text", TRACK + ["--first-mask", "{B}/textpng.png"], "cannot read image"),
    ("track-mask-folder", TRACK + ["--first-mask", "{B}/emptydir"], "folder"),
    ("track-input-missing", ["track", "{B}/nope.mp4", "--auto", "--out", "{C}/prev"], "no such file"),
    ("track-input-unknown-ext", ["track", "{B}/file.txt", "--auto", "--out", "{C}/prev"], "unknown input format"),
    ("track-folder-bomb-png", TRACK[:1] + ["{B}/bombdir"] + TRACK[2:] + ["--auto"], "refused before decoding"),
    ("track-folder-empty", TRACK[:1] + ["{B}/emptydir"] + TRACK[2:] + ["--auto"], "holds no images"),
    ("track-folder-mixed", TRACK[:1] + ["{B}/mixed"] + TRACK[2:] + ["--auto"], "differs"),
    ("track-folder-truncated-png", TRACK[:1] + ["{B}/truncpng"] + TRACK[2:] + ["--auto"], "00000.png"),
    ("track-text-as-mp4", TRACK[:1] + ["{B}/notes.mp4"] + TRACK[2:] + ["--auto"], "notes.mp4"),
    ("track-dicom-300-bytes", TRACK[:1] + ["{B}/trunc300.dcm"] + TRACK[2:] + ["--auto"], "truncated"),
    ("track-mha-half", TRACK[:1] + ["{B}/halfmha.mha"] + TRACK[2:] + ["--auto"], "halfmha.mha"),
    ("track-mhd-passwd", TRACK[:1] + ["{B}/passwd.mhd"] + TRACK[2:] + ["--auto"], "ElementDataFile"),
    ("track-device-cuda7", TRACK + ["--auto", "--device", "cuda:7"], "cuda:7"),
    ("track-device-banana", TRACK + ["--auto", "--device", "banana"], "banana"),
    ("track-out-under-file", TRACK[:-1] + ["{B}/file.txt/sub", "--auto"], "is a file"),
    ("track-out-is-file", TRACK[:-1] + ["{B}/file.txt", "--auto"], "not a folder"),
    ("track-max-frames-0", TRACK + ["--auto", "--max-frames", "0"], "--max-frames"),
    ("track-threads-0", TRACK + ["--auto", "--threads", "0"], "--threads"),
    ("track-model-missing", TRACK[:3] + ["{B}/none.safetensors"] + TRACK[4:] + ["--auto"], "none.safetensors"),
    ("track-model-garbage", TRACK[:3] + ["{B}/garbage.safetensors"] + TRACK[4:] + ["--auto"], "garbage"),
    ("track-engine-bogus", TRACK + ["--auto", "--engine", "tpu"], "invalid choice"),
    ("track-max-frames-text", TRACK + ["--auto", "--max-frames", "ten"], "invalid int"),
    ("info-missing", ["info", "{B}/nope.dcm"], "no such file"),
    ("info-dicom-300-bytes", ["info", "{B}/trunc300.dcm"], "truncated"),
    ("info-dicom-zeros", ["info", "{B}/zeros.dcm"], "zeros.dcm"),
    ("info-mha-no-datafile", ["info", "{B}/noheader.mha"], "ElementDataFile"),
    ("info-mha-half-check", ["info", "--check", "{B}/halfmha.mha"], "halfmha.mha"),
    ("info-mhd-dotdot", ["info", "{B}/dotdot.mhd"], "ElementDataFile"),
    ("info-folder-bomb", ["info", "{B}/bombdir"], "refused before decoding"),
    ("info-truncated-png-check", ["info", "--check", "{B}/truncpng"], "00000.png"),
    ("validate-missing", ["validate", "{B}/nope"], "error(s)"),
    ("validate-file", ["validate", "{B}/file.txt"], "error(s)"),
    ("validate-bomb-frames", ["validate", "{B}/bombdir/.."], "error(s)"),
    ("validate-max-lines-text", ["validate", "{B}/gt", "--max-lines", "x"], "invalid int"),
    ("evaluate-json-dir", ["evaluate", "{B}/pred", "{B}/gt", "--json", "{B}/emptydir"], "is a folder"),
    ("evaluate-json-under-file", ["evaluate", "{B}/pred", "{B}/gt", "--json", "{B}/file.txt/r.json"],
     "is a file"),
    ("evaluate-pred-missing", ["evaluate", "{B}/nope", "{B}/gt"], "no such folder"),
    ("evaluate-pred-frames-missing", ["evaluate", "{B}/pred_missing", "{B}/gt"], "missing frames"),
    ("evaluate-pred-size", ["evaluate", "{B}/pred_size", "{B}/gt"], "differs"),
    ("evaluate-pred-nan", ["evaluate", "{B}/pred_nan", "{B}/gt"], "NaN"),
    ("evaluate-gt-no-masks", ["evaluate", "{B}/pred", "{B}/nomasks"], "masks"),
    ("simulate-size-text", ["simulate", "{C}/sim", "--size", "abc"], "invalid size"),
    ("simulate-frames-0", ["simulate", "{C}/sim", "--frames", "0"], "must be >= 1"),
    ("simulate-not-empty", ["simulate", "{B}/full", "--frames", "1", "--no-progress"], "not empty"),
    ("simulate-real-fraction", ["simulate", "{C}/sim", "--real-fraction", "2"], "--real-fraction"),
    ("simulate-backgrounds-missing", ["simulate", "{C}/sim", "--backgrounds", "{B}/nope"], "no such folder"),
    ("simulate-out-is-file", ["simulate", "{B}/file.txt"], "not a folder"),
    ("train-config-missing", ["train", "{B}/nope.yaml", "--out", "{C}/run"], "nope.yaml"),
    ("train-config-invalid", ["train", "{B}/bad.yaml", "--out", "{C}/run"], "bad.yaml"),
    ("train-resume-list-checkpoint", ["train", "{B}/tiny_train.yaml", "--out", "{B}/list_ckpt", "--resume",
                                      "--no-progress", "--device", "cpu"], "checkpoint"),
    ("train-steps-0", ["train", "{B}/tiny_train.yaml", "--out", "{C}/run", "--steps", "0"], "--steps"),
    ("train-device-banana", ["train", "{B}/tiny_train.yaml", "--device", "banana"], "invalid choice"),
    ("benchmark-frames-0", ["benchmark", "--frames", "0"], "--frames"),
    ("benchmark-threads-0", ["benchmark", "--threads", "0"], "--threads"),
    ("benchmark-json-dir", ["benchmark", "--json", "{B}/emptydir"], "is a folder"),
    ("benchmark-frame-size", ["benchmark", "--frame-size", "8"], "--frame-size"),
    ("export-out-is-file", ["export-onnx", "--out", "{B}/file.txt"], "not a folder"),
    ("export-out-not-empty", ["export-onnx", "--out", "{B}/exportdir"], "not empty"),
    ("export-size-33", ["export-onnx", "--out", "{C}/exp", "--size", "33"], "multiple of 32"),
    ("export-slots-1", ["export-onnx", "--out", "{C}/exp", "--slots", "1"], "--slots"),
    ("export-model-missing", ["export-onnx", "--out", "{C}/exp", "--model", "{B}/none.safetensors"],
     "none.safetensors"),
    ("demo-frames-1", ["demo", "--out", "{C}/demo", "--frames", "1"], "--frames"),
    ("demo-threads-0", ["demo", "--out", "{C}/demo", "--threads", "0"], "--threads"),
    ("models-unknown-preset", ["models", "--names", "no_such_preset_xyz", "--no-timing"], "no_such_preset_xyz"),
    ("models-steps-0", ["models", "--steps", "0"], ">= 1"),
    ("tables-table-9", ["tables", "--table", "9", "--out", "{C}/t"], "--table"),
    ("tables-scale-bogus", ["tables", "--table", "1", "--scale", "huge", "--out", "{C}/t"], "invalid choice"),
    ("serve-igtl-port", ["serve-igtl", "--port", "70000"], "--port"),
    ("serve-igtl-max-message", ["serve-igtl", "--max-message-mb", "0"], "--max-message-mb"),
    ("serve-igtl-buffer-below-message", ["serve-igtl", "--max-buffered-mb", "1"], "--max-buffered-mb"),
    ("serve-igtl-source-port", ["serve-igtl", "--source", "host:abc"], "not a number"),
    ("serve-igtl-device", ["serve-igtl", "--device", "banana"], "banana"),
    ("serve-igtl-stats-json-dir", ["serve-igtl", "--stats-json", "{B}/emptydir"], "is a folder"),
    ("serve-web-port", ["serve-web", "--port", "70000"], "--port"),
    ("serve-web-max-upload", ["serve-web", "--max-upload-mb", "0"], "--max-upload-mb"),
    ("serve-web-device", ["serve-web", "--device", "cuda:7"], "cuda:7"),
    ("serve-web-open-host", ["serve-web", "--host", "0.0.0.0"], "--allowed-host"),
]


def run_cli_case(argv, capfd, root: Path, needle: str):
    before = snapshot(root)
    try:
        rc = main(argv)
    except SystemExit as e:           # argparse usage errors
        rc = e.code
    out, err = capfd.readouterr()
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2, (argv, rc, err)
    assert len(lines) == 1, (argv, err)
    assert "Traceback" not in err
    assert needle in lines[0], (needle, lines[0])
    after = snapshot(root)
    assert after.keys() == before.keys(), sorted(set(after) ^ set(before))
    assert all(after[k] == before[k] for k in before), [k for k in before if after[k] != before[k]]
    return lines[0]


@pytest.mark.parametrize("name, spec, needle", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_cli_bad_input(name, spec, needle, base, case_dir, capfd):
    # the shared inputs live under base's parent with the case folder: snapshot both
    argv = _argv(spec, base, case_dir)
    run_cli_case(argv, capfd, case_dir, needle)
    assert not list(base.rglob(".*partial*"))


# ---- cases that need the file system or the machine to misbehave (mocked) ----
def test_out_inside_read_only_folder(base, case_dir, capfd, monkeypatch):
    ro = case_dir / "ro"
    ro.mkdir()
    if os.geteuid() != 0:
        ro.chmod(0o555)
    real_mkdir = Path.mkdir

    def mkdir(self, *a, **k):
        if str(self).startswith(str(ro)):
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_mkdir(self, *a, **k)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    try:
        line = run_cli_case(_argv(TRACK[:-1] + ["{C}/ro/out", "--auto"], base, case_dir), capfd, case_dir,
                            "cannot create the folder")
        assert "Permission denied" in line
    finally:
        ro.chmod(0o755)


def test_out_at_read_only_folder(base, case_dir, capfd, monkeypatch):
    prev = case_dir / "prev"
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **k: False if Path(p) == prev else real_access(p, mode, **k))
    run_cli_case(_argv(TRACK + ["--auto"], base, case_dir), capfd, case_dir, "not writable")


def test_disk_full_keeps_earlier_outputs(base, case_dir, capfd, monkeypatch):
    real = Path.write_bytes

    def write_bytes(self, data):
        if ".masks.partial-" in str(self):
            raise OSError(errno.ENOSPC, "No space left on device", str(self))
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", write_bytes)
    line = run_cli_case(_argv(TRACK + ["--auto"], base, case_dir), capfd, case_dir, "No space left on device")
    assert "earlier outputs were left as they were" in line


def test_disk_full_on_first_run_leaves_no_folder(base, case_dir, capfd, monkeypatch):
    real = Path.write_bytes

    def write_bytes(self, data):
        if ".masks.partial-" in str(self):
            raise OSError(errno.ENOSPC, "No space left on device", str(self))
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", write_bytes)
    run_cli_case(_argv(TRACK[:-1] + ["{C}/new/deeper", "--auto"], base, case_dir), capfd, case_dir, "No space")
    assert not (case_dir / "new").exists()


# ---------------------------------------------------------------------------------------------- serve-web
@pytest.fixture(scope="module")
def web_client():
    import fastapi  # noqa: F401 - a required dependency: a broken install fails here, it does not skip
    import httpx  # noqa: F401 - a required dependency: a broken install fails here, it does not skip
    import python_multipart  # noqa: F401 - a required dependency: a broken install fails here, it does not skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient
    from needletrack.models import build_model
    from needletrack.serve.web import WebConfig, create_app
    from needletrack.track import Tracker

    app = create_app(Tracker(build_model("stnan_tiny")), config=WebConfig(), model_label="tiny (test)")
    with TestClient(app, base_url="http://localhost") as c:
        yield c


def _zip(files: dict) -> bytes:
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for k, v in files.items():
            z.writestr(k, v)
    return buf.getvalue()


WEB_UPLOADS = [
    ("text-as-mp4", "notes.mp4", b"not a video\n" * 20),
    ("empty", "empty.mp4", b""),
    ("unknown-type", "notes.txt", b"hello"),
    ("dicom-300-zero-bytes", "junk.dcm", b"\0" * 300),
    ("mha-passwd", "scan.mha", b"ObjectType = Image\nNDims = 2\nDimSize = 16 1\nElementType = MET_UCHAR\n"
                               b"ElementDataFile = /etc/passwd\n"),
    ("zip-bomb-png", "frames.zip", None),
    ("zip-not-zip", "frames.zip", b"PK\x03\x04 but not really a zip"),
]


@pytest.mark.parametrize("name, fname, data", WEB_UPLOADS, ids=[c[0] for c in WEB_UPLOADS])
def test_web_bad_upload(name, fname, data, web_client):
    if data is None:
        data = _zip({"00000.png": png_claiming(100000, 100000), "00001.png": png_claiming(100000, 100000)})
    r = web_client.post("/api/jobs", files={"file": (fname, data, "application/octet-stream")})
    assert 400 <= r.status_code < 500, (r.status_code, r.text)
    detail = r.json().get("detail")
    assert isinstance(detail, str) and "\n" not in detail and "Traceback" not in detail and detail


def test_web_bad_requests(web_client):
    assert web_client.get("/api/jobs/" + "0" * 32).status_code == 404
    assert 400 <= web_client.get("/", headers={"Host": "attacker.example"}).status_code < 500
    r = web_client.post("/api/jobs", files={"file": ("x.mp4", b"x", "application/octet-stream")},
                        headers={"Origin": "http://attacker.example"})
    assert 400 <= r.status_code < 500


# ---------------------------------------------------------------------------------------------- serve-igtl
@pytest.fixture
def igtl():
    import pyigtl  # noqa: F401 - a required dependency: a broken install fails here, it does not skip
    from test_igtl_helpers import FakeTracker

    from needletrack.serve.igtl import IgtlConfig, IgtlService

    svc = IgtlService(FakeTracker(), IgtlConfig(host="127.0.0.1", port=0, log_interval_s=0, stall_timeout_s=0.5, auto_init=True,
                                                max_message_bytes=1 << 20, max_buffered_bytes=2 << 20)).start()
    yield svc
    svc.stop()


def _header(version=1, mtype=b"IMAGE", device=b"Image_Reference", body=0, crc=0) -> bytes:
    return struct.pack(">H12s20sIIQQ", version, mtype, device, 0, 0, body, crc)


IGTL_BAD = [
    ("header-version-9", _header(version=9)),
    ("header-body-over-cap", _header(body=60 << 20)),
    ("header-type-not-ascii", _header(mtype=b"\xff\xfeIMG")),
    ("header-device-control-chars", _header(device=b"dev\x01\x02")),
    ("header-type-empty", _header(mtype=b"")),
    ("stall-mid-body", _header(body=5000) + b"\0" * 100),
    ("http-request", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + b"\0" * 40),
]


@pytest.mark.parametrize("name, data", IGTL_BAD, ids=[c[0] for c in IGTL_BAD])
def test_igtl_bad_stream_drops_only_that_connection(name, data, igtl):
    from test_igtl_limits import closed_by_peer, connect, tracked_roundtrip
    from test_igtl_helpers import wait_until

    port = igtl.address[1]
    bystander = connect(port)
    bad = connect(port)
    try:
        assert wait_until(lambda: igtl.stats()["clients"] == 2)
        bad.sendall(data)
        assert closed_by_peer(bad, timeout=5.0)
        assert wait_until(lambda: igtl.stats()["clients"] == 1)
        assert not closed_by_peer(bystander, timeout=0.2)
        assert tracked_roundtrip(port)
        assert igtl.stats()["buffered_bytes"] == 0
    finally:
        bad.close()
        bystander.close()


def test_igtl_bad_crc_skips_the_message_only(igtl):
    import pyigtl

    from test_igtl_helpers import image_message, needle_frame, wait_until
    from test_igtl_limits import closed_by_peer, connect, read_messages

    from needletrack.serve.igtl_wire import encode_message

    port = igtl.address[1]
    s = connect(port)
    try:
        data = bytearray(encode_message(image_message(needle_frame(0), 1.0)))
        data[-1] ^= 0xFF                       # body changed, CRC not: this message is skipped
        s.sendall(bytes(data))
        assert wait_until(lambda: igtl.stats()["malformed"] == 1)
        assert not closed_by_peer(s, timeout=0.2)
        s.sendall(encode_message(image_message(needle_frame(1), 2.0)))
        assert read_messages(s, "NeedleMask") is not None
        assert pyigtl is not None
    finally:
        s.close()


def test_catalogue_has_at_least_60_kinds():
    n = len(CLI_CASES) + 4 + len(WEB_UPLOADS) + 3 + len(IGTL_BAD) + 1
    assert n >= 60, n
    assert len({c[0] for c in CLI_CASES}) == len(CLI_CASES)
    commands = {c[1][0] for c in CLI_CASES if c[1]}
    assert commands >= {"track", "evaluate", "validate", "simulate", "train", "benchmark", "export-onnx", "info",
                        "demo", "models", "tables", "serve-igtl", "serve-web"}
    _ = time  # noqa: F841
