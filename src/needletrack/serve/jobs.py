"""Web jobs: one job per cine, in its own temporary folder under one root that is removed at shutdown.

* jobs are tracked one at a time by a single worker thread (the Tracker is stateful and CPU-bound), so a
  busy server queues instead of thrashing; the number of jobs kept is bounded (admission holds a lock and
  reserves its place, so parallel uploads cannot overshoot), only jobs idle for ``evict_idle_s`` make room
  (never queued or running ones, never fresh ones: the server answers 429 instead), idle ones expire;
* a job is reachable only by whoever holds its id (128 random bits; there is no listing of jobs);
* what a job tracks is checked first by :mod:`needletrack.serve.job_inputs` (uploads, the simulated sample);
* the tracking itself is ``needletrack.track.cine_to_folder.track_to_folder`` (the ``track`` CLI's engine room):
  the outputs are exactly the CLI's (masks/, needle.csv, overlay.mp4, summary.json) plus masks.zip.

The routes of :mod:`needletrack.serve.web` call :class:`JobManager` from FastAPI's thread pool.
"""
from __future__ import annotations

import logging
import queue
import secrets
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

from needletrack.errors import InputError, NeedletrackError
from needletrack.serve import job_inputs
from needletrack.serve.job_model import (  # noqa: F401 - DOWNLOADS, STATUSES, ROW_KEYS: re-exported
    ACTIVE, DOWNLOADS, STATUSES, BusyError, Job, NotFound, StateError, WebConfig)
from needletrack.serve.job_run import ROW_KEYS, JobCancelled, track_job  # noqa: F401

log = logging.getLogger("needletrack.serve.web")

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
        self._pending = 0                  # job places reserved by uploads/samples still being checked
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
        """Admit one job (a place under the lock) and make its folder; the place is given back if that fails."""
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
        """Reserve a place for a new job (released by :meth:`_add` or :meth:`_release`). Under the lock: expire
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
        name = job_inputs.display_name(filename)
        try:
            suffix = job_inputs.check_upload_name(name)
        except InputError:
            self.stats["uploads_rejected"] += 1
            raise
        jid, d = self._reserve_job()
        dest = d / f"input{suffix}"
        job = Job(id=jid, kind="upload", name=name, dir=d, input_path=dest)
        try:
            job.input_path, size = job_inputs.receive_upload(src, dest, name, self.config.max_upload_bytes,
                                                             self.config.max_upload_mb, self.config.max_frames)
            self._probe(job)
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

    def create_sample(self, frames: int | None = None, seed: int = 1, size: int | None = None) -> Job:
        """A job on a simulated needle insertion (needletrack.sim), with ground truth to score against."""
        n, size = job_inputs.check_sample_args(frames, self.config.sample_size if size is None else size,
                                               self.config.sample_frames, lambda: self.tracker().input_hw[0])
        jid, d = self._reserve_job()
        try:
            seq, seed = job_inputs.write_sample(d, n, size, self.config.sample_preset, seed)
            job = Job(id=jid, kind="sample", name=f"simulated sample (seed {seed})", dir=d,
                      input_path=d / "sample")
            job.gt = seq.mask
            self._probe(job)
        except BaseException:
            shutil.rmtree(d, ignore_errors=True)
            self._release()
            raise
        job.suggested_line = job_inputs.suggested_line(seq.needle[0] if seq.needle else {},
                                                       job.info["width"], job.info["height"])
        self._add(job)
        return job

    def _probe(self, job: Job) -> None:
        """job.info (and notes) from its cine, opened like `needletrack track` would; frame0.png saved."""
        job.info, notes = job_inputs.probe(job.input_path, job.name, job.dir, self.config.max_side_px,
                                           self.config.max_frames)
        job.notes.extend(notes)

    def _add(self, job: Job) -> None:
        """Turn the place reserved by :meth:`_admit` into the job."""
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
            prompt = job_inputs.check_prompt(prompt, job.info, job.gt)
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
        t0 = time.perf_counter()
        try:
            if job.cancel.is_set():
                raise JobCancelled()
            summary = track_job(job, self.tracker(), self.track_fn, self.config.max_frames, self.model_label)
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

