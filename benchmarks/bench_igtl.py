"""Stream simulated ultrasound frames at a fixed rate through the OpenIGTLink service and measure it.

    python benchmarks/bench_igtl.py                       # 500 frames, 25 fps, 256 px, the default model
    python benchmarks/bench_igtl.py --model stnan_tiny --frames 500 --fps 25 --json out.json

A listening socket plays the scanner's PlusServer: the service connects to it as in `serve-igtl --source`,
and it sends one uint8 IMAGE every 1/fps seconds, stamped with the wall-clock send time. A client socket
connected to the service's port plays 3D Slicer. Latency is measured from that send time to the
arrival of the frame's mask IMAGE at the receiver (same machine, same clock). The service runs in this
process on its own threads exactly as `needletrack serve-igtl` runs it. Reports frames sent, received by
the service, processed (results arrived), dropped (overwritten by a newer frame before the tracker got to
them), and latency p50/p95/max.
"""
from __future__ import annotations

import argparse
import json
import socket
import sys
import threading
import time

import numpy as np


def synthetic_frames(n: int, size: int, seed: int = 0):
    """Fallback when needletrack.sim is not available: speckle, a bright layer, a needle advancing and
    retreating at 30 degrees. Returns (frames, first-frame mask)."""
    import cv2

    rng = np.random.default_rng(seed)
    base = rng.rayleigh(18.0, size=(size, size)).astype(np.float32)
    base = cv2.GaussianBlur(base, (0, 0), 1.0)
    cv2.line(base, (0, size // 3), (size - 1, size // 3 + size // 12), 140, max(2, size // 60))
    frames, first_mask = [], None
    cycle = 120
    for i in range(n):
        p = i % cycle
        depth = 0.25 + 0.5 * (p if p < cycle // 2 else cycle - p) / (cycle / 2)
        x0, y0 = 2, int(size * 0.08)
        x1 = int(x0 + depth * size * np.cos(np.radians(30)))
        y1 = int(y0 + depth * size * np.sin(np.radians(30)))
        img = base + rng.normal(0, 6, size=base.shape).astype(np.float32)
        cv2.line(img, (x0, y0), (x1, y1), 230, max(2, size // 80))
        frames.append(np.clip(img, 0, 255).astype(np.uint8))
        if i == 0:
            m = np.zeros((size, size), np.uint8)
            cv2.line(m, (x0, y0), (x1, y1), 255, max(2, size // 80))
            first_mask = m > 0
    return frames, first_mask


def load_frames(n: int, size: int, seed: int, preset: str = "clinical"):
    """(frames, first-frame mask, pixel spacing mm, description) from the simulator, else synthetic."""
    try:
        from needletrack.sim import simulate_sequence
    except ImportError:
        simulate_sequence = None
    if simulate_sequence is not None:
        try:
            it = simulate_sequence(n, size=size, preset=preset, seed=seed)
            frames, first = [], None
            for frame, mask, _needle in it:
                frames.append(np.ascontiguousarray(frame, dtype=np.uint8))
                if first is None:
                    first = np.asarray(mask, bool)
            spacing = (getattr(it, "meta", None) or {}).get("pixel_spacing_mm", [1.0, 1.0])
            return frames, first, spacing, f"needletrack.sim.simulate_sequence(preset={preset!r}, seed={seed})"
        except Exception as e:  # noqa: BLE001 - fall back, but say so
            print(f"bench_igtl: simulator failed ({type(e).__name__}: {e}); using synthetic frames",
                  file=sys.stderr)
    frames, mask = synthetic_frames(n, size, seed)
    return frames, mask, [1.0, 1.0], "synthetic (speckle + moving line)"


def load_tracker(model: str, device: str):
    from needletrack.track import Tracker

    try:
        return Tracker.from_pretrained(model, device=device), model
    except Exception as e:  # noqa: BLE001
        from needletrack.models import build_model, list_presets

        if model not in list_presets():
            raise SystemExit(f"bench_igtl: cannot load model {model!r}: {e}")
        print(f"bench_igtl: no weights for {model!r} ({e}); using random weights (speed only)", file=sys.stderr)
        m = build_model(model)
        m.eval()
        return Tracker(m, device=device), f"{model} (random weights)"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=500)
    ap.add_argument("--fps", type=float, default=25.0)
    ap.add_argument("--size", type=int, default=256, help="frame side in pixels (default 256)")
    ap.add_argument("--model", default="default", help="model name or checkpoint path (default: default)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--preset", default="clinical", help="simulator preset (easy, clinical, hard)")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)

    import pyigtl
    import torch

    from needletrack.serve.igtl import IgtlConfig, IgtlService
    from needletrack.serve.igtl_wire import MessageReader, encode_message, timestamp_from_raw, timestamp_to_raw

    if args.threads:
        torch.set_num_threads(args.threads)
    t_sim = time.monotonic()
    frames, first_mask, spacing, frame_source = load_frames(args.frames, args.size, args.seed, args.preset)
    print(f"bench_igtl: {len(frames)} frames from {frame_source} in {time.monotonic() - t_sim:.1f} s",
          file=sys.stderr)
    matrix = np.diag([float(spacing[0]), float(spacing[1]), 1.0, 1.0])
    tracker, model_desc = load_tracker(args.model, args.device)
    # warm-up outside the measurement (first calls allocate and pick kernels)
    if first_mask is not None and first_mask.any():
        tracker.step(frames[0], mask=first_mask)
    else:
        tracker.step(frames[0], auto=True)
    for f in frames[1:6]:
        tracker.step(f)
    tracker.reset()

    # the chain of a lab: a PlusServer-like source <- needletrack (client) ; needletrack (server) <- Slicer
    plus = socket.socket()
    plus.bind(("127.0.0.1", 0))
    plus.listen(1)
    plus.settimeout(10)
    svc = IgtlService(tracker, IgtlConfig(port=0, source=("127.0.0.1", plus.getsockname()[1]),
                                          log_interval_s=0, auto_init=True)).start()
    sender, _ = plus.accept()
    sender.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    slicer = socket.create_connection(("127.0.0.1", svc.address[1]))
    slicer.settimeout(0.2)
    arrivals: dict[float, float] = {}
    done = threading.Event()

    def receive():
        reader = MessageReader(slicer, should_stop=done.is_set)
        while not done.is_set():
            try:
                got = reader.read()
            except OSError:
                return
            if got is None:
                return
            header, body, _ = got
            if header.device == "NeedleMask":
                arrivals[header.timestamp] = time.time()

    rx = threading.Thread(target=receive, daemon=True)
    rx.start()
    time.sleep(0.3)

    if first_mask is not None and first_mask.any():  # else the service initialises automatically
        label = pyigtl.ImageMessage(first_mask.astype(np.uint8)[None] * 255, ijk_to_world_matrix=matrix,
                                    device_name="NeedleInit")
        sender.sendall(encode_message(label))
    period = 1.0 / args.fps
    sent_ts: list[float] = []
    t0 = time.monotonic()
    for i, f in enumerate(frames):
        target = t0 + i * period
        delay = target - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        raw = timestamp_to_raw(time.time())
        msg = pyigtl.ImageMessage(f[None], ijk_to_world_matrix=matrix, device_name="Image_Reference")
        sender.sendall(encode_message(msg, raw))
        sent_ts.append(timestamp_from_raw(*raw))  # the exact float the receiver parses
    send_s = time.monotonic() - t0
    # let the last results arrive
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline:
        st = svc.stats()
        if st["received"] == len(frames) and len(arrivals) >= st["processed"] and \
                st["processed"] + st["dropped"] + st["errors"] + st["skipped"] >= len(frames):
            break
        time.sleep(0.05)
    time.sleep(0.2)
    done.set()
    st = svc.stop()
    sender.close()
    slicer.close()
    plus.close()

    lat = np.array([(arrivals[t] - t) * 1000.0 for t in sent_ts if t in arrivals])
    out = {
        "model": model_desc,
        "device": args.device,
        "torch_threads": torch.get_num_threads(),
        "frames_source": frame_source,
        "frame_size": list(frames[0].shape[::-1]),
        "fps_target": args.fps,
        "fps_sent": round((len(frames) - 1) / send_s, 2),
        "sent": len(frames),
        "received": st["received"],
        "processed": st["processed"],
        "dropped": st["dropped"],
        "errors": st["errors"],
        "results_received": int(lat.size),
        "latency_ms": {"p50": round(float(np.percentile(lat, 50)), 1),
                       "p95": round(float(np.percentile(lat, 95)), 1),
                       "max": round(float(lat.max()), 1)} if lat.size else None,
        "service_latency_ms": st["latency_ms"],
        "tracker_ms": st["process_ms"],
    }
    print(json.dumps(out, indent=2))
    if args.json:
        from needletrack.utils import write_json_atomic

        write_json_atomic(args.json, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
