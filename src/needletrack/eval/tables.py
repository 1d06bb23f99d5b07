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
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from needletrack.eval.peers import FlowPropagator
from needletrack.errors import InputError, NeedletrackError
from needletrack.resources import data_path, source_root
from needletrack.utils import atomic_path, write_json_atomic, write_text_atomic

# relative data paths of a config resolve against the repository (an installed wheel: the working directory)
REPO_ROOT = source_root() or Path.cwd()
CONFIG_DIR = data_path("configs", "tables")
SCALES = ("micro", "quick", "full")
TABLE_TITLES = {
    1: "Table 1 — depth of the C&T encoder's blocks (flow window 9×9)",
    2: "Table 2 — size of the flow search window (encoder depths (3,3,16,3))",
    3: "Table 3 — module ablation: STCN, + C&T encoder, + flow regression (FR)",
    4: "Table 4 — STNAN against per-frame segmenters, STCN and a training-free detector",
}
METRICS = ("iou", "dice", "precision", "recall", "f1")
METRIC_NAMES = {"iou": "IoU", "dice": "Dice", "precision": "Precision", "recall": "Recall", "f1": "F1"}
PAPER_NA = "paper figure not available here"
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
    return get_config(preset + suffix).replace(input_size=int(scale_cfg["input_size"])).validate()


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


def train_config(scale_cfg: dict, model_cfg) -> dict:
    """The training config (needletrack.train format) of a row: the scale's ``train`` + model + size."""
    import copy

    t = copy.deepcopy(scale_cfg["train"])
    t["size"] = int(scale_cfg["input_size"])
    if model_cfg is not None:
        t["model"] = model_cfg.to_dict()
    return t


def _repo_path(p):
    """A relative data path of a tables config, resolved against the repository root (so results do not
    depend on the working directory); absolute paths and None pass through."""
    if not p:
        return p
    q = Path(p)
    return str(q if q.is_absolute() else (REPO_ROOT / q).resolve())


def resolve_paths(tcfg: dict) -> dict:
    """Resolve the data folders of a training config against the repository root (in place; returned)."""
    for src in (tcfg.get("data") or {}).get("sources") or []:
        for k in ("backgrounds", "dir", "root"):
            if src.get(k):
                src[k] = _repo_path(src[k])
    val = tcfg.setdefault("val", {})
    val["backgrounds"] = _repo_path(val.get("backgrounds", "../shared/data/us_backgrounds"))
    return tcfg


