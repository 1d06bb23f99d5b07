"""The constant-velocity Kalman filter on tip/tail."""
import numpy as np

from needletrack.track import TipTailKalman


def _noisy_insertion(n=80, noise=2.0, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(n, dtype=np.float64)
    tip = np.stack([40 + 1.2 * t, 30 + 0.7 * t], axis=1)
    tail = np.tile([5.0, 8.0], (n, 1))
    return tip, tail, tip + rng.normal(0, noise, tip.shape), tail + rng.normal(0, noise, tail.shape)


def test_kalman_reduces_tip_jitter_on_a_noisy_line():
    tip, tail, ztip, ztail = _noisy_insertion()
    kf = TipTailKalman(meas_std=2.0, accel_std=0.2)
    est = np.array([kf.update(a, b)[0] for a, b in zip(ztip, ztail)])
    raw_err = np.sqrt(((ztip[10:] - tip[10:]) ** 2).sum(1).mean())
    kf_err = np.sqrt(((est[10:] - tip[10:]) ** 2).sum(1).mean())
    assert kf_err < 0.6 * raw_err
    # and the estimate keeps up with the motion (no lag beyond the noise)
    assert np.abs((est[-20:] - tip[-20:]).mean(0)).max() < 1.0


def test_kalman_coasts_through_gaps_then_resets():
    kf = TipTailKalman(max_coast=3)
    for i in range(10):
        kf.update((10.0 + i, 20.0), (0.0, 0.0))
    tip, tail = kf.step()
    assert tip[0] > 19.0                       # predicted ahead with the learnt velocity
    kf.step(), kf.step()
    assert kf.step() == (None, None) and not kf.initialised


def test_kalman_restarts_on_a_jump():
    kf = TipTailKalman()
    for _ in range(10):
        kf.update((50.0, 50.0), (10.0, 10.0))
    tip, _ = kf.update((150.0, 90.0), (100.0, 60.0))
    assert tip == (150.0, 90.0)
