"""needletrack: find and follow a biopsy needle in live 2D ultrasound video."""
from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["Tracker", "__version__"]


def __getattr__(name):  # lazy: importing needletrack must not import torch
    if name == "Tracker":
        from needletrack.track import Tracker

        return Tracker
    raise AttributeError(name)
