"""Figures of ``needletrack tables``: grouped bars per table and a Figure-7-like panel of hard frames.

Both write PNGs atomically with matplotlib's Agg backend (no display needed; :mod:`needletrack.io.figures`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from needletrack.io.figures import pyplot, save_png

_METRICS = ("iou", "dice", "precision", "recall", "f1")
_NAMES = {"iou": "IoU", "dice": "Dice", "precision": "Precision", "recall": "Recall", "f1": "F1"}


def table_bars(doc: dict, path: str | Path) -> Path:
    """Our IoU/Dice/Precision/Recall/F1 per row as grouped bars; the paper's figures (where known) as
    black-edged diamonds of the metric's colour on the same positions; our CPU FPS and the paper's GPU FPS
    printed under each row's name."""
    plt = pyplot()
    rows = doc["rows"]
    prow = (doc.get("paper") or {}).get("rows") or {}
    n, m = len(rows), len(_METRICS)
    width = 0.8 / m
    x = np.arange(n)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.25 * n + 2), 4.2), dpi=110)
    colors = plt.get_cmap("tab10").colors
    any_paper = False
    for j, k in enumerate(_METRICS):
        vals = [r["result"].get(k) or 0.0 for r in rows]
        pos = x - 0.4 + width * (j + 0.5)
        ax.bar(pos, vals, width, label=_NAMES[k], color=colors[j])
        pv = [(prow.get(r["label"]) or {}).get(k) for r in rows]
        pts = [(p, v) for p, v in zip(pos, pv) if v is not None]
        if pts:
            any_paper = True
            ax.plot([p for p, _ in pts], [v for _, v in pts], "D", color=colors[j], ms=6,
                    markeredgecolor="black", markeredgewidth=1.0,
                    label="paper (diamond, same colour)" if j == 0 else None)
    labels = []
    for r in rows:
        fps = r["result"].get("fps_cpu")
        pfps = (prow.get(r["label"]) or {}).get("fps")
        lab = f"{r['label']}\n{fps:.1f} fps CPU" if fps else r["label"]
        labels.append(lab + (f"\npaper {pfps:.1f} GPU" if pfps else ""))
    ax.set_xticks(x)
    ax.set_xticklabels(labels, fontsize=8, rotation=0 if n <= 5 else 20, ha="center" if n <= 5 else "right")
    ax.set_ylim(0, 1.0)
    ax.set_ylabel("score (pooled over scored frames)")
    title = f"{doc['title']} ({doc['scale']} scale)"
    if not any_paper:
        title += "\npaper figures not available here (no markers)"
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, ncol=6 if any_paper else 5, loc="upper right")
    ax.grid(axis="y", alpha=0.3)
    return save_png(fig, path)


def _overlay(img: np.ndarray, mask: np.ndarray | None, color=(1.0, 0.2, 0.2)) -> np.ndarray:
    g = img.astype(np.float32) / 255.0
    rgb = np.stack([g, g, g], -1)
    if mask is not None and mask.any():
        c = np.array(color, np.float32)
        rgb[mask] = 0.45 * rgb[mask] + 0.55 * c
    return rgb


def figure7_panel(seqs: list[dict], hard: list[tuple[int, int]], rows: list[tuple[str, dict]], path: str | Path,
                  title: str = "") -> Path:
    """One row per hard frame: the image, the ground truth (green), then each model's mask (red)."""
    plt = pyplot()
    nr = max(1, len(hard))
    nc = 2 + len(rows)
    fig, axes = plt.subplots(nr, nc, figsize=(1.6 * nc, 1.7 * nr + 0.5), dpi=110, squeeze=False)
    for i, (si, fi) in enumerate(hard):
        img = seqs[si]["frames"][fi]
        gt = seqs[si]["masks"][fi]
        panels = [("image", _overlay(img, None)), ("ground truth", _overlay(img, gt, (0.1, 0.9, 0.2)))]
        for label, masks in rows:
            panels.append((label, _overlay(img, masks.get((si, fi)))))
        for j, (lab, im) in enumerate(panels):
            ax = axes[i, j]
            ax.imshow(im, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(lab, fontsize=7)
        axes[i, 0].set_ylabel(f"{seqs[si]['name']}\n#{fi}", fontsize=6)
    for i in range(len(hard), nr):
        for j in range(nc):
            axes[i, j].axis("off")
    if title:
        fig.suptitle(title, fontsize=8)
    return save_png(fig, path)
