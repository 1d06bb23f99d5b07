"""The paper's four tables, reproduced by one command: ``needletrack tables --table N --scale S --out DIR``.

| table | what varies                                   | rows                                                     |
|-------|-----------------------------------------------|----------------------------------------------------------|
| 1     | C&T encoder depths (flow window 9)            | (2,2,6,2), (2,2,10,2), (3,3,12,3), (3,3,16,3)            |
| 2     | flow search window (depths (3,3,16,3))        | 5×5, 7×7, 9×9, 11×11                                     |
| 3     | modules                                       | STCN, STCN+C&T, STCN+C&T+FR (= STNAN)                    |
| 4     | methods                                       | six per-frame baselines, STCN, STNAN, training-free detector |

Protocol (the same for every row of every table at a scale, set by ``configs/tables/<scale>.yaml``):

1. **Train** each row's model with ``needletrack.train.train`` on the same simulated clip stream (same seed,
   so every row sees the same clips) for the same number of steps. Per-frame baselines go through the
   same loop in single-frame mode. Runs live in ``DIR/runs/<row key>/`` and are reused: the key is a hash
   of the model config and the training config, so a row shared by two tables (Table 1's (3,3,16,3) =
   Table 2's 9×9 = Table 3's STCN+C&T+FR = Table 4's STNAN) is trained once. An interrupted run resumes.
2. **Evaluate** by tracking a fixed-seed simulated test set (``DIR/data/test``, written once) with
   ``needletrack.track.Tracker``: the first frame's ground-truth mask is given and never scored; every
   later frame is predicted and scored with ``needletrack.eval.metrics`` (pooled IoU, Dice, Precision,
   Recall, F1, per-frame IoU, tip and angle error). FPS is 1 / the median time of a whole ``Tracker.step``
   on this machine's CPU with ``threads`` torch threads — a CPU figure, not the paper's GPU figure. The
   training-free detector (``needletrack.track.autoinit.detect_needle``) runs on every frame alone.
   Results are cached in ``DIR/results/<row key>.json``.
3. **Write** ``DIR/tableN.md`` (ours beside the paper's figures), ``DIR/tableN.png`` (our bars, the paper's
   figures as markers) and ``DIR/figure7_tableN.png`` (the same hard frames: image, ground truth and
   every row's mask), plus ``DIR/tableN.json`` with everything.

The paper's figures are read from ``configs/tables/paper.yaml`` (filled from the paper's Tables 1-4); where
a figure is null the table says "paper figure not available here" instead of inventing one.
``scripts/render_tables.py`` re-renders published tables from their Markdown without training.

The pieces: the rows' training is ``needletrack.train.table_rows`` (train config, cache, resume); the test set
and its hard frames ``table_testset``; the Markdown and the copy into docs/ ``table_markdown``. This module
defines the tables and their rows, evaluates each row and writes a table (``run_table``); the names of the
pieces stay importable from here.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from needletrack.eval.peers import FlowPropagator
from needletrack.eval.table_markdown import PAPER_NA, publish_table, render_markdown
from needletrack.eval.table_testset import ensure_test_set, load_test_set, pick_hard_frames
from needletrack.errors import InputError, NeedletrackError
from needletrack.resources import data_path
from needletrack.train.table_rows import ensure_trained, train_config, train_summary
from needletrack.utils import atomic_path, write_json_atomic, write_text_atomic

CONFIG_DIR = data_path("configs", "tables")
SCALES = ("micro", "quick", "full")
TABLE_TITLES = {
    1: "Table 1 — depth of the C&T encoder's blocks (flow window 9×9)",
    2: "Table 2 — size of the flow search window (encoder depths (3,3,16,3))",
    3: "Table 3 — module ablation: STCN, + C&T encoder, + flow regression (FR)",
    4: "Table 4 — STNAN against per-frame segmenters, STCN and a training-free detector",
}
T1_DEPTHS = [(2, 2, 6, 2), (2, 2, 10, 2), (3, 3, 12, 3), (3, 3, 16, 3)]
T2_WINDOWS = [5, 7, 9, 11]
CHOSEN_DEPTHS = (3, 3, 16, 3)
CHOSEN_WINDOW = 9
DETECTOR_LABEL = "Detector (training-free)"
FLOW_LABEL = "Optical flow"
EVAL_VERSION = 4  # 3: the harness's frozen test sets; 4: tracker v2 (segment policy) and the optical-flow row; bump when evaluate_row changes what it measures (invalidates cached results)


# ----------------------------------------------------------------------------------------------- config
def load_scale(scale: str | None = None, path: str | os.PathLike | None = None) -> dict:
    """The scale config (``configs/tables/<scale>.yaml`` or an explicit file)."""
    import yaml

    if path is None:
        if scale not in SCALES:
            raise NeedletrackError(f"unknown scale {scale!r} (choose {', '.join(SCALES)})")
        path = CONFIG_DIR / f"{scale}.yaml"
    p = Path(path)
    if not p.is_file():
        raise InputError("no such tables config (configs/tables/<scale>.yaml is looked up in the repository)", p)
    try:
        cfg = yaml.safe_load(p.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise InputError(f"cannot read YAML ({str(e).splitlines()[0]})", p) from None
    if not isinstance(cfg, dict):
        raise InputError("tables config must be a YAML mapping", p)
    for k in ("input_size", "models", "train", "test"):
        if k not in cfg:
            raise InputError(f"tables config lacks '{k}'", p)
    size = cfg["input_size"]
    if not isinstance(size, int) or size <= 0 or size % 32:
        raise InputError(f"input_size must be a positive multiple of 32, got {size!r}", p)
    t = cfg["test"]
    for k in ("sequences", "frames", "seed"):
        if not isinstance(t.get(k), int) or t[k] < (2 if k == "frames" else 0 if k == "seed" else 1):
            raise InputError(f"test.{k} must be an integer (frames >= 2, sequences >= 1)", p)
    cfg.setdefault("scale", scale or p.stem)
    cfg.setdefault("threads", 2)
    cfg.setdefault("hard_frames", 4)
    cfg["_path"] = str(p)
    return cfg


def load_paper(path: str | os.PathLike | None = None) -> dict:
    """The paper's figures (``configs/tables/paper.yaml``); missing file = no figures."""
    import yaml

    p = Path(path) if path is not None else CONFIG_DIR / "paper.yaml"
    if not p.is_file():
        return {"note": PAPER_NA, "tables": {}}
    try:
        d = yaml.safe_load(p.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise InputError(f"cannot read YAML ({str(e).splitlines()[0]})", p) from None
    d.setdefault("note", PAPER_NA)
    d["tables"] = {int(k): v for k, v in (d.get("tables") or {}).items()}
    return d


# ----------------------------------------------------------------------------------------------- rows
@dataclass
class Row:
    label: str                  # as printed (and as keyed in paper.yaml)
    kind: str                   # "model" | "detector" | "flow"
    model_cfg: object = None    # ModelConfig for kind == "model"
    key: str = ""               # cache key (set by finalise)
    note: str = ""

    def finalise(self, train_cfg: dict) -> "Row":
        if self.kind == "detector":
            self.key = "detector-" + _hash({"detector": "autoinit.detect_needle"})
        elif self.kind == "flow":
            self.key = "flow-" + _hash({"flow": "eval.peers.FlowPropagator", "params": FlowPropagator().params})
        else:
            d = self.model_cfg.to_dict()
            d.pop("name", None)
            d.pop("description", None)
            self.key = f"{self.model_cfg.name}-{_hash({'model': d, 'train': train_cfg})}"
        return self


def _hash(obj) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:10]


