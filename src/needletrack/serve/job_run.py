"""One tracking run of a web job, on the worker thread of :class:`needletrack.serve.jobs.JobManager`: the
job's prompt turned into the tracker's first-frame arguments, ``track_to_folder`` (the ``track`` CLI's
engine room) into DIR/out, a row per frame for the page as it goes, summary.json and masks.zip at the end.
Status, stats and clean-up on failure or cancel are the manager's."""
from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Callable

from needletrack.track.tracker import TrackResult

ROW_KEYS = ("frame", "time_s", "visible", "score", "tip_x", "tip_y", "tail_x", "tail_y", "angle_deg", "area_px")


class JobCancelled(Exception):
    """Raised inside the worker (from the tracker's step) when the job was cancelled."""


class _ProgressTracker:
    """Wraps the tracker for one run: reports each result and stops the run when the job is cancelled.
    Everything else (reset, first_found, engine, input_hw, memory, ...) is the wrapped tracker's."""

    def __init__(self, tracker, on_result: Callable):
        self._tracker = tracker
        self._on_result = on_result

    def step(self, frame, *args, **kwargs):
        res = self._tracker.step(frame, *args, **kwargs)
        self._on_result(res)
        return res

    def __getattr__(self, name):
        return getattr(self._tracker, name)


def _row(res, fps: float | None) -> dict:
    """The page's row of one result: its record (``TrackResult.as_record``, as in needle.csv) on ROW_KEYS."""
    i = int(res.frame_index)
    rec = TrackResult.as_record(res, time_s=(i / fps if fps else None))
    return {k: rec[k] for k in ROW_KEYS}


def track_job(job, tracker, track_fn: Callable | None, max_frames: int, model_label: str | None) -> dict:
    """Track ``job`` into job.dir/out and return its summary (also written as summary.json, with masks.zip).
    job.rows / job.done grow frame by frame; JobCancelled once job.cancel is set. ``track_fn``: default
    ``track_to_folder``."""
    out = job.dir / "out"
    fps = job.info.get("fps")
    cancel = job.cancel

    def on_result(res):
        job.rows.append(_row(res, fps))
        job.done = len(job.rows)
        if cancel.is_set():
            raise JobCancelled()

    if track_fn is None:
        from needletrack.track.cine_to_folder import track_to_folder as track_fn
    mode = job.prompt["mode"]
    kwargs = {}
    if mode == "line":
        kwargs["first_line"] = tuple(job.prompt["line"])
    elif mode == "auto":
        kwargs["auto"] = True
    else:
        kwargs["first_mask"] = job.gt(0)
    summary = track_fn(job.input_path, out, _ProgressTracker(tracker, on_result), overlay=True,
                       masks=True, max_frames=max_frames, progress=False,
                       model_name=model_label, gt=job.gt, **kwargs)
    summary = dict(summary or {})
    summary["input"] = job.name
    from needletrack.utils import write_json_atomic

    write_json_atomic(out / "summary.json", summary)
    zip_masks(out)
    return summary


def zip_masks(out: Path) -> None:
    """out/masks/*.png as out/masks.zip (stored: PNGs are compressed already)."""
    from needletrack.utils import atomic_path

    masks = sorted((out / "masks").glob("*.png")) if (out / "masks").is_dir() else []
    with atomic_path(out / "masks.zip") as tmp:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as z:
            for p in masks:
                z.write(p, f"masks/{p.name}")
