"""Issue 14, reliability: the one mask rule everywhere (R4), a killed or re-run `track` (R2, R5), and what a
run leaves on disk (R6)."""
from __future__ import annotations

import json
import os
import signal
import stat
import warnings

import cv2
import numpy as np
import pytest

from needletrack.cli import main
from needletrack.errors import InputError, NeedletrackError, NeedletrackWarning
from needletrack.geometry import line_mask
from needletrack.io.masks import binarize_mask, mask_warning, read_mask
from needletrack.io.samples import write_mp4

H, W = 48, 64
LINE = line_mask((H, W), (0, H // 6), (W // 4 - 1, H // 6 + (W // 4 - 1) / 2), 2)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    from needletrack.models import build_model, save_model

    p = tmp_path_factory.mktemp("w") / "tiny.safetensors"
    save_model(build_model("stnan_tiny"), p)
    return p


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_mp4(tmp_path_factory.mktemp("clip") / "clip.mp4", n=4, h=H, w=W)


def mask_files(folder, m):
    """The same needle written five ways."""
    folder.mkdir(parents=True, exist_ok=True)
    red = np.zeros((*m.shape, 3), np.uint8)
    red[m, 2] = 255                                     # BGR on disk: pure red
    files = {
        "u8.png": m.astype(np.uint8) * 255,
        "zero_one.png": m.astype(np.uint8),
        "red.png": red,
        "u16.png": m.astype(np.uint16) * 65535,
        "float255.tif": m.astype(np.float32) * 255.0,
        "float01.tif": m.astype(np.float32),
    }
    for name, img in files.items():
        assert cv2.imwrite(str(folder / name), img)
    return [folder / n for n in files]


# ---------------------------------------------------------------------------------------------- R4
def test_one_mask_rule_for_every_encoding(tmp_path):
    for p in mask_files(tmp_path / "m", LINE):
        got = read_mask(p)
        assert got.dtype == bool and np.array_equal(got, LINE), p.name     # never all white, never empty
    # the array path (Tracker.step(mask=)) agrees with the file path
    assert np.array_equal(binarize_mask(LINE.astype(np.float64) * 255), LINE)
    assert np.array_equal(binarize_mask(LINE.astype(np.uint8)), LINE)
    nan = LINE.astype(np.float32)
    nan[0, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        binarize_mask(nan)
    cv2.imwrite(str(tmp_path / "nan.tif"), nan)
    with pytest.raises(InputError, match="nan.tif: mask holds NaN"):
        read_mask(tmp_path / "nan.tif")


def test_first_mask_in_every_encoding_gives_the_same_track(tmp_path, model_path, clip, capsys):
    from needletrack.track.cine_to_folder import read_first_mask

    for p in mask_files(tmp_path / "m", LINE):
        assert np.array_equal(read_first_mask(p, (H, W)), LINE), p.name
    # end to end with the 0/1 and the red mask: both are needles, and the results are the same
    outs = []
    for name in ("zero_one.png", "red.png", "float255.tif"):
        out = tmp_path / f"o_{name}"
        rc = main(["track", str(clip), "--out", str(out), "--first-mask", str(tmp_path / "m" / name),
                   "--model", str(model_path), "--quiet", "--no-overlay"])
        assert rc == 0, capsys.readouterr().err
        outs.append((out / "needle.csv").read_text())
    assert outs[0] == outs[1] == outs[2]


def test_tracker_mask_path_same_rule_and_unchanged_for_bool_and_u8():
    from needletrack.models import build_model
    from needletrack.track import Tracker

    tr = Tracker(build_model("stnan_tiny"))
    frame = np.full((H, W), 60, np.uint8)
    ref = tr.step(frame, mask=LINE).mask
    for m in (LINE.astype(np.uint8) * 255, LINE.astype(np.uint8), LINE.astype(np.float32) * 255,
              np.stack([LINE.astype(np.uint8) * 255, np.zeros((H, W), np.uint8), np.zeros((H, W), np.uint8)], 2)):
        tr.reset()
        assert np.array_equal(tr.step(frame, mask=m).mask, ref)
    tr.reset()
    bad = LINE.astype(np.float32)
    bad[1, 1] = np.nan
    with pytest.raises(NeedletrackError, match="NaN"):
        tr.step(frame, mask=bad)
    tr.reset()
    with pytest.warns(NeedletrackWarning, match="whole frame"):
        tr.step(frame, mask=np.ones((H, W), bool))


def test_whole_frame_and_noise_masks_are_accepted_with_a_one_line_warning(tmp_path, model_path, clip, capfd):
    assert mask_warning(LINE) is None
    assert "whole frame" in mask_warning(np.ones((H, W), bool))
    noise = np.random.default_rng(0).integers(0, 256, (H, W)).astype(np.uint8)
    assert mask_warning(binarize_mask(noise)) is not None
    sparse = np.random.default_rng(1).random((H, W)) < 0.05
    assert "pieces" in mask_warning(sparse)
    cv2.imwrite(str(tmp_path / "noise.png"), noise)
    rc = main(["track", str(clip), "--out", str(tmp_path / "o"), "--first-mask", str(tmp_path / "noise.png"),
               "--model", str(model_path), "--quiet", "--no-overlay"])
    err = capfd.readouterr().err
    assert rc == 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "warning: first mask" in lines[0], err


def test_validate_and_evaluate_read_masks_by_the_same_rule(tmp_path, capsys):
    from needletrack.data.validate import validate_dataset
    from needletrack.eval.metrics import evaluate_dirs

    m = np.zeros((20, 30), bool)
    m[5:8, 3:25] = True
    seq = tmp_path / "gt" / "s"
    (seq / "frames").mkdir(parents=True)
    (seq / "masks").mkdir()
    pred = tmp_path / "pred" / "s"
    pred.mkdir(parents=True)
    for i in range(3):
        cv2.imwrite(str(seq / "frames" / f"{i:05d}.png"), np.full((20, 30), 50, np.uint8))
        red = np.zeros((20, 30, 3), np.uint8)
        red[m, 2] = 255
        cv2.imwrite(str(seq / "masks" / f"{i:05d}.png"), red if i != 2 else m.astype(np.uint8))   # red; 0/1
        cv2.imwrite(str(pred / f"{i:05d}.png"), m.astype(np.uint8) * 255)
    problems = validate_dataset(tmp_path / "gt")
    assert all(p.level == "warning" for p in problems), [str(p) for p in problems]
    r = evaluate_dirs(tmp_path / "pred", tmp_path / "gt")
    assert r["overall"]["iou"] == pytest.approx(1.0)          # red and 0/1 masks are the needle, not empty
    nan = m.astype(np.float32)
    nan[0, 0] = np.nan
    cv2.imwrite(str(seq / "masks" / "00001.tif"), nan)
    (seq / "masks" / "00001.png").unlink()
    probs = validate_dataset(tmp_path / "gt")
    assert any(p.level == "error" and "NaN" in p.message for p in probs)


# ---------------------------------------------------------------------------------------------- R2, R5
def _dead_pid() -> int:
    from needletrack.utils import pid_alive

    pid = 4_000_000
    while pid_alive(pid):
        pid -= 1
    return pid


def test_stale_partials_of_dead_runs_are_removed_live_ones_kept(tmp_path, model_path, clip):
    out = tmp_path / "out"
    out.mkdir()
    dead = _dead_pid()
    (out / f".masks.partial-{dead}").mkdir()
    (out / f".masks.partial-{dead}" / "00000.png").write_bytes(b"x")
    (out / f".needle.{dead}-abc123.partial.csv").write_text("x")
    (out / f".overlay.{dead}-zz.partial.mp4").write_bytes(b"x")
    live = out / f".needle.{os.getppid()}-live.partial.csv"      # a running process's: not touched
    live.write_text("x")
    (out / "notes.txt").write_text("the user's own file")
    assert main(["track", str(clip), "--out", str(out), "--auto", "--model", str(model_path), "--quiet",
                 "--no-overlay"]) == 0
    hidden = sorted(p.name for p in out.iterdir() if p.name.startswith("."))
    assert hidden == [live.name]
    assert (out / "notes.txt").read_text() == "the user's own file"


def test_sigterm_during_track_cleans_up_and_exits_143(tmp_path, model_path, clip, monkeypatch, capsys):
    from needletrack.track import Tracker

    out = tmp_path / "out"
    out.mkdir()
    (out / "needle.csv").write_text("old\n")
    real_step = Tracker.step

    def step(self, frame, **kw):
        if self.frame_index == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return real_step(self, frame, **kw)

    monkeypatch.setattr(Tracker, "step", step)
    previous = signal.getsignal(signal.SIGTERM)
    rc = main(["track", str(clip), "--out", str(out), "--auto", "--model", str(model_path), "--quiet"])
    assert rc == 143
    assert "terminated" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["needle.csv"]       # no partial files, old output kept
    assert (out / "needle.csv").read_text() == "old\n"
    assert signal.getsignal(signal.SIGTERM) == previous                   # the handler is put back


def test_rerun_with_no_overlay_removes_the_old_overlay_only_after_success(tmp_path, model_path, clip, monkeypatch):
    out = tmp_path / "out"
    base = ["track", str(clip), "--out", str(out), "--auto", "--model", str(model_path), "--quiet"]
    assert main(base) == 0
    assert (out / "overlay.mp4").exists()
    # a failing re-run keeps it
    import needletrack.track.outputs as outputs

    real_close = outputs.TrackOutputs.close

    def failing_close(self, summary):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(outputs.TrackOutputs, "close", failing_close)
    assert main(base + ["--no-overlay"]) == 2
    assert (out / "overlay.mp4").exists()
    monkeypatch.setattr(outputs.TrackOutputs, "close", real_close)
    assert main(base + ["--no-overlay"]) == 0
    assert not (out / "overlay.mp4").exists()
    assert "overlay" not in json.loads((out / "summary.json").read_text())["outputs"]


# ---------------------------------------------------------------------------------------------- R6
def test_onnx_export_folder_has_normal_permissions(tmp_path):
    import onnx  # noqa: F401 - a required dependency: a broken install fails here, it does not skip
    from needletrack.models import build_model
    from needletrack.track.onnx_export import export_model

    umask = os.umask(0o022)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            export_model(build_model("stnan_tiny"), tmp_path / "exp", input_hw=64)
    finally:
        os.umask(umask)
    assert stat.S_IMODE((tmp_path / "exp").stat().st_mode) == 0o755
