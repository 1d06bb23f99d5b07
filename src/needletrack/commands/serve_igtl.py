"""`needletrack serve-igtl`: track the needle in a live OpenIGTLink stream (PLUS in, 3D Slicer out)."""
from __future__ import annotations

import argparse

HELP = "track the needle in a live OpenIGTLink image stream (PLUS / 3D Slicer)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", metavar="HOST[:PORT]",
                   help="connect to a PlusServer-like source for frames (port 18944 if omitted); reconnects "
                        "if it goes away. Without --source, senders connect to --port.")
    p.add_argument("--port", type=int, default=18945,
                   help="port to listen on for clients (3D Slicer; senders when there is no --source); "
                        "0 picks a free port (default 18945)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1; 0.0.0.0 for every network interface)")
    p.add_argument("--model", default="default", help="model name or checkpoint path (default: default)")
    p.add_argument("--device", default="cpu", help="torch device for the tracker (default cpu)")
    p.add_argument("--image-device", default="Image_Reference",
                   help="device name of the incoming frames (default Image_Reference; '*' = any IMAGE)")
    p.add_argument("--init-device", default="NeedleInit",
                   help="device name of the first-frame prompt: a label-map IMAGE or a POINT with the two "
                        "shaft ends (default NeedleInit)")
    p.add_argument("--mask-device", default="NeedleMask", help="output mask IMAGE device (default NeedleMask)")
    p.add_argument("--tip-device", default="NeedleTip", help="output tip POINT device (default NeedleTip)")
    p.add_argument("--pose-device", default="NeedleToReference",
                   help="output needle pose TRANSFORM device (default NeedleToReference)")
    p.add_argument("--status-device", default="NeedleStatus",
                   help="output status STRING device (default NeedleStatus)")
    p.add_argument("--auto", action="store_true",
                   help="start without a prompt: look for the needle in the frames (reported unconfirmed until a "
                        "person prompts); default: skip frames until a prompt arrives")
    p.add_argument("--wait-for-prompt", action="store_true",
                   help="accepted for old scripts: waiting for a prompt is now the default")
    p.add_argument("--mask-value", type=int, default=255,
                   help="value of needle pixels in the output mask (default 255; 1 suits a Slicer label map)")
    p.add_argument("--header-version", type=int, choices=(1, 2), default=2,
                   help="OpenIGTLink header version of the output (2 adds metadata; default 2)")
    p.add_argument("--send-to-source", action="store_true",
                   help="also send results back to the --source connection")
    p.add_argument("--max-message-mb", type=float, default=64.0,
                   help="a message whose header claims a larger body closes that connection (default 64)")
    p.add_argument("--max-buffered-mb", type=float, default=256.0,
                   help="message bytes held at once across all connections; bodies are read as they arrive, "
                        "and the connection whose body would pass this is closed (default 256)")
    p.add_argument("--log-interval", type=float, default=10.0,
                   help="seconds between status lines (0: none; default 10)")
    p.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    p.add_argument("--stats-json", metavar="PATH", help="write the final statistics here as JSON")
    p.add_argument("-q", "--quiet", action="store_true", help="only warnings and the final summary")


def parse_source(text: str) -> tuple[str, int]:
    from needletrack.errors import NeedletrackError
    from needletrack.serve.igtl import DEFAULT_SOURCE_PORT

    host, sep, port_s = text.strip().rpartition(":")
    if not sep:
        host, port_s = text.strip(), str(DEFAULT_SOURCE_PORT)
    try:
        port = int(port_s)
    except ValueError:
        raise NeedletrackError(f"--source {text!r}: port {port_s!r} is not a number") from None
    if not host or not 1 <= port <= 65535:
        raise NeedletrackError(f"--source {text!r}: expected HOST[:PORT] with a port in 1..65535")
    return host, port


def _setup_logging(quiet: bool):
    """Send the service's log lines to stderr; returns a function that undoes it."""
    import logging
    import sys

    logger = logging.getLogger("needletrack.serve.igtl")
    saved = (logger.level, logger.propagate)
    h = logging.StreamHandler(sys.stderr)
    h.setFormatter(logging.Formatter("%(asctime)s serve-igtl: %(message)s", "%H:%M:%S"))
    logger.addHandler(h)
    logger.propagate = False
    logger.setLevel(logging.WARNING if quiet else logging.INFO)

    def restore():
        logger.removeHandler(h)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]

    return restore


