"""The data of the web server's jobs: its limits (``WebConfig``), a job (``Job``, with the public JSON the API
shows), the job states and downloads, and the errors the routes turn into HTTP codes (404, 409, 429).
Behaviour lives in :mod:`needletrack.serve.jobs`."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from needletrack.errors import NeedletrackError

DOWNLOADS = {  # name -> media type
    "overlay.mp4": "video/mp4",
    "needle.csv": "text/csv",
    "summary.json": "application/json",
    "masks.zip": "application/zip",
}
STATUSES = ("ready", "queued", "running", "done", "failed", "cancelled")
ACTIVE = ("queued", "running")


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


class BusyError(NeedletrackError):
    """Too many jobs at once (HTTP 429)."""


class StateError(NeedletrackError):
    """The job is not in a state that allows this (HTTP 409)."""


class NotFound(NeedletrackError):
    """No such job or file (HTTP 404)."""


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
