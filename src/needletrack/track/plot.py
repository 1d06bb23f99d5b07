"""The per-frame plot that `track` and `demo` write next to their outputs (plot.png).

Three panels over the frame index, like the web page's plot: tip x and y (pixels), the needle's angle
(degrees) and the score, with the frames where the needle is visible shaded. Written atomically with
matplotlib's Agg backend (no display needed; :mod:`needletrack.io.figures`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from needletrack.io.figures import pyplot, save_png

PLOT_NAME = "plot.png"


def rows_from_result(res) -> tuple:
    """(frame, visible, score, tip_x, tip_y, angle_deg) of one TrackResult; NaN where there is no value."""
    tip = res.tip if (res.visible and res.tip is not None) else (np.nan, np.nan)
    ang = res.angle_deg if (res.visible and res.angle_deg is not None) else np.nan
    score = res.score if res.score is not None else np.nan
    return (int(res.frame_index), bool(res.visible), float(score), float(tip[0]), float(tip[1]), float(ang))


def write_track_plot(rows, path, title: str | None = None) -> Path:
    """Write the per-frame plot of ``rows`` (tuples from :func:`rows_from_result`) to ``path`` (PNG)."""
    plt = pyplot()
    a = np.array([r for r in rows], dtype=np.float64).reshape(-1, 6)
    frame, vis, score, tx, ty, ang = a.T
    fig, axes = plt.subplots(3, 1, figsize=(7.0, 5.2), dpi=100, sharex=True)
    for ax in axes:                     # shade the frames where the needle is visible
        on = vis > 0.5
        ax.fill_between(frame, 0, 1, where=on, step="mid", color="#d9f2d9", alpha=0.8,
                        transform=ax.get_xaxis_transform(), linewidth=0)
        ax.grid(True, alpha=0.3)
    axes[0].plot(frame, tx, ".-", ms=3, lw=1, label="tip x")
    axes[0].plot(frame, ty, ".-", ms=3, lw=1, label="tip y")
    axes[0].set_ylabel("tip (px)")
    axes[0].legend(loc="upper right", fontsize=8, ncol=2)
    axes[1].plot(frame, ang, ".-", ms=3, lw=1, color="tab:purple")
    axes[1].set_ylabel("angle (deg)")
    axes[2].plot(frame, score, ".-", ms=3, lw=1, color="tab:red")
    axes[2].set_ylim(-0.02, 1.02)
    axes[2].set_ylabel("score")
    axes[2].set_xlabel("frame (shaded: needle visible)")
    if title:
        axes[0].set_title(title, fontsize=9)
    return save_png(fig, path)