def _dname(depths) -> str:
    return "d" + "-".join(str(d) for d in depths)


def row_config(scale_cfg: dict, preset: str):
    """A row's ModelConfig at a scale: the paper row's preset name (``stnan_d3-3-16-3_w9``, ``stcn``, ``unet``,
    ...) plus the scale's suffix (``_quick``: the models' CPU-scale version of that row; baselines may use
    their own suffix), at the scale's input size."""
    from needletrack.models import get_config
    from needletrack.models.baselines import BASELINE_ARCHS

    m = scale_cfg.get("models") or {}
    suffix = m.get("suffix", "") or ""
    if preset in BASELINE_ARCHS:
        suffix = m.get("baseline_suffix", suffix) or ""
    return get_config(preset + suffix).replace(input_size=int(scale_cfg["input_size"])).check()


def table_rows(table: int, scale_cfg: dict) -> list[Row]:
    """The rows of ``table`` at a scale, with their cache keys."""
    from needletrack.models.baselines import BASELINE_ARCHS, DISPLAY_NAMES

    chosen = f"stnan_{_dname(CHOSEN_DEPTHS)}_w{CHOSEN_WINDOW}"  # = the paper's STNAN (preset "stnan")
    if table == 1:
        rows = [Row("(" + ",".join(map(str, d)) + ")", "model",
                    row_config(scale_cfg, f"stnan_{_dname(d)}_w{CHOSEN_WINDOW}")) for d in T1_DEPTHS]
    elif table == 2:
        rows = [Row(f"{w}×{w}", "model", row_config(scale_cfg, f"stnan_{_dname(CHOSEN_DEPTHS)}_w{w}"))
                for w in T2_WINDOWS]
    elif table == 3:
        rows = [Row("STCN", "model", row_config(scale_cfg, "stcn")),
                Row("STCN+C&T", "model", row_config(scale_cfg, "stcn_ct")),
                Row("STCN+C&T+FR", "model", row_config(scale_cfg, chosen))]
    elif table == 4:
        rows = [Row(DISPLAY_NAMES[a], "model", row_config(scale_cfg, a)) for a in BASELINE_ARCHS]
        rows += [Row("STCN", "model", row_config(scale_cfg, "stcn")),
                 Row("STNAN", "model", row_config(scale_cfg, chosen)),
                 Row(DETECTOR_LABEL, "detector", note="no training; each frame alone, no first-frame mask"),
                 Row(FLOW_LABEL, "flow", note="no training; the first mask carried forward by Farneback optical flow")]
    else:
        raise NeedletrackError(f"--table must be 1, 2, 3 or 4, got {table}")
    tcfg = train_config(scale_cfg, None)
    for r in rows:
        r.finalise(tcfg)
    return rows


