"""Issue 19's output polish: validate --strict says "error:", evaluate blames the ground truth for an orphan
mask, the models table's encoder column, the overlay band and playback rate, the per-frame plot."""
from __future__ import annotations

import numpy as np
import pytest

from needletrack.cli import main


def _dataset(root, n=4, h=20, w=30, odd_mask=False):
    import cv2

    seq = root / "s1"
    (seq / "frames").mkdir(parents=True)
    (seq / "masks").mkdir()
    for i in range(n):
        cv2.imwrite(str(seq / "frames" / f"{i:05d}.png"), np.full((h, w), 40 + i, np.uint8))
        m = np.zeros((h, w), np.uint8)
        m[8:11, 4:20] = 255
        if odd_mask and i == 1:
            m[m == 255] = 200                       # readable, but not 0/255: a warning
        cv2.imwrite(str(seq / "masks" / f"{i:05d}.png"), m)
    return seq


def test_validate_strict_prints_counted_warnings_as_errors(tmp_path, capsys):
    root = tmp_path / "gt"
    _dataset(root, odd_mask=True)
    assert main(["validate", str(root)]) == 0
    out = capsys.readouterr().out
    assert "warning:" in out and "OK" in out
    assert main(["validate", "--strict", str(root)]) == 2
    out, err = capsys.readouterr()
    assert "warning:" not in out and "error:" in out and "00001.png" in out
    assert "1 error(s)" in err


def test_evaluate_blames_the_ground_truth_for_an_orphan_mask(tmp_path, capsys):
    import cv2

    seq = _dataset(tmp_path / "gt")
    cv2.imwrite(str(seq / "masks" / "00009.png"), np.zeros((20, 30), np.uint8))   # a mask with no frame
    pred = tmp_path / "pred" / "s1"
    pred.mkdir(parents=True)
    for i in range(4):
        cv2.imwrite(str(pred / f"{i:05d}.png"), np.zeros((20, 30), np.uint8))
    assert main(["evaluate", str(tmp_path / "pred"), str(tmp_path / "gt")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "00009.png" in err and "no frame" in err and "masks" in err and "prediction" not in err


def test_models_encoder_column_names_each_baselines_own_encoder():
    from needletrack.commands.models import encoder_label
    from needletrack.models import get_config

    assert encoder_label(get_config("stnan_tiny")) == "1-1-1-1"
    assert encoder_label(get_config("stcn_tiny")) == "resnet50"
    want = {"unet_tiny": "unet", "fcn32_tiny": "vgg16", "segnet_tiny": "vgg16", "vgg16_unet_tiny": "vgg16",
            "pspnet_tiny": "resnet50", "resnet50_fcn32_tiny": "resnet50"}
    for name, enc in want.items():
        assert encoder_label(get_config(name)) == enc, name


def test_models_shows_progress_per_model(capsys):
    assert main(["models", "--no-timing", "--names", "stnan_tiny,unet_tiny"]) == 0
    out, err = capsys.readouterr()
    assert "[1/2] stnan_tiny" in err and "[2/2] unet_tiny" in err
    lines = out.strip().splitlines()
    assert lines[0].split()[:2] == ["name", "encoder"]
    assert lines[2].split()[1] == "unet"                   # not "resnet"


def test_playback_rate_is_watchable():
    from needletrack.track.overlay import playback_fps

    assert playback_fps(3.0) == 10.0 and playback_fps(25.0) == 25.0 and playback_fps(None) == 25.0
    assert playback_fps(120.0) == 60.0 and playback_fps(float("nan")) == 25.0


def test_overlay_text_sits_in_a_band_outside_the_image():
    from types import SimpleNamespace

    from needletrack.track.overlay import BAND, band_height, draw_overlay

    h, w = 64, 256                                         # the legend needs about 230 px
    frame = np.full((h, w), 255, np.uint8)                 # a white frame: any drawn text would change it
    mask = np.zeros((h, w), bool)
    res = SimpleNamespace(mask=mask, tip=None, tail=None, path=None, frame_index=3, visible=False,
                          angle_deg=None, score=0.1)
    out = draw_overlay(frame, res)
    assert out.shape == (h + band_height(h, w), w, 3)
    assert (out[:h] == 255).all()                          # the image itself is untouched
    band = out[h:]
    assert (band != np.array(BAND, np.uint8)).any(axis=2).mean() > 0.02    # text and legend are drawn there
    colours = {tuple(c) for c in band.reshape(-1, 3)}
    from needletrack.track.overlay import PATH, SHAFT, TINT, TIP

    for c in (TINT, SHAFT, TIP, PATH):                     # the legend shows every colour
        assert tuple(c) in colours


def test_track_plot_png(tmp_path):
    from types import SimpleNamespace

    from needletrack.track.plot import rows_from_result, write_track_plot

    rows = []
    for i in range(8):
        vis = i not in (4, 5)
        rows.append(rows_from_result(SimpleNamespace(frame_index=i, visible=vis, score=0.9 if vis else 0.1,
                                                     tip=(10.0 + i, 20.0 + i), angle_deg=30.0 + i)))
    assert np.isnan(rows[4][3]) and rows[0][3] == pytest.approx(10.0)
    p = write_track_plot(rows, tmp_path / "plot.png", title="t")
    import cv2

    img = cv2.imread(str(p))
    assert img is not None and img.shape[0] > 300 and img.shape[1] > 500
