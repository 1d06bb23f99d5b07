"""One 16-bit rule (needletrack.io.pixels.to_u8) on both paths: the cine readers and the tracker."""
from __future__ import annotations

import numpy as np

from needletrack.io import open_cine
from needletrack.io.pixels import full_scale, to_u8
from needletrack.track.frames import FrameNormaliser


def _twelve_bit_frames(n=3, h=40, w=56, seed=0):
    rng = np.random.default_rng(seed)
    frames = [rng.integers(0, 4096, (h, w)).astype(np.uint16) for _ in range(n)]
    frames[0][:] = np.minimum(frames[0], 1000)   # a dark first frame must not change the scale
    frames[1][0, :4] = [0, 1, 4095, 2048]
    return frames


def test_rule():
    assert full_scale(np.uint16) == 65535 and full_scale(np.uint16, bits=12) == 4095
    v = np.array([0, 128, 129, 4095, 32768, 65535], np.uint16)
    np.testing.assert_array_equal(to_u8(v), [0, 0, 1, 16, 128, 255])
    np.testing.assert_array_equal(to_u8(np.array([0, 2048, 4095], np.uint16), bits=12), [0, 128, 255])
    u8 = np.arange(256, dtype=np.uint8)
    assert to_u8(u8) is u8
    np.testing.assert_array_equal(to_u8(np.array([0.0, 0.5, 1.0, 2.0], np.float32)), [0, 128, 255, 255])


def test_12bit_png_folder_and_tracker_give_the_same_image(tmp_path):
    import cv2
    frames = _twelve_bit_frames()
    for i, f in enumerate(frames):
        assert cv2.imwrite(str(tmp_path / f"{i:05d}.png"), f)
    with open_cine(tmp_path) as cine:                       # the command line's reader
        read = [img for img, _ in cine]
    norm = FrameNormaliser()                                # what Tracker.step does with each frame
    for f, img in zip(frames, read, strict=True):
        assert img.dtype == np.uint8
        np.testing.assert_array_equal(img, to_u8(f))
        x = norm(f)
        np.testing.assert_array_equal(np.rint(x * 255).astype(np.uint8), img)
        # and the tracker sees exactly what it sees when the CLI hands it the reader's 8-bit frame
        np.testing.assert_array_equal(x, FrameNormaliser()(img))
