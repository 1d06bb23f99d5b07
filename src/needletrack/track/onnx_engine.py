"""The ONNX Runtime engine: the tracker's model operations on exported graphs (``onnx_export.py``).

Drop-in for :class:`needletrack.track.engine.TorchEngine` (same methods; memory buffers are numpy arrays with
a fixed number of ``memory_slots``, ``static_memory = True``, so every graph has static shapes)::

    from needletrack.track import Tracker
    from needletrack.track.onnx_engine import OnnxEngine
    tracker = Tracker(OnnxEngine("default"))            # weights name/path, model object, or export folder

Session options (one place: :func:`session_options`): graph optimisation ``ORT_ENABLE_ALL``, sequential
execution, ``intra_op_num_threads`` = the physical cores this process may run on (:func:`physical_cores`;
``$NEEDLETRACK_THREADS`` overrides), ``inter_op_num_threads`` = 1. All graphs of one engine share one
intra-op thread pool size; the CPU execution provider only.

Loading from the cache needs onnxruntime only; torch is imported only when a graph must be (re)exported.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

from needletrack.errors import InputError, NeedletrackError

PRECISIONS = ("fp32", "int8")
DEFAULT_SPIN = False  # measured: spinning workers collapse a shared CPU; NEEDLETRACK_ORT_SPIN=1 turns it on


class OnnxFeatures(NamedTuple):
    """What ``encode_key`` returns: numpy arrays shaped like the torch engine's QueryFeatures."""
    key: np.ndarray
    f16: np.ndarray
    f8: np.ndarray
    f4: np.ndarray
    raw16: np.ndarray | None


def physical_cores() -> int:
    """Physical cores available to this process (hyper-threads counted once; CPU affinity respected)."""
    try:
        allowed = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        allowed = list(range(os.cpu_count() or 1))
    cores = set()
    try:
        cpu = phys = core = None
        with open("/proc/cpuinfo") as f:
            for line in f.read().splitlines() + [""]:
                if not line.strip():
                    if cpu is not None and cpu in allowed:
                        cores.add((phys, core if core is not None else cpu))
                    cpu = phys = core = None
                    continue
                k, _, v = line.partition(":")
                k, v = k.strip(), v.strip()
                if k == "processor":
                    cpu = int(v)
                elif k == "physical id":
                    phys = v
                elif k == "core id":
                    core = v
    except (OSError, ValueError):
        cores = set()
    n = len(cores) or len(allowed) or 1
    return max(1, min(n, len(allowed) or n))


def default_threads() -> int:
    env = os.environ.get("NEEDLETRACK_THREADS")
    if env:
        try:
            n = int(env)
            if n >= 1:
                return n
        except ValueError:
            pass
        raise NeedletrackError(f"NEEDLETRACK_THREADS must be a positive integer, got {env!r}")
    return physical_cores()


def default_spin() -> bool:
    env = os.environ.get("NEEDLETRACK_ORT_SPIN")
    if env is None or env == "":
        return DEFAULT_SPIN
    if env not in ("0", "1"):
        raise NeedletrackError(f"NEEDLETRACK_ORT_SPIN must be 0 or 1, got {env!r}")
    return env == "1"


