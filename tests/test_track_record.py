"""TrackResult.as_record is the one place a tracker result is formatted (issue 15): needle.csv rows, the web
page's rows and the OpenIGTLink status all agree with it."""
from __future__ import annotations

import numpy as np
import pytest

from needletrack.track.tracker import CSV_HEADER, TrackResult


def _result(rng, visible=True):
    tip = (float(rng.uniform(0, 500)), float(rng.uniform(0, 500))) if visible else None
    tail = (float(rng.uniform(0, 500)), float(rng.uniform(0, 500))) if visible else None
    return TrackResult(frame_index=int(rng.integers(0, 10000)), mask=np.zeros((4, 4), bool),
                       prob=np.zeros((4, 4), np.float32), visible=visible,
                       score=float(rng.uniform(0, 1)) if visible else 0.0, tip=tip, tail=tail,
                       angle_deg=float(rng.uniform(0, 90)) if visible else None, path=None,
                       area_px=int(rng.integers(0, 5000)), confirmed=bool(rng.integers(0, 2)))


def _csv_from_record(rec):
    nd = {"time_s": 4, "score": 4, "tip_x_mm": 3, "tip_y_mm": 3, "tail_x_mm": 3, "tail_y_mm": 3,
          "length_mm": 3, "depth_mm": 3}
    out = []
    for k in CSV_HEADER:
        v = rec[k]
        if k in ("frame",):
            out.append(v)
        elif k in ("visible", "confirmed"):
            out.append(int(v))
        else:
            out.append("" if v is None else f"{v:.{nd.get(k, 2)}f}")
    return out


@pytest.mark.parametrize("seed", range(40))
def test_csv_row_is_the_record_printed(seed):
    rng = np.random.default_rng(seed)
    res = _result(rng, visible=seed % 5 != 0)
    for time_s, spacing in ((None, None), (float(rng.uniform(0, 100)), None),
                            (float(rng.uniform(0, 100)), [float(rng.uniform(0.05, 1)), float(rng.uniform(0.05, 1))])):
        rec = res.as_record(time_s, spacing)
        assert set(CSV_HEADER) <= set(rec)
        assert res.csv_row(time_s, spacing) == _csv_from_record(rec)


def test_web_row_and_igtl_status_come_from_the_record():
    from needletrack.serve.igtl import IgtlConfig
    from needletrack.serve.igtl_session import Frame, IgtlSession
    from needletrack.serve.job_run import ROW_KEYS, _row

    rng = np.random.default_rng(3)
    res = _result(rng)
    rec = res.as_record(res.frame_index / 25.0)
    assert _row(res, 25.0) == {k: rec[k] for k in ROW_KEYS}
    assert _row(res, None)["time_s"] is None

    s = IgtlSession(object(), IgtlConfig(port=None))
    fr = Frame(np.zeros((4, 4), np.uint8), np.eye(4), "RAS", (0, 0), 0.0, 0.0, "p")
    _, meta = s.result_messages(fr, res, np.zeros((4, 4), bool))
    assert meta["score"] == f"{rec['score']:.4f}" and meta["angle_deg"] == f"{rec['angle_deg']:.2f}"
    assert meta["tip_px"] == f"{rec['tip_x']:.2f},{rec['tip_y']:.2f}"
    assert meta["confirmed"] == ("true" if rec["confirmed"] else "false")


def test_record_of_a_stand_in_result():
    class Bare:
        mask = np.zeros((2, 2), bool)
        tip = tail = angle_deg = None

    rec = TrackResult.as_record(Bare())
    assert rec["frame"] is None and rec["visible"] is None and rec["score"] is None and rec["confirmed"] is True
