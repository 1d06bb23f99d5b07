"""`needletrack tables`: row definitions, caching, Markdown/PNG output, and the whole path at the micro scale.

The end-to-end tests replace the simulator by a tiny stand-in (a bright line on noise) so they take seconds
and test this module's plumbing, not the simulator's realism.
"""
import json
import math
from pathlib import Path

import numpy as np
import pytest

import torch

from needletrack.eval import tables as T  # noqa: E402
from needletrack.train import table_rows as TR  # noqa: E402


# ------------------------------------------------------------------------------------------------ helpers
def _fake_simulate_sequence(n_frames, size, preset="clinical", seed=0, backgrounds=None, frame_step=1, **_):
    """A needle as a bright straight line on speckle-like noise, advancing a little every frame."""
    rng = np.random.default_rng(seed)
    frame_step = frame_step or 1
    h = w = size if isinstance(size, int) else size[0]
    y0 = rng.uniform(0.2, 0.4) * h
    slope = rng.uniform(0.2, 0.5)
    for t in range(n_frames):
        img = rng.gamma(2.0, 25.0, (h, w)).clip(0, 255)
        yy, xx = np.mgrid[0:h, 0:w]
        length = (0.4 + 0.03 * t * frame_step) * w
        on = (np.abs(yy - (y0 + slope * xx)) < 1.6) & (xx < length)
        img[on] = 230
        mask = on
        tip = [float(length), float(y0 + slope * length)]
        needle = {"visible": True, "in_plane": True, "visible_fraction": float(1.0 - 0.1 * (t % 3)),
                  "tip": tip, "tail": [0.0, float(y0)], "angle_deg": math.degrees(math.atan(slope)),
                  "entry_side": "left"}
        yield img.astype(np.uint8), mask, needle


@pytest.fixture
def fake_sim(monkeypatch):
    import needletrack.sim as sim

    monkeypatch.setattr(sim, "simulate_sequence", _fake_simulate_sequence, raising=False)
    monkeypatch.setattr(sim, "load_backgrounds", lambda d: None, raising=False)
    return _fake_simulate_sequence


@pytest.fixture(scope="module")
def micro():
    return T.load_scale("micro")


# ------------------------------------------------------------------------------------------------ rows
def test_rows_of_each_table(micro):
    labels = {n: [r.label for r in T.table_rows(n, micro)] for n in (1, 2, 3, 4)}
    assert labels[1] == ["(2,2,6,2)", "(2,2,10,2)", "(3,3,12,3)", "(3,3,16,3)"]
    assert labels[2] == ["5×5", "7×7", "9×9", "11×11"]
    assert labels[3] == ["STCN", "STCN+C&T", "STCN+C&T+FR"]
    assert labels[4] == ["PSPNet", "FCN32", "UNet", "SegNet", "VGG16+UNet", "ResNet50+FCN32", "STCN", "STNAN",
                         T.DETECTOR_LABEL, T.FLOW_LABEL]


def test_shared_rows_have_one_key(micro):
    """The paper's chosen STNAN is one model in all four tables; different rows have different keys."""
    t1 = {r.label: r.key for r in T.table_rows(1, micro)}
    t2 = {r.label: r.key for r in T.table_rows(2, micro)}
    t3 = {r.label: r.key for r in T.table_rows(3, micro)}
    t4 = {r.label: r.key for r in T.table_rows(4, micro)}
    assert t1["(3,3,16,3)"] == t2["9×9"] == t3["STCN+C&T+FR"] == t4["STNAN"]
    assert t3["STCN"] == t4["STCN"]
    for tab in (t1, t2, t3, t4):
        assert len(set(tab.values())) == len(tab)


def test_row_configs_vary_only_what_the_table_varies():
    quick = T.load_scale("quick")
    r1 = T.table_rows(1, quick)
    assert [r.model_cfg.encoder_depths for r in r1] == T.T1_DEPTHS
    assert {r.model_cfg.flow_window for r in r1} == {9}
    r2 = T.table_rows(2, quick)
    assert [r.model_cfg.flow_window for r in r2] == [5, 7, 9, 11]
    assert {r.model_cfg.encoder_depths for r in r2} == {(3, 3, 16, 3)}
    r3 = T.table_rows(3, quick)
    assert r3[0].model_cfg.key_encoder == "resnet50"
    assert r3[1].model_cfg.key_encoder == "cmt" and r3[1].model_cfg.flow_window is None
    assert r3[2].model_cfg.flow_window == 9
    for n in (1, 2, 3, 4):
        for r in T.table_rows(n, quick):
            if r.model_cfg is not None:
                assert r.model_cfg.input_size == 128
    full = T.table_rows(4, T.load_scale("full"))
    assert full[0].model_cfg.name == "pspnet" and full[0].model_cfg.input_size == 448


