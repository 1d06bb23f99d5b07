"""Track a whole cine loop into an output folder (the `needletrack track` command's engine room; the web page's
job runs it too)."""
from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np

from needletrack.errors import InputError, NeedletrackError


def parse_line(text: str) -> tuple[float, float, float, float]:
    """'X0,Y0,X1,Y1' -> four floats (one-line error otherwise)."""
    parts = [p.strip() for p in str(text).split(",")]
    try:
        vals = tuple(float(p) for p in parts)
    except ValueError:
        vals = ()
    if len(vals) != 4 or not all(math.isfinite(v) for v in vals):
        raise NeedletrackError(f"--first-line must be four numbers X0,Y0,X1,Y1 (pixels), got {text!r}")
    return vals  # type: ignore[return-value]


def read_first_mask(path, shape: tuple[int, int]) -> np.ndarray:
    """A first-frame mask file as bool, by the one mask rule (needletrack.io.masks); its size must match
    the frame's."""
    from needletrack.io.masks import binarize_mask, read_mask_array

    p = Path(path)
    img = read_mask_array(p)
    if img.shape[:2] != tuple(shape):
        raise InputError(f"mask is {img.shape[1]}×{img.shape[0]} px but the frames are {shape[1]}×{shape[0]} px", p)
    m = binarize_mask(img, p)
    if not m.any():
        raise InputError("mask is empty (no needle pixel: 0/255, 0/1 and colour masks are read): draw the "
                         "needle, or use --first-line / --auto", p)
    return m


def track_to_folder(input_path, out_dir, tracker, *, first_mask=None, first_line=None, auto: bool = False,
                    overlay: bool = True, masks: bool = True, max_frames: int | None = None, save_prob: bool = False,
                    progress: bool = True, model_name: str | None = None, gt=None, plot: bool = True) -> dict:
    """Track ``input_path`` (anything ``open_cine`` reads) and write
    DIR/{masks,needle.csv,overlay.mp4,plot.png,summary.json}.

    ``first_mask``: bool array or a PNG path. ``gt``: optional callable ``gt(i) -> bool mask`` to score against
    (the metrics of docs/design.md §5, first frame unscored); the metrics go into the summary. ``plot``: write
    plot.png (tip x/y, angle and score per frame, :mod:`needletrack.track.plot`). Returns the summary dict.
    """
    from needletrack.track.plot import PLOT_NAME, rows_from_result, write_track_plot
    from needletrack import __version__
    from needletrack.io import open_cine
    from needletrack.track.outputs import TrackOutputs

    prompts = sum(x is not None for x in (first_mask, first_line)) + bool(auto)
    if prompts == 0:
        raise NeedletrackError("the first frame needs a prompt: --first-mask PNG, --first-line X0,Y0,X1,Y1 or --auto")
    if prompts > 1:
        raise NeedletrackError("give only one of --first-mask, --first-line or --auto")
    cine = open_cine(input_path)
    acc = None
    if gt is not None:
        from needletrack.scoring import MetricAccumulator

        acc = MetricAccumulator(pixel_spacing_mm=getattr(cine, "pixel_spacing_mm", None))
    with cine:
        shape = (int(cine.height), int(cine.width))
        if first_mask is not None and not isinstance(first_mask, np.ndarray):
            first_mask = read_first_mask(first_mask, shape)
        total = int(cine.frames) if cine.frames else None
        if max_frames is not None:
            total = min(total, max_frames) if total else max_frames
        tracker.reset()
        spacing = getattr(cine, "pixel_spacing_mm", None)
        outs = TrackOutputs(out_dir, fps=cine.fps, overlay=overlay, masks=masks, spacing_mm=spacing, prob=save_prob)
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=total, unit="frame", desc="tracking", leave=False, dynamic_ncols=True)
        names = getattr(cine, "names", None)
        times: list[float] = []
        visible = 0
        scores: list[float] = []
        first_found = None
        plot_rows: list[tuple] = []
        try:
            for i, (frame, time_s) in enumerate(cine):
                if max_frames is not None and i >= max_frames:
                    break
                t0 = time.perf_counter()
                try:
                    if i == 0:
                        res = tracker.step(frame, mask=first_mask, first_line=first_line, auto=auto)
                    else:
                        res = tracker.step(frame)
                except NeedletrackError as e:
                    raise NeedletrackError(str(e), input_path) from None
                times.append(time.perf_counter() - t0)
                if res.visible:
                    visible += 1
                    scores.append(res.score)
                if first_found is None and tracker.first_found is not None:
                    first_found = tracker.first_found
                if acc is not None:
                    acc.update(res.mask, gt(i), first=(i == 0))
                outs.add(frame, res, time_s, names[i] if names and i < len(names) else None)
                if plot:
                    plot_rows.append(rows_from_result(res))
                if bar is not None:
                    bar.update(1)
            n = outs.n
            if n == 0:
                raise InputError("no frames to track", input_path)
            steady = np.asarray(times[1:] if len(times) > 1 else times) * 1000.0
            summary = {
                "needletrack_version": __version__,
                "input": str(input_path),
                "format": getattr(cine, "format", None),
                "frames": n,
                "width": shape[1],
                "height": shape[0],
                "fps": cine.fps,
                "model": model_name,
                "engine": getattr(tracker.engine, "name", None),
                "model_input_size": list(tracker.input_hw),
                "prompt": "mask" if first_mask is not None else ("line" if first_line is not None else "auto"),
                "first_found_frame": first_found,
                "confirmed": bool(getattr(tracker, "confirmed", True)),
                "auto_start_rule": getattr(tracker, "started_by", None),
                "pixel_spacing_mm": None if spacing is None else [float(v) for v in spacing],
                "pixel_spacing_source": spacing_source(cine) if spacing is not None else None,
                "visible_frames": visible,
                "mean_score_visible": float(np.mean(scores)) if scores else None,
                "ms_per_frame_mean": float(steady.mean()),
                "ms_per_frame_p50": float(np.percentile(steady, 50)),
                "ms_per_frame_p95": float(np.percentile(steady, 95)),
                "fps_tracking": float(1000.0 / steady.mean()) if steady.mean() > 0 else None,
                "memory_frames_at_end": list(tracker.memory.frames),
                "memory_bytes": int(tracker.memory.nbytes()),
                "notes": list(getattr(cine, "notes", []) or []),
            }
            if auto and first_found is None:
                summary["notes"].append("auto-init found no needle in any frame")
            if acc is not None:
                summary["metrics"] = acc.result()
            if plot:      # written (atomically) before summary.json, which stays the last file of a run
                write_track_plot(plot_rows, Path(out_dir) / PLOT_NAME, title="/".join(Path(str(input_path)).parts[-2:]))
            summary = outs.close(summary)
        except BaseException:
            outs.abort()
            raise
        finally:
            if bar is not None:
                bar.close()
    return summary


