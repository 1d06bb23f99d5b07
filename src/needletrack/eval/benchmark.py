"""Speed of the whole streaming step: frames/s, latency percentiles and peak RSS of ``Tracker.step``.

One timed step is everything a user's frame costs: the grey conversion and letterbox resize, the key encoder
(+ flow), the memory read, the decoder, the resize back, the needle geometry and Kalman smoothing, and the
value encoder on the frames that become memory. The stream is a simulated insertion
(``needletrack.sim.simulate_sequence``, preset "clinical") of up to ``clip`` frames played forwards and
backwards (so the simulator is not timed). The first ``warmup`` steps are not timed.

Each configuration runs in its own Python process (``isolate=True``) so its peak RSS (``ru_maxrss``) is its
own and one engine's threads or caches cannot slow another; the model's figures and those of our STCN
preset (ResNet50 keys, ``stcn_fast``) at the same input size and engine come from the same run.
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

from needletrack.errors import NeedletrackError

ENGINES = ("torch", "onnx", "int8")
COMPARATOR = "stcn_fast"


def peak_rss_mb() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 2 ** 20 if sys.platform == "darwin" else r / 1024


def rss_mb() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20
    except OSError:
        return float("nan")


def machine() -> dict:
    from needletrack.track.onnx_engine import physical_cores

    cpu = None
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), None)
    except OSError:
        pass
    try:
        load = [round(v, 2) for v in os.getloadavg()]
    except OSError:
        load = None
    return {"cpu": cpu, "logical_cpus": os.cpu_count(), "physical_cores": physical_cores(), "loadavg": load}


def make_stream(frames: int, size: int, clip: int = 60, seed: int = 7):
    """(frames list, first mask): a simulated clip starting at its first frame with a visible needle."""
    from needletrack.sim import simulate_sequence

    seq = [(f, m) for f, m, _ in simulate_sequence(min(frames, clip) + 10, size=size, preset="clinical", seed=seed)]
    k = next((i for i, (_, m) in enumerate(seq) if m.any()), None)
    if k is None:
        raise NeedletrackError(f"the simulated benchmark clip (seed {seed}) never shows the needle")
    seq = seq[k:]
    return [f for f, _ in seq], seq[0][1]


def load_any(name: str, warn=None):
    """(model, label, trained): the weights if present; an untrained preset (loudly) otherwise."""
    from needletrack.errors import InputError
    from needletrack.models import build_model, list_presets, load_model

    try:
        return load_model(name), name, True
    except InputError:
        base = "stnan_fast" if name == "default" else name
        if base not in list_presets():
            raise
    if warn:
        warn(f"WARNING: no trained weights for '{name}': timing an UNTRAINED {base} (random weights; memory "
             "frames are written whenever the prediction is non-empty)")
    import torch

    torch.manual_seed(0)
    return build_model(base).eval(), f"{base} (untrained)", False


def make_engine(model, name: str, engine: str, size: int | None, trained: bool, threads: int | None):
    if engine == "torch":
        from needletrack.track.engine import TorchEngine

        return TorchEngine(model, input_size=size)
    if engine not in ("onnx", "int8"):
        raise NeedletrackError(f"unknown engine {engine!r} (choose {', '.join(ENGINES)})")
    from needletrack.track.onnx_engine import OnnxEngine

    src = name if (trained and size in (None, model.cfg.input_size)) else model
    return OnnxEngine(src, input_size=size, precision="int8" if engine == "int8" else "fp32", threads=threads,
                      log=lambda m: print(m, file=sys.stderr))


class TimedEngine:
    """Forwards to an engine and adds up the wall time of each model operation (the rest of a step is the
    tracker's own work: resize, threshold, geometry, smoothing)."""

    OPS = ("encode_key", "encode_value", "read_memory", "segment", "predict")

    def __init__(self, engine):
        self._engine = engine
        self.ms = {k: 0.0 for k in self.OPS}
        self.calls = {k: 0 for k in self.OPS}

    def __getattr__(self, name):
        attr = getattr(self._engine, name)
        if name not in self.OPS:
            return attr

        def timed(*a, **k):
            t0 = time.perf_counter()
            try:
                return attr(*a, **k)
            finally:
                self.ms[name] += (time.perf_counter() - t0) * 1e3
                self.calls[name] += 1
        return timed

    def reset(self):
        for k in self.OPS:
            self.ms[k], self.calls[k] = 0.0, 0


def run_one(name: str = "default", engine: str = "onnx", size: int | None = None, frames: int = 300,
            frame_size: int | None = 448, warmup: int = 10, threads: int | None = None, seed: int = 7,
            warn=None, policy: str = "segment") -> dict:
    """Time ``frames`` tracker steps of one model/engine in this process."""
    from needletrack.models.weights import read_metadata, resolve_weights
    from needletrack.track.onnx_engine import default_threads
    from needletrack.track.tracker import Tracker

    threads = int(threads or default_threads())
    rss0 = rss_mb()
    t_load = time.perf_counter()
    wpath = resolve_weights(name)
    if engine != "torch" and wpath.exists() and size in (None, read_metadata(wpath)[0].input_size):
        # trained weights through the ONNX engine: torch is not even imported once the graphs are cached
        from needletrack.track.onnx_engine import OnnxEngine

        eng = OnnxEngine(name, precision="int8" if engine == "int8" else "fp32", threads=threads,
                         log=lambda m: print(m, file=sys.stderr))
        label, trained = name, True
    else:
        import torch

        torch.set_num_threads(threads)
        model, label, trained = load_any(name, warn)
        eng = make_engine(model, name, engine, size, trained, threads)
        del model
    load_s = time.perf_counter() - t_load
    hw = tuple(eng.input_hw)
    fsize = int(frame_size or hw[0])
    clip, first = make_stream(frames + warmup, fsize, seed=seed)
    order = list(range(len(clip))) + list(range(len(clip) - 2, 0, -1))
    timed = TimedEngine(eng)
    tracker = Tracker(timed, policy=policy, **({} if trained else {"mem_min_score": 0.0}))
    rss_ready = rss_mb()
    times = np.zeros(frames + warmup)
    cpu = np.zeros(frames + warmup)
    visible = 0
    for i in range(frames + warmup):
        f = clip[order[i % len(order)]]
        c0, t0 = time.process_time(), time.perf_counter()
        r = tracker.step(f, mask=first) if i == 0 else tracker.step(f)
        times[i] = time.perf_counter() - t0
        cpu[i] = time.process_time() - c0
        visible += bool(r.visible)
        if i == warmup - 1:
            timed.reset()
    ms = times[warmup:] * 1e3
    cpu_ms = cpu[warmup:] * 1e3
    return {
        "model": label, "trained": trained, "engine": getattr(eng, "name", engine), "input_size": list(hw),
        "frame_size": [fsize, fsize], "frames": int(frames), "warmup": int(warmup), "threads": threads,
        "fps": float(1e3 / ms.mean()), "ms_mean": float(ms.mean()), "ms_p50": float(np.percentile(ms, 50)),
        "ms_p95": float(np.percentile(ms, 95)), "ms_p99": float(np.percentile(ms, 99)), "ms_max": float(ms.max()),
        # process CPU time per step (all threads): with 1 thread, close to the wall time on an idle machine
        "cpu_ms_mean": float(cpu_ms.mean()), "cpu_ms_p50": float(np.percentile(cpu_ms, 50)),
        "peak_rss_mb": round(peak_rss_mb(), 1), "rss_start_mb": round(rss0, 1), "rss_ready_mb": round(rss_ready, 1),
        "torch_imported": "torch" in sys.modules, "memory_writes": int(tracker.memory.writes),
        "visible_frames": int(visible), "load_s": round(load_s, 2),
        # mean ms per timed frame spent in each model operation; "other" = the tracker's own work
        "breakdown_ms": {**{k: round(v / frames, 3) for k, v in timed.ms.items() if timed.calls[k]},
                         "other": round(float(ms.mean()) - sum(timed.ms.values()) / frames, 3)},
        "engine_info": eng.describe() if hasattr(eng, "describe") else {"engine": "torch"},
    }


def _run_isolated(kw: dict, timeout: float | None = None) -> dict:
    code = ("import json, sys; from needletrack.eval.benchmark import run_one; "
            "r = run_one(**json.loads(sys.argv[1]), warn=lambda m: print(m, file=sys.stderr)); "
            "print('@@RESULT@@' + json.dumps(r))")
    env = dict(os.environ)
    p = subprocess.run([sys.executable, "-c", code, json.dumps(kw)], capture_output=True, text=True, env=env,
                       timeout=timeout)
    for line in p.stderr.splitlines():
        if line.startswith("WARNING") or line.startswith("rebuilding"):
            print(line, file=sys.stderr)
    if p.returncode != 0:
        last = (p.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise NeedletrackError(f"benchmark of {kw.get('name')} ({kw.get('engine')}) failed: {last}")
    line = next(ln for ln in p.stdout.splitlines() if ln.startswith("@@RESULT@@"))
    return json.loads(line[len("@@RESULT@@"):])


def benchmark(name: str = "default", engine: str = "onnx", size: int | None = None, frames: int = 300,
              compare: str | None = COMPARATOR, frame_size: int | None = 448, warmup: int = 10,
              threads: int | None = None, isolate: bool = True, seed: int = 7, log=None,
              policy: str = "segment") -> dict:
    """The model's figures, the comparator's at the same input size and engine, and their ratio. ``policy``:
    the tracker's output policy ("segment", tracker v2, or the v1 "mask" gate), to state what it adds."""
    if engine not in ENGINES:
        raise NeedletrackError(f"unknown engine {engine!r} (choose {', '.join(ENGINES)})")
    if frames < 10:
        raise NeedletrackError(f"--frames must be >= 10, got {frames}")
    if size is not None and (size < 32 or size % 32):
        raise NeedletrackError(f"--size must be a positive multiple of 32, got {size}")
    if size is None:
        from needletrack.models.weights import read_metadata, resolve_weights

        p = resolve_weights(name)
        if p.exists():
            size = read_metadata(p)[0].input_size
        else:
            from needletrack.models import get_config

            size = get_config("stnan_fast" if name == "default" else name).input_size
    kw = dict(engine=engine, size=size, frames=frames, frame_size=frame_size, warmup=warmup, threads=threads,
              seed=seed, policy=policy)
    runs = [("model", name)] + ([("comparator", compare)] if compare else [])
    out = {"machine": machine(), "policy": policy,
           "stream": {"simulator": "needletrack.sim clinical", "seed": seed, "frame_size": frame_size,
                      "warmup": warmup}}
    for role, n in runs:
        if log:
            log(f"timing {n} ({engine}) at {size}px: {frames} frames ...")
        r = _run_isolated(dict(kw, name=n)) if isolate else run_one(name=n, warn=log, **kw)
        out[role] = r
        if log:
            log(format_row(r))
    if compare:
        m, c = out["model"], out["comparator"]
        out["speedup_vs_comparator"] = m["fps"] / c["fps"]
        out["latency_ratio_p50"] = c["ms_p50"] / m["ms_p50"]
    try:
        out["machine"]["loadavg_end"] = [round(v, 2) for v in os.getloadavg()]
    except OSError:
        pass
    out["realtime_25fps"] = bool(out["model"]["fps"] >= 25.0 and out["model"]["ms_p99"] <= 40.0)
    return out


def format_row(r: dict) -> str:
    return (f"{r['model']:<26} {r['engine']:<9} {r['input_size'][0]:>4}px  {r['fps']:7.1f} fps  "
            f"p50 {r['ms_p50']:6.1f}  p95 {r['ms_p95']:6.1f}  p99 {r['ms_p99']:6.1f} ms  "
            f"peak RSS {r['peak_rss_mb']:6.0f} MB  ({r['threads']} threads, {r['memory_writes']} memory writes)")


def time_read_variants(key_dim: int = 64, value_dim: int = 64, size: int = 256, memory_slots: int = 9,
                       top_k: int = 20, runs: int = 50, threads: int | None = None) -> dict:
    """ms per memory read (median of ``runs``) for the three ways the read graph can be exported: top-k by
    gathering the k values (the default), top-k by scattering weights into a dense matrix (the model's
    torch code, traced as is), and a dense masked softmax (no top-k)."""
    import io

    from needletrack.track.onnx_engine import make_session
    from needletrack.track.onnx_graphs import export_read_graph

    h = size // 16
    n = memory_slots * h * h
    rng = np.random.default_rng(0)
    feeds = {"mem_key": rng.standard_normal((1, key_dim, n)).astype(np.float32),
             "mem_val": rng.standard_normal((1, value_dim, n)).astype(np.float32),
             "valid": np.ones((1, n), bool), "key": rng.standard_normal((1, key_dim, h, h)).astype(np.float32)}
    feeds["valid"][:, n // 2:] = False
    out = {"positions": n, "queries": h * h, "top_k": top_k}
    for label, k, gather in (("topk_gather", top_k, True), ("topk_scatter", top_k, False), ("dense", None, False)):
        buf = io.BytesIO()
        export_read_graph(None, buf, n_positions=n, key_dim=key_dim, value_dim=value_dim, feature_hw=(h, h),
                          top_k=k, gather=gather)
        s = make_session(buf.getvalue(), threads)
        for _ in range(3):
            s.run(None, feeds)
        ts = []
        for _ in range(runs):
            t0 = time.perf_counter()
            s.run(None, feeds)
            ts.append((time.perf_counter() - t0) * 1e3)
        out[label + "_ms"] = float(np.median(ts))
    return out
