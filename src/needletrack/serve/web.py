"""A web page to try needletrack: upload a cine (or take the built-in simulated sample), draw the needle on the
first frame (or choose automatic initialisation), track, watch the overlay and download the outputs.

    from needletrack.serve.web import create_app, WebConfig
    app = create_app(tracker, config=WebConfig(max_upload_mb=100))     # a FastAPI app; uvicorn.run(app)

Design:
* one job per cine; a job lives in its own temporary folder under one root that is removed at shutdown;
* jobs are tracked one at a time by a single worker thread (the Tracker is stateful and CPU-bound), so a
  busy server queues instead of thrashing; the number of jobs kept is bounded (admission holds a lock and
  reserves its slot, so parallel uploads cannot overshoot), only jobs idle for ``evict_idle_s`` make room
  (never queued or running ones, never fresh ones: the server answers 429 instead), idle ones expire;
* a job is reachable only by whoever holds its id (128 random bits; there is no listing of jobs);
* every request must name this server in its Host header (``allowed_hosts``: against DNS rebinding), and a
  request that changes state (POST, DELETE, ...) is refused when the browser says it comes from another site
  (``Origin`` / ``Sec-Fetch-Site``); clients that send neither (curl, scripts) are not affected;
* uploads are bounded in bytes (checked while the body streams in, not after) and validated with the same
  cine readers as the CLI (``needletrack.io.open_cine``), so the page and ``needletrack track`` accept the
  same files and give the same one-line messages;
* the tracking itself is ``needletrack.track.pipeline.track_to_folder`` (the ``track`` CLI's engine room):
  the outputs are exactly the CLI's (masks/, needle.csv, overlay.mp4, summary.json) plus masks.zip.

The JSON API is listed at ``/docs`` (OpenAPI at ``/openapi.json``).
"""
from __future__ import annotations

import logging
import math
import os
import queue
import re
import secrets
import shutil
import tempfile
import threading
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
from fastapi import FastAPI, File, HTTPException, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from needletrack.errors import InputError, NeedletrackError

log = logging.getLogger("needletrack.serve.web")

STATIC_DIR = Path(__file__).with_name("static")
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv")
DICOM_SUFFIXES = (".dcm", ".dicom", ".dic", "")
MHA_SUFFIXES = (".mha",)
ZIP_SUFFIXES = (".zip",)
ACCEPTED = ("video (.mp4 .avi .mov .mkv .webm), DICOM (.dcm or no extension), PLUS/MetaImage .mha or a .zip of "
            "frame images (.png .jpg .tif)")
DOWNLOADS = {  # name -> media type
    "overlay.mp4": "video/mp4",
    "needle.csv": "text/csv",
    "summary.json": "application/json",
    "masks.zip": "application/zip",
}
STATUSES = ("ready", "queued", "running", "done", "failed", "cancelled")
ACTIVE = ("queued", "running")
ROW_KEYS = ("frame", "time_s", "visible", "score", "tip_x", "tip_y", "tail_x", "tail_y", "angle_deg", "area_px")


@dataclass
class WebConfig:
    """Limits and defaults of the web app (all have command-line options in ``serve-web``)."""

    max_upload_mb: float = 200.0      # request body bound, checked while it streams in
    max_jobs: int = 8                 # jobs kept at once (ready + queued + running + finished)
    max_frames: int = 1500            # frames tracked per job (the rest of a longer cine is skipped, with a note)
    max_side_px: int = 2048           # larger frames are refused
    job_ttl_s: float = 3600.0         # a job untouched this long is deleted
    work_dir: str | None = None       # parent of the temporary job folders (default: the system temp dir)
    sample_frames: int = 40           # the built-in simulated sample
    sample_size: int | None = None    # default: the model's input size (clamped to 64..512)
    sample_preset: str = "clinical"
    evict_idle_s: float = 600.0       # when full, a job not queued/running and idle this long may make room
    # Host header names served (DNS rebinding guard); IPv6 without brackets. serve-web sets them from --host
    # and --allowed-host
    allowed_hosts: tuple = ("localhost", "127.0.0.1", "::1")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)


class JobCancelled(Exception):
    """Raised inside the worker (from the tracker's step) when the job was cancelled."""


class BusyError(NeedletrackError):
    """Too many jobs at once (HTTP 429)."""


class StateError(NeedletrackError):
    """The job is not in a state that allows this (HTTP 409)."""


class NotFound(NeedletrackError):
    """No such job or file (HTTP 404)."""


