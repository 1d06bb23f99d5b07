"""One tracking evaluation: score tracker configurations on the frozen test sets (the measurement harness).

A configuration is weights × engine × policy. The policy is the tracking code itself: today's tree, or
any git commit, run from a temporary git worktree (``--commit``), so old and new policies are scored on the
same frames with the same weights. A training-free peer is scored in every run: the previous mask carried
forward by dense optical flow (OpenCV Farneback, frame to frame).

Sets (``needletrack.data.splits``; needle clips start where the needle first shows):

* ``clinical``, ``hard``: the sets ``test/clinical-ep`` and ``test/hard-ep`` at 448 px, 12 sequences × 60
  frames, with withdrawal/re-entry and out-of-plane episodes forced at probability 0.5 each (probe drift and
  rotation as the presets have them). First frame prompted with its ground-truth mask.
* ``still``: ``test/still``, 4 sequences × 301 frames with the needle held still: drift at frame 300.
* needle-free, ``--auto`` only: ``negatives`` (``test/negatives``, hard preset, the needle never enters),
  ``real-stills`` (the real backgrounds' test split, each image a still clip of 5 frames) and ``liver``
  (the liver sweep's test block, a real moving cine).

Figures (``needletrack.eval.tracking``): pooled IoU and Dice, empty-frame accuracy, withdrawals reported
empty within 2 frames, re-entries re-found within 5 frames, drift, tip error in mm, and with ``--auto`` the
share of needle clips found within 10 frames and the false-positive frame rate on needle-free clips; ms per
frame (median of ``Tracker.step``).

    python benchmarks/eval_tracking.py --out docs/results/tracking_baseline                 # full (< 20 min)
    python benchmarks/eval_tracking.py --quick                                             # < 3 min
    python benchmarks/eval_tracking.py --config old:562c1e4:weights/default.safetensors --config new::default

``--config LABEL:COMMIT:MODEL[:ENGINE]`` may repeat (COMMIT empty = the working tree). The sets are cached
under ``runs/harness/`` by their definition, so later runs reuse them.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
HARNESS_VERSION = 1
FULL = {"needle": (12, 60), "still": (4, 301), "negatives": (6, 60), "stills_per_image": 5, "real_images": None,
        "size": 448}
QUICK = {"needle": (3, 30), "still": (1, 61), "negatives": (2, 30), "stills_per_image": 3, "real_images": 12,
         "size": 448}
NEEDLE_SETS = {"clinical": "test/clinical-ep", "hard": "test/hard-ep"}


# ----------------------------------------------------------------------------------------------------------
# the frozen sets, written once into a cache folder
def simulator_hash() -> str:
    """A short hash of the simulator's source: the sets are a function of their names *and* the simulator,
    so a changed simulator builds new sets (and every report says which simulator made its frames)."""
    import needletrack.sim as sim

    h = hashlib.sha1()
    for p in sorted(Path(sim.__file__).parent.glob("*.py")):
        h.update(p.name.encode() + b"\0" + p.read_bytes())
    return h.hexdigest()[:10]


def build_sets(root: Path, plan: dict, log=print) -> Path:
    from needletrack.data import splits
    from needletrack.data.folder import SequenceWriter

    size = plan["size"]
    key = hashlib.sha1(json.dumps([HARNESS_VERSION, plan, splits.split_file(), simulator_hash()], sort_keys=True)
                       .encode()).hexdigest()[:12]
    d = root / f"sets-{key}"
    if (d / "DONE").exists():
        return d
    if d.exists():
        shutil.rmtree(d)
    tmp = root / f".sets-{key}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    t0 = time.time()
    n, t = plan["needle"]
    for label, set_name in NEEDLE_SETS.items():
        splits.write_set(set_name, tmp / label, n, t, size=size)
    n, t = plan["still"]
    splits.write_set("test/still", tmp / "still", n, t, size=size)
    n, t = plan["negatives"]
    splits.write_set("test/negatives", tmp / "negatives", n, t, size=size)
    (tmp / "real-stills").mkdir(parents=True)  # real images at their own size (<= 512 px)
    bgs = splits.background_split("test")
    if plan["real_images"]:
        bgs = bgs[:: max(1, len(bgs) // plan["real_images"])][: plan["real_images"]]
    for img, _m, meta in bgs:
        with SequenceWriter(tmp / "real-stills", meta["name"], {"source": meta.get("source"), "still": True}) as w:
            for _ in range(plan["stills_per_image"]):
                w.add(img, np.zeros(img.shape, bool))
    (tmp / "liver").mkdir(parents=True)
    for b, block in enumerate(splits.liver_frames("test")):
        with SequenceWriter(tmp / "liver", f"liver_test_{b}", {"source": "liver_sweep test block"}) as w:
            for f in block:
                w.add(f, np.zeros(f.shape, bool))
    (tmp / "DONE").write_text(json.dumps(plan))
    os.replace(tmp, d)
    log(f"sets written to {d} ({time.time() - t0:.0f} s)")
    return d


def build_sets_at(commit: str, root: Path, plan: dict, log=print) -> Path:
    """:func:`build_sets` with the simulator (and splits) of ``commit``, from a temporary git worktree in a
    subprocess: to score today's tracker on the frames an older simulator made (e.g. the one the shipped model
    was trained on)."""
    from needletrack.data.splits import shared_data_dir

    wt = Path(tempfile.mkdtemp(prefix="nt-harness-sim-"))
    try:
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(wt), commit], check=True,
                       capture_output=True)
        env = dict(os.environ, PYTHONPATH=str(wt / "src"), OMP_NUM_THREADS="1")
        if shared_data_dir() is not None:
            env["NEEDLETRACK_SHARED_DATA"] = str(shared_data_dir())
        code = ("import sys, json; from pathlib import Path; sys.path.insert(0, sys.argv[1]); import eval_tracking as E; "
                "print(E.build_sets(Path(sys.argv[2]), json.loads(sys.argv[3]), log=lambda *a: None))")
        p = subprocess.run([sys.executable, "-c", code, str(REPO / "benchmarks"), str(root), json.dumps(plan)],
                           env=env, capture_output=True, text=True)
        if p.returncode != 0:
            raise RuntimeError(f"building the sets at {commit} failed:\n{p.stderr[-2000:]}")
        d = Path(p.stdout.strip().splitlines()[-1])
        log(f"sets of the simulator at {commit}: {d}")
        return d
    finally:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(wt)], capture_output=True)
        shutil.rmtree(wt, ignore_errors=True)


def read_set(folder: Path):
    from needletrack.data.folder import list_sequences, read_sequence

    if not folder.is_dir():
        return []
    return [read_sequence(p) for p in list_sequences(folder)]


# ----------------------------------------------------------------------------------------------------------
# runs
def run_config(label: str, commit: str, model: str, engine: str, sets_dir: Path, out: Path, auto: bool, log=print):
    """Run the tracker of ``commit`` (or the working tree) in a subprocess; results under ``out``."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    worktree = None
    src = REPO / "src"
    if commit:
        worktree = Path(tempfile.mkdtemp(prefix="nt-harness-wt-"))
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(worktree), commit],
                       check=True, capture_output=True)
        src = worktree / "src"
        if model == "default":      # the commit's own shipped weights
            model = str(worktree / "weights" / "default.safetensors")
    env["PYTHONPATH"] = str(src)
    model_arg = model
    if model.endswith(".safetensors") and not os.path.isabs(model):
        model_arg = str((REPO / model).resolve())
    try:
        modes = [("prompt", ["clinical", "hard", "still"])]
        if auto:
            modes.append(("auto", ["clinical", "hard", "negatives", "real-stills", "liver"]))
        for mode, sets in modes:
            t0 = time.time()
            cmd = [sys.executable, str(REPO / "benchmarks" / "harness_runner.py"), str(sets_dir), str(out / mode),
                   "--sets", *sets, "--mode", mode, "--model", model_arg, "--engine", engine]
            p = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if p.returncode != 0:
                raise RuntimeError(f"{label} ({mode}) failed:\n{p.stderr[-3000:]}")
            log(f"  {label}: {mode} runs done ({time.time() - t0:.0f} s)")
    finally:
        if worktree is not None:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(worktree)],
                           capture_output=True)
            shutil.rmtree(worktree, ignore_errors=True)


