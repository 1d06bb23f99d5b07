"""Tracker visibility gate (min_score) and tracker settings carried in a weights file's metadata."""
import numpy as np

import torch


def _clip(n=4, size=64):
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (size, size), dtype=np.uint8) for _ in range(n)]
    mask = np.zeros((size, size), bool)
    mask[30:34, 10:50] = True
    return frames, mask


def _run(tracker, frames, mask):
    out = [tracker.step(frames[0], mask=mask)]
    out += [tracker.step(f) for f in frames[1:]]
    return out


def test_min_score_hides_low_confidence_predictions():
    from needletrack.models import build_model
    from needletrack.track import Tracker

    torch.manual_seed(0)
    model = build_model("stnan_tiny").eval()
    frames, mask = _clip()
    # threshold 0 makes every pixel part of the mask, so visibility is decided by the score gate alone
    shown = _run(Tracker(model, threshold=0.0, smooth=False, policy="mask"), frames, mask)
    assert all(r.visible for r in shown[1:])
    scores = [r.score for r in shown[1:]]
    gate = max(scores) + 1e-3
    hidden = _run(Tracker(model, threshold=0.0, smooth=False, min_score=gate, policy="mask"), frames, mask)
    assert hidden[0].visible                      # the given first mask is never gated
    assert not any(r.visible for r in hidden[1:])
    assert all(not r.mask.any() and r.tip is None for r in hidden[1:])


def test_tracker_settings_from_weights_metadata(tmp_path):
    from needletrack.models import build_model
    from needletrack.models.weights import save_model
    from needletrack.track import Tracker
    from needletrack.track.tracker import shipped_tracker_settings

    model = build_model("stnan_tiny")
    path = save_model(model, tmp_path / "m.safetensors",
                      meta={"tracker": {"min_score": 0.7, "threshold": 0.4, "unknown": 1}})
    assert shipped_tracker_settings(path) == {"min_score": 0.7, "threshold": 0.4}
    t = Tracker.from_pretrained(path, engine="torch")
    assert (t.min_score, t.threshold) == (0.7, 0.4)
    t = Tracker.from_pretrained(path, engine="torch", min_score=0.2)   # an explicit setting wins
    assert t.min_score == 0.2
    plain = save_model(model, tmp_path / "plain.safetensors")
    assert shipped_tracker_settings(plain) == {}
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 3)
    assert shipped_tracker_settings(tmp_path / "junk.safetensors") == {}