# ----------------------------------------------------------------------------------------------- test set
# ----------------------------------------------------------------------------------------------- evaluate
def evaluate_row(row: Row, weights: Path | None, seqs: list[dict], hard: list[tuple[int, int]],
                 scale_cfg: dict) -> tuple[dict, dict]:
    """Track (or detect) every test sequence; returns (result dict, {(si, fi): predicted mask})."""
    from needletrack.eval.metrics import MetricAccumulator
    from needletrack.io.spacing import parse_spacing

    hard_set = set(hard)
    hard_masks: dict = {}
    overall = MetricAccumulator()
    per_seq = {}
    step_times: list[float] = []
    model = None
    load_before = _loadavg()
    if row.kind == "model":
        from needletrack.models import load_model

        model = load_model(weights, device="cpu")
    for si, s in enumerate(seqs):
        meta = s["meta"]
        acc = MetricAccumulator(pixel_spacing_mm=parse_spacing(meta.get("pixel_spacing_mm")),
                                entry_side=meta.get("entry_side"))
        if row.kind == "flow":
            prop = FlowPropagator()
            prop.step(s["frames"][0], s["masks"][0])
            for fi in range(1, len(s["frames"])):
                t0 = time.perf_counter()
                pred = prop.step(s["frames"][fi])
                step_times.append(time.perf_counter() - t0)
                acc.update(pred, s["masks"][fi])
                if (si, fi) in hard_set:
                    hard_masks[(si, fi)] = pred
        elif row.kind == "detector":
            from needletrack.track.autoinit import detect_needle

            for fi in range(1, len(s["frames"])):
                t0 = time.perf_counter()
                m = detect_needle(s["frames"][fi])
                step_times.append(time.perf_counter() - t0)
                pred = np.zeros_like(s["masks"][fi]) if m is None else np.asarray(m, bool)
                acc.update(pred, s["masks"][fi])
                if (si, fi) in hard_set:
                    hard_masks[(si, fi)] = pred
        else:
            from needletrack.track import Tracker

            tracker = Tracker(model, input_size=int(scale_cfg["input_size"]))
            tracker.step(s["frames"][0], mask=s["masks"][0])
            for fi in range(1, len(s["frames"])):
                t0 = time.perf_counter()
                r = tracker.step(s["frames"][fi])
                step_times.append(time.perf_counter() - t0)
                pred = np.asarray(r.mask, bool)
                acc.update(pred, s["masks"][fi])
                if (si, fi) in hard_set:
                    hard_masks[(si, fi)] = pred
        per_seq[s["name"]] = acc.result()
        overall.merge(acc)
    res = overall.result()
    med = float(np.median(step_times)) if step_times else float("nan")
    mean = float(np.mean(step_times)) if step_times else float("nan")
    res.update({
        # FPS from the median frame time: robust to other processes' bursts on a shared machine
        "fps_cpu": (1.0 / med) if med > 0 else None,
        "ms_per_frame_mean": mean * 1e3, "ms_per_frame_median": med * 1e3,
        "timed_frames": len(step_times),
        "load_avg_1min": [load_before, _loadavg()], "cpu_count": os.cpu_count(),
        "params": int(sum(p.numel() for p in model.parameters())) if model is not None else 0,
        "sequences": per_seq,
    })
    return res, hard_masks