def load_run(folder: Path, seq_name: str):
    p = folder / f"{seq_name}.npz"
    if not p.exists():
        return None
    z = np.load(p)
    n, h, w = (int(v) for v in z["shape"])
    masks = np.unpackbits(z["masks"], axis=1, count=h * w).reshape(n, h, w).astype(bool)
    return {"masks": masks, "visible": z["visible"], "ms": z["ms"], "tip": z["tip"]}


def flow_peer(sets_dir: Path, out: Path) -> None:
    """The training-free peer, written in the runner's format (prompt mode only)."""
    from needletrack.eval.peers import FlowPropagator

    if str(REPO / "benchmarks") not in sys.path:      # the runner's own save format (also when imported)
        sys.path.insert(0, str(REPO / "benchmarks"))
    from harness_runner import pack_run, save_run

    for set_name in ("clinical", "hard", "still"):
        for seq in read_set(sets_dir / set_name):
            frames = [seq.frame(i) for i in range(len(seq))]
            first = seq.mask(0)
            prop = FlowPropagator()
            masks, ms = [], []
            for i, f in enumerate(frames):
                t0 = time.perf_counter()
                masks.append(prop.step(f, first if i == 0 else None))
                ms.append(1000 * (time.perf_counter() - t0))
            m = np.stack(masks)
            n = len(m)
            d = out / "prompt" / set_name
            d.mkdir(parents=True, exist_ok=True)
            save_run(d / f"{seq.name}.npz", pack_run(m, m.reshape(n, -1).any(1), np.zeros(n),
                                                     np.full((n, 2), np.nan), ms))


