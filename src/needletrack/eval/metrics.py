"""Folder evaluation (``needletrack evaluate``): predicted mask folders against a data set root, scored with the
metrics of docs/design.md §5. Their one definition, and the place they are written down, is
:mod:`needletrack.scoring` (``confusion``, ``scores_from_counts``, ``frame_iou``, ``MetricAccumulator``), re-exported
here for the callers that import them from ``needletrack.eval.metrics``.
"""
from __future__ import annotations

from pathlib import Path

from needletrack.errors import InputError
from needletrack.io.spacing import parse_spacing
from needletrack.scoring import (RESULT_KEYS, MetricAccumulator, confusion, frame_iou,  # noqa: F401 (re-exported)
                                 scores_from_counts)


# --------------------------------------------------------------------------------------------------
# Folder evaluation: PRED_DIR against a data set root (docs/design.md §5 folder format)

def _pred_folder_for(pred_dir: Path, seq_name: str, single: bool) -> Path:
    candidates = []
    if single:
        candidates += [pred_dir / "masks", pred_dir]
    candidates += [pred_dir / seq_name / "masks", pred_dir / seq_name]
    for c in candidates:
        if c.is_dir() and _has_images(c):
            return c
    raise InputError(f"no predicted masks for sequence '{seq_name}' (looked for "
                     f"{seq_name}/masks/*.png or {seq_name}/*.png)", pred_dir)


def _has_images(folder: Path) -> bool:
    from needletrack.data.folder import IMAGE_EXTS

    return any(p.suffix.lower() in IMAGE_EXTS for p in folder.iterdir())


def evaluate_sequence(pred_folder: Path, seq, accumulate: MetricAccumulator | None = None) -> MetricAccumulator:
    """Score the predicted masks in ``pred_folder`` against ``seq`` (a data.folder.Sequence).

    Predicted masks are matched to ground-truth masks by file stem (``00007.png`` ↔ ``00007.png``; any
    image extension). The first frame (first file in frames/) is not scored and may be absent from the
    prediction. Frames without a ground-truth mask (sparse annotation) are not scored either.
    """
    from needletrack.data.folder import IMAGE_EXTS, read_mask

    if seq.mask_paths is None or not seq.mask_paths:
        raise InputError("ground-truth sequence has no masks", seq.path / "masks")
    meta = seq.meta or {}
    spacing = parse_spacing(meta.get("pixel_spacing_mm"), seq.path / "meta.json")
    entry = meta.get("entry_side")
    if entry is not None and entry not in ("left", "right", "top"):
        raise InputError(f"entry_side must be left, right or top, got {entry!r}", seq.path / "meta.json")
    acc = MetricAccumulator(pixel_spacing_mm=spacing, entry_side=entry)
    preds = {p.stem: p for p in pred_folder.iterdir()
             if p.suffix.lower() in IMAGE_EXTS and not p.name.startswith(".")}
    first_stem = seq.frame_paths[0].stem  # the given first frame: never scored
    frame_stems = {f.stem for f in seq.frame_paths}
    orphans = [m for m in seq.mask_paths if m.stem not in frame_stems]
    if orphans:                           # the ground truth's fault, not the prediction's
        shown = ", ".join(m.name for m in orphans[:3]) + (f", ... ({len(orphans)} in all)" if len(orphans) > 3 else "")
        raise InputError(f"ground-truth mask(s) {shown} of sequence '{seq.name}' have no frame in frames/",
                         orphans[0].parent)
    scored = [m for m in seq.mask_paths if m.stem != first_stem]
    missing = [m.stem for m in scored if m.stem not in preds]
    if missing:
        shown = ", ".join(missing[:3]) + (f", ... ({len(missing)} in all)" if len(missing) > 3 else "")
        raise InputError(f"prediction folder is missing frames {shown} of sequence '{seq.name}'", pred_folder)
    from needletrack.io.masks import mask_warning

    odd: list[tuple] = []
    for mpath in scored:
        gt = read_mask(mpath)
        pred = read_mask(preds[mpath.stem])
        if pred.shape != gt.shape:
            raise InputError(f"mask size {pred.shape[1]}x{pred.shape[0]} differs from the ground truth "
                             f"{gt.shape[1]}x{gt.shape[0]} ({mpath})", preds[mpath.stem])
        note = mask_warning(gt)
        if note:
            odd.append((mpath, note))
        acc.update(pred, gt)
    if odd:
        import warnings

        from needletrack.errors import NeedletrackWarning

        warnings.warn(f"{len(odd)} ground-truth mask(s) of sequence '{seq.name}' look wrong, scored as given "
                      f"(first: {odd[0][0]} {odd[0][1]})", NeedletrackWarning, stacklevel=2)
    if accumulate is not None:
        accumulate.merge(acc)
    return acc


def evaluate_dirs(pred_dir, gt_root) -> dict:
    """``{"overall": {...}, "sequences": {name: {...}}}`` for PRED_DIR against GT_ROOT.

    PRED_DIR layouts: ``PRED_DIR/<seq>/masks/00000.png`` or ``PRED_DIR/<seq>/00000.png``; when GT_ROOT is a
    single sequence folder, also ``PRED_DIR/masks/00000.png`` or ``PRED_DIR/00000.png``.
    """
    from needletrack.data.folder import list_sequences, read_sequence

    pred_dir = Path(pred_dir)
    gt_root = Path(gt_root)
    if not pred_dir.is_dir():
        raise InputError("no such folder" if not pred_dir.exists() else "not a folder", pred_dir)
    seq_paths = list_sequences(gt_root)
    single = len(seq_paths) == 1 and seq_paths[0] == gt_root
    overall = MetricAccumulator()
    sequences = {}
    for sp in seq_paths:
        seq = read_sequence(sp)
        folder = _pred_folder_for(pred_dir, seq.name, single)
        acc = evaluate_sequence(folder, seq, overall)
        sequences[seq.name] = acc.result()
    return {"overall": overall.result(), "sequences": sequences}


def format_table(result: dict) -> str:
    """A plain-text table of an evaluate_dirs() result."""
    cols = [("iou", "IoU"), ("dice", "Dice"), ("precision", "Prec"), ("recall", "Rec"), ("f1", "F1"),
            ("per_frame_iou", "fIoU"), ("empty_frame_accuracy", "EmptyAcc"), ("tip_error_px", "Tip px"),
            ("tip_error_mm", "Tip mm"), ("angle_error_deg", "Angle"), ("frames", "Frames")]
    rows = [(name, r) for name, r in result["sequences"].items()] + [("OVERALL", result["overall"])]
    w0 = max(8, *(len(n) for n, _ in rows))

    def fmt(v, key):
        if v is None:
            return "-"
        if key == "frames":
            return str(v)
        return f"{v:.2f}" if key in ("tip_error_px", "tip_error_mm", "angle_error_deg") else f"{v:.3f}"

    widths = [max(len(h), 6) for _, h in cols]
    lines = ["sequence".ljust(w0) + "  " + "  ".join(h.rjust(wd) for (_, h), wd in zip(cols, widths))]
    for name, r in rows:
        lines.append(name.ljust(w0) + "  " + "  ".join(fmt(r.get(k), k).rjust(wd)
                                                       for (k, _), wd in zip(cols, widths)))
    return "\n".join(lines)