def session_options(threads: int | None = None, spin: bool | None = None):
    """The engine's onnxruntime SessionOptions (documented in README.md)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    n = int(threads or default_threads())
    spin = default_spin() if spin is None else bool(spin)
    if n > 1:
        # worker threads busy-wait for work between operators unless told not to
        so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.intra_op_num_threads = n
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return so


def make_session(model, threads: int | None = None, where=None):
    """An InferenceSession (CPU) from a path or serialized bytes; InputError naming ``where`` if unloadable."""
    import onnxruntime as ort

    try:
        return ort.InferenceSession(model if isinstance(model, (bytes, bytearray)) else str(model),
                                    session_options(threads), providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - ORT raises its own types for bad graphs
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InputError(f"onnxruntime cannot load this graph ({msg}); re-run `needletrack export-onnx`",
                         where if where is not None else (model if not isinstance(model, bytes) else None)) \
            from None


class OnnxEngine:
    """Runs a needletrack model's exported graphs with onnxruntime on the CPU.

    ``source``: a weights name or path (graphs exported on first use and cached next to the weights, keyed
    by the weights' sha256), a model object (cached in the user cache dir, keyed by its tensors' checksum),
    or an export folder / its manifest.json / one of its .onnx files (used as is: refused if corrupt or
    stale). ``precision``: "fp32" or "int8" (static QDQ quantisation, calibrated on simulated frames and
    cached beside the fp32 graphs).
    """

    static_memory = True

    def __init__(self, source="default", device: str = "cpu", input_size=None, *, precision: str = "fp32",
                 threads: int | None = None, memory_slots: int | None = None, log=None):
        from needletrack.track import onnx_export as ox

        if device is not None and not str(device).startswith("cpu"):
            raise NeedletrackError(f"the ONNX engine runs on the CPU; use engine='torch' for device {device!r}")
        if precision not in PRECISIONS:
            raise NeedletrackError(f"unknown precision {precision!r} (choose {', '.join(PRECISIONS)})")
        self.precision = precision
        self.name = "onnx" if precision == "fp32" else f"onnx-{precision}"
        self.threads = int(threads or default_threads())
        if ox.is_export_path(source):
            folder = ox.export_folder_of(source)
            man = ox.check_export(folder, variant="fp32")
            src = man.get("source")
            if src and Path(src).is_file() and ox.file_sha256(src) != man.get("source_sha256"):
                raise InputError(f"stale export: {src} changed since it was exported (sha256 differs from the "
                                 f"manifest); re-run `needletrack export-onnx`", folder)
            if input_size is not None:
                from needletrack.track.letterbox import _hw

                if tuple(man["input_size"]) != _hw(input_size):
                    raise NeedletrackError(f"{folder}: exported at input size {man['input_size']}, "
                                           f"not {list(_hw(input_size))}; re-export with --size")
            if precision != "fp32":
                man = ox.check_export(folder, variant=precision)
        else:
            folder = ox.ensure_export(source, input_hw=input_size, memory_slots=memory_slots, log=log)
            man = ox.read_manifest(folder)
            if precision == "int8":
                man = ensure_int8(folder, log=log)
        self.folder = Path(folder)
        self.manifest = man
        self.is_memory_model = bool(man["is_memory_model"])
        self.has_flow = bool(man.get("has_flow"))
        self.input_hw = tuple(int(v) for v in man["input_size"])
        self.top_k_default = man.get("top_k")
        self.memory_slots = man.get("memory_slots")
        graphs = man["graphs"] if precision == "fp32" else {**man["graphs"], **man["variants"][precision]}
        self.graph_files = {role: self.folder / g["file"] for role, g in graphs.items()}
        self.sessions = {role: make_session(p, self.threads, p) for role, p in self.graph_files.items()}
        self._inputs = {role: {i.name for i in s.get_inputs()} for role, s in self.sessions.items()}
        self._read: dict[tuple[int, int | None], object] = {}
        if self.is_memory_model:
            self._read[(int(man["memory_positions"]), man.get("top_k"))] = self.sessions["read"]
            self._zero_prev = None
            if self.has_flow:
                shape = next(i["shape"] for i in graphs["key"]["inputs"] if i["name"] == "prev")
                self._zero_prev = np.zeros(shape, np.float32)
            self._true, self._false = np.array([True]), np.array([False])

    # -- conversions ----------------------------------------------------------------------------------
    @staticmethod
    def _arr(x, dtype=np.float32) -> np.ndarray:
        if not isinstance(x, np.ndarray):
            if hasattr(x, "detach"):  # a torch tensor
                x = x.detach().cpu().numpy()
            x = np.asarray(x)
        if x.dtype != dtype or not x.flags.c_contiguous:
            x = np.ascontiguousarray(x, dtype=dtype)
        return x

    def _image(self, x) -> np.ndarray:
        x = self._arr(x)
        while x.ndim < 4:
            x = x[None]
        return x

    def zeros(self, shape, dtype: str = "float32"):
        return np.zeros(tuple(shape), dtype=bool if dtype == "bool" else np.float32)

    @staticmethod
    def key_of(q):
        return q.key

    def _run(self, role, feeds):
        names = self._inputs[role]
        return self.sessions[role].run(None, {k: v for k, v in feeds.items() if k in names})

    # -- model operations -----------------------------------------------------------------------------
    def encode_key(self, image, prev=None) -> OnnxFeatures:
        feeds = {"image": self._image(image)}
        if self.has_flow:
            feeds["prev"] = self._zero_prev if prev is None else self._arr(prev)
            feeds["first"] = self._true if prev is None else self._false
        out = self._run("key", feeds)
        return OnnxFeatures(*out[:4], out[4] if len(out) > 4 else None)

    def encode_value(self, image, mask, q) -> np.ndarray:
        f16 = q.f16 if hasattr(q, "f16") else q
        return self._run("value", {"image": self._image(image), "mask": self._image(mask), "f16": self._arr(f16)})[0]

    def read_session(self, n_positions: int, top_k):
        """The read graph for ``n_positions`` memory positions and ``top_k`` (exported on demand when it is
        not the shipped one: the read has no weights, so this only needs torch once)."""
        k = (int(n_positions), None if top_k is None else int(top_k))
        if k[1] is not None and k[1] >= k[0]:
            k = (k[0], None)
        s = self._read.get(k)
        if s is None:
            import io

            from needletrack.track.onnx_graphs import export_read_graph

            h, w = self.manifest["feature_size"]
            buf = io.BytesIO()      # model None: the models' own read_memory (the read has no weights)
            export_read_graph(None, buf, n_positions=k[0], key_dim=int(self.manifest["key_dim"]),
                              value_dim=int(self.manifest["value_dim"]), feature_hw=(h, w), top_k=k[1])
            s = make_session(buf.getvalue(), self.threads, self.folder)
            self._read[k] = s
        return s

    def read_memory(self, mem_key, mem_val, q, valid=None, top_k=None) -> np.ndarray:
        mem_key, mem_val = self._arr(mem_key), self._arr(mem_val)
        n = mem_key.shape[2]
        valid = np.ones((1, n), bool) if valid is None else self._arr(valid, bool)
        key = q.key if hasattr(q, "key") else q
        s = self.read_session(n, top_k)
        return s.run(None, {"mem_key": mem_key, "mem_val": mem_val, "valid": valid, "key": self._arr(key)})[0]

    def segment(self, readout, q) -> np.ndarray:
        out = self._run("decoder", {"readout": self._arr(readout), "f16": q.f16, "f8": q.f8, "f4": q.f4})[0]
        return out[0, 0]

    def predict(self, image) -> np.ndarray:
        return self._run("predict", {"image": self._image(image)})[0][0, 0]

    def describe(self) -> dict:
        return {"engine": self.name, "folder": str(self.folder), "threads": self.threads,
                "graph_optimization": "ORT_ENABLE_ALL", "execution_mode": "sequential",
                "input_size": list(self.input_hw), "memory_slots": self.memory_slots, "top_k": self.top_k_default,
                "read": self.manifest.get("read"), "source_sha256": self.manifest.get("source_sha256")}


def ensure_int8(folder, log=None, rebuild: bool = False, sequences: int = 4, frames: int = 12) -> dict:
    """The manifest of export ``folder`` with its int8 variant, calibrating an fp32 engine of the folder and
    quantising when needed (:func:`needletrack.track.onnx_quant.ensure_int8`)."""
    from needletrack.track import onnx_quant

    return onnx_quant.ensure_int8(folder, OnnxEngine, log=log, rebuild=rebuild, sequences=sequences,
                                  frames=frames)


def auto_engine(name_or_path, device: str = "cpu", input_size=None, log=None):
    """What ``engine="auto"`` should build: this engine on the CPU when onnxruntime is installed and the graphs
    are cached or can be exported now; ``None`` (use torch) on a GPU, without onnxruntime, for a model
    object, or when the export itself fails (logged). A user error (missing/corrupt weights) still raises.
    """
    if device is not None and not str(device).startswith("cpu"):
        return None
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return None
    if not isinstance(name_or_path, (str, os.PathLike)):
        return None
    from needletrack.track.onnx_export import ExportError

    try:
        return OnnxEngine(name_or_path, input_size=input_size, log=log)
    except ExportError as e:
        if log:
            log(f"ONNX engine unavailable ({e}); using torch")
        return None
    except NeedletrackError:
        raise
    except Exception as e:  # noqa: BLE001 - an export problem must not stop tracking: fall back to torch
        if log:
            log(f"ONNX engine unavailable ({type(e).__name__}: {e}); using torch")
        return None