def test_key_changes_with_training_budget(micro):
    import copy

    other = copy.deepcopy(micro)
    other["train"]["steps"] += 1
    assert T.table_rows(4, micro)[0].key != T.table_rows(4, other)[0].key
    # the detector needs no training: its key does not depend on the budget
    assert T.table_rows(4, micro)[-1].key == T.table_rows(4, other)[-1].key


def test_scale_config_errors_name_the_file(tmp_path):
    from needletrack.errors import NeedletrackError

    bad = tmp_path / "bad.yaml"
    bad.write_text("input_size: 100\nmodels: {}\ntrain: {}\ntest: {sequences: 1, frames: 3, seed: 0}\n")
    with pytest.raises(NeedletrackError, match="bad.yaml.*multiple of 32"):
        T.load_scale(path=bad)
    with pytest.raises(NeedletrackError, match="unknown scale"):
        T.load_scale("huge")
    with pytest.raises(NeedletrackError, match="no such tables config"):
        T.load_scale(path=tmp_path / "missing.yaml")


def test_paper_yaml_has_every_row_and_invents_nothing():
    paper = T.load_paper()
    scale = T.load_scale("quick")
    for n in (1, 2, 3, 4):
        rows = paper["tables"][n]["rows"]
        for r in T.table_rows(n, scale):
            if r.kind == "model":
                assert r.label in rows, (n, r.label)
        # every figure of the paper's table (../shared/paper_tables.md): six per row, fractions and GPU fps
        for fig in rows.values():
            assert set(fig) == {"iou", "dice", "precision", "recall", "f1", "fps"}
            assert all(0 < fig[k] < 1 for k in ("iou", "dice", "precision", "recall", "f1")) and fig["fps"] > 1
    assert paper["tables"][4]["rows"]["STNAN"]["iou"] == 0.731 and paper["tables"][1]["rows"]["(2,2,6,2)"]["fps"] == 60.17
    assert paper["tables"][3]["rows"]["STCN+C&T+FR"] == paper["tables"][2]["rows"]["9×9"]   # one model, as printed
    assert paper["note"] == T.PAPER_NA       # what a null figure would say
    shared = Path(__file__).resolve().parents[2] / "shared" / "paper_tables.md"
    if shared.is_file():                     # the development copy of the paper's tables: every figure matches
        text = shared.read_text()
        for n in (1, 2, 3, 4):
            for fig in paper["tables"][n]["rows"].values():
                for k in ("iou", "dice", "precision", "recall", "f1"):
                    assert f"{fig[k]:.3f}" in text
                assert f"{fig['fps']:.2f}" in text


