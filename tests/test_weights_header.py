"""One reader of safetensors metadata: needletrack.models.weights.read_header_metadata (no torch)."""
from __future__ import annotations

import subprocess
import sys

import pytest

from needletrack.errors import InputError


def test_header_metadata_matches_safetensors_and_refuses_junk(tmp_path):
    from safetensors import safe_open

    from needletrack.models import build_model
    from needletrack.models.weights import read_header_metadata, read_metadata, save_model

    path = save_model(build_model("stnan_tiny"), tmp_path / "m.safetensors", meta={"tracker": {"threshold": 0.4}})
    with safe_open(str(path), framework="pt") as f:
        assert read_header_metadata(path) == f.metadata()
    cfg, meta = read_metadata(path)
    assert cfg.name and meta == {"tracker": {"threshold": 0.4}}
    with pytest.raises(InputError, match="not found"):
        read_header_metadata(tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 3)
    with pytest.raises(InputError, match="not a readable safetensors file"):
        read_header_metadata(tmp_path / "junk.safetensors")
    data = path.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])   # tensors cut short
    with pytest.raises(InputError, match="not a readable safetensors file"):
        read_metadata(tmp_path / "cut.safetensors")


def test_reading_metadata_does_not_import_torch(tmp_path):
    code = ("import sys; from needletrack.models.weights import read_header_metadata; "
            "assert 'torch' not in sys.modules and 'safetensors' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
