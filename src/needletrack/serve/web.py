"""A web page to try needletrack: upload a cine (or take the built-in simulated sample), draw the needle on the
first frame (or choose automatic initialisation), track, watch the overlay and download the outputs.

    from needletrack.serve.web import create_app, WebConfig
    app = create_app(tracker, config=WebConfig(max_upload_mb=100))     # a FastAPI app; uvicorn.run(app)

This module is the app and its routes only; the rooms behind it:
* :mod:`needletrack.serve.jobs` - ``JobManager``: jobs, their folders, admission (bounded, 429 when full) and
  the single tracking worker; :mod:`needletrack.serve.job_model` - ``WebConfig``, ``Job``, the job errors;
* :mod:`needletrack.serve.job_inputs` - what a job tracks, checked first: uploads (same cine readers and
  one-line messages as ``needletrack track``), zips of frames, the simulated sample, the first-frame prompt;
* :mod:`needletrack.serve.job_run` - one tracking run (``track_to_folder``, the ``track`` CLI's engine room:
  masks/, needle.csv, overlay.mp4, summary.json, plus masks.zip) and the per-frame rows the page polls;
* :mod:`needletrack.serve.web_security` - the Host / Origin / Sec-Fetch-Site guard (DNS rebinding, cross-site
  posts), the streaming upload size bound, the security headers.

The JSON API is listed at ``/docs`` (OpenAPI at ``/openapi.json``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from fastapi import FastAPI, File, HTTPException, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from needletrack.errors import NeedletrackError
from needletrack.serve.job_inputs import (  # noqa: F401 - re-exported (the old home of these names)
    ACCEPTED,
    DICOM_SUFFIXES,
    MHA_SUFFIXES,
    VIDEO_SUFFIXES,
    ZIP_SUFFIXES,
)
from needletrack.serve.job_model import (  # noqa: F401
    ACTIVE,
    DOWNLOADS,
    STATUSES,
    BusyError,
    Job,
    NotFound,
    StateError,
    WebConfig,
)
from needletrack.serve.job_run import ROW_KEYS, JobCancelled  # noqa: F401
from needletrack.serve.jobs import JobManager
from needletrack.serve.web_security import (  # noqa: F401
    SAFE_METHODS,
    HostOriginGuard,
    UploadLimitMiddleware,
    security_headers,
    split_host,
)

STATIC_DIR = Path(__file__).with_name("static")


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

    app.middleware("http")(security_headers)

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