SPACING_SOURCES = {"dicom": "DICOM header (ultrasound region calibration or pixel spacing)",
                   "folder": "meta.json pixel_spacing_mm", "mha": "MetaImage ElementSpacing"}


def spacing_source(cine) -> str:
    """Where a cine's pixel spacing came from (the reader's own word where it gives one)."""
    own = getattr(cine, "pixel_spacing_source", None)
    if own:
        return str(own)
    fmt = str(getattr(cine, "format", "") or "").lower()
    for key, text in SPACING_SOURCES.items():
        if key in fmt:
            return text
    return fmt or "input"


def format_summary(summary: dict, out_dir) -> str:
    """A short human summary of a ``track`` run: frames, visible, speed, output paths."""
    from needletrack.track.overlay import playback_fps
    from needletrack.track.plot import PLOT_NAME

    out = Path(out_dir)
    n, vis = summary["frames"], summary["visible_frames"]
    ms = summary.get("ms_per_frame_mean") or 0.0
    first = summary.get("first_found_frame")
    lines = [f"tracked {n} frames of {summary['input']} with {summary.get('model')} "
             f"[{summary.get('engine')}]",
             f"  needle visible in {vis} / {n} frames" + (f" (first found at frame {first})"
                                                          if summary.get("prompt") == "auto" and first is not None
                                                          else ""),
             f"  speed {ms:.1f} ms/frame ({1000.0 / ms:.1f} frames/s)" if ms > 0 else "  speed n/a"]
    outputs = summary.get("outputs") or {}
    paths = [str(out / p) for p in (outputs.get("masks"), outputs.get("needle_csv")) if p]
    if outputs.get("overlay"):
        paths.append(f"{out / outputs['overlay']} (plays at {playback_fps(summary.get('fps')):g} fps)")
    if (out / PLOT_NAME).exists():
        paths.append(str(out / PLOT_NAME))
    paths.append(str(out / "summary.json"))
    lines.append("  outputs: " + "   ".join(paths))
    return "\n".join(lines)