def _load_tracker(model: str, device: str):
    from needletrack.errors import NeedletrackError

    try:
        from needletrack.track import Tracker
    except ImportError as e:
        raise NeedletrackError(f"the tracker is not available in this installation ({e})") from None
    return Tracker.from_pretrained(model, device=device)


def _warm_up(tracker) -> None:
    """One throw-away step so that the first real frame does not pay for lazy initialisation."""
    import numpy as np

    try:
        tracker.step(np.zeros((256, 256), np.uint8), auto=True)
    except Exception:  # noqa: BLE001 - warm-up is best effort
        pass
    try:
        tracker.reset()
    except Exception:  # noqa: BLE001
        pass


def run(args) -> int:
    from needletrack.errors import NeedletrackError

    if not (0 <= args.port <= 65535):
        raise NeedletrackError(f"--port {args.port}: expected 0..65535")
    import math

    if not (math.isfinite(args.max_message_mb) and args.max_message_mb > 0):
        raise NeedletrackError("--max-message-mb must be a positive number")
    if not (math.isfinite(args.max_buffered_mb) and args.max_buffered_mb > 0):
        raise NeedletrackError("--max-buffered-mb must be a positive number")
    if args.max_buffered_mb < args.max_message_mb:
        raise NeedletrackError(f"--max-buffered-mb ({args.max_buffered_mb:g}) must be at least --max-message-mb "
                               f"({args.max_message_mb:g})")
    if args.log_interval < 0 or not math.isfinite(args.log_interval):
        raise NeedletrackError("--log-interval must be >= 0")
    if args.duration is not None and not (math.isfinite(args.duration) and args.duration >= 0):
        raise NeedletrackError("--duration must be >= 0")
    source = parse_source(args.source) if args.source else None
    from needletrack.utils import check_device, check_out_file

    check_device(args.device)
    if args.stats_json:
        check_out_file(args.stats_json, "--stats-json")
    restore_logging = _setup_logging(args.quiet)
    try:
        return _serve(args, source)
    finally:
        restore_logging()


def _serve(args, source) -> int:
    import signal
    import sys
    import threading

    from needletrack.serve.igtl import IgtlConfig, IgtlService
    from needletrack.utils import write_json_atomic

    tracker = _load_tracker(args.model, args.device)
    _warm_up(tracker)
    cfg = IgtlConfig(
        host=args.host, port=args.port, source=source, image_device=args.image_device,
        init_device=args.init_device, mask_device=args.mask_device, tip_device=args.tip_device,
        pose_device=args.pose_device, status_device=args.status_device, auto_init=bool(args.auto) and not args.wait_for_prompt,  # waiting is the default
        mask_value=args.mask_value, header_version=args.header_version, send_to_source=args.send_to_source,
        max_message_bytes=int(args.max_message_mb * 1024 * 1024),
        max_buffered_bytes=int(args.max_buffered_mb * 1024 * 1024), log_interval_s=args.log_interval,
    )
    service = IgtlService(tracker, cfg)
    # SIGTERM ends the service like Ctrl-C; the previous handler is put back afterwards (pyigtl's server
    # replaces both handlers for good; we do not use it).
    previous = None
    if threading.current_thread() is threading.main_thread():
        def _on_term(signum, frame):
            raise KeyboardInterrupt

        previous = signal.signal(signal.SIGTERM, _on_term)
    stats = None
    try:
        service.start()
        try:
            if args.duration is not None:
                service.wait(args.duration)
            else:
                service.serve_forever()
        except KeyboardInterrupt:
            print("serve-igtl: stopping", file=sys.stderr)
        finally:
            stats = service.stop()
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    if args.quiet:  # otherwise the service's own "stopped: ..." log line already said it
        print(f"serve-igtl: {IgtlService.format_stats(stats)}", file=sys.stderr)
    if args.stats_json:
        write_json_atomic(args.stats_json, stats)
    return 0
