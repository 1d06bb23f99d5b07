"""`needletrack models`: list the model presets with parameters, GFLOPs and CPU time of a streaming step."""
from __future__ import annotations

import json
import sys

HELP = "List model presets: params, GFLOPs and CPU ms per frame of the streaming step."

PAPER_KEYS = ("name", "encoder_depths", "flow_window", "input_size", "params", "gflops", "cpu_ms_per_frame")


def add_arguments(p) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON object per preset (a JSON list)")
    p.add_argument("--names", default=None,
                   help="comma-separated preset names or globs (default: every memory-model preset; "
                        "'all' adds the per-frame baselines)")
    p.add_argument("--no-timing", action="store_true", help="skip the CPU timing (cpu_ms_per_frame = null)")
    p.add_argument("--steps", type=int, default=10, help="timed streaming steps per preset (default 10)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads for timing (default 2)")
    p.add_argument("--write-configs", metavar="DIR", default=None,
                   help="write each selected preset as DIR/<name>.yaml (the configs/models mirror) and exit")
    p.add_argument("--engine", choices=("torch", "onnxruntime"), default="torch",
                   help="time eager PyTorch (default) or the same step exported to onnxruntime")


def _streaming_inputs(model, cfg, size=None):
    import torch

    s = size or cfg.input_size
    h = s // 16
    n = cfg.mem_frames * h * h    # the model config's mem_frames: its default memory_slots
    img = torch.rand(1, 1, s, s)
    mask = (torch.rand(1, 1, s, s) > 0.9).float()
    with torch.no_grad():
        q = model.encode_key(img)
    mem_key = torch.randn(1, cfg.key_dim, n)
    mem_val = torch.randn(1, cfg.value_dim, n)
    return img, mask, q.raw16, mem_key, mem_val


