"""The service with the real needletrack Tracker (tiny random-weight STNAN) and the serve-igtl command."""
from __future__ import annotations

import json
import socket
import threading
import time

import numpy as np
import pytest

import pyigtl

from needletrack.serve.igtl import IgtlConfig, IgtlService  # noqa: E402
from net_helpers import free_port  # noqa: E402
from test_igtl_helpers import RecordingClient, image_message, needle_frame, wait_until  # noqa: E402


@pytest.fixture(scope="module")
def tiny_model():
    import torch  # noqa: F401 - a required dependency: a broken install fails here, it does not skip
    from needletrack.models import build_model

    m = build_model("stnan_tiny")
    m.eval()
    return m


def _tracker(model):
    from needletrack.track import Tracker

    # the v1 mask policy: the tiny random model's maps are not needle-like segments, and these tests are
    # about the stream (size changes, label maps), not the presence decision
    return Tracker(model, policy="mask")


def test_real_tracker_label_map_stream_and_size_change(tiny_model):
    svc = IgtlService(_tracker(tiny_model), IgtlConfig(port=0, log_interval_s=0, auto_init=False)).start()
    cli = RecordingClient(svc.address[1])
    try:
        assert cli.wait_connected()
        assert wait_until(lambda: svc.stats()["clients"] == 1)
        label = (needle_frame(0) >= 200).astype(np.uint8) * 255
        cli.send(image_message(label, 1.0, device="NeedleInit"))
        frames = [needle_frame(i) for i in range(5)] + [needle_frame(5, h=80, w=96), needle_frame(6, h=80, w=96)]
        for i, f in enumerate(frames):
            cli.send(image_message(f, 100.0 + i))
            assert wait_until(lambda: len(cli.of("NeedleStatus")) == i + 1, 20.0), f"no result for frame {i}"
        masks = cli.of("NeedleMask")
        assert [m.image.shape[1:] for m in masks] == [f.shape for f in frames]
        assert [m.timestamp for m in masks] == pytest.approx([100.0 + i for i in range(len(frames))], abs=1e-6)
        assert np.array_equal(masks[0].image[0] > 0, label > 0)  # the prompt frame returns the given mask
        st = svc.stats()
        assert st["processed"] == len(frames) and st["errors"] == 0 and st["dropped"] == 0
        assert len(cli.of("NeedleTip", "POINT")) == len(cli.of("NeedleToReference", "TRANSFORM")) == len(frames)
    finally:
        cli.stop()
        svc.stop()


def test_cli_serves_and_writes_stats(tiny_model, monkeypatch, tmp_path, capsys):
    from needletrack.cli import main
    from needletrack.commands import serve_igtl

    monkeypatch.setattr(serve_igtl, "_load_tracker", lambda model, device: _tracker(tiny_model))
    port = free_port()
    stop = threading.Event()
    results = []

    def sender():
        cli = RecordingClient(port)  # pyigtl's client retries until the service listens
        try:
            if not cli.wait_connected(10):
                return
            time.sleep(0.3)
            for i in range(5):
                if stop.is_set():
                    break
                cli.send(image_message(needle_frame(i), 50.0 + i))
                wait_until(lambda: len(cli.of("NeedleMask")) == i + 1, 5.0)
            results.extend(cli.of("NeedleMask"))
        finally:
            cli.stop()

    t = threading.Thread(target=sender, daemon=True)
    t.start()
    out = tmp_path / "stats.json"
    rc = main(["serve-igtl", "--port", str(port), "--duration", "2.5", "--stats-json", str(out), "-q", "--auto"])
    stop.set()
    t.join(10)
    assert rc == 0
    st = json.loads(out.read_text())
    assert st["received"] == 5 and st["processed"] == 5 and len(results) == 5
    assert st["latency_ms"]["p95"] > 0
    assert "serve-igtl: received 5, processed 5, dropped 0" in capsys.readouterr().err


def test_cli_bad_arguments_are_one_line_errors(monkeypatch, capsys):
    from needletrack.cli import main
    from needletrack.commands import serve_igtl

    monkeypatch.setattr(serve_igtl, "_load_tracker", lambda model, device: object())
    assert main(["serve-igtl", "--source", "plus:notaport"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "port 'notaport' is not a number" in err
    # a port already taken
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    try:
        assert main(["serve-igtl", "--port", str(s.getsockname()[1]), "--duration", "0.1"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "cannot listen on 127.0.0.1" in err
    finally:
        s.close()
    assert serve_igtl.parse_source("10.0.0.5") == ("10.0.0.5", 18944)
    assert serve_igtl.parse_source("plus.local:18950") == ("plus.local", 18950)
