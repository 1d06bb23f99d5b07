"""Static int8 quantisation (QDQ) of an ONNX export, calibrated on simulated frames.

The key encoder, value encoder and decoder graphs get QuantizeLinear/DequantizeLinear pairs (weights int8
per channel, activations uint8 per tensor, MinMax calibration); the memory read stays fp32 (it is a softmax
over a few thousand positions: little compute, and the most sensitive part). Calibration feeds are recorded
from the fp32 graphs while they follow needles through simulated sequences
(the harness's validation set ``val/clinical``, never a test set) the way the streaming tracker drives
them with a memory frame written after every visible prediction (so the value encoder sees predicted masks
too). The loop calls the engine operations directly (:func:`_follow`), so building an int8 engine does not
import the Tracker, which builds engines itself. The fp32 engine comes from the caller
(``onnx_engine.ensure_int8`` passes ``OnnxEngine``), so this module imports no engine either. The int8 graphs are written beside the fp32 ones
(``key.int8.onnx`` ...) and listed in the manifest under ``variants.int8``.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from needletrack.errors import NeedletrackError

QUANT_ROLES = ("key", "value", "decoder", "predict")
CALIB_SEED = 9000          # simulated calibration sequences: seeds 9000, 9001, ... (test sets use small seeds)
DEFAULT_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")


def record_calibration(engine, sequences: int = 4, frames: int = 12, preset: str = "clinical",
                       seed: int = CALIB_SEED) -> dict[str, list[dict]]:
    """Feeds of each graph of the fp32 ``engine`` (an OnnxEngine), recorded while it tracks simulated
    sequences (:func:`_follow`): the harness's validation set ``val/<preset>`` (needletrack.data.splits), which
    starts every sequence at its first visible needle (``seed`` is kept for old callers and not used)."""
    from needletrack.data.splits import iter_set

    records: dict[str, list[dict]] = {}
    run = engine._run

    def recording_run(role, feeds):
        names = engine._inputs[role]
        records.setdefault(role, []).append({k: np.array(v) for k, v in feeds.items() if k in names})
        return run(role, feeds)

    engine._run = recording_run
    try:
        hw = engine.input_hw
        size = hw[0] if hw[0] == hw[1] else tuple(hw)
        for seq in iter_set(f"val/{preset}", sequences, frames, size=size):
            _follow(engine, zip(seq.frames, seq.masks, seq.needle))
    finally:
        del engine._run
    if not records:
        raise NeedletrackError("int8 calibration: the simulated sequences never showed a needle")
    return records


def _follow(engine, sequence) -> None:
    """Drive ``engine`` through one ``(frame, mask, needle)`` sequence as ``Tracker(engine, mem_every=1,
    memory_slots=engine.memory_slots, mem_min_score=0.0)`` does, from the first frame that shows the needle (given as the
    first mask): the same normalisation, letterbox, memory store, top-k and visibility gate (probability
    >= 0.5 over at least 2e-4 of the frame, at least 4 px), so the recorded feeds are the tracker's."""
    from needletrack.track.frames import FrameNormaliser
    from needletrack.track.letterbox import Letterbox
    from needletrack.track.memory import MemoryStore

    norm = FrameNormaliser()
    memory = MemoryStore(memory_slots=max(2, engine.memory_slots or 9), every=1)
    top_k = getattr(engine, "top_k_default", 20)
    static = bool(getattr(engine, "static_memory", False))
    lb = prev = None
    i = 0
    for frame, mask, _ in sequence:
        if lb is None and not np.asarray(mask).any():
            continue
        img = norm(frame)
        if lb is None:                                   # the prompted first frame
            lb = Letterbox(img.shape, engine.input_hw)
            if engine.is_memory_model:
                x = lb.forward(img)
                m_in = np.clip(lb.forward(np.asarray(mask, dtype=bool).astype(np.float32)), 0.0, 1.0)
                q = engine.encode_key(x, prev=None)
                v = engine.encode_value(x, m_in, q)
                memory.allocate(engine, q.key, v)
                memory.set_first(q.key, v, i)
                prev = getattr(q, "raw16", None)
        else:
            x = lb.forward(img)
            if not engine.is_memory_model:
                engine.predict(x)
            else:
                q = engine.encode_key(x, prev=prev)
                keys, vals, valid = memory.view(static=static)
                r = engine.read_memory(keys, vals, q, valid=valid, top_k=top_k)
                prob_in = engine.segment(r, q)
                prev = getattr(q, "raw16", None)
                prob = np.clip(np.asarray(lb.backward(prob_in), dtype=np.float32), 0.0, 1.0)
                visible = int((prob >= 0.5).sum()) >= max(4, int(round(2e-4 * prob.size)))
                if visible and memory.due(i):
                    memory.add(q.key, engine.encode_value(x, prob_in, q), i)
        i += 1