def count_gflops(model, cfg) -> float:
    """FLOPs (torch.utils.flop_counter: 2 per multiply-add) of one streaming step at the input size, with
    the value encoder counted once every ``mem_every`` frames."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    s = cfg.input_size
    if not model.is_memory_model:
        with torch.no_grad(), FlopCounterMode(display=False) as fc:
            model(torch.rand(1, 1, s, s))
        return fc.get_total_flops() / 1e9
    img, mask, prev, mk, mv = _streaming_inputs(model, cfg)
    with torch.no_grad():
        with FlopCounterMode(display=False) as fc:
            q = model.encode_key(img, prev)
            r = model.read_memory(mk, mv, q.key, top_k=cfg.top_k)
            model.segment(r, q)
        step = fc.get_total_flops()
        with FlopCounterMode(display=False) as fc:
            model.encode_value(img, mask, q.f16)
        value = fc.get_total_flops()
    return (step + value / max(1, cfg.mem_every)) / 1e9


def time_torch(model, cfg, steps: int = 10, warmup: int = 2) -> dict:
    """ms per frame of the shipped streaming loop (the Tracker, PyTorch engine, tracker v2 policy) on a
    synthetic stream at the model's input size: the same loop the CLI and the services run, not a copy."""
    import time

    import numpy as np

    from needletrack.geometry import line_mask
    from needletrack.track import Tracker

    s = int(cfg.input_size)
    rng = np.random.default_rng(0)
    tracker = Tracker(model, input_size=s, mem_min_score=0.0)
    first = line_mask((s, s), (0, s // 4), (s // 2, s // 2), max(2.0, s / 100))
    times = []
    for i in range(warmup + steps + 1):
        frame = rng.integers(0, 120, (s, s)).astype(np.uint8)
        frame[first] = 230
        t0 = time.perf_counter()
        tracker.step(frame, mask=first if i == 0 else None)
        if i > warmup:
            times.append((time.perf_counter() - t0) * 1e3)
    t = np.asarray(times)
    return {"mean": float(t.mean()), "p50": float(np.percentile(t, 50)), "p99": float(np.percentile(t, 99))}


def step_module(model, top_k, state: bool = True):
    """The streaming step as one module for export: key encoder (+ flow), memory read, decoder.
    ``forward(image, prev, mem_key, mem_val)`` returns the logit, and with ``state`` also the query's key,
    f16 and raw16 (what the next step needs)."""
    from torch import nn

    class Step(nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, image, prev, mem_key, mem_val):
            q = self.m.encode_key(image, prev)
            logit = self.m.segment(self.m.read_memory(mem_key, mem_val, q.key, top_k=top_k), q)
            return (logit, q.key, q.f16, q.raw16) if state else logit

    return Step(model)


class _StepGraph:
    """The streaming step as two ONNX graphs: step (key+flow, read, decoder) and value encoder, exported by the
    project's one exporter and loaded with the engine's session options (``track/onnx_engine.py``)."""

    def __init__(self, model, cfg, threads: int = 2):
        import tempfile
        from pathlib import Path

        import torch

        from needletrack.track.onnx_engine import make_session
        from needletrack.track.onnx_graphs import graph_wrappers

        self.cfg = cfg
        img, mask, prev, mk, mv = _streaming_inputs(model, cfg)
        Value = graph_wrappers()[2]
        with torch.no_grad():
            f16 = model.encode_key(img, prev).f16
        self.inputs = {"image": img.numpy(), "prev": prev.numpy(), "mem_key": mk.numpy(), "mem_val": mv.numpy()}
        self.vinputs = {"image": img.numpy(), "mask": mask.numpy(), "f16": f16.numpy()}
        with tempfile.TemporaryDirectory() as d:
            p1, p2 = Path(d) / "step.onnx", Path(d) / "value.onnx"
            export_onnx(step_module(model, cfg.top_k), (img, prev, mk, mv), p1, ["image", "prev", "mem_key", "mem_val"],
                        ["logit", "key", "f16", "raw16"])
            export_onnx(Value(model), (img, mask, f16), p2, ["image", "mask", "f16"], ["value"])
            self.step = make_session(p1, threads)
            self.value = make_session(p2, threads)
        # the exporter drops unused inputs (prev without flow)
        self.inputs = {i.name: self.inputs[i.name] for i in self.step.get_inputs()}
        self.vinputs = {i.name: self.vinputs[i.name] for i in self.value.get_inputs()}

    def run(self, with_value: bool):
        out = self.step.run(None, self.inputs)
        if with_value:
            self.value.run(None, self.vinputs)
        return out


def export_onnx(module, args, path, input_names, output_names) -> None:
    """The project's one exporter, :func:`needletrack.track.onnx_graphs.export_graph` (TorchScript exporter,
    opset 17, constant folding; ExportError naming the graph); this name stays for its callers."""
    from needletrack.track.onnx_graphs import export_graph

    export_graph(module, args, path, input_names, output_names)


def time_onnx(model, cfg, steps: int = 30, warmup: int = 3, threads: int = 2) -> dict:
    import time

    import numpy as np

    g = _StepGraph(model, cfg, threads)
    times, vtimes = [], []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        g.run(with_value=(i % max(1, cfg.mem_every) == 0))
        if i >= warmup:
            times.append((time.perf_counter() - t0) * 1e3)
    for _ in range(max(3, steps // 5)):
        t0 = time.perf_counter()
        g.value.run(None, g.vinputs)
        vtimes.append((time.perf_counter() - t0) * 1e3)
    t = np.asarray(times)
    return {"mean": float(t.mean()), "p50": float(np.percentile(t, 50)), "p99": float(np.percentile(t, 99)),
            "value_only_mean": float(np.mean(vtimes))}


def measure(cfg, timing: bool = True, steps: int = 10, engine: str = "torch", threads: int = 2) -> dict:
    """One table row for a ModelConfig (or preset name)."""
    import torch

    from needletrack.models import build_model, get_config

    cfg = get_config(cfg)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    row = {
        "name": cfg.name,
        "arch": cfg.arch,
        "encoder": encoder_label(cfg),
        "key_encoder": cfg.key_encoder if cfg.is_memory_model else None,
        "encoder_depths": list(cfg.encoder_depths) if cfg.is_memory_model and cfg.key_encoder == "cmt" else None,
        "flow_window": cfg.flow_window if cfg.is_memory_model else None,
        "input_size": cfg.input_size,
        "params": int(sum(p.numel() for p in model.parameters())),
        "gflops": round(count_gflops(model, cfg), 4),
        "cpu_ms_per_frame": None,
    }
    if timing:
        old = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            if engine == "onnxruntime" and cfg.is_memory_model:
                t = time_onnx(model, cfg, steps=max(steps, 10), threads=threads)
            else:
                t = time_torch(model, cfg, steps=steps)
        finally:
            torch.set_num_threads(old)
        row.update(cpu_ms_per_frame=round(t["mean"], 2), cpu_ms_p99=round(t["p99"], 2), engine=engine,
                   threads=threads)
    return row


# the encoder column for the per-frame baselines: what their encoder is, from their papers
BASELINE_ENCODERS = {"pspnet": "resnet50", "fcn32": "vgg16", "unet": "unet", "segnet": "vgg16",
                     "vgg16_unet": "vgg16", "resnet50_fcn32": "resnet50"}


def encoder_label(cfg) -> str:
    """The table's encoder column: C&T depths ('3-3-16-3'), the memory model's ResNet key encoder
    ('resnet50'), or a per-frame baseline's own encoder ('vgg16', 'unet', ...)."""
    if cfg.is_memory_model:
        if cfg.key_encoder == "cmt" and cfg.encoder_depths:
            return "-".join(map(str, cfg.encoder_depths))
        return str(cfg.key_encoder)
    return BASELINE_ENCODERS.get(cfg.arch, cfg.arch)


def _select(names: str | None) -> list[str]:
    from needletrack.errors import NeedletrackError
    from needletrack.models import get_config, list_presets

    if not names:
        return [n for n in list_presets() if get_config(n).is_memory_model]
    if names.strip() == "all":
        return list_presets()
    out = []
    for pat in [p.strip() for p in names.split(",") if p.strip()]:
        hits = list_presets(pat)
        if not hits:
            get_config(pat)  # raises the "unknown preset" error with suggestions
            raise NeedletrackError(f"no preset matches '{pat}'")
        out += [h for h in hits if h not in out]
    return out


def run(args) -> int:
    from needletrack.errors import NeedletrackError

    if args.steps < 1 or args.threads < 1:
        raise NeedletrackError("--steps and --threads must be >= 1")
    names = _select(args.names)
    if args.write_configs:
        from pathlib import Path

        from needletrack.models import get_config
        from needletrack.utils import write_text_atomic

        for n in names:
            write_text_atomic(Path(args.write_configs) / f"{n}.yaml", get_config(n).to_yaml())
        print(f"wrote {len(names)} presets to {args.write_configs}")
        return 0
    rows = []
    if not args.json:
        print(f"{'name':28s} {'encoder':>12s} {'win':>4s} {'size':>5s} {'params(M)':>10s} {'GFLOPs':>8s} "
              f"{'ms/frame':>9s}", flush=True)
    tty = sys.stderr.isatty()
    for i, n in enumerate(names, 1):
        if len(names) > 1:                      # progress on stderr: building, counting and timing take a while
            msg = f"models: [{i}/{len(names)}] {n} ..."
            print(f"\r\033[K{msg}" if tty else msg, end="" if tty else "\n", file=sys.stderr, flush=True)
        row = measure(n, timing=not args.no_timing, steps=args.steps, engine=args.engine, threads=args.threads)
        rows.append(row)
        if tty and len(names) > 1:
            print("\r\033[K", end="", file=sys.stderr, flush=True)
        if not args.json:
            d = row["encoder"]
            ms = f"{row['cpu_ms_per_frame']:.1f}" if row["cpu_ms_per_frame"] is not None else "-"
            print(f"{n:28s} {d:>12s} {str(row['flow_window'] or '-'):>4s} {row['input_size']:5d} "
                  f"{row['params'] / 1e6:10.2f} {row['gflops']:8.2f} {ms:>9s}", flush=True)
    if args.json:
        json.dump(rows, sys.stdout, indent=1)
        print()
    return 0
