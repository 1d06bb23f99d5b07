"""`needletrack track` end to end on a 10-frame mp4 and on an image folder; bad input; interrupted runs."""
import csv
import json

import cv2
import numpy as np
import pytest

from needletrack.cli import main
from needletrack.geometry import line_mask
from needletrack.io.samples import sample_frames, write_mp4

H, W = 48, 64


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    from needletrack.models import build_model, save_model

    p = tmp_path_factory.mktemp("w") / "tiny.safetensors"
    save_model(build_model("stnan_tiny"), p)
    return p


@pytest.fixture(scope="module")
def first_mask(tmp_path_factory):
    # the sample clip's line: x = k, y = h//6 + k//2 for k < w//4
    m = line_mask((H, W), (0, H // 6), (W // 4 - 1, H // 6 + (W // 4 - 1) / 2), 2)
    p = tmp_path_factory.mktemp("m") / "first.png"
    cv2.imwrite(str(p), m.astype(np.uint8) * 255)
    return p


def _check_outputs(out, n, mask_names):
    names = sorted(p.name for p in (out / "masks").iterdir())
    assert names == sorted(mask_names)
    for nm in names[:3]:
        m = cv2.imread(str(out / "masks" / nm), cv2.IMREAD_UNCHANGED)
        assert m.shape == (H, W) and m.dtype == np.uint8 and set(np.unique(m)) <= {0, 255}
    rows = list(csv.reader((out / "needle.csv").open()))
    assert rows[0] == ["frame", "time_s", "visible", "score", "tip_x", "tip_y", "tail_x", "tail_y", "angle_deg",
                       "confirmed", "tip_x_mm", "tip_y_mm", "tail_x_mm", "tail_y_mm", "length_mm", "depth_mm"]
    assert [int(r[0]) for r in rows[1:]] == list(range(n))
    assert rows[1][2] == "1" and float(rows[1][4]) > float(rows[1][6])      # prompt frame: visible, tip right
    s = json.loads((out / "summary.json").read_text())
    assert s["frames"] == n and s["width"] == W and s["height"] == H
    assert s["outputs"] == {"needle_csv": "needle.csv", "masks": "masks/", "overlay": "overlay.mp4"}
    from needletrack.io import open_cine

    with open_cine(out / "overlay.mp4", rgb=True) as c:
        frames = [f for f, _ in c]
    from needletrack.track.overlay import band_height

    assert len(frames) == n and frames[0].shape[:2] == (H + band_height(H, W), W)   # the text band under the image
    assert (out / "plot.png").stat().st_size > 0
    assert not [p for p in out.iterdir() if p.name.startswith(".")]           # no partial files left
    return rows, s


def test_track_mp4_end_to_end(tmp_path, model_path, first_mask, capsys):
    video = write_mp4(tmp_path / "clip.mp4", n=10, h=H, w=W)
    out = tmp_path / "out"
    rc = main(["track", str(video), "--out", str(out), "--first-mask", str(first_mask), "--model", str(model_path),
               "--quiet"])
    assert rc == 0, capsys.readouterr().err
    rows, s = _check_outputs(out, 10, [f"{i:05d}.png" for i in range(10)])
    assert s["prompt"] == "mask" and s["fps"] == pytest.approx(25.0)
    assert float(rows[2][1]) == pytest.approx(0.04, abs=1e-3)                  # time_s from the video
    text = capsys.readouterr().out
    assert "tracked 10 frames" in text and "{" not in text                      # a human summary, not a dict
    assert "needle visible in" in text and "ms/frame" in text
    assert str(out / "needle.csv") in text and str(out / "plot.png") in text and "plays at 25 fps" in text


def test_track_image_folder_keeps_frame_names(tmp_path, model_path):
    folder = tmp_path / "cine"
    folder.mkdir()
    names = [f"us_{i}.png" for i in (1, 2, 3, 10, 11, 12)]          # natural order: 10 after 3
    for nm, f in zip(names, sample_frames(6, H, W)):
        cv2.imwrite(str(folder / nm), f)
    out = tmp_path / "out"
    rc = main(["track", str(folder), "--out", str(out), "--first-line", f"0,{H // 6},{W // 4 - 1},{H // 6 + 7}",
               "--model", str(model_path), "--engine", "torch", "--quiet"])
    assert rc == 0
    rows, s = _check_outputs(out, 6, names)
    assert s["prompt"] == "line" and s["engine"] == "torch"


def test_track_auto_on_a_clip_without_needle_reports_not_found(tmp_path, model_path, capsys):
    folder = tmp_path / "cine"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        cv2.imwrite(str(folder / f"{i}.png"), (60 + 20 * rng.random((H, W))).astype(np.uint8))
    out = tmp_path / "out"
    assert main(["track", str(folder), "--out", str(out), "--auto", "--model", str(model_path), "--quiet"]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["first_found_frame"] is None and s["visible_frames"] == 0
    assert "found no needle" in capsys.readouterr().err
    rows = list(csv.reader((out / "needle.csv").open()))
    assert all(r[2] == "0" for r in rows[1:])


@pytest.mark.parametrize("extra, message", [
    ([], "needs a prompt"),
    (["--first-line", "1,2,3"], "four numbers"),
    (["--first-line", "0,0,500,3"], "outside"),
    (["--first-mask", "MISSING.png"], "no such mask file"),
    (["--first-mask", "WRONG"], "mask is 10×10 px but the frames are 64×48 px"),
    (["--first-mask", "EMPTY"], "mask is empty"),
])
def test_track_bad_input_one_line_exit_2(tmp_path, model_path, capsys, extra, message):
    video = write_mp4(tmp_path / "clip.mp4", n=3, h=H, w=W)
    if "WRONG" in extra:
        cv2.imwrite(str(tmp_path / "wrong.png"), np.full((10, 10), 255, np.uint8))
        extra = ["--first-mask", str(tmp_path / "wrong.png")]
    if "EMPTY" in extra:
        cv2.imwrite(str(tmp_path / "empty.png"), np.zeros((H, W), np.uint8))
        extra = ["--first-mask", str(tmp_path / "empty.png")]
    rc = main(["track", str(video), "--out", str(tmp_path / "o"), "--model", str(model_path), "--quiet"] + extra)
    err = capsys.readouterr().err
    assert rc == 2
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "o" / "summary.json").exists()


def test_track_missing_input_and_model(tmp_path, model_path, capsys):
    assert main(["track", str(tmp_path / "nope.mp4"), "--out", str(tmp_path / "o"), "--auto",
                 "--model", str(model_path)]) == 2
    assert "no such file" in capsys.readouterr().err
    video = write_mp4(tmp_path / "clip.mp4", n=2, h=H, w=W)
    assert main(["track", str(video), "--out", str(tmp_path / "o"), "--auto", "--model",
                 str(tmp_path / "none.safetensors")]) == 2
    assert "not found" in capsys.readouterr().err


def test_interrupted_run_leaves_nothing_that_looks_complete(tmp_path, model_path, first_mask, monkeypatch):
    from needletrack.track import Tracker

    video = write_mp4(tmp_path / "clip.mp4", n=10, h=H, w=W)
    out = tmp_path / "out"
    real_step = Tracker.step

    def step(self, frame, **kw):
        if self.frame_index == 6:
            raise KeyboardInterrupt
        return real_step(self, frame, **kw)

    monkeypatch.setattr(Tracker, "step", step)
    rc = main(["track", str(video), "--out", str(out), "--first-mask", str(first_mask), "--model", str(model_path),
               "--quiet"])
    assert rc == 130
    assert not out.exists()          # nothing at all: no masks/, needle.csv, overlay.mp4, summary.json, partials,
                                     # and not the (empty) folder this first run created (issue 14 R6)


def test_needle_csv_in_mm_where_the_spacing_is_known(tmp_path, model_path, first_mask):
    """An image folder with meta.json pixel spacing: tip/tail, length and depth in mm, and the spacing and its
    source in summary.json; the first (prompt) row is checked against the px columns."""
    import json as _json

    from needletrack.cli import main

    src = tmp_path / "seq"                 # the data set folder layout: seq/frames/*.png + seq/meta.json
    (src / "frames").mkdir(parents=True)
    f0 = cv2.imread(str(first_mask), cv2.IMREAD_GRAYSCALE)
    for i in range(4):
        cv2.imwrite(str(src / "frames" / f"{i:05d}.png"), np.clip(f0.astype(int) // 2 + 40 + i, 0, 255).astype(np.uint8))
    (src / "meta.json").write_text(_json.dumps({"fps": 10, "pixel_spacing_mm": [0.2, 0.1]}))
    out = tmp_path / "out"
    assert main(["track", str(src), "--out", str(out), "--first-mask", str(first_mask), "--model", str(model_path),
                 "--no-overlay"]) == 0
    rows = list(csv.DictReader((out / "needle.csv").open()))
    r = rows[0]
    assert float(r["tip_x_mm"]) == pytest.approx(float(r["tip_x"]) * 0.1, abs=2e-3)
    assert float(r["tip_y_mm"]) == pytest.approx(float(r["tip_y"]) * 0.2, abs=2e-3)
    length = np.hypot((float(r["tip_x"]) - float(r["tail_x"])) * 0.1, (float(r["tip_y"]) - float(r["tail_y"])) * 0.2)
    assert float(r["length_mm"]) == pytest.approx(length, abs=2e-3) and r["depth_mm"] == r["tip_y_mm"]
    s = _json.loads((out / "summary.json").read_text())
    assert s["pixel_spacing_mm"] == [0.2, 0.1] and "meta.json" in s["pixel_spacing_source"]
    assert s["confirmed"] is True and s["auto_start_rule"] is None


def test_save_prob_writes_the_raw_maps_and_a_rerun_without_it_removes_them(tmp_path, model_path, first_mask):
    from needletrack.cli import main

    src = tmp_path / "seq"
    (src / "frames").mkdir(parents=True)
    f0 = cv2.imread(str(first_mask), cv2.IMREAD_GRAYSCALE)
    for i in range(3):
        cv2.imwrite(str(src / "frames" / f"{i:05d}.png"), np.clip(f0.astype(int) // 2 + 40 + i, 0, 255).astype(np.uint8))
    out = tmp_path / "out"
    args = ["track", str(src), "--out", str(out), "--first-mask", str(first_mask), "--model", str(model_path),
            "--no-overlay"]
    assert main(args + ["--save-prob"]) == 0
    probs = sorted((out / "prob").iterdir())
    assert [p.name for p in probs] == ["00000.png", "00001.png", "00002.png"]
    p1 = cv2.imread(str(probs[1]), cv2.IMREAD_UNCHANGED)
    m1 = cv2.imread(str(out / "masks" / "00001.png"), cv2.IMREAD_UNCHANGED)
    assert p1.dtype == np.uint8 and p1.shape == m1.shape and len(np.unique(p1)) > 2     # a map, not a mask
    assert not (out / "prob").is_symlink() and "prob" in __import__("json").loads((out / "summary.json").read_text())["outputs"]
    assert main(args) == 0
    assert not (out / "prob").exists()                                   # stale results do not survive