# --------------------------------------------------------------------------------------------------------------
# jobs
# --------------------------------------------------------------------------------------------------------------
@dataclass
class Job:
    id: str
    kind: str                          # "upload" | "sample"
    name: str                          # what the user called it (file name), shown in messages
    dir: Path
    input_path: Path
    info: dict = field(default_factory=dict)
    status: str = "ready"
    error: str | None = None
    prompt: dict | None = None
    done: int = 0                      # frames tracked so far
    total: int | None = None           # frames that will be tracked
    rows: list = field(default_factory=list)
    summary: dict | None = None
    notes: list = field(default_factory=list)
    suggested_line: list | None = None   # sample only: the simulator's shaft on frame 0 (x0, y0, x1, y1)
    gt: Any = None                     # sample only: callable frame -> bool mask (scores the run)
    created: float = field(default_factory=time.time)
    touched: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    run_id: int = 0

    def public(self) -> dict:
        elapsed = None
        if self.started is not None:
            elapsed = (self.finished or time.time()) - self.started
        d = {
            "id": self.id, "kind": self.kind, "name": self.name, "status": self.status, "error": self.error,
            "info": self.info, "prompt": self.prompt,
            "progress": {"done": self.done, "total": self.total,
                         "fraction": (min(1.0, self.done / self.total) if self.total else None)},
            "elapsed_s": None if elapsed is None else round(elapsed, 3),
            "notes": list(self.notes), "suggested_line": self.suggested_line,
            "summary": self.summary,
            "links": {"frame0": f"/api/jobs/{self.id}/frame0.png", "rows": f"/api/jobs/{self.id}/rows"},
        }
        if self.status == "done":
            d["links"].update({k: f"/api/jobs/{self.id}/files/{k}" for k in DOWNLOADS})
        return d


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


def _fmt(v, nd):
    return None if v is None else round(float(v), nd)


def _row(res, fps: float | None) -> dict:
    tip, tail = res.tip, res.tail
    i = int(res.frame_index)
    return {
        "frame": i, "time_s": (round(i / fps, 4) if fps else None), "visible": bool(res.visible),
        "score": round(float(res.score), 4),
        "tip_x": _fmt(tip and tip[0], 2), "tip_y": _fmt(tip and tip[1], 2),
        "tail_x": _fmt(tail and tail[0], 2), "tail_y": _fmt(tail and tail[1], 2),
        "angle_deg": _fmt(res.angle_deg, 2), "area_px": int(getattr(res, "area_px", 0) or 0),
    }


def _display_name(filename: str | None) -> str:
    name = os.path.basename((filename or "").replace("\\", "/")).strip()
    name = re.sub(r"[^\w.\- ()+,]", "_", name)[:120]
    return name or "upload"


def _suffix_of(name: str) -> str:
    low = name.lower()
    if low.endswith(".igs.mha"):
        return ".mha"
    suf = Path(low).suffix
    return "" if suf.lstrip(".").isdigit() else suf


