"""`needletrack serve-web [--host 127.0.0.1] [--port 8000] [--allowed-host NAME ...] [--model NAME|PATH]`: a web
page to try the tracker. Security notes: docs/security.md."""
from __future__ import annotations

import argparse

HELP = "serve a web page to try the tracker: upload a cine or take the simulated sample, draw the needle, track"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1, this computer only; 0.0.0.0 opens it to the "
                        "network: there is no login, so only on a trusted network)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    p.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                   help="a host name (or address) the page may be reached by, as typed in the browser; repeatable. "
                        "The server answers only to these and to the address it listens on (localhost, "
                        "127.0.0.1 and [::1] for the default); required with --host 0.0.0.0 or ::")
    p.add_argument("--model", default="default", metavar="NAME|PATH",
                   help="shipped model name, checkpoint (.safetensors) or .onnx file (default: default)")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda, ...; default cpu)")
    p.add_argument("--max-upload-mb", type=float, default=200.0, metavar="MB",
                   help="largest upload accepted (default 200)")
    p.add_argument("--max-jobs", type=int, default=8, metavar="N",
                   help="jobs kept at once; when full, a job idle for 10 min makes room, else new jobs are "
                        "refused with HTTP 429 (default 8)")
    p.add_argument("--max-frames", type=int, default=1500, metavar="N",
                   help="frames tracked per cine; longer cines are cut (default 1500)")
    p.add_argument("--job-ttl-min", type=float, default=60.0, metavar="MIN",
                   help="delete a job untouched for this long (default 60)")
    p.add_argument("--work-dir", metavar="DIR",
                   help="where job folders go (default: the system temp folder); removed at exit")
    p.add_argument("--threads", type=int, metavar="N", help="torch CPU threads")
    p.add_argument("--open", action="store_true", help="open the page in the default browser")
    p.add_argument("-q", "--quiet", action="store_true", help="no access log")


LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
WILDCARD = ("0.0.0.0", "::", "")


def allowed_hosts_for(bind_host: str, extra=()) -> tuple[str, ...]:
    """The Host header names the server answers to: the names of a loopback address (or the one address it is
    bound to) plus ``extra`` (--allowed-host). Binding to every interface needs at least one ``extra``."""
    import ipaddress

    from needletrack.errors import NeedletrackError
    from needletrack.serve.web_security import split_host

    names: list[str] = []
    for h in extra:
        parsed = split_host(str(h))
        if parsed is None or parsed[1] is not None:
            raise NeedletrackError(f"--allowed-host {h!r}: expected a host name or address, without a port")
        names.append(parsed[0])
    host = bind_host.strip().strip("[]").lower()
    if host in WILDCARD:
        if not names:
            raise NeedletrackError(f"--host {bind_host or '0.0.0.0'} listens on every network interface: name the "
                                   "host name(s) the page will be reached by with --allowed-host NAME (against "
                                   "DNS rebinding)")
        base = list(LOOPBACK_NAMES)
    else:
        try:
            loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        base = list(LOOPBACK_NAMES) if loopback else [host]
        if loopback and host not in base:
            base.append(host)              # e.g. 127.0.0.2
    return tuple(dict.fromkeys(base + names))


def load_tracker(model: str, device: str = "cpu"):
    """(tracker, label, warning). The name 'default' without shipped weights falls back to an untrained
    stnan_fast with a warning (shown on the page), like `needletrack demo`; anything else must load."""
    from needletrack.errors import InputError
    from needletrack.track import Tracker

    try:
        return Tracker.from_pretrained(model, device=device), str(model), None
    except InputError:
        if model != "default":
            raise
    from needletrack.models import build_model

    warning = ("the shipped model weights/default.safetensors is missing: this server tracks with an UNTRAINED "
               "stnan_fast (random weights), so its masks mean nothing")
    return Tracker(build_model("stnan_fast"), device=device), "stnan_fast (untrained)", warning


def run(args) -> int:
    import socket
    import sys

    from needletrack.errors import NeedletrackError

    if not 0 <= args.port <= 65535:
        raise NeedletrackError(f"--port {args.port}: expected 0..65535")
    for name in ("max_upload_mb", "max_jobs", "max_frames", "job_ttl_min"):
        if getattr(args, name) <= 0:
            raise NeedletrackError(f"--{name.replace('_', '-')} must be positive")
    from needletrack.utils import check_device

    check_device(args.device)
    try:
        import uvicorn

        from needletrack.serve.web import WebConfig, create_app
    except ImportError as e:
        raise NeedletrackError(f"the web app needs fastapi, uvicorn and python-multipart ({e})") from None
    allowed = allowed_hosts_for(args.host, args.allowed_host)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    # bind first, so a busy port is a one-line error before the model loads
    try:
        sock = socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((args.host, args.port))
    except OSError as e:
        raise NeedletrackError(f"cannot listen on {args.host}:{args.port}: {e.strerror or e}") from None
    try:
        tracker, label, warning = load_tracker(args.model, args.device)
        if warning:
            print(f"WARNING: {warning}", file=sys.stderr)
        cfg = WebConfig(max_upload_mb=args.max_upload_mb, max_jobs=args.max_jobs, max_frames=args.max_frames,
                        job_ttl_s=args.job_ttl_min * 60.0, work_dir=args.work_dir, allowed_hosts=allowed)
        app = create_app(tracker, config=cfg, model_label=label, model_warning=warning)
        host, port = sock.getsockname()[:2]
        shown = "localhost" if host in ("127.0.0.1", "::1", "0.0.0.0", "::") else host
        url = f"http://{shown if ':' not in shown else '[' + shown + ']'}:{port}/"
        print(f"needletrack serve-web: {url}  (JSON API {url}api; model {label}; Ctrl-C stops)", file=sys.stderr)
        if args.host in WILDCARD:
            print("serve-web: listening on every network interface; the page has no login; it answers to "
                  f"{', '.join(allowed)}", file=sys.stderr)
        if args.open:
            import threading
            import webbrowser

            threading.Timer(1.0, webbrowser.open, (url,)).start()
        config = uvicorn.Config(app, log_level="warning" if args.quiet else "info", access_log=not args.quiet,
                                timeout_graceful_shutdown=5)
        server = uvicorn.Server(config)
        server.run(sockets=[sock])
    finally:
        sock.close()
    return 0