def ensure_evaluated(row: Row, scale_cfg: dict, out_dir: Path, seqs, hard, test_spec: dict,
                     log: Callable[[str], None], weights: Path | None) -> tuple[dict, dict]:
    res_path = out_dir / "results" / f"{row.key}.json"
    mask_path = out_dir / "results" / f"{row.key}.hard.npz"
    want = {"eval_version": EVAL_VERSION, "test": test_spec, "hard": [list(h) for h in hard],
            "weights_mtime": os.path.getmtime(weights) if weights else None}
    if res_path.exists() and mask_path.exists():
        try:
            cached = json.loads(res_path.read_text())
            if cached.get("spec") == json.loads(json.dumps(want)):
                with np.load(mask_path) as z:
                    masks = {tuple(int(v) for v in k.split("_")): z[k].astype(bool) for k in z.files}
                return cached["result"], masks
        except (ValueError, OSError, KeyError):
            pass
    log(f"evaluating {row.label} on the test set")
    res, masks = evaluate_row(row, weights, seqs, hard, scale_cfg)
    write_json_atomic(res_path, {"row": row.label, "key": row.key, "spec": want, "result": res})
    with atomic_path(mask_path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **{f"{si}_{fi}": m for (si, fi), m in masks.items()})
    return res, masks


# ----------------------------------------------------------------------------------------------- run
def run_table(table: int, scale: str = "quick", out_dir: str | os.PathLike = "tables_out", *,
              config: str | os.PathLike | None = None, paper: str | os.PathLike | None = None,
              publish: str | os.PathLike | None = None, steps: int | None = None,
              log: Callable[[str], None] | None = None) -> dict:
    """Train/load, evaluate and write one table. Returns the table's JSON (also in DIR/tableN.json).
    ``steps`` overrides the scale's training steps per row (a different budget: rows are trained anew)."""
    import torch

    log = log or (lambda m: print(f"needletrack tables: {m}", flush=True))
    scale_cfg = load_scale(scale if config is None else None, config)
    if steps is not None:
        if not isinstance(steps, int) or steps < 1:
            raise NeedletrackError(f"--steps must be a positive integer, got {steps!r}")
        scale_cfg["train"]["steps"] = steps
    paper_cfg = load_paper(paper)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError("output path exists and is not a folder", out)
    out.mkdir(parents=True, exist_ok=True)
    threads = int(scale_cfg.get("threads") or 1)
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        rows = table_rows(int(table), scale_cfg)
        test_root = ensure_test_set(out, scale_cfg, log)
        test_spec = json.loads((test_root / "spec.json").read_text())
        seqs = load_test_set(test_root)
        hard = pick_hard_frames(seqs, int(scale_cfg["hard_frames"]))
        results, hard_masks, train_info = {}, {}, {}
        t_all = time.time()
        for row in rows:
            weights = None
            if row.kind == "model":
                weights = ensure_trained(row, scale_cfg, out, log)
                train_info[row.label] = train_summary(weights.parent)
            res, masks = ensure_evaluated(row, scale_cfg, out, seqs, hard, test_spec, log, weights)
            results[row.label] = res
            hard_masks[row.label] = masks
    finally:
        torch.set_num_threads(old_threads)
    doc = {
        "table": int(table), "title": TABLE_TITLES[int(table)], "scale": scale_cfg["scale"],
        "scale_config": {k: v for k, v in scale_cfg.items() if not k.startswith("_")},
        "test_set": test_spec, "threads": threads, "cpu": _cpu_name(),
        "rows": [{"label": r.label, "key": r.key, "kind": r.kind, "note": r.note,
                  "model": r.model_cfg.name if r.model_cfg is not None else None,
                  "train": train_info.get(r.label), "result": results[r.label]} for r in rows],
        "paper": paper_cfg["tables"].get(int(table), {}), "paper_note": paper_cfg.get("note", PAPER_NA),
        "paper_source": paper_cfg.get("source"),
        "hard_frames": [{"sequence": seqs[si]["name"], "frame": fi} for si, fi in hard],
        "wall_time_s": round(time.time() - t_all, 1),
    }
    n = int(table)
    write_json_atomic(out / f"table{n}.json", doc)
    write_text_atomic(out / f"table{n}.md", render_markdown(doc))
    from needletrack.eval.plots import figure7_panel, table_bars

    table_bars(doc, out / f"table{n}.png")
    figure7_panel(seqs, hard, [(r.label, hard_masks[r.label]) for r in rows], out / f"figure7_table{n}.png",
                  title=f"{TABLE_TITLES[n].split(' — ')[0]} ({scale_cfg['scale']} scale): hard test frames")
    log(f"wrote {out / f'table{n}.md'}, table{n}.png, figure7_table{n}.png")
    if publish is not None:
        publish_table(out, n, scale_cfg["scale"], Path(publish), log)
    return doc



def _loadavg() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (OSError, AttributeError):
        return None


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()