class JobManager:
    """Jobs, their folders and the single tracking worker. Thread-safe; the web routes call it from FastAPI's
    thread pool.

    ``tracker_factory()`` returns the tracker (called once, lazily, in the worker thread, unless
    :meth:`tracker` is asked first). ``track_fn`` has ``track_to_folder``'s signature (injectable for tests).
    """

    def __init__(self, tracker_factory: Callable[[], Any], config: WebConfig | None = None,
                 track_fn: Callable | None = None, model_label: str | None = None):
        self.config = config or WebConfig()
        self._factory = tracker_factory
        self._tracker = None
        self._tracker_lock = threading.Lock()
        self.track_fn = track_fn
        self.model_label = model_label
        parent = self.config.work_dir
        if parent:
            Path(parent).mkdir(parents=True, exist_ok=True)
        self.root = Path(tempfile.mkdtemp(prefix="needletrack-web-", dir=parent))
        self._jobs: dict[str, Job] = {}
        self._pending = 0                  # slots reserved by uploads/samples still being validated
        self._lock = threading.RLock()
        self._queue: queue.Queue = queue.Queue()
        self._worker: threading.Thread | None = None
        self._closed = False
        self.stats = {"jobs_created": 0, "runs": 0, "runs_done": 0, "runs_failed": 0, "runs_cancelled": 0,
                      "uploads_rejected": 0, "jobs_evicted": 0, "jobs_expired": 0}

    # ---------------------------------------------------------------------------------------------- tracker
    def tracker(self):
        with self._tracker_lock:
            if self._tracker is None:
                self._tracker = self._factory()
            return self._tracker

    def model_info(self) -> dict:
        info: dict[str, Any] = {"label": self.model_label}
        t = self._tracker
        if t is not None:
            try:
                info["input_size"] = list(t.input_hw)
            except Exception:  # noqa: BLE001 - a stand-in tracker in tests
                pass
            eng = getattr(t, "engine", None)
            info["engine"] = getattr(eng, "name", None)
        return info

    # ---------------------------------------------------------------------------------------------- jobs
    def _reserve_job(self):
        """Admit one job (a slot under the lock) and make its folder; the slot is given back if that fails."""
        self._admit()
        try:
            return self._new_job_dir()
        except OSError:
            self._release()
            raise

    def _new_job_dir(self) -> tuple[str, Path]:
        jid = secrets.token_urlsafe(16)              # 128 random bits: the id is the only key to a job
        d = self.root / jid
        d.mkdir()
        return jid, d

    def _admit(self) -> None:
        """Reserve a slot for a new job (released by :meth:`_add` or :meth:`_release`). Under the lock: expire
        jobs idle past the TTL; if the store (jobs + reservations) is full, evict the least recently used job
        that is neither queued/running nor touched within ``evict_idle_s``; if there is none, refuse (429)."""
        now = time.time()
        with self._lock:
            if self._closed:
                raise BusyError("the server is shutting down")
            for j in list(self._jobs.values()):
                if j.status not in ACTIVE and now - j.touched > self.config.job_ttl_s:
                    self._remove(j)
                    self.stats["jobs_expired"] += 1
            while len(self._jobs) + self._pending >= self.config.max_jobs:
                idle = sorted((j for j in self._jobs.values()
                               if j.status not in ACTIVE and now - j.touched >= self.config.evict_idle_s),
                              key=lambda j: j.touched)
                if not idle:
                    raise BusyError(f"the server is busy: it keeps {self.config.max_jobs} jobs and all are in use "
                                    f"(queued, running or used in the last {self.config.evict_idle_s / 60:g} "
                                    "min); try again later")
                self._remove(idle[0])
                self.stats["jobs_evicted"] += 1
            self._pending += 1

    def _release(self) -> None:
        with self._lock:
            self._pending -= 1

    def _remove(self, job: Job) -> None:
        job.cancel.set()
        self._jobs.pop(job.id, None)
        if job.status == "queued":        # the worker will skip it
            job.status = "cancelled"
        if job.status != "running":       # the worker removes a running job's folder when it stops
            shutil.rmtree(job.dir, ignore_errors=True)

    def _clean(self, msg: str, job: Job) -> str:
        """A message with the server's temporary paths replaced by the user's file name."""
        msg = str(msg)
        for p, label in ((job.input_path, job.name), (job.dir, job.name), (self.root, "")):
            msg = msg.replace(str(p), label)
        return " ".join(msg.split())

    def create_upload(self, src: Path | Any, filename: str | None) -> Job:
        """A job from an uploaded file (a path to move, or a binary file object to copy). Validates it (readable
        cine, size limits) and extracts the first frame; raises InputError with a one-line message otherwise."""
        name = _display_name(filename)
        suffix = _suffix_of(name)
        if name.lower().endswith(".mhd"):
            self.stats["uploads_rejected"] += 1
            raise InputError("a .mhd header needs its separate pixel file; upload a single-file .mha instead",
                             name)
        if suffix not in VIDEO_SUFFIXES + DICOM_SUFFIXES + MHA_SUFFIXES + ZIP_SUFFIXES:
            self.stats["uploads_rejected"] += 1
            raise InputError(f"unsupported file type '{suffix}'; expected {ACCEPTED}", name)
        jid, d = self._reserve_job()
        dest = d / f"input{suffix}"
        job = Job(id=jid, kind="upload", name=name, dir=d, input_path=dest)
        try:
            if isinstance(src, (str, os.PathLike)):
                shutil.move(os.fspath(src), dest)
            else:
                with open(dest, "wb") as f:
                    shutil.copyfileobj(src, f, 1 << 20)
            size = dest.stat().st_size
            if size == 0:
                raise InputError("the file is empty", name)
            if size > self.config.max_upload_bytes:
                raise InputError(f"the file is {size / 2**20:.1f} MB; the limit is "
                                 f"{self.config.max_upload_mb:g} MB", name)
            if suffix == ".zip":
                job.input_path = self._unzip_frames(dest, d / "frames", name)
            if suffix in MHA_SUFFIXES:        # the pixels must be in the upload itself (ElementDataFile = LOCAL)
                from needletrack.io.mha import check_header

                check_header(dest, allow_data_file=False)
            job.info = self._probe(job)
            job.info["bytes"] = size
        except NeedletrackError as e:
            shutil.rmtree(d, ignore_errors=True)
            self._release()
            self.stats["uploads_rejected"] += 1
            raise InputError(self._clean(str(e), job)) from None
        except Exception as e:  # noqa: BLE001 - a reader choking on garbage: still a bad input, one line
            shutil.rmtree(d, ignore_errors=True)
            self._release()
            self.stats["uploads_rejected"] += 1
            raise InputError(self._clean(f"cannot read the file as a cine ({type(e).__name__}: {e})", job),
                             name) from None
        self._add(job)
        return job

    def _unzip_frames(self, zpath: Path, folder: Path, name: str) -> Path:
        """Extract the frame images of a zip into one flat folder (zip-slip and zip-bomb safe); the frames are
        then read like an image folder (natural sort of the file names)."""
        from needletrack.io.folder import IMAGE_EXTS

        budget = 4 * self.config.max_upload_bytes          # uncompressed bytes allowed
        try:
            z = zipfile.ZipFile(zpath)
        except zipfile.BadZipFile:
            raise InputError("not a readable zip file", name) from None
        with z:
            members = []
            for info in z.infolist():
                base = info.filename.replace("\\", "/").rsplit("/", 1)[-1]
                if info.is_dir() or not base or base.startswith(".") or "__MACOSX" in info.filename:
                    continue
                if Path(base).suffix.lower() in IMAGE_EXTS:
                    members.append((base, info))
            if not members:
                raise InputError(f"the zip holds no frame images ({', '.join(IMAGE_EXTS)})", name)
            if len(members) > max(self.config.max_frames, 1) * 4:
                raise InputError(f"the zip holds {len(members)} images; the limit is "
                                 f"{self.config.max_frames * 4}", name)
            seen: set[str] = set()
            total = 0
            folder.mkdir()
            for base, info in members:
                if base in seen:
                    raise InputError(f"two images are named {base} (in different folders of the zip)", name)
                seen.add(base)
                total += info.file_size
                if total > budget:
                    raise InputError(f"the zip unpacks to more than {budget / 2**20:.0f} MB", name)
                with z.open(info) as src, open(folder / base, "wb") as dst:
                    left = budget - (total - info.file_size)
                    while True:                       # never trust the declared size alone
                        chunk = src.read(1 << 20)
                        if not chunk:
                            break
                        left -= len(chunk)
                        if left < 0:
                            raise InputError(f"the zip unpacks to more than {budget / 2**20:.0f} MB", name)
                        dst.write(chunk)
        zpath.unlink()
        return folder

    def create_sample(self, frames: int | None = None, seed: int = 1, size: int | None = None) -> Job:
        """A job on a simulated needle insertion (needletrack.sim), with ground truth to score against."""
        from needletrack.data.folder import SequenceWriter, read_sequence
        from needletrack.sim import simulate_sequence

        n = int(frames or self.config.sample_frames)
        if not 2 <= n <= 300:
            raise InputError("the sample needs 2..300 frames")
        if size is None:
            size = self.config.sample_size
        if size is None:
            try:
                size = int(self.tracker().input_hw[0])
            except Exception:  # noqa: BLE001
                size = 256
            size = int(min(512, max(64, size)))
        if not 32 <= int(size) <= 1024:
            raise InputError("the sample size must be 32..1024 px")
        jid, d = self._reserve_job()
        try:
            # the prompt needs a needle on the first frame: a seed whose insertion starts off-screen gives way
            # to the next one (the seed used is reported)
            for seed in range(int(seed), int(seed) + 20):
                it = simulate_sequence(n, int(size), self.config.sample_preset, seed)
                gen = iter(it)
                first = next(gen)
                if first[2].get("visible") and int(np.count_nonzero(first[1])) >= 20:
                    break
            meta = dict(getattr(it, "meta", {}) or {})
            meta["source"] = f"needletrack.sim preset={self.config.sample_preset} seed={seed}"
            w = SequenceWriter(d, "sample", meta)
            w.add(*first)
            for frame, mask, needle in gen:
                w.add(frame, mask, needle)
            w.close()
            seq = read_sequence(d / "sample")
            job = Job(id=jid, kind="sample", name=f"simulated sample (seed {seed})", dir=d,
                      input_path=d / "sample")
            job.gt = seq.mask
            job.info = self._probe(job)
        except BaseException:
            shutil.rmtree(d, ignore_errors=True)
            self._release()
            raise
        needle0 = seq.needle[0] if seq.needle else {}
        if needle0.get("visible") and needle0.get("tip") and needle0.get("tail"):
            w, h = job.info["width"], job.info["height"]      # the shaft may enter from just outside the image
            x0, y0, x1, y1 = (float(v) for v in (*needle0["tail"], *needle0["tip"]))
            job.suggested_line = [round(min(max(x, 0.0), w - 1.0), 1) if k % 2 == 0 else
                                  round(min(max(x, 0.0), h - 1.0), 1) for k, x in enumerate((x0, y0, x1, y1))]
        self._add(job)
        return job

    def _probe(self, job: Job) -> dict:
        """Open the cine like `needletrack track` would, check limits, save the first frame as frame0.png."""
        from needletrack.io import open_cine
        from needletrack.utils import write_png_atomic

        cine = open_cine(job.input_path)
        with cine:
            w, h = int(cine.width), int(cine.height)
            if max(w, h) > self.config.max_side_px:
                raise InputError(f"frames are {w}×{h} px; the limit is {self.config.max_side_px} px a side",
                                 job.name)
            first = None
            for image, _t in cine:
                first = image
                break
            if first is None:
                raise InputError("the cine has no frames", job.name)
            write_png_atomic(job.dir / "frame0.png", np.ascontiguousarray(first))
            frames = int(cine.frames) if cine.frames else None
            fps = float(cine.fps) if cine.fps else None
            info = {"format": cine.format, "frames": frames, "width": w, "height": h, "fps": fps,
                    "duration_s": getattr(cine, "duration", None),
                    "pixel_spacing_mm": getattr(cine, "pixel_spacing_mm", None),
                    "notes": list(getattr(cine, "notes", []) or [])}
        if frames and frames > self.config.max_frames:
            job.notes.append(f"only the first {self.config.max_frames} of {frames} frames will be tracked "
                             "(server limit)")
        return info

    def _add(self, job: Job) -> None:
        """Turn the slot reserved by :meth:`_admit` into the job."""
        with self._lock:
            self._pending -= 1
            if self._closed:
                shutil.rmtree(job.dir, ignore_errors=True)
                raise BusyError("the server is shutting down")
            self._jobs[job.id] = job
            self.stats["jobs_created"] += 1
        log.info("job %s: %s (%s)", job.id, job.name, job.info.get("format"))

    def get(self, job_id: str) -> Job:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                raise NotFound(f"no job '{job_id}' (finished jobs expire after "
                               f"{self.config.job_ttl_s / 60:g} min or when the server needs room)")
            job.touched = time.time()
            return job

    def list(self) -> list[Job]:
        with self._lock:
            return sorted(self._jobs.values(), key=lambda j: j.created)

    def delete(self, job_id: str) -> None:
        with self._lock:
            self._remove(self.get(job_id))

    def cancel(self, job_id: str) -> Job:
        with self._lock:
            job = self.get(job_id)
            if job.status not in ACTIVE:     # nothing to cancel: done, failed, cancelled or never started
                raise StateError(f"job {job.id} is {job.status}; only a queued or running job can be cancelled")
            job.cancel.set()
            if job.status == "queued":          # the worker skips it
                job.status = "cancelled"
                job.finished = time.time()
            return job

    # ---------------------------------------------------------------------------------------------- running
    def start(self, job_id: str, prompt: dict) -> Job:
        """Queue a tracking run. ``prompt``: {"mode": "line", "line": [x0, y0, x1, y1]} | {"mode": "auto"} |
        {"mode": "truth"} (sample jobs: the simulator's first-frame mask)."""
        with self._lock:
            job = self.get(job_id)
            if job.status in ACTIVE:
                raise StateError(f"job {job.id} is already {job.status}; cancel it first")
            mode = prompt.get("mode")
            if mode == "line":
                line = [float(v) for v in prompt.get("line") or []]
                w, h = job.info.get("width"), job.info.get("height")
                if len(line) != 4 or not all(math.isfinite(v) for v in line):
                    raise InputError("the line needs four finite numbers x0, y0, x1, y1 (pixels)")
                if not (all(0 <= x <= w - 1 for x in line[0::2]) and all(0 <= y <= h - 1 for y in line[1::2])):
                    raise InputError(f"the line ({', '.join(f'{v:g}' for v in line)}) lies outside the "
                                     f"{w}×{h} first frame")
                if math.hypot(line[2] - line[0], line[3] - line[1]) < 3:
                    raise InputError("the line is shorter than 3 px: draw it along the needle shaft")
                prompt = {"mode": "line", "line": line}
            elif mode == "auto":
                prompt = {"mode": "auto"}
            elif mode == "truth":
                if job.gt is None:
                    raise InputError("mode 'truth' is only for the simulated sample (it has a ground truth)")
                if not job.gt(0).any():
                    raise InputError("the sample's first frame has no needle; use 'auto'")
                prompt = {"mode": "truth"}
            else:
                raise InputError(f"unknown prompt mode {mode!r}; expected 'line', 'auto' or 'truth'")
            job.prompt = prompt
            job.status = "queued"
            job.error = None
            job.summary = None
            job.rows = []
            job.done = 0
            fr = job.info.get("frames")
            job.total = min(fr, self.config.max_frames) if fr else None
            job.cancel = threading.Event()
            job.run_id += 1
            job.started = job.finished = None
            self._ensure_worker()
            self._queue.put((job.id, job.run_id))
            self.stats["runs"] += 1
            return job

    def _ensure_worker(self) -> None:
        if self._worker is None or not self._worker.is_alive():
            self._worker = threading.Thread(target=self._work, name="needletrack-web-worker", daemon=True)
            self._worker.start()

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            jid, run_id = item
            with self._lock:
                job = self._jobs.get(jid)
                if job is None or job.run_id != run_id or job.status != "queued":
                    continue
                job.status = "running"
                job.started = time.time()
            try:
                self._run(job)
            except BaseException:  # noqa: BLE001 - never let the worker die
                log.exception("job %s: worker error", jid)
            finally:
                with self._lock:
                    if jid not in self._jobs:        # deleted while running: its folder goes now
                        shutil.rmtree(job.dir, ignore_errors=True)

    def _run(self, job: Job) -> None:
        out = job.dir / "out"
        fps = job.info.get("fps")
        cancel = job.cancel

        def on_result(res):
            job.rows.append(_row(res, fps))
            job.done = len(job.rows)
            if cancel.is_set():
                raise JobCancelled()

        t0 = time.perf_counter()
        try:
            if cancel.is_set():
                raise JobCancelled()
            tracker = self.tracker()
            track_fn = self.track_fn
            if track_fn is None:
                from needletrack.track.pipeline import track_to_folder as track_fn
            mode = job.prompt["mode"]
            kwargs = {}
            if mode == "line":
                kwargs["first_line"] = tuple(job.prompt["line"])
            elif mode == "auto":
                kwargs["auto"] = True
            else:
                kwargs["first_mask"] = job.gt(0)
            summary = track_fn(job.input_path, out, _ProgressTracker(tracker, on_result), overlay=True,
                               masks=True, max_frames=self.config.max_frames, progress=False,
                               model_name=self.model_label, gt=job.gt, **kwargs)
            summary = dict(summary or {})
            summary["input"] = job.name
            from needletrack.utils import write_json_atomic

            write_json_atomic(out / "summary.json", summary)
            self._zip_masks(out)
            with self._lock:
                job.summary = summary
                for note in summary.get("notes", []) or []:
                    if note not in job.notes and note not in job.info.get("notes", []):
                        job.notes.append(note)
                job.status = "done"
                self.stats["runs_done"] += 1
            log.info("job %s: tracked %d frames in %.1f s", job.id, job.done, time.perf_counter() - t0)
        except JobCancelled:
            shutil.rmtree(out, ignore_errors=True)      # partial outputs go before the status is published
            with self._lock:
                job.status = "cancelled"
                self.stats["runs_cancelled"] += 1
            log.info("job %s: cancelled after %d frames", job.id, job.done)
        except NeedletrackError as e:
            shutil.rmtree(out, ignore_errors=True)
            with self._lock:
                job.status = "failed"
                job.error = self._clean(str(e), job)
                self.stats["runs_failed"] += 1
        except Exception as e:  # noqa: BLE001 - reported to the page in one line, logged in full
            log.exception("job %s failed", job.id)
            shutil.rmtree(out, ignore_errors=True)
            with self._lock:
                job.status = "failed"
                job.error = self._clean(f"internal error: {type(e).__name__}: {e}", job)
                self.stats["runs_failed"] += 1
        finally:
            job.finished = time.time()
            if job.status != "done":
                shutil.rmtree(out, ignore_errors=True)

    @staticmethod
    def _zip_masks(out: Path) -> None:
        from needletrack.utils import atomic_path

        masks = sorted((out / "masks").glob("*.png")) if (out / "masks").is_dir() else []
        with atomic_path(out / "masks.zip") as tmp:
            with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as z:   # PNGs are compressed already
                for p in masks:
                    z.write(p, f"masks/{p.name}")

    def file_path(self, job_id: str, name: str) -> Path:
        job = self.get(job_id)
        if name not in DOWNLOADS:
            raise NotFound(f"no file '{name}'; available: {', '.join(DOWNLOADS)}")
        if job.status != "done":
            raise StateError(f"job {job.id} is {job.status}; its files exist once it is done")
        p = job.dir / "out" / name
        if not p.is_file():
            raise NotFound(f"job {job.id} has no {name}")
        return p

    # ---------------------------------------------------------------------------------------------- shutdown
    def close(self, timeout: float = 10.0) -> None:
        """Cancel everything, stop the worker and delete every job folder."""
        with self._lock:
            self._closed = True
            for j in self._jobs.values():
                j.cancel.set()
            self._jobs.clear()
        self._queue.put(None)
        if self._worker is not None:
            self._worker.join(timeout)
        shutil.rmtree(self.root, ignore_errors=True)


