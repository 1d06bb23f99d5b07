"""Where the shipped files are: the model configs, the tables configs and the default weights.

In a source checkout (``src/needletrack`` beside ``pyproject.toml``) they are the repository's ``configs/``
and ``weights/`` folders, so edits there take effect at once (editable installs included). An installed
wheel carries copies as package data under ``needletrack/_data/`` (``configs/**/*.yaml`` and
``weights/default.safetensors``; ``setup.py`` puts them there at build time).
"""
from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
DATA_DIR = PACKAGE_DIR / "_data"


def source_root() -> Path | None:
    """The repository root when this package runs from a source checkout (``<root>/src/needletrack``)."""
    root = PACKAGE_DIR.parent.parent
    if PACKAGE_DIR.parent.name == "src" and (root / "pyproject.toml").is_file():
        return root
    return None


def data_path(*parts: str) -> Path:
    """``<repository>/<parts>`` in a source checkout, else the installed package data ``_data/<parts>``."""
    root = source_root()
    if root is not None and (root / parts[0]).exists():
        return root.joinpath(*parts)
    return DATA_DIR.joinpath(*parts)
