"""The `track` command's output folder, written so that an interrupted run leaves nothing that looks complete.

    DIR/masks/<name>.png   0/255, input frame size (named like the input frames for folders, else 00000.png…)
    DIR/needle.csv         CSV_HEADER: frame,time_s,visible,score,tip/tail px,angle_deg,confirmed, and in mm
                           where the pixel spacing is known (tip/tail, length in view, tip depth)
    DIR/overlay.mp4        H.264: mask tint, shaft, tip, predicted path, frame number
    DIR/prob/<name>.png    with --save-prob: the network's raw probability map, 8-bit (round(255 p))
    DIR/summary.json       written last

While running, masks go to ``DIR/.masks.partial-<pid>/`` and the CSV and the video to hidden
``.needle.<pid>-*.partial.csv`` / ``.overlay.<pid>-*.partial.mp4`` files; :meth:`TrackOutputs.close` renames
them into place (masks, CSV, video), removes what an earlier run left that this run does not write (an old
overlay.mp4 after ``--no-overlay``), and writes summary.json last. :meth:`abort` (called on any error,
Ctrl-C or SIGTERM) deletes the partial files; a previous run's outputs in DIR are left as they were until the
new run completes. A run that was killed (SIGKILL) cannot clean up: the next run in DIR removes partial files
whose writer process is gone (:func:`remove_stale_partials`).
"""
from __future__ import annotations

import csv
import io
import os
import re
import shutil
import time
from pathlib import Path

import numpy as np

from needletrack.track.tracker import CSV_HEADER
from needletrack.utils import atomic_path, write_json_atomic


OUTPUTS = {"masks": "masks", "prob": "prob", "needle_csv": "needle.csv", "overlay": "overlay.mp4"}   # + summary.json
_PARTIAL = re.compile(r"^\.(?:(?:masks|prob)\.(?:partial|old)-(\d+)"
                      r"|(?:needle|overlay|summary)\.(?:(\d+)-)?[^/]*\.partial\.(?:csv|mp4|json))$")
_UNKNOWN_OWNER_AGE_S = 3600.0      # partial files of an older version (no pid in the name): stale after an hour


def remove_stale_partials(folder) -> list[str]:
    """Delete the hidden partial files of ``track`` runs in ``folder`` whose process is gone (a run killed
    with SIGKILL). Returns the names removed."""
    from needletrack.utils import pid_alive

    removed = []
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return removed
    for p in entries:
        m = _PARTIAL.match(p.name)
        if m is None:
            continue
        pid = m.group(1) or m.group(2)
        if pid is not None:
            if pid_alive(int(pid)):
                continue
        else:
            try:
                if time.time() - p.lstat().st_mtime < _UNKNOWN_OWNER_AGE_S:
                    continue
            except OSError:
                continue
        try:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
            removed.append(p.name)
        except OSError:
            pass
    return removed