# ----------------------------------------------------------------------------------------------- test set
def ensure_test_set(out_dir: Path, scale_cfg: dict, log: Callable[[str], None]) -> Path:
    """Simulate the test set into ``out_dir/data/test`` once (reused while its spec matches): the harness's
    named sets ``test/<preset>`` (needletrack.data.splits); ``test.seed`` and ``test.frame_step`` of older
    table configs are no longer used."""
    import shutil

    t = scale_cfg["test"]
    spec = {"harness_sets": 1, "sequences": t["sequences"], "frames": t["frames"], "size": scale_cfg["input_size"],
            "presets": list(t.get("presets") or ["clinical"]), "frame_step": int(t["frame_step"]) if t.get("frame_step") else None,
            "backgrounds": bool(t.get("backgrounds")) and Path(_repo_path(t["backgrounds"])).is_dir()}
    root = out_dir / "data" / "test"
    stamp = root / "spec.json"
    if stamp.exists():
        try:
            if json.loads(stamp.read_text()) == spec:
                return root
        except ValueError:
            pass
    if root.exists():
        shutil.rmtree(root)
    from needletrack.data import splits
    from needletrack.data.folder import SequenceWriter

    # the harness's frozen test sets (needletrack.data.splits): test/<preset> for each preset, plus
    # test/clinical+real over the test split of the real backgrounds where they are present
    names = [f"test/{p}" for p in spec["presets"]]
    if spec["backgrounds"]:
        names.append("test/clinical+real")
    log(f"simulating the test set: {spec['sequences']} sequences × {spec['frames']} frames at "
        f"{spec['size']} px ({', '.join(names)})")
    tmp = out_dir / "data" / ".test.partial"
    if tmp.exists():
        shutil.rmtree(tmp)
    n = spec["sequences"]
    per = [n // len(names) + (1 if k < n % len(names) else 0) for k in range(len(names))]
    bgs = splits.background_split("test", _repo_path(t["backgrounds"])) if spec["backgrounds"] else None
    for name, count in zip(names, per):
        for seq in (splits.iter_set(name, count, spec["frames"], size=spec["size"], backgrounds=bgs) if count else ()):
            with SequenceWriter(tmp, seq.name, seq.meta) as w:
                for frame, mask, needle in zip(seq.frames, seq.masks, seq.needle):
                    w.add(np.asarray(frame, np.uint8), np.asarray(mask, bool), _jsonable(needle))
    write_json_atomic(tmp / "spec.json", spec)
    os.replace(tmp, root)
    return root


def _jsonable(d):
    if d is None:
        return None
    return json.loads(json.dumps(d, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


def load_test_set(root: Path) -> list[dict]:
    """Every test sequence in memory: frames, masks, meta, needle records."""
    from needletrack.data.folder import list_sequences, read_sequence

    seqs = []
    for sp in list_sequences(root):
        s = read_sequence(sp)
        seqs.append({"name": s.name, "frames": [s.frame(i) for i in range(len(s))],
                     "masks": [s.mask(i) for i in range(len(s))], "meta": s.meta or {}, "needle": s.needle})
    return seqs


def pick_hard_frames(seqs: list[dict], n: int) -> list[tuple[int, int]]:
    """``n`` (sequence index, frame index) pairs of hard frames: scored frames with a visible needle and the
    lowest visible fraction (from needle.json; else the smallest mask), at most one per sequence first."""
    cands = []
    for si, s in enumerate(seqs):
        for fi in range(1, len(s["frames"])):
            area = int(s["masks"][fi].sum())
            if area == 0:
                continue
            vis = None
            if s["needle"] and fi < len(s["needle"]):
                vis = s["needle"][fi].get("visible_fraction")
            cands.append(((vis if vis is not None else 1.0), area, si, fi))
    cands.sort()
    chosen, used = [], set()
    for _v, _a, si, fi in cands:           # one per sequence first
        if si not in used:
            chosen.append((si, fi))
            used.add(si)
        if len(chosen) == n:
            return chosen
    for _v, _a, si, fi in cands:
        if (si, fi) not in chosen:
            chosen.append((si, fi))
        if len(chosen) == n:
            break
    return chosen


# ----------------------------------------------------------------------------------------------- train
def ensure_trained(row: Row, scale_cfg: dict, out_dir: Path, log: Callable[[str], None]) -> Path:
    """Train ``row`` (or reuse its finished run); returns the weights file after the full budget."""
    run = out_dir / "runs" / row.key
    weights = run / "last.safetensors"
    summary = run / "summary.json"
    if summary.exists() and weights.exists():
        try:
            if json.loads(summary.read_text()).get("finished"):
                return weights
        except ValueError:
            pass
    from needletrack.train.loop import train

    tcfg = resolve_paths(train_config(scale_cfg, row.model_cfg))
    log(f"training {row.label} ({row.model_cfg.name}) for {tcfg['steps']} steps -> {run}")
    t0 = time.time()
    res = train(tcfg, run, resume=True, device="cpu" if scale_cfg["scale"] != "full" else "auto",
                progress=False, command=f"needletrack tables ({scale_cfg['scale']})",
                log=lambda m: log(f"  [{row.label}] {m}"))
    if not res.get("finished"):
        raise NeedletrackError(f"training of row {row.label!r} stopped before its budget ({res.get('stopped')}); "
                               "run the same command again to resume it", run)
    log(f"  [{row.label}] trained in {time.time() - t0:.0f} s")
    return weights


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
                train_info[row.label] = _train_summary(weights.parent)
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


def publish_table(out: Path, n: int, scale: str, dest: Path, log: Callable[[str], None] = print) -> list[Path]:
    """Copy table ``n``'s Markdown and PNGs into ``dest`` (e.g. docs/) as ``table{n}_{scale}.md``,
    ``table{n}_{scale}.png`` and ``figure7_table{n}_{scale}.png`` (the Markdown's links follow)."""
    doc = json.loads((out / f"table{n}.json").read_text())
    tag = f"table{n}_{scale}"
    names = {"png": f"{tag}.png", "fig7": f"figure7_{tag}.png"}
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    for src, dst in ((out / f"table{n}.png", dest / names["png"]), (out / f"figure7_table{n}.png", dest / names["fig7"])):
        with atomic_path(dst) as tmp:
            tmp.write_bytes(src.read_bytes())
        written.append(dst)
    md = dest / f"{tag}.md"
    write_text_atomic(md, render_markdown(doc, names))
    written.append(md)
    log(f"published {', '.join(p.name for p in written)} to {dest}")
    return written


def _train_summary(run: Path) -> dict | None:
    p = run / "summary.json"
    if not p.exists():
        return None
    s = json.loads(p.read_text())
    return {"steps": s.get("steps"), "wall_time_s": s.get("wall_time_s"), "batch_size": s.get("batch_size"),
            "size": s.get("size"), "device": s.get("device_name") or s.get("device"),
            "throughput_clips_per_s": s.get("throughput_clips_per_s")}


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


# ----------------------------------------------------------------------------------------------- markdown
def _f(v, nd=3):
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return f"{v:.{nd}f}"


def ranking(doc: dict, metric: str = "iou") -> list[str]:
    """Row labels of the trained/detector rows, best first by ``metric``."""
    rows = [(r["result"].get(metric) or 0.0, r["label"]) for r in doc["rows"]]
    return [lab for _v, lab in sorted(rows, key=lambda x: -x[0])]


def render_markdown(doc: dict, names: dict | None = None) -> str:
    """The table's Markdown; ``names`` overrides the PNG file names it links ({"png": ..., "fig7": ...})."""
    n = doc["table"]
    names = {"png": f"table{n}.png", "fig7": f"figure7_table{n}.png", **(names or {})}
    sc = doc["scale_config"]
    t = doc["test_set"]
    tr = sc["train"]
    clip = tr.get("clip", {})
    paper = doc.get("paper") or {}
    prow = paper.get("rows") or {}
    any_paper = any(v is not None for r in prow.values() for v in (r or {}).values())
    lines = [f"# {doc['title']} — `{doc['scale']}` scale", ""]
    lines.append(
        f"Scale `{doc['scale']}`: input {sc['input_size']}×{sc['input_size']} px (paper: 448×448); every model row "
        f"trained from scratch by `needletrack.train` for {tr['steps']} steps × batch {tr.get('batch_size', 4)} × "
        f"{clip.get('frames', 5)}-frame clips of the same simulated clip stream (seed {tr.get('seed', 0)}); "
        f"evaluated by tracking {t['sequences']} simulated test sequences × {t['frames']} frames "
        f"(presets {', '.join(t['presets'])}, "
        f"{('seed ' + str(t['seed'])) if 'seed' in t else 'the harness sets test/<preset>'}): the first frame's "
        f"mask is given and not scored. "
        f"IoU/Dice/Precision/Recall/F1 are pooled over all scored frames (F1 = Dice by definition); tip and "
        f"angle errors are means over frames where both masks are non-empty. **FPS is measured on CPU** "
        f"({doc['cpu']}, {doc['threads']} torch thread(s); FPS = 1 / median time of a whole `Tracker.step`, "
        f"ms/frame = the mean), not on the paper's GPU.")
    lines.append("")
    if not any_paper:
        lines.append(f"Paper figures: **{doc.get('paper_note') or PAPER_NA}** — `configs/tables/paper.yaml` "
                     "holds a slot for each figure (fill it in and re-render to show them). Nothing in the paper "
                     "columns is invented.")
        lines.append("")
    else:
        lines.append(f"Paper columns: the paper's own figures ({doc.get('paper_source') or 'configs/tables/paper.yaml'}"
                     "), copied from its table as printed. They come from another test set (the paper's private "
                     "clinical data), at another input size and with FPS on a GPU: compare the *rankings*, not the "
                     "numbers.")
        lines.append("")
    for note in doc.get("preface_notes") or []:
        lines.append(note)
        lines.append("")
    hdr = ["Model", "IoU", "Dice", "Precision", "Recall", "F1", "per-frame IoU", "FPS (CPU)", "ms/frame",
           "Tip err (px)", "Angle err (°)", "Paper IoU", "Paper Dice", "Paper Precision", "Paper Recall",
           "Paper F1", "Paper FPS (GPU)"]
    lines.append("| " + " | ".join(hdr) + " |")
    lines.append("|" + "|".join(["---"] + ["---:"] * (len(hdr) - 1)) + "|")
    best = {m: max((r["result"].get(m) or 0.0) for r in doc["rows"]) for m in METRICS}
    for r in doc["rows"]:
        res = r["result"]
        p = prow.get(r["label"]) or {}

        def cell(m):
            s = _f(res.get(m))
            return f"**{s}**" if res.get(m) is not None and res.get(m) == best[m] and best[m] > 0 else s

        def pc(m, nd=3):
            v = p.get(m)
            return _f(v, nd) if v is not None else "n/a"

        lines.append("| " + " | ".join([
            r["label"], cell("iou"), cell("dice"), cell("precision"), cell("recall"), cell("f1"),
            _f(res.get("per_frame_iou")), _f(res.get("fps_cpu"), 1), _f(res.get("ms_per_frame_mean"), 1),
            _f(res.get("tip_error_px"), 1), _f(res.get("angle_error_deg"), 1),
            pc("iou"), pc("dice"), pc("precision"), pc("recall"), pc("f1"), pc("fps", 2),
        ]) + " |")
    lines.append("")
    lines.append("Bold: our best per column. `–`: undefined (no frame where both masks are non-empty). "
                 "`n/a`: " + ("not in the paper (our own extra row)." if any_paper else PAPER_NA + "."))
    lines.append("")
    order = ranking(doc)
    lines.append(f"Our ranking by IoU: {' > '.join(order)}.")
    pbest = paper.get("best")
    if pbest:
        agree = order and order[0] == pbest
        lines.append(f"The paper's choice/best row: {pbest} — our best is {order[0]}: "
                     f"{'agrees' if agree else 'disagrees'}.")
    if any_paper:
        porder = [lab for lab in sorted(prow, key=lambda k: -((prow[k] or {}).get("iou") or 0.0))
                  if (prow[lab] or {}).get("iou") is not None]
        if porder:
            lines.append(f"The paper's ranking by IoU: {' > '.join(porder)}.")
    lines.append("")
    if doc.get("kept_notes") is not None:            # re-rendered from a published table: its notes as written
        lines += list(doc["kept_notes"])
        lines.append("")
        lines.append(f"![{doc['title']}: our bars, the paper's figures as markers]({names['png']})")
        lines.append("")
        lines.append(f"![Figure 7 style: the same hard frames, ground truth (green) and each row's mask (red)]"
                     f"({names['fig7']})")
        lines.append("")
        return "\n".join(lines)
    notes = [r for r in doc["rows"] if r.get("note")]
    for r in notes:
        lines.append(f"- {r['label']}: {r['note']}.")
    lines.append("- Rows: " + "; ".join(f"{r['label']} = `{r['model']}`" for r in doc["rows"] if r["model"]) + ".")
    tt = [r["train"]["wall_time_s"] for r in doc["rows"] if r.get("train") and r["train"].get("wall_time_s")]
    if tt:
        lines.append(f"- Training wall time per row: {min(tt):.0f}–{max(tt):.0f} s on CPU.")
    loads = [v for r in doc["rows"] for v in (r["result"].get("load_avg_1min") or []) if v is not None]
    if loads:
        cores = next((r["result"].get("cpu_count") for r in doc["rows"] if r["result"].get("cpu_count")), None)
        lines.append(f"- FPS was measured with a 1-minute load average of {min(loads):.1f}–{max(loads):.1f}"
                     + (f" on {cores} cores" if cores else "") + " (a shared machine slows every row alike only "
                     "roughly; compare FPS within a table, and only loosely).")
    hard = ", ".join(h["sequence"] + " #" + str(h["frame"]) for h in doc["hard_frames"])
    lines.append(f"- Hard frames of the Figure-7 panel (lowest needle visibility): {hard}.")
    lines.append("")
    lines.append(f"![{doc['title']}: our bars, the paper's figures as markers]({names['png']})")
    lines.append("")
    lines.append(f"![Figure 7 style: the same hard frames, ground truth (green) and each row's mask (red)]({names['fig7']})")
    lines.append("")
    return "\n".join(lines)
