"""Static int8 quantisation (QDQ) of an ONNX export, calibrated on simulated frames.

The key encoder, value encoder and decoder graphs get QuantizeLinear/DequantizeLinear pairs (weights int8
per channel, activations uint8 per tensor, MinMax calibration); the memory read stays fp32 (it is a softmax
over a few thousand positions: little compute, and the most sensitive part). Calibration feeds are recorded
from the fp32 graphs while the streaming tracker follows needles through simulated sequences
(``needletrack.sim.simulate_sequence``, seeds far from the test set's), every frame written to memory so the
value encoder sees predicted masks too. The int8 graphs are written beside the fp32 ones
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


def record_calibration(folder, sequences: int = 4, frames: int = 12, preset: str = "clinical",
                       seed: int = CALIB_SEED) -> dict[str, list[dict]]:
    """Feeds of each graph, recorded while the fp32 engine tracks simulated sequences."""
    from needletrack.sim import simulate_sequence
    from needletrack.track.onnx_engine import OnnxEngine
    from needletrack.track.tracker import Tracker

    class Recorder(OnnxEngine):
        def _run(self, role, feeds):
            names = self._inputs[role]
            self.records.setdefault(role, []).append({k: np.array(v) for k, v in feeds.items() if k in names})
            return super()._run(role, feeds)

    eng = Recorder(folder)
    eng.records = {}
    hw = eng.input_hw
    for s in range(sequences):
        tr = Tracker(eng, mem_every=1, mem_cap=max(1, (eng.memory_slots or 9) - 1), mem_min_score=0.0)
        started = False
        for frame, mask, _ in simulate_sequence(frames, size=hw, preset=preset, seed=seed + s):
            if not started:
                if not mask.any():
                    continue
                tr.step(frame, mask=mask)
                started = True
            else:
                tr.step(frame)
    if not eng.records:
        raise NeedletrackError("int8 calibration: the simulated sequences never showed a needle")
    return eng.records


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


def ensure_int8(folder, log=None, rebuild: bool = False, sequences: int = 4, frames: int = 12) -> dict:
    """The manifest of ``folder`` with its int8 variant, quantising (and recording the manifest) if needed."""
    from needletrack.track import onnx_export as ox

    folder = Path(folder)
    man = ox.read_manifest(folder)
    if not rebuild and man.get("variants", {}).get("int8"):
        try:
            return ox.check_export(folder, variant="int8")
        except NeedletrackError as e:
            if log:
                log(f"rebuilding the int8 graphs ({e})")
    t0 = time.perf_counter()
    records = record_calibration(folder, sequences=sequences, frames=frames)
    variant = {}
    for role, g in man["graphs"].items():
        if role not in QUANT_ROLES or role not in records:
            continue
        src = folder / g["file"]
        dst = folder / f"{role}.int8.onnx"
        from needletrack.utils import atomic_path

        with atomic_path(dst) as tmp:
            quantize_graph(src, tmp, records[role])
        ins, outs = ox._graph_io(dst)
        variant[role] = {"file": dst.name, "sha256": ox.file_sha256(dst), "bytes": dst.stat().st_size,
                         "inputs": ins, "outputs": outs}
    man.setdefault("variants", {})["int8"] = variant
    man["int8"] = {"format": "QDQ", "weights": "int8 per channel (symmetric)", "activations": "uint8 per tensor",
                   "calibration": {"method": "MinMax", "source": "needletrack.sim.simulate_sequence",
                                   "preset": "clinical", "sequences": sequences, "frames": frames,
                                   "seeds": [CALIB_SEED, CALIB_SEED + sequences - 1],
                                   "samples": {r: len(v) for r, v in records.items()}},
                   "ops": list(DEFAULT_OPS), "fp32_roles": sorted(set(man["graphs"]) - set(variant)),
                   "seconds": round(time.perf_counter() - t0, 1)}
    ox.update_manifest(folder, man)
    return ox.check_export(folder, variant="int8")