class TrackOutputs:
    def __init__(self, out_dir, fps: float | None = None, overlay: bool = True, masks: bool = True,
                 spacing_mm=None, prob: bool = False):
        self.spacing_mm = spacing_mm
        self.dir = Path(out_dir)
        if self.dir.exists() and not self.dir.is_dir():
            from needletrack.errors import InputError

            raise InputError("--out exists and is not a folder", self.dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.stale_removed = remove_stale_partials(self.dir)
        self.fps = fps
        # image folders written per frame: masks/ (0/255) and, with prob=True, prob/ (the network's raw
        # probability map, 8-bit: round(255 * p)), each in a hidden partial folder until close()
        self._folders = {}
        for key, on in (("masks", masks), ("prob", prob)):
            if on:
                tmp = self.dir / f".{key}.partial-{os.getpid()}"
                shutil.rmtree(tmp, ignore_errors=True)
                tmp.mkdir()
                self._folders[key] = tmp
        self._csv_ctx = atomic_path(self.dir / "needle.csv")
        self._csv_tmp = self._csv_ctx.__enter__()
        self._csv_file = open(self._csv_tmp, "w", newline="")
        self._csv = csv.writer(self._csv_file)
        self._csv.writerow(CSV_HEADER)
        self._video_ctx = self._video_tmp = self._video = None
        if overlay:
            from needletrack.track.overlay import Mp4Writer

            self._video_ctx = atomic_path(self.dir / "overlay.mp4")
            self._video_tmp = self._video_ctx.__enter__()
            self._video = Mp4Writer(self._video_tmp, fps=fps or 25.0)
        self.names: set[str] = set()
        self.n = 0
        self.closed = False

    def add(self, frame, result, time_s: float | None, name: str | None = None) -> None:
        import cv2

        if time_s is None and self.fps:
            time_s = result.frame_index / self.fps
        self._csv.writerow(result.csv_row(time_s, self.spacing_mm))
        if self._folders:
            stem = Path(name).stem if name else f"{result.frame_index:05d}"
            fname = f"{stem}.png"
            if fname in self.names:      # two inputs a.png and a.jpg: keep both
                fname = f"{stem}_{result.frame_index:05d}.png"
            self.names.add(fname)
            images = {"masks": result.mask.astype(np.uint8) * 255}
            if "prob" in self._folders:
                images["prob"] = np.clip(np.asarray(result.prob) * 255.0 + 0.5, 0, 255).astype(np.uint8)
            for key, folder in self._folders.items():
                ok, buf = cv2.imencode(".png", images[key])
                if not ok:
                    raise RuntimeError(f"could not encode a {key} PNG")
                (folder / fname).write_bytes(buf.tobytes())
        if self._video is not None:
            from needletrack.track.overlay import draw_overlay

            self._video.write(draw_overlay(frame, result))
        self.n += 1

    def close(self, summary: dict) -> dict:
        """Move everything into place; summary.json last. Returns the summary written."""
        self._csv_file.close()
        if self._video is not None:
            self._video.close()
        for key, tmp in self._folders.items():
            final = self.dir / key
            old = None
            if final.exists():
                old = self.dir / f".{key}.old-{os.getpid()}"
                shutil.rmtree(old, ignore_errors=True)
                os.replace(final, old)
            os.replace(tmp, final)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        self._exit(self._csv_ctx)
        if self._video_ctx is not None:
            self._exit(self._video_ctx)
        outputs = {"needle_csv": "needle.csv"}
        for key in self._folders:
            outputs[key] = f"{key}/"
        if self._video is not None:
            outputs["overlay"] = "overlay.mp4"
        # an earlier run's outputs that this run does not write would look like this run's: remove them
        for key, name in OUTPUTS.items():
            if key in outputs:
                continue
            old = self.dir / name
            if old.is_dir() and not old.is_symlink():
                shutil.rmtree(old, ignore_errors=True)
            elif old.exists() or old.is_symlink():
                old.unlink()
        summary = dict(summary, outputs=outputs)
        write_json_atomic(self.dir / "summary.json", summary)
        self.closed = True
        return summary

    @staticmethod
    def _exit(ctx, exc: BaseException | None = None) -> None:
        if exc is None:
            ctx.__exit__(None, None, None)
        else:
            try:
                ctx.__exit__(type(exc), exc, None)
            except BaseException:  # noqa: BLE001 - the context re-raises the error we gave it
                pass

    def abort(self) -> None:
        """Delete every partial file (called on errors and interrupts)."""
        if self.closed:
            return
        self.closed = True
        err = RuntimeError("aborted")
        try:
            self._csv_file.close()
        except Exception:  # noqa: BLE001
            pass
        if self._video is not None:
            try:
                self._video.close()
            except Exception:  # noqa: BLE001
                pass
        self._exit(self._csv_ctx, err)
        if self._video_ctx is not None:
            self._exit(self._video_ctx, err)
        for tmp in self._folders.values():
            shutil.rmtree(tmp, ignore_errors=True)


def write_csv_text(results) -> str:
    """needle.csv content for a list of TrackResult (used by tests/tools)."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(CSV_HEADER)
    for r in results:
        w.writerow(r.csv_row())
    return buf.getvalue()