# --------------------------------------------------------------------------------------------------------------
# upload size bound (pure ASGI: works for Content-Length and chunked bodies, before anything is parsed)
# --------------------------------------------------------------------------------------------------------------
class _TooLarge(Exception):
    pass


class UploadLimitMiddleware:
    """Refuse request bodies over ``max_bytes`` with 413 and a one-line JSON message, counting bytes as they
    arrive (so an oversized upload is cut off early instead of being spooled to disk first)."""

    def __init__(self, app, max_bytes: int, limit_mb: float):
        self.app = app
        self.max_bytes = int(max_bytes)
        self.limit_mb = limit_mb

    async def _send_413(self, send) -> None:
        import json

        body = json.dumps({"detail": f"upload too large: the limit is {self.limit_mb:g} MB"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("method") not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        for k, v in scope.get("headers") or []:
            if k == b"content-length":
                try:
                    if int(v) > self.max_bytes:
                        await self._send_413(send)
                        return
                except ValueError:
                    pass
        state = {"n": 0, "over": False}

        async def limited_receive():
            msg = await receive()
            if msg.get("type") == "http.request":
                state["n"] += len(msg.get("body", b""))
                if state["n"] > self.max_bytes:
                    state["over"] = True
                    raise _TooLarge()
            return msg

        async def guarded_send(msg):
            if not state["over"]:
                await send(msg)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not state["over"]:
                raise
        if state["over"]:
            await self._send_413(send)


# --------------------------------------------------------------------------------------------------------------
# Host header (DNS rebinding) and cross-site state changes (pure ASGI, outermost: before anything is read)
# --------------------------------------------------------------------------------------------------------------
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def split_host(value: str, default_port: int | None = None) -> tuple[str, int | None] | None:
    """'name[:port]' / '[v6]:port' / 'v6' -> (lower-case name without brackets, port or default_port);
    None when it is not a host."""
    v = value.strip().lower()
    if not v or any(c in v for c in " /\\@?#") or any(ord(c) < 33 or ord(c) > 126 for c in v):
        return None
    port: str | None = None
    if v.startswith("["):
        end = v.find("]")
        if end < 0:
            return None
        name, rest = v[1:end], v[end + 1:]
        if rest:
            if not rest.startswith(":"):
                return None
            port = rest[1:]
    elif v.count(":") == 1:
        name, port = v.split(":")
    else:
        name = v                        # a name, an IPv4 address or a bare IPv6 address
    if not name:
        return None
    if port is not None:
        if not port.isdigit() or not 0 < int(port) < 65536:
            return None
        return name, int(port)
    return name, default_port


class HostOriginGuard:
    """* Host: must be one of ``allowed_hosts`` (any port), else 400 - a page on another site that rebinds its
      name to this computer's address cannot talk to the server;
    * state-changing methods (anything but GET/HEAD/OPTIONS): refused with 403 when ``Sec-Fetch-Site`` says
      the request comes from another site, or ``Origin`` names another origin than the Host. Requests
      without those headers (curl, scripts, tests) pass: browsers always send them on cross-site posts."""

    def __init__(self, app, allowed_hosts):
        self.app = app
        names = set()
        for h in allowed_hosts:
            parsed = split_host(str(h))
            if parsed is None:
                raise ValueError(f"not a host name: {h!r}")
            names.add(parsed[0])
        self.allowed = frozenset(names)

    @staticmethod
    async def _refuse(send, status: int, detail: str) -> None:
        import json

        body = json.dumps({"detail": detail}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"cache-control", b"no-store"), (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers: dict[bytes, bytes] = {}
        for k, v in scope.get("headers") or []:
            if k in headers and k == b"host":
                headers[k] = b""                  # two Host headers: refuse below
                continue
            headers.setdefault(k, v)
        scheme_port = 443 if scope.get("scheme") in ("https", "wss") else 80
        raw_host = headers.get(b"host", b"").decode("latin-1")
        host = split_host(raw_host, scheme_port)
        if host is None or host[0] not in self.allowed:
            shown = raw_host[:80] if raw_host else "(none)"
            await self._refuse(send, 400, f"Host {shown!r} is not served here; use "
                                          f"{', '.join(sorted(f'[{n}]' if ':' in n else n for n in self.allowed))} or start serve-web with "
                                          "--allowed-host NAME")
            return
        if scope["type"] == "http" and scope.get("method", "GET").upper() not in SAFE_METHODS:
            site = headers.get(b"sec-fetch-site", b"").decode("latin-1").strip().lower()
            if site and site not in ("same-origin", "none"):
                await self._refuse(send, 403, f"cross-site request refused (Sec-Fetch-Site: {site[:40]})")
                return
            origin = headers.get(b"origin")
            if origin is not None:
                o = origin.decode("latin-1").strip()
                scheme, sep, rest = o.partition("://")
                parsed = split_host(rest, 443 if scheme.lower() == "https" else 80) if sep else None
                if parsed is None or parsed != host:
                    await self._refuse(send, 403, f"cross-origin request refused (Origin: {o[:80]})")
                    return
        await self.app(scope, receive, send)


class TrackRequest(BaseModel):
    """First-frame prompt of a tracking run."""

    mode: str = Field("line", description="'line' (give `line`), 'auto' (find the needle without a prompt) "
                                          "or 'truth' (simulated sample only: its ground-truth first mask)")
    line: list[float] | None = Field(None, description="x0, y0, x1, y1 in first-frame pixels along the shaft",
                                     examples=[[20, 30, 120, 90]])


class SampleRequest(BaseModel):
    """The built-in simulated sample."""

    frames: int | None = Field(None, ge=2, le=300, description="number of frames (default 40)")
    seed: int = Field(1, ge=0, le=2**31 - 1, description="simulation seed (the next seeds are tried until the "
                                                         "first frame shows the needle)")


# --------------------------------------------------------------------------------------------------------------
# the FastAPI app
# --------------------------------------------------------------------------------------------------------------
def create_app(tracker=None, *, tracker_factory: Callable[[], Any] | None = None, config: WebConfig | None = None,
               track_fn: Callable | None = None, model_label: str | None = None, model_warning: str | None = None):
    """The web app. Give a ready ``tracker`` or a ``tracker_factory`` (called on the first run).
    ``track_fn`` replaces ``track_to_folder`` (same signature), for tests."""
    from contextlib import asynccontextmanager

    from needletrack import __version__

    if tracker is None and tracker_factory is None:
        raise ValueError("create_app needs a tracker or a tracker_factory")
    factory = tracker_factory or (lambda: tracker)
    cfg = config or WebConfig()
    manager = JobManager(factory, cfg, track_fn=track_fn, model_label=model_label)
    if tracker is not None:
        manager._tracker = tracker

    @asynccontextmanager
    async def lifespan(app):
        yield
        manager.close()

    app = FastAPI(
        title="needletrack web",
        version=__version__,
        description=("Try the needletrack needle tracker on a cine loop: upload (or take the simulated sample), "
                     "prompt the first frame with a line along the needle or automatic initialisation, poll "
                     "the job, download masks.zip, needle.csv, overlay.mp4 and summary.json. Errors are "
                     "`{\"detail\": \"one line\"}`. Research software, not for clinical use."),
        lifespan=lifespan,
    )
    app.state.manager = manager
    app.add_middleware(UploadLimitMiddleware, max_bytes=cfg.max_upload_bytes + 64 * 1024,
                       limit_mb=cfg.max_upload_mb)

    @app.middleware("http")
    async def security_headers(request: Request, call_next):
        response = await call_next(request)
        # nothing on the page may come from elsewhere (offline use, no CDN); FastAPI's /docs page is the
        # exception (it loads Swagger UI from a CDN), so it keeps its own policy
        if not request.url.path.startswith(("/docs", "/redoc")):
            response.headers.setdefault(
                "Content-Security-Policy",
                "default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; style-src 'self'; "
                "script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        if request.url.path.startswith("/api/"):
            response.headers.setdefault("Cache-Control", "no-store")
        return response

    # added last = outermost: a foreign Host or a cross-site post is refused before anything else runs
    app.add_middleware(HostOriginGuard, allowed_hosts=tuple(cfg.allowed_hosts))

    def http_error(e: NeedletrackError) -> HTTPException:
        code = 404 if isinstance(e, NotFound) else 409 if isinstance(e, StateError) else \
            429 if isinstance(e, BusyError) else 400
        return HTTPException(status_code=code, detail=str(e))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        parts = []
        for err in exc.errors()[:3]:
            loc = ".".join(str(x) for x in err.get("loc", ()) if x != "body")
            parts.append(f"{loc}: {err.get('msg')}" if loc else str(err.get("msg")))
        return JSONResponse(status_code=422, content={"detail": "invalid request: " + "; ".join(parts)})

    # ---------------------------------------------------------------------------------------------- pages
    @app.get("/", include_in_schema=False)
    def index():
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    @app.get("/api", include_in_schema=False)
    def api_page():
        return FileResponse(STATIC_DIR / "api.html", media_type="text/html")

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon():
        return RedirectResponse("/static/favicon.svg")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    # ---------------------------------------------------------------------------------------------- API
    @app.get("/api/info", tags=["server"], summary="Server, model and limits")
    def info():
        mi = manager.model_info()
        return {
            "needletrack_version": __version__, "model": mi, "model_warning": model_warning,
            "limits": {"max_upload_mb": cfg.max_upload_mb, "max_jobs": cfg.max_jobs, "max_frames": cfg.max_frames,
                       "max_side_px": cfg.max_side_px, "job_ttl_s": cfg.job_ttl_s},
            "accepted": ACCEPTED,
            "accepted_suffixes": sorted(s for s in VIDEO_SUFFIXES + DICOM_SUFFIXES + MHA_SUFFIXES + ZIP_SUFFIXES if s),
            "jobs": len(manager.list()), "stats": dict(manager.stats),
        }

    @app.get("/api/health", tags=["server"], summary="Liveness check")
    def health():
        return {"ok": True}

    @app.post("/api/jobs", status_code=201, tags=["jobs"], summary="Upload a cine (multipart field `file`)",
              responses={400: {"description": "not a readable cine / unsupported type"},
                         413: {"description": "larger than the upload limit"},
                         429: {"description": "too many jobs in progress"}})
    def upload(file: UploadFile = File(..., description=ACCEPTED)):
        try:
            job = manager.create_upload(file.file, file.filename)
        except NeedletrackError as e:
            raise http_error(e) from None
        finally:
            file.file.close()
        return job.public()

    @app.post("/api/jobs/sample", status_code=201, tags=["jobs"],
              summary="Create a job on the built-in simulated needle insertion (with ground truth)")
    def sample(req: SampleRequest | None = None):
        req = req or SampleRequest()
        try:
            return manager.create_sample(req.frames, req.seed).public()
        except NeedletrackError as e:
            raise http_error(e) from None

    @app.get("/api/jobs/{job_id}", tags=["jobs"], summary="Job status, progress, cine info and summary")
    def job_status(job_id: str):
        try:
            return manager.get(job_id).public()
        except NeedletrackError as e:
            raise http_error(e) from None

    @app.get("/api/jobs/{job_id}/frame0.png", tags=["jobs"], summary="The first frame (grayscale PNG)",
             response_class=FileResponse)
    def frame0(job_id: str):
        try:
            job = manager.get(job_id)
        except NeedletrackError as e:
            raise http_error(e) from None
        return FileResponse(job.dir / "frame0.png", media_type="image/png")

    @app.post("/api/jobs/{job_id}/track", status_code=202, tags=["jobs"],
              summary="Start tracking with a first-frame prompt",
              responses={400: {"description": "bad prompt"}, 409: {"description": "already queued/running"}})
    def track(job_id: str, req: TrackRequest):
        try:
            return manager.start(job_id, req.model_dump()).public()
        except NeedletrackError as e:
            raise http_error(e) from None

    @app.post("/api/jobs/{job_id}/cancel", tags=["jobs"], summary="Cancel a queued or running job")
    def cancel(job_id: str):
        try:
            return manager.cancel(job_id).public()
        except NeedletrackError as e:
            raise http_error(e) from None

    @app.delete("/api/jobs/{job_id}", status_code=204, tags=["jobs"], summary="Cancel and delete a job and its files")
    def delete(job_id: str):
        try:
            manager.delete(job_id)
        except NeedletrackError as e:
            raise http_error(e) from None

    @app.get("/api/jobs/{job_id}/rows", tags=["results"],
             summary="Per-frame results so far (tip, tail, angle, score), from frame `since` on")
    def rows(job_id: str, since: int = 0):
        try:
            job = manager.get(job_id)
        except NeedletrackError as e:
            raise http_error(e) from None
        data = job.rows[max(0, since):]
        return {"status": job.status, "columns": list(ROW_KEYS), "since": max(0, since), "rows": data,
                "done": job.done, "total": job.total}

    @app.get("/api/jobs/{job_id}/files/{name}", tags=["results"],
             summary="Download an output: overlay.mp4, needle.csv, summary.json or masks.zip",
             response_class=FileResponse)
    def download(job_id: str, name: str, inline: bool = False):
        try:
            p = manager.file_path(job_id, name)
        except NeedletrackError as e:
            raise http_error(e) from None
        # the file keeps its own name (needle.csv, ...), as `curl -OJ` and the docs expect
        return FileResponse(p, media_type=DOWNLOADS[name], filename=None if inline else name)

    return app