# ----------------------------------------------------------------------------------------------------------
# scoring
def score_run(sets_dir: Path, out: Path) -> dict:
    from needletrack.eval.tracking import SetScore, drift

    res = {}
    all_ms = []
    for label in ("clinical", "hard"):
        sc = SetScore()
        for seq in read_set(sets_dir / label):
            r = load_run(out / "prompt" / label, seq.name)
            if r is None:
                continue
            gt = [seq.mask(i) for i in range(len(seq))]
            sc.add_sequence(gt, r["masks"], spacing=seq.meta.get("pixel_spacing_mm"), entry_side=seq.meta.get("entry_side"))
            all_ms.append(r["ms"][1:])
            ra = load_run(out / "auto" / label, seq.name)
            if ra is not None:
                sc.add_auto_clip(gt, ra["masks"])
        res[label] = sc.result()
    still = []
    for seq in read_set(sets_dir / "still"):
        r = load_run(out / "prompt" / "still", seq.name)
        if r is None:
            continue
        gt = [seq.mask(i) for i in range(len(seq))]
        sc = SetScore()
        still.append(sc.add_sequence(gt, r["masks"]))
        all_ms.append(r["ms"][1:])
    res["still"] = drift(still) or {}
    neg_all = SetScore()
    for label in ("negatives", "real-stills", "liver"):
        sc = SetScore()
        for seq in read_set(sets_dir / label):
            r = load_run(out / "auto" / label, seq.name)
            if r is None:
                continue
            sc.add_negative_clip(r["visible"])
            neg_all.add_negative_clip(r["visible"])
        if sc.sequences:
            res[label] = sc.result()
    if neg_all.sequences:
        res["needle-free"] = neg_all.result()
    if all_ms:
        ms = np.concatenate(all_ms)
        res["ms_per_frame"] = {"median": float(np.median(ms)), "p95": float(np.percentile(ms, 95))}
    return res


