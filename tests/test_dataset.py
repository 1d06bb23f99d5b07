"""Data set folder format: writer/reader round trip and the validator."""
import json

import cv2
import numpy as np

from needletrack.data.folder import SequenceWriter, list_sequences, read_sequence
from needletrack.data.validate import validate_dataset


def _make(root, name="s1", n=3, h=20, w=30, meta=None, needle=True):
    rng = np.random.default_rng(0)
    with SequenceWriter(root, name, meta if meta is not None else {"fps": 20, "pixel_spacing_mm": [0.1, 0.1]}) as sw:
        for i in range(n):
            m = np.zeros((h, w), bool)
            m[5, 2:10 + i] = True
            nd = {"visible": True, "tip": [9 + i, 5], "tail": [2, 5], "angle_deg": 0.0} if needle else None
            sw.add(rng.integers(0, 255, (h, w), dtype=np.uint8), m, nd)
    return root / name


def test_round_trip(tmp_path):
    p = _make(tmp_path)
    seq = read_sequence(p)
    assert len(seq) == 3 and seq.fps == 20 and seq.pixel_spacing_mm == [0.1, 0.1]
    assert seq.mask(2).sum() == 10 and seq.mask(2).dtype == bool
    assert seq.frame(0).shape == (20, 30) and seq.frame(0).dtype == np.uint8
    assert seq.needle[1]["frame"] == 1
    assert list_sequences(tmp_path) == [p] and list_sequences(p) == [p]
    assert validate_dataset(tmp_path) == []


def _msgs(problems, level=None):
    return [str(p) for p in problems if level is None or p.level == level]


def test_validator_finds_each_problem(tmp_path):
    root = tmp_path / "ds"
    a = _make(root, "a")
    # mask whose size differs from its frame
    cv2.imwrite(str(a / "masks" / "00001.png"), np.zeros((10, 10), np.uint8))
    # mask with values other than 0/255
    cv2.imwrite(str(a / "masks" / "00002.png"), np.full((20, 30), 7, np.uint8))
    b = _make(root, "b")
    # frames of differing sizes, a missing mask, a mask without frame
    cv2.imwrite(str(b / "frames" / "00002.png"), np.zeros((21, 30), np.uint8))
    (b / "masks" / "00000.png").unlink()
    cv2.imwrite(str(b / "masks" / "00009.png"), np.zeros((20, 30), np.uint8))
    c = _make(root, "c")
    (c / "meta.json").write_text("{not json")
    (c / "needle.json").write_text(json.dumps([{"frame": 0}]))
    d = root / "d"
    (d / "frames").mkdir(parents=True)
    e = _make(root, "e", meta={"fps": -1, "pixel_spacing_mm": [0.1]})
    (e / "frames" / "00001.png").write_bytes(b"\x89PNG truncated")

    probs = validate_dataset(root)
    errors, warnings = _msgs(probs, "error"), _msgs(probs, "warning")
    text = "\n".join(errors)

    def has(path, words):
        return any(str(path) in m and words in m for m in errors + warnings)

    assert has(a / "masks" / "00001.png", "mask size 10x10 differs from its frame's 30x20")
    assert has(a / "masks" / "00002.png", "values other than 0/255 (7)")
    assert any(str(a / "masks" / "00002.png") in m for m in warnings)
    assert has(b / "frames" / "00002.png", "frame size 30x21 differs")
    assert has(b / "masks", "no mask for frames 00000.png")
    assert has(b / "masks" / "00009.png", "no frame of the same name")
    assert has(c / "meta.json", "invalid JSON")
    assert has(c / "needle.json", "1 entries for 3 frames")
    assert has(d / "frames", "holds no images")
    assert has(e / "meta.json", "fps must be a positive number")
    assert has(e / "meta.json", "pixel_spacing_mm must be")
    assert has(e / "frames" / "00001.png", "cannot read image")
    assert str(a / "frames") not in text  # good files are not reported


def test_validator_root_problems(tmp_path):
    assert "no such folder" in str(validate_dataset(tmp_path / "nope")[0])
    (tmp_path / "empty").mkdir()
    assert "no sequence folders" in str(validate_dataset(tmp_path / "empty")[0])
