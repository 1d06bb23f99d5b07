"""A non-editable install carries its configs and default weights (package data) and finds them there."""
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from needletrack import resources

REPO = Path(__file__).resolve().parents[1]


def test_a_source_checkout_reads_the_repository_folders(monkeypatch):
    from needletrack.eval import tables
    from needletrack.models.weights import weights_dir

    monkeypatch.delenv("NEEDLETRACK_WEIGHTS_DIR", raising=False)
    assert resources.source_root() == REPO
    assert resources.data_path("weights") == REPO / "weights" == weights_dir()
    assert tables.CONFIG_DIR == REPO / "configs" / "tables"


def test_an_installed_package_reads_its_package_data(tmp_path, monkeypatch):
    from needletrack.models.weights import weights_dir

    pkg = tmp_path / "lib" / "python3" / "site-packages" / "needletrack"
    (pkg / "_data" / "weights").mkdir(parents=True)
    monkeypatch.setattr(resources, "PACKAGE_DIR", pkg)
    monkeypatch.setattr(resources, "DATA_DIR", pkg / "_data")
    monkeypatch.delenv("NEEDLETRACK_WEIGHTS_DIR", raising=False)
    assert resources.source_root() is None
    assert weights_dir() == pkg / "_data" / "weights"
    assert resources.data_path("configs", "tables") == pkg / "_data" / "configs" / "tables"
    monkeypatch.setenv("NEEDLETRACK_WEIGHTS_DIR", str(tmp_path))
    assert weights_dir() == tmp_path


@pytest.mark.slow
def test_the_wheel_ships_configs_default_weights_and_package_files(tmp_path):
    # --no-build-isolation: the build uses this environment's setuptools (torch depends on it), no index
    src = tmp_path / "tree"
    src.mkdir()
    for f in ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md"):
        shutil.copy2(REPO / f, src / f)
    for d in ("src", "configs", "weights"):
        shutil.copytree(REPO / d, src / d, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", ".onnx"))
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(src),
                        "-w", str(tmp_path / "dist")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("needletrack_us-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    configs = {str(p.relative_to(REPO)) for p in (REPO / "configs").rglob("*.yaml")}
    assert {f"needletrack/_data/{c}" for c in configs} <= names
    assert "needletrack/_data/weights/default.safetensors" in names
    assert sorted(n for n in names if n.startswith("needletrack/_data/weights/")) == [
        "needletrack/_data/weights/default.safetensors",                 # the tracking model and the learned
        "needletrack/_data/weights/detector.safetensors"]                # detector, not the training stages' weights
    assert {"needletrack/data/splits.json", "needletrack/serve/static/index.html",
            "needletrack/resources.py"} <= names
    meta = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "needletrack = needletrack.cli:main" in zipfile.ZipFile(wheel).read(meta).decode()
