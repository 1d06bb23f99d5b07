"""The Markdown of the paper's tables (``needletrack tables``): our figures beside the paper's, the
rankings, the notes; and ``publish_table``, the copy into docs/. ``scripts/render_tables.py`` re-renders
published tables with ``render_markdown`` without training."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable

from needletrack.utils import atomic_path, write_text_atomic

METRICS = ("iou", "dice", "precision", "recall", "f1")
METRIC_NAMES = {"iou": "IoU", "dice": "Dice", "precision": "Precision", "recall": "Recall", "f1": "F1"}
PAPER_NA = "paper figure not available here"


def _f(v, nd=3):
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return f"{v:.{nd}f}"


def ranking(doc: dict, metric: str = "iou") -> list[str]:
    """Row labels of the trained/detector rows, best first by ``metric``."""
    rows = [(r["result"].get(metric) or 0.0, r["label"]) for r in doc["rows"]]
    return [lab for _v, lab in sorted(rows, key=lambda x: -x[0])]


def render_markdown(doc: dict, names: dict | None = None) -> str:
    """The table's Markdown; ``names`` overrides the PNG file names it links ({"png": ..., "fig7": ...})."""
    n = doc["table"]
    names = {"png": f"table{n}.png", "fig7": f"figure7_table{n}.png", **(names or {})}
    sc = doc["scale_config"]
    t = doc["test_set"]
    tr = sc["train"]
    clip = tr.get("clip", {})
    paper = doc.get("paper") or {}
    prow = paper.get("rows") or {}
    any_paper = any(v is not None for r in prow.values() for v in (r or {}).values())
    lines = [f"# {doc['title']} — `{doc['scale']}` scale", ""]
    lines.append(
        f"Scale `{doc['scale']}`: input {sc['input_size']}×{sc['input_size']} px (paper: 448×448); every model row "
        f"trained from scratch by `needletrack.train` for {tr['steps']} steps × batch {tr.get('batch_size', 4)} × "
        f"{clip.get('frames', 5)}-frame clips of the same simulated clip stream (seed {tr.get('seed', 0)}); "
        f"evaluated by tracking {t['sequences']} simulated test sequences × {t['frames']} frames "
        f"(presets {', '.join(t['presets'])}, "
        f"{('seed ' + str(t['seed'])) if 'seed' in t else 'the harness sets test/<preset>'}): the first frame's "
        f"mask is given and not scored. "
        f"IoU/Dice/Precision/Recall/F1 are pooled over all scored frames (F1 = Dice by definition); tip and "
        f"angle errors are means over frames where both masks are non-empty. **FPS is measured on CPU** "
        f"({doc['cpu']}, {doc['threads']} torch thread(s); FPS = 1 / median time of a whole `Tracker.step`, "
        f"ms/frame = the mean), not on the paper's GPU.")
    lines.append("")
    if not any_paper:
        lines.append(f"Paper figures: **{doc.get('paper_note') or PAPER_NA}** — `configs/tables/paper.yaml` "
                     "holds a slot for each figure (fill it in and re-render to show them). Nothing in the paper "
                     "columns is invented.")
        lines.append("")
    else:
        lines.append(f"Paper columns: the paper's own figures ({doc.get('paper_source') or 'configs/tables/paper.yaml'}"
                     "), copied from its table as printed. They come from another test set (the paper's private "
                     "clinical data), at another input size and with FPS on a GPU: compare the *rankings*, not the "
                     "numbers.")
        lines.append("")
    for note in doc.get("preface_notes") or []:
        lines.append(note)
        lines.append("")
    hdr = ["Model", "IoU", "Dice", "Precision", "Recall", "F1", "per-frame IoU", "FPS (CPU)", "ms/frame",
           "Tip err (px)", "Angle err (°)", "Paper IoU", "Paper Dice", "Paper Precision", "Paper Recall",
           "Paper F1", "Paper FPS (GPU)"]
    lines.append("| " + " | ".join(hdr) + " |")
    lines.append("|" + "|".join(["---"] + ["---:"] * (len(hdr) - 1)) + "|")
    best = {m: max((r["result"].get(m) or 0.0) for r in doc["rows"]) for m in METRICS}
    for r in doc["rows"]:
        res = r["result"]
        p = prow.get(r["label"]) or {}

        def cell(m):
            s = _f(res.get(m))
            return f"**{s}**" if res.get(m) is not None and res.get(m) == best[m] and best[m] > 0 else s

        def pc(m, nd=3):
            v = p.get(m)
            return _f(v, nd) if v is not None else "n/a"

        lines.append("| " + " | ".join([
            r["label"], cell("iou"), cell("dice"), cell("precision"), cell("recall"), cell("f1"),
            _f(res.get("per_frame_iou")), _f(res.get("fps_cpu"), 1), _f(res.get("ms_per_frame_mean"), 1),
            _f(res.get("tip_error_px"), 1), _f(res.get("angle_error_deg"), 1),
            pc("iou"), pc("dice"), pc("precision"), pc("recall"), pc("f1"), pc("fps", 2),
        ]) + " |")
    lines.append("")
    lines.append("Bold: our best per column. `–`: undefined (no frame where both masks are non-empty). "
                 "`n/a`: " + ("not in the paper (our own extra row)." if any_paper else PAPER_NA + "."))
    lines.append("")
    order = ranking(doc)
    lines.append(f"Our ranking by IoU: {' > '.join(order)}.")
    pbest = paper.get("best")
    if pbest:
        agree = order and order[0] == pbest
        lines.append(f"The paper's choice/best row: {pbest} — our best is {order[0]}: "
                     f"{'agrees' if agree else 'disagrees'}.")
    if any_paper:
        porder = [lab for lab in sorted(prow, key=lambda k: -((prow[k] or {}).get("iou") or 0.0))
                  if (prow[lab] or {}).get("iou") is not None]
        if porder:
            lines.append(f"The paper's ranking by IoU: {' > '.join(porder)}.")
    lines.append("")
    if doc.get("kept_notes") is not None:            # re-rendered from a published table: its notes as written
        lines += list(doc["kept_notes"])
        lines.append("")
        lines.append(f"![{doc['title']}: our bars, the paper's figures as markers]({names['png']})")
        lines.append("")
        lines.append(f"![Figure 7 style: the same hard frames, ground truth (green) and each row's mask (red)]"
                     f"({names['fig7']})")
        lines.append("")
        return "\n".join(lines)
    notes = [r for r in doc["rows"] if r.get("note")]
    for r in notes:
        lines.append(f"- {r['label']}: {r['note']}.")
    lines.append("- Rows: " + "; ".join(f"{r['label']} = `{r['model']}`" for r in doc["rows"] if r["model"]) + ".")
    tt = [r["train"]["wall_time_s"] for r in doc["rows"] if r.get("train") and r["train"].get("wall_time_s")]
    if tt:
        lines.append(f"- Training wall time per row: {min(tt):.0f}–{max(tt):.0f} s on CPU.")
    loads = [v for r in doc["rows"] for v in (r["result"].get("load_avg_1min") or []) if v is not None]
    if loads:
        cores = next((r["result"].get("cpu_count") for r in doc["rows"] if r["result"].get("cpu_count")), None)
        lines.append(f"- FPS was measured with a 1-minute load average of {min(loads):.1f}–{max(loads):.1f}"
                     + (f" on {cores} cores" if cores else "") + " (a shared machine slows every row alike only "
                     "roughly; compare FPS within a table, and only loosely).")
    hard = ", ".join(h["sequence"] + " #" + str(h["frame"]) for h in doc["hard_frames"])
    lines.append(f"- Hard frames of the Figure-7 panel (lowest needle visibility): {hard}.")
    lines.append("")
    lines.append(f"![{doc['title']}: our bars, the paper's figures as markers]({names['png']})")
    lines.append("")
    lines.append(f"![Figure 7 style: the same hard frames, ground truth (green) and each row's mask (red)]({names['fig7']})")
    lines.append("")
    return "\n".join(lines)


def publish_table(out: Path, n: int, scale: str, dest: Path, log: Callable[[str], None] = print) -> list[Path]:
    """Copy table ``n``'s Markdown and PNGs into ``dest`` (e.g. docs/) as ``table{n}_{scale}.md``,
    ``table{n}_{scale}.png`` and ``figure7_table{n}_{scale}.png`` (the Markdown's links follow)."""
    doc = json.loads((out / f"table{n}.json").read_text())
    tag = f"table{n}_{scale}"
    names = {"png": f"{tag}.png", "fig7": f"figure7_{tag}.png"}
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    for src, dst in ((out / f"table{n}.png", dest / names["png"]), (out / f"figure7_table{n}.png", dest / names["fig7"])):
        with atomic_path(dst) as tmp:
            tmp.write_bytes(src.read_bytes())
        written.append(dst)
    md = dest / f"{tag}.md"
    write_text_atomic(md, render_markdown(doc, names))
    written.append(md)
    log(f"published {', '.join(p.name for p in written)} to {dest}")
    return written

