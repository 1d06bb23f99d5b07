"""The CLI on good and bad input: info, validate, evaluate. Bad input -> exit 2, one line, no traceback."""
import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from needletrack.cli import main
from needletrack.io import samples as S


@pytest.fixture(scope="module")
def d(tmp_path_factory):
    return tmp_path_factory.mktemp("cli")


def run_cli(capsys, *argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_info_json_on_scanner_style_dicom_mp4_and_png16(d, capsys):
    dcm = S.write_dicom(d / "scan.dcm", "ybr_jpeg", n=7, frame_time_ms=33.3, spacing_cm=(0.0125, 0.0125))
    rc, out, _ = run_cli(capsys, "info", dcm, "--json")
    info = json.loads(out)
    assert rc == 0
    assert {"frames", "width", "height", "fps", "pixel_spacing_mm", "format", "duration"} <= set(info)
    assert (info["frames"], info["width"], info["height"], info["format"]) == (7, 64, 48, "dicom")
    assert info["fps"] == pytest.approx(1000 / 33.3, rel=1e-4)
    assert info["pixel_spacing_mm"] == pytest.approx([0.125, 0.125])
    assert info["duration"] == pytest.approx(7 * 0.0333, rel=1e-3)

    rc, out, _ = run_cli(capsys, "info", S.write_mp4(d / "v.mp4", n=10, fps=30), "--json")
    info = json.loads(out)
    assert rc == 0 and info["frames"] == 10 and info["fps"] == pytest.approx(30)
    assert info["pixel_spacing_mm"] is None and info["duration"] == pytest.approx(10 / 30, abs=1e-3)

    rc, out, _ = run_cli(capsys, "info", S.write_png16_folder(d / "png16"), "--json")
    info = json.loads(out)
    assert (info["frames"], info["width"], info["height"], info["fps"], info["format"]) == (5, 56, 40, None, "folder")
    assert any("16-bit" in n for n in info["notes"])

    rc, out, _ = run_cli(capsys, "info", dcm)
    assert rc == 0 and "0.1250 x 0.1250 mm" in out and "frames          7" in out


def _garble(src, dst, start_frac=0.3, keep=None):
    data = bytearray(src.read_bytes())
    if keep is not None:
        data = data[:keep]
    for i in range(int(len(data) * start_frac), len(data), 2):
        data[i] = (data[i] * 7 + 13) % 256
    dst.write_bytes(bytes(data))
    return dst


def _seq_root(root, n=4, h=20, w=30, name="s1"):
    from needletrack.data.folder import SequenceWriter

    with SequenceWriter(root, name, {"fps": 10}) as sw:
        for i in range(n):
            m = np.zeros((h, w), bool)
            m[8:10, 2:12 + i] = True
            sw.add(np.full((h, w), 80, np.uint8), m)
    return root


def _bad_cases(d):
    import pydicom

    mp4 = S.write_mp4(d / "ok.mp4", n=20, h=64, w=96)
    ybr = S.write_dicom(d / "ok_ybr.dcm", "ybr_jpeg")
    (d / "text.mp4").write_text("this is not a video\n")
    (d / "notes.xyz").write_text("?")
    ds = pydicom.dcmread(S.write_dicom(d / "tmp.dcm", "rgb"))
    del ds.PixelData
    ds.save_as(d / "nopix.dcm")
    (d / "empty").mkdir(exist_ok=True)
    mixed = d / "mixed"
    mixed.mkdir(exist_ok=True)
    cv2.imwrite(str(mixed / "a1.png"), np.zeros((20, 30), np.uint8))
    cv2.imwrite(str(mixed / "a2.png"), np.zeros((21, 30), np.uint8))
    # data set with a mask whose size differs from its frame
    gt_bad = _seq_root(d / "gt_bad")
    cv2.imwrite(str(gt_bad / "s1" / "masks" / "00002.png"), np.zeros((5, 5), np.uint8))
    # predictions: one missing a frame, one of the wrong size
    gt = _seq_root(d / "gt")
    pred_missing = d / "pred_missing" / "s1"
    pred_missing.mkdir(parents=True, exist_ok=True)
    for i in (0, 1, 3):
        cv2.imwrite(str(pred_missing / f"{i:05d}.png"), np.zeros((20, 30), np.uint8))
    pred_size = d / "pred_size" / "s1" / "masks"
    pred_size.mkdir(parents=True, exist_ok=True)
    for i in range(4):
        cv2.imwrite(str(pred_size / f"{i:05d}.png"), np.zeros((20, 31), np.uint8))
    return [
        (["info", d / "missing.mp4"], "missing.mp4", "no such file"),
        (["info", d / "notes.xyz"], "notes.xyz", "unknown input format"),
        (["info", d / "text.mp4"], "text.mp4", "not a readable video"),
        (["info", _garble(mp4, d / "trunc.mp4", 0.99, keep=3000)], "trunc.mp4", "video"),
        (["info", "--check", _garble(mp4, d / "corrupt.mp4", 0.02)], "corrupt.mp4", "video"),
        (["info", _garble(ybr, d / "trunc.dcm", 1.0, keep=ybr.stat().st_size - 700)], "trunc.dcm", "truncated DICOM"),
        (["info", "--check", _garble(ybr, d / "corrupt.dcm", 0.6)], "corrupt.dcm", "DICOM"),
        (["info", d / "nopix.dcm"], "nopix.dcm", "no pixel data"),
        (["info", d / "empty"], "empty", "holds no images"),
        (["info", mixed], "a2.png", "frame size 30x21 differs"),
        (["validate", gt_bad], "gt_bad", "error(s)"),
        (["evaluate", d / "pred_missing", gt], "pred_missing", "missing frames 00002"),
        (["evaluate", d / "pred_size", gt], "00001.png", "mask size 31x20 differs from the ground truth 30x20"),
        (["evaluate", d / "nowhere", gt], "nowhere", "no such folder"),
        (["evaluate", d / "pred_size", d / "empty"], "empty", "no sequence folders"),
    ]


def test_bad_inputs_exit_2_one_line(d, capsys):
    for argv, name, words in _bad_cases(d):
        rc, out, err = run_cli(capsys, *argv)
        lines = err.strip().splitlines()
        assert rc == 2, (argv, err)
        assert len(lines) == 1 and "Traceback" not in err, (argv, err)
        assert name in lines[0] and words in lines[0], (argv, lines[0])


def test_bad_input_in_a_real_process(d):
    """The installed entry point, in its own process: no warnings or tracebacks leak to stderr."""
    _bad_cases(d)
    for args in (["info", str(d / "trunc.dcm")], ["info", str(d / "text.mp4")], ["info", str(d / "empty")]):
        p = subprocess.run([sys.executable, "-m", "needletrack", *args], capture_output=True, text=True, timeout=60)
        assert p.returncode == 2, p.stderr
        assert len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr, p.stderr


def test_validate_reports_files(d, capsys):
    rc, out, err = run_cli(capsys, "validate", d / "gt_bad")
    assert rc == 2
    assert "masks/00002.png: mask size 5x5 differs from its frame's 30x20" in out
    rc, out, _ = run_cli(capsys, "validate", _seq_root(d / "gt_ok"))
    assert rc == 0 and "OK (1 sequence(s), 4 frames" in out


def test_evaluate_cli_json_and_table(d, capsys, tmp_path):
    gt = _seq_root(tmp_path / "gt")
    pred = tmp_path / "pred" / "s1" / "masks"
    pred.mkdir(parents=True)
    # predict frame k as the GT of frame k-1: known overlap
    gts = []
    for i in range(4):
        m = np.zeros((20, 30), np.uint8)
        m[8:10, 2:12 + i] = 255
        gts.append(m > 0)
        prev = gts[max(i - 1, 0)]
        cv2.imwrite(str(pred / f"{i:05d}.png"), prev.astype(np.uint8) * 255)
    out_json = tmp_path / "res" / "eval.json"
    rc, out, _ = run_cli(capsys, "evaluate", tmp_path / "pred", gt, "--json", out_json)
    assert rc == 0 and "OVERALL" in out and "s1" in out
    res = json.loads(out_json.read_text())
    tp = sum(2 * (10 + i - 1) for i in range(1, 4))
    fn = 3 * 2
    assert res["overall"]["iou"] == pytest.approx(tp / (tp + fn))
    assert res["overall"]["precision"] == 1.0 and res["overall"]["frames"] == 3
    assert res["sequences"]["s1"]["recall"] == pytest.approx(tp / (tp + fn))
    assert res["overall"]["tip_error_px"] == pytest.approx(1.0, abs=0.05)
    assert res["overall"]["tip_error_mm"] is None  # no pixel spacing in meta.json
    assert res["overall"]["angle_error_deg"] == pytest.approx(0.0, abs=1e-6)
    # single-sequence GT root with a flat PRED_DIR
    rc, out, _ = run_cli(capsys, "evaluate", pred, gt / "s1", "--json", tmp_path / "flat.json")
    assert rc == 0 and json.loads((tmp_path / "flat.json").read_text())["overall"] == res["overall"]