def test_published_tables_rerender_without_training(tmp_path):
    """scripts/render_tables.py reads our rows back from the published Markdown and adds the paper's columns."""
    import shutil
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    for f in ("table3_quick.md", "figure7_table3_quick.png"):
        shutil.copy(root / "docs" / f, tmp_path / f)
    before = (tmp_path / "table3_quick.md").read_text()
    r = subprocess.run([sys.executable, str(root / "scripts" / "render_tables.py"), "--tables", "3",
                        "--docs", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    md = (tmp_path / "table3_quick.md").read_text()
    assert md == before                                   # the committed table is what the script renders
    line = next(l for l in md.splitlines() if l.startswith("| STCN+C&T+FR |"))
    assert "0.731" in line and "35.57" in line and "0.863" in line
    assert "old fixed-seed test set" in md and (tmp_path / "table3_quick.png").stat().st_size > 1000


# ------------------------------------------------------------------------------------------------ hard frames
def test_pick_hard_frames_prefers_low_visibility_one_per_sequence():
    def seq(name, vis):
        masks = [np.ones((4, 4), bool) for _ in vis]
        masks[2] = np.zeros((4, 4), bool)  # an empty frame is never "hard"
        return {"name": name, "frames": [np.zeros((4, 4), np.uint8)] * len(vis), "masks": masks,
                "needle": [{"visible_fraction": v} for v in vis], "meta": {}}

    seqs = [seq("a", [0.1, 0.9, 0.05, 0.5]), seq("b", [0.0, 0.8, 0.3, 0.2])]
    hard = T.pick_hard_frames(seqs, 3)
    assert hard[0] == (1, 3) and hard[1] == (0, 3)   # lowest scored visibility of each sequence first
    assert (0, 0) not in hard and (1, 0) not in hard  # first frames are not scored
    assert all(fi != 2 for _, fi in hard)
    assert len(hard) == 3


# ------------------------------------------------------------------------------------------------ rendering
def _doc(paper_rows=None, best=None):
    def res(iou, fps):
        return {"iou": iou, "dice": 2 * iou / (1 + iou), "precision": 0.5, "recall": 0.6, "f1": 2 * iou / (1 + iou),
                "per_frame_iou": iou, "fps_cpu": fps, "ms_per_frame_mean": 1000 / fps, "tip_error_px": 3.0,
                "angle_error_deg": None}

    return {
        "table": 3, "title": T.TABLE_TITLES[3], "scale": "quick", "cpu": "test cpu", "threads": 2,
        "scale_config": {"input_size": 128, "train": {"steps": 300, "batch_size": 4, "clip": {"frames": 5}, "seed": 0}},
        "test_set": {"sequences": 6, "frames": 40, "presets": ["clinical", "hard"], "seed": 500000},
        "rows": [{"label": "STCN", "model": "stcn_fast", "result": res(0.30, 20.0), "note": ""},
                 {"label": "STCN+C&T", "model": "stcn_ct", "result": res(0.45, 30.0), "note": ""},
                 {"label": "STCN+C&T+FR", "model": "stnan", "result": res(0.40, 25.0), "note": ""}],
        "paper": {"best": best, "rows": paper_rows or {}}, "paper_note": T.PAPER_NA,
        "hard_frames": [{"sequence": "seq000", "frame": 3}],
    }


def test_markdown_without_paper_figures_says_so():
    md = T.render_markdown(_doc(best="STCN+C&T+FR"))
    assert md.startswith("# Table 3")
    assert "FPS (CPU)" in md and "measured on CPU" in md
    assert T.PAPER_NA in md
    line = next(l for l in md.splitlines() if l.startswith("| STCN+C&T |"))
    assert "**0.450**" in line and line.rstrip(" |").endswith("n/a")
    assert "Our ranking by IoU: STCN+C&T > STCN+C&T+FR > STCN." in md
    assert "our best is STCN+C&T: disagrees" in md
    assert "–" in md  # undefined angle error shown as a dash, not as 0


def test_markdown_with_paper_figures_prints_them():
    md = T.render_markdown(_doc({"STCN": {"iou": 0.612, "dice": 0.7, "f1": 0.7, "fps": 31.5}}, best="STCN"))
    line = next(l for l in md.splitlines() if l.startswith("| STCN |"))
    assert "0.612" in line and "31.5" in line
    assert "paper figure not available here** —" not in md


def test_bar_chart_and_figure7_are_written(tmp_path):
    from needletrack.eval.plots import figure7_panel, table_bars

    p = table_bars(_doc({"STCN": {"iou": 0.6}}), tmp_path / "t.png")
    assert p.stat().st_size > 1000
    seqs = [{"name": "s", "frames": [np.full((32, 32), 80, np.uint8)] * 3,
             "masks": [np.eye(32, dtype=bool)] * 3}]
    q = figure7_panel(seqs, [(0, 1), (0, 2)], [("A", {(0, 1): np.eye(32, dtype=bool)}), ("B", {})],
                      tmp_path / "f.png", title="x")
    import cv2

    img = cv2.imread(str(q))
    assert img is not None and img.shape[1] > img.shape[0]  # 4 columns, 2 rows: wider than tall
    assert not list(tmp_path.glob(".*partial*"))


# ------------------------------------------------------------------------------------------------ end to end
@pytest.mark.slow
def test_micro_tables_3_and_4_end_to_end_shared_and_cached(tmp_path, fake_sim, monkeypatch, capsys):
    """Table 3 through the CLI, then Table 4 at the micro scale: every row trains (2 steps), tracks the test
    set and is scored; Table 4 reuses Table 3's STCN and STNAN runs; a re-run trains and evaluates nothing."""
    from needletrack.cli import main

    out = tmp_path / "tables"
    docs = tmp_path / "docs"
    assert main(["tables", "--table", "3", "--scale", "micro", "--out", str(out), "--publish", str(docs)]) == 0
    assert len(list((out / "runs").iterdir())) == 3
    assert sorted(p.name for p in docs.iterdir()) == ["figure7_table3_micro.png", "table3_micro.md",
                                                      "table3_micro.png"]
    pub = (docs / "table3_micro.md").read_text()
    assert "(table3_micro.png)" in pub and "(figure7_table3_micro.png)" in pub
    t3 = json.loads((out / "table3.json").read_text())
    assert [r["label"] for r in t3["rows"]] == ["STCN", "STCN+C&T", "STCN+C&T+FR"]

    logs = []
    doc = T.run_table(4, "micro", out, log=logs.append)
    trained = [m for m in logs if m.startswith("training")]
    assert len(trained) == 6 and not any(m.startswith(("training STCN ", "training STNAN ")) for m in trained)
    assert any(m.startswith("training PSPNet") for m in trained)
    for name in ("table4.md", "table4.png", "figure7_table4.png", "table4.json"):
        assert (out / name).stat().st_size > 0
    saved = json.loads((out / "table4.json").read_text())
    assert [r["label"] for r in saved["rows"]][-2:] == [T.DETECTOR_LABEL, T.FLOW_LABEL]
    for r in saved["rows"]:
        res = r["result"]
        assert res["frames"] == 3  # 1 sequence × 4 frames, the first not scored
        assert 0.0 <= res["iou"] <= 1.0 and res["fps_cpu"] > 0
        if r["kind"] == "model":
            assert r["train"]["steps"] == 2
    # STNAN is literally the same result in both tables (one run, one evaluation)
    assert saved["rows"][7]["result"] == t3["rows"][2]["result"]
    # the detector finds the bright straight line of the stand-in sequences; flow carries the first mask
    assert saved["rows"][-2]["result"]["recall"] > 0.3
    assert saved["rows"][-1]["kind"] == "flow" and saved["rows"][-1]["result"]["params"] == 0
    md = (out / "table4.md").read_text()
    assert "| PSPNet |" in md and "| STNAN |" in md and "| Optical flow |" in md
    assert "Paper columns: the paper's own figures" in md

    # second run: everything cached
    def boom(*a, **k):
        raise AssertionError("should not train again")

    monkeypatch.setattr("needletrack.train.loop.train", boom)
    logs2 = []
    doc2 = T.run_table(4, "micro", out, log=logs2.append)
    assert not any(m.startswith(("training", "evaluating", "simulating")) for m in logs2), logs2
    assert [r["result"]["iou"] for r in doc2["rows"]] == [r["result"]["iou"] for r in doc["rows"]]


def test_cli_tables_bad_table_number(capsys):
    from needletrack.cli import main

    rc = main(["tables", "--table", "7", "--out", "/tmp/never_written_tables"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "--table must be 1, 2, 3, 4 or all" in err and "Traceback" not in err


def test_training_config_paths_resolve_against_the_repo(micro):
    quick = T.load_scale("quick")
    row = T.table_rows(4, quick)[2]
    tcfg = TR.resolve_paths(TR.train_config(quick, row.model_cfg))
    bg = tcfg["data"]["sources"][0]["backgrounds"]
    assert bg == str((TR.REPO_ROOT / "../shared/data/us_backgrounds").resolve())
    assert tcfg["model"]["name"] == "unet_quick" and tcfg["size"] == 128
    # the cache key hashes the config as written (relative), so it does not depend on the checkout's path
    assert row.key == T.table_rows(4, quick)[2].key
    assert TR.resolve_paths({"val": {"backgrounds": None}})["val"]["backgrounds"] is None


def test_flow_row_needs_no_training_and_follows_a_moving_line():
    """Table 4's optical-flow row: the first mask carried by Farneback flow, scored like every row."""
    rng = np.random.default_rng(0)
    import cv2

    tex = cv2.GaussianBlur(rng.uniform(0, 255, (120, 180)).astype(np.float32), (0, 0), 1.5)
    frames, masks = [], []
    for t in range(6):
        f = np.clip(tex[:, t:t + 160] * 0.7, 0, 255).astype(np.uint8)
        m = np.zeros((120, 160), bool)
        m[50:54, 20 - t:100 - t] = True
        f[m] = 240
        frames.append(f)
        masks.append(m)
    row = T.Row(T.FLOW_LABEL, "flow").finalise({})
    assert row.key.startswith("flow-")
    res, _ = T.evaluate_row(row, None, [{"name": "s", "frames": frames, "masks": masks, "meta": {}}], [], {})
    assert res["iou"] > 0.6 and res["frames"] == 5 and res["params"] == 0