# ----------------------------------------------------------------------------------------------------------
def to_markdown(report: dict) -> str:
    rows = [
        ("clinical: IoU", ("clinical", "iou")), ("clinical: Dice", ("clinical", "dice")),
        ("clinical: empty-frame accuracy", ("clinical", "empty_frame_accuracy")),
        ("clinical: withdrawals reported empty ≤ 2 frames", ("clinical", "withdrawn_reported_2f")),
        ("clinical: re-entries re-found ≤ 5 frames", ("clinical", "reentry_refound_5f")),
        ("clinical: tip error (mm)", ("clinical", "tip_error_mm")),
        ("hard: IoU", ("hard", "iou")), ("hard: Dice", ("hard", "dice")),
        ("hard: empty-frame accuracy", ("hard", "empty_frame_accuracy")),
        ("hard: withdrawals reported empty ≤ 2 frames", ("hard", "withdrawn_reported_2f")),
        ("hard: re-entries re-found ≤ 5 frames", ("hard", "reentry_refound_5f")),
        ("hard: tip error (mm)", ("hard", "tip_error_mm")),
        ("still: IoU at the late frame", ("still", "iou_late")),
        ("still: drift (late IoU ÷ IoU at frame 10)", ("still", "drift_ratio")),
        ("--auto: clinical clips found ≤ 10 frames", ("clinical", "auto_found_10f")),
        ("--auto: hard clips found ≤ 10 frames", ("hard", "auto_found_10f")),
        ("--auto: false-positive frames, sim negatives", ("negatives", "fp_frame_rate")),
        ("--auto: false-positive frames, real stills", ("real-stills", "fp_frame_rate")),
        ("--auto: false-positive frames, liver sweep", ("liver", "fp_frame_rate")),
        ("--auto: false-positive frames, all needle-free", ("needle-free", "fp_frame_rate")),
        ("ms per frame (median)", ("ms_per_frame", "median")),
        ("ms per frame (p95)", ("ms_per_frame", "p95")),
    ]
    labels = list(report["runs"])
    out = [f"Command: `{report['command']}` — {report['when']}, {report['machine']}, {report['wall_s']:.0f} s. "
           f"Sets: {report['sets_note']} Simulator: {report.get('simulator', '?')}.", "",
           "| figure | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
    for name, (a, b) in rows:
        vals = []
        for lab in labels:
            v = report["runs"][lab]["scores"].get(a, {}).get(b)
            vals.append("—" if v is None else (f"{v:.1f}" if b in ("median", "p95") or b == "tip_error_mm" else f"{v:.3f}"))
        if all(v == "—" for v in vals):
            continue
        out.append(f"| {name} | " + " | ".join(vals) + " |")
    out.append("")
    for lab in labels:
        c = report["runs"][lab]["config"]
        out.append(f"- **{lab}**: {c}")
    sc = report["runs"][labels[0]]["scores"]
    counts = ", ".join(f"{k} {sc[k].get('sequences')} seq" for k in ("clinical", "hard", "negatives", "real-stills", "liver")
                       if k in sc)
    out.append(f"- episodes: clinical {sc.get('clinical', {}).get('withdrawals')} withdrawals / "
               f"{sc.get('clinical', {}).get('reentries')} re-entries, hard {sc.get('hard', {}).get('withdrawals')} / "
               f"{sc.get('hard', {}).get('reentries')}; {counts}.")
    return "\n".join(out) + "\n"


def parse_config(s: str, engine_default: str):
    parts = s.split(":")
    if len(parts) < 3:
        raise SystemExit(f"--config must be LABEL:COMMIT:MODEL[:ENGINE], got {s!r}")
    label, commit, model = parts[0], parts[1], parts[2]
    engine = parts[3] if len(parts) > 3 and parts[3] else engine_default
    return label, commit, model, engine


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", action="append", default=None,
                    help="LABEL:COMMIT:MODEL[:ENGINE]; repeatable (default: 'tree::default')")
    ap.add_argument("--engine", default="auto", choices=["auto", "torch", "onnx"])
    ap.add_argument("--no-auto", action="store_true", help="skip the --auto runs")
    ap.add_argument("--no-flow", action="store_true", help="skip the optical-flow peer")
    ap.add_argument("--quick", action="store_true", help="small sets (< 3 min)")
    ap.add_argument("--cache", default=str(REPO / "runs" / "harness"))
    ap.add_argument("--sets-dir", default=None,
                    help="score on sets built earlier (a runs/harness/sets-* folder), e.g. by an older simulator")
    ap.add_argument("--sim-commit", default=None,
                    help="build the sets with this commit's simulator (a git worktree), e.g. the one the model was "
                         "trained on")
    ap.add_argument("--include", action="append", default=[], metavar="REPORT.json",
                    help="add the runs of an earlier report made on the same sets (same plan and simulator)")
    ap.add_argument("--out", default=None, help="write OUT.json and OUT.md")
    args = ap.parse_args(argv)
    from needletrack.utils import write_json_atomic, write_text_atomic

    t0 = time.time()
    plan = QUICK if args.quick else FULL
    configs = [parse_config(c, args.engine) for c in (args.config or ["tree::default"])]
    if args.sets_dir:
        sets_dir = Path(args.sets_dir)
        if not (sets_dir / "DONE").exists():
            raise SystemExit(f"--sets-dir {sets_dir} holds no finished harness sets")
        plan = json.loads((sets_dir / "DONE").read_text())
    elif args.sim_commit:
        sets_dir = build_sets_at(args.sim_commit, Path(args.cache), plan)
    else:
        sets_dir = build_sets(Path(args.cache), plan)
    report = {"command": "python benchmarks/eval_tracking.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "when": time.strftime("%Y-%m-%d"), "machine": f"{os.cpu_count()} CPU cores, 1 thread per run",
              "harness_version": HARNESS_VERSION, "plan": plan, "runs": {},
              "simulator": (f"commit {args.sim_commit}" if args.sim_commit else
                            f"the sets in {args.sets_dir}" if args.sets_dir else simulator_hash()),
              "sets_note": f"clinical/hard = test/clinical-ep, test/hard-ep at {plan['size']} px, "
                           f"{plan['needle'][0]}×{plan['needle'][1]} frames; still {plan['still'][0]}×{plan['still'][1]}; "
                           f"negatives {plan['negatives'][0]}×{plan['negatives'][1]}; real stills "
                           f"{plan['stills_per_image']} frames per test image; liver test block."}
    for inc in args.include:
        earlier = json.loads(Path(inc).read_text())
        # compare as stored: the plan's tuples come back from JSON as lists
        if earlier.get("plan") != json.loads(json.dumps(plan)) or earlier.get("simulator") != report["simulator"]:
            raise SystemExit(f"--include {inc}: made on other sets (plan or simulator differ)")
        for label, run in earlier["runs"].items():
            if label != "optical flow" or args.no_flow:
                report["runs"][label] = run
    with tempfile.TemporaryDirectory(prefix="nt-harness-") as tmp:
        for label, commit, model, engine in configs:
            out = Path(tmp) / label
            run_config(label, commit, model, engine, sets_dir, out, auto=not args.no_auto)
            report["runs"][label] = {"config": f"commit {commit or 'working tree'}, model {model}, engine {engine}",
                                     "scores": score_run(sets_dir, out)}
        if not args.no_flow:
            out = Path(tmp) / "flow"
            flow_peer(sets_dir, out)
            report["runs"]["optical flow"] = {"config": "Farneback flow, previous mask carried forward (no training)",
                                              "scores": score_run(sets_dir, out)}
    report["wall_s"] = time.time() - t0
    md = to_markdown(report)
    print(md)
    if args.out:
        write_json_atomic(f"{args.out}.json", report)
        write_text_atomic(f"{args.out}.md", md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
