"""Save and load models as safetensors, with the model config (JSON) in the file's metadata.

Metadata keys: ``needletrack_config`` (ModelConfig.to_dict() as JSON), ``needletrack_format`` ("1"),
``needletrack_meta`` (free JSON given to save_model: training step, data, metrics...).
Names (no path separator, no .safetensors suffix) resolve to ``<weights dir>/<name>.safetensors`` where the
weights dir is ``$NEEDLETRACK_WEIGHTS_DIR``, else the repository's ``weights/`` in a source checkout, else the
installed package's copy of the shipped weights (``needletrack/_data/weights``, see ``needletrack.resources``).
``"default"`` is the shipped tracker. A preset name with no weights file gives an error that says how to train
one; ``load_model(..., allow_random=True)`` builds it untrained instead.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from needletrack.errors import InputError, NeedletrackError
from needletrack.models.config import ModelConfig

FORMAT_VERSION = "1"


def weights_dir() -> Path:
    env = os.environ.get("NEEDLETRACK_WEIGHTS_DIR")
    if env:
        return Path(env)
    from needletrack.resources import data_path

    return data_path("weights")


def resolve_weights(name_or_path: str | os.PathLike) -> Path:
    """A path to an existing file, or ``weights_dir()/<name>.safetensors`` for a bare name."""
    s = os.fspath(name_or_path)
    p = Path(s)
    if p.suffix == ".safetensors" or os.sep in s or "/" in s or p.exists():
        return p
    return weights_dir() / f"{s}.safetensors"


def write_weights(model, path: str | os.PathLike, fmt: str, config: dict, meta: dict[str, Any] | None) -> Path:
    """Write ``model``'s state dict (float tensors as stored) to ``path`` atomically, with the format tag, the
    config and the provenance ``meta`` in the safetensors header."""
    from safetensors.torch import save_file

    from needletrack.utils import atomic_path

    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    metadata = {"needletrack_format": fmt, "needletrack_config": json.dumps(config),
                "needletrack_meta": json.dumps(meta or {}, default=str)}
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=metadata)
    return path


def save_model(model, path: str | os.PathLike, meta: dict[str, Any] | None = None) -> Path:
    """Write ``model``'s state dict (float tensors as stored) and config to ``path`` atomically."""
    cfg = getattr(model, "cfg", None)
    if not isinstance(cfg, ModelConfig):
        raise NeedletrackError("save_model: the model has no ModelConfig in .cfg")
    return write_weights(model, path, FORMAT_VERSION, cfg.to_dict(), meta)


MAX_HEADER_BYTES = 100_000_000   # safetensors' own limit on the JSON header


def read_header_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The ``__metadata__`` strings of a .safetensors file, from its JSON header alone (no torch, no tensors).

    The one reader of weights metadata (``read_metadata`` and the tracker's shipped settings use it). Checks
    what safetensors checks before the tensors: an 8-byte little-endian header length within the file and
    under 100 MB, a JSON object, string metadata, tensor data offsets inside the file.
    InputError ("weights file not found" / "not a readable safetensors file (...)") otherwise."""
    import struct

    path = Path(path)
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            (n,) = struct.unpack("<Q", f.read(8))
            if n > MAX_HEADER_BYTES or 8 + n > size:
                raise ValueError(f"header length {n} does not fit the file ({size} bytes)")
            header = json.loads(f.read(n))
        if not isinstance(header, dict):
            raise ValueError("header is not a JSON object")
        md = header.get("__metadata__") or {}
        if not isinstance(md, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in md.items()):
            raise ValueError("__metadata__ must map strings to strings")
        ends = [t.get("data_offsets", [0, 0])[1] for k, t in header.items()
                if k != "__metadata__" and isinstance(t, dict)]
        if any(not isinstance(e, int) or e > size - 8 - n for e in ends):
            raise ValueError("tensor data run past the end of the file")
    except FileNotFoundError:
        raise InputError("weights file not found", path) from None
    except (OSError, ValueError, TypeError, IndexError, AttributeError, struct.error) as e:
        raise InputError(f"not a readable safetensors file ({type(e).__name__}: {e})", path) from None
    return dict(md)


def read_metadata(path: str | os.PathLike) -> tuple[ModelConfig, dict[str, Any]]:
    """(config, meta) stored in a weights file, without loading the tensors (header only: no torch)."""
    path = Path(path)
    md = read_header_metadata(path)
    if "needletrack_config" not in md:
        raise InputError("safetensors file has no needletrack model config in its metadata", path)
    try:
        cfg = ModelConfig.from_dict(json.loads(md["needletrack_config"]))
        meta = json.loads(md.get("needletrack_meta", "{}"))
    except (ValueError, NeedletrackError) as e:
        raise InputError(f"bad model config in metadata: {e}", path) from None
    return cfg, meta


def load_model(name_or_path: str | os.PathLike, device: str = "cpu", allow_random: bool = False):
    """Build the model described in a weights file and load its weights; returns it in eval mode.

    ``model.weights_meta`` holds the saved meta dict and ``model.weights_path`` the file.
    """
    from safetensors.torch import load_file

    from needletrack.models.registry import build_model, get_config, list_presets

    path = resolve_weights(name_or_path)
    if not path.exists():
        s = os.fspath(name_or_path)
        if s in list_presets():
            if allow_random:
                model = build_model(get_config(s)).to(device).eval()
                model.weights_meta, model.weights_path = {"untrained": True}, None
                return model
            raise InputError(f"no trained weights for preset '{s}' (train one with `needletrack train`, "
                             f"or set NEEDLETRACK_WEIGHTS_DIR)", path)
        raise InputError("weights file not found", path)
    cfg, meta = read_metadata(path)
    model = build_model(cfg)
    try:
        state = load_file(str(path), device="cpu")
    except Exception as e:  # noqa: BLE001
        raise InputError(f"cannot read tensors ({type(e).__name__}: {e})", path) from None
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shape mismatches
        raise InputError(f"weights do not match config '{cfg.name}': {str(e).splitlines()[-1].strip()}",
                         path) from None
    if missing or unexpected:
        raise InputError(f"weights do not match config '{cfg.name}': {len(missing)} missing "
                         f"(e.g. {missing[:2]}), {len(unexpected)} unexpected (e.g. {unexpected[:2]})", path)
    model = model.to(device).eval()
    model.weights_meta, model.weights_path = meta, path
    return model