class _Reader:
    def __init__(self, feeds):
        self.feeds = list(feeds)
        self.i = 0

    def get_next(self):
        if self.i >= len(self.feeds):
            return None
        self.i += 1
        return self.feeds[self.i - 1]

    def rewind(self):
        self.i = 0


def quantize_graph(src: Path, dst: Path, feeds: list[dict], ops=DEFAULT_OPS) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as d:
        pre = Path(d) / "pre.onnx"
        try:
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        except Exception:  # noqa: BLE001 - pre-processing is an optimisation; quantise the raw graph
            pre = src
        quantize_static(str(pre), str(dst), _Reader(feeds), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
                        calibrate_method=CalibrationMethod.MinMax, op_types_to_quantize=list(ops),
                        extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})


def ensure_int8(folder, open_engine, log=None, rebuild: bool = False, sequences: int = 4,
                frames: int = 12) -> dict:
    """The manifest of ``folder`` with its int8 variant, quantising (and recording the manifest) if needed.

    ``open_engine(folder)`` gives the fp32 engine to calibrate with (``OnnxEngine``; callers use
    :func:`needletrack.track.onnx_engine.ensure_int8`, which passes it)."""
    from needletrack.track import onnx_manifest as ox
    from needletrack.track.onnx_graphs import graph_io

    folder = Path(folder)
    man = ox.read_manifest(folder)
    if not rebuild and man.get("variants", {}).get("int8"):
        try:
            return ox.check_export(folder, variant="int8")
        except NeedletrackError as e:
            if log:
                log(f"rebuilding the int8 graphs ({e})")
    t0 = time.perf_counter()
    records = record_calibration(open_engine(folder), sequences=sequences, frames=frames)
    variant = {}
    for role, g in man["graphs"].items():
        if role not in QUANT_ROLES or role not in records:
            continue
        src = folder / g["file"]
        dst = folder / f"{role}.int8.onnx"
        from needletrack.utils import atomic_path

        with atomic_path(dst) as tmp:
            quantize_graph(src, tmp, records[role])
        ins, outs = graph_io(dst)
        variant[role] = {"file": dst.name, "sha256": ox.file_sha256(dst), "bytes": dst.stat().st_size,
                         "inputs": ins, "outputs": outs}
    man.setdefault("variants", {})["int8"] = variant
    man["int8"] = {"format": "QDQ", "weights": "int8 per channel (symmetric)", "activations": "uint8 per tensor",
                   "calibration": {"method": "MinMax", "source": "needletrack.data.splits val/clinical",
                                   "preset": "clinical", "sequences": sequences, "frames": frames,
                                   "samples": {r: len(v) for r, v in records.items()}},
                   "ops": list(DEFAULT_OPS), "fp32_roles": sorted(set(man["graphs"]) - set(variant)),
                   "seconds": round(time.perf_counter() - t0, 1)}
    ox.update_manifest(folder, man)
    return ox.check_export(folder, variant="int8")
