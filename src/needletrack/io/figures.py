"""Figures written to files: matplotlib on its Agg backend (no display needed), PNGs written atomically.

The one helper that ``track/plot.py`` (the per-frame plot of `track` and `demo`) and ``eval/plots.py`` (the
figures of `tables`) share; it lives in ``io`` because both layers may import it. matplotlib is imported only
inside the functions.
"""
from __future__ import annotations

from pathlib import Path

from needletrack.utils import atomic_path


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def save_png(fig, path: str | Path) -> Path:
    """Lay out, write ``fig`` as a PNG atomically, close it; the path written."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path
