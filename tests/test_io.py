"""Every cine reader on small files made here, read back: frame count, timestamps, spacing, pixels."""
import numpy as np
import pytest

from needletrack.errors import InputError
from needletrack.io import open_cine, read_mask, samples as S, write_mask


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cines")
    return {
        "mp4": S.write_mp4(d / "h264.mp4"),
        "avi": S.write_mp4(d / "mpeg4.avi", codec="mpeg4"),
        "mkv": S.write_mp4(d / "h264.mkv"),
        "rgb": S.write_dicom(d / "rgb.dcm", "rgb"),
        "ybr": S.write_dicom(d / "ybr.dcm", "ybr_jpeg"),
        "mono16": S.write_dicom(d / "mono16.dcm", "mono16", spacing_cm=None, frame_time_ms=None, cine_rate=30),
        "ftv": S.write_dicom(d / "ftv.dcm", "mono8", n=4, frame_time_ms=None,
                             frame_time_vector_ms=[0, 20, 40, 20]),
        "mha": S.write_mha(d / "seq.igs.mha"),
        "png16": S.write_png16_folder(d / "png16"),
    }


def _read_all(cine):
    frames, times = [], []
    for img, t in cine:
        frames.append(img)
        times.append(t)
    return frames, times


@pytest.mark.parametrize("key", ["mp4", "avi", "mkv"])
def test_video(files, key):
    ref = S.sample_frames(6, 48, 64)
    with open_cine(files[key]) as c:
        assert (c.frames, c.width, c.height) == (6, 64, 48)
        assert c.fps == pytest.approx(25.0)
        assert c.duration == pytest.approx(0.24, abs=0.01)
        assert c.pixel_spacing_mm is None and c.names is None
        assert c.format.startswith("video/")
        frames, times = _read_all(c)
    assert times == pytest.approx([i / 25 for i in range(6)], abs=1e-6)
    assert all(f.shape == (48, 64) and f.dtype == np.uint8 for f in frames)
    tol = 2.0 if key != "avi" else 6.0
    assert max(np.abs(f.astype(int) - r).mean() for f, r in zip(frames, ref)) < tol
    rgb = next(iter(open_cine(files[key], rgb=True)))[0]
    assert rgb.shape == (48, 64, 3)


def test_dicom_rgb_native(files):
    ref = S.sample_frames(6, 48, 64, rgb=True)
    c = open_cine(files["rgb"], rgb=True)
    assert (c.frames, c.width, c.height, c.format) == (6, 64, 48, "dicom")
    assert c.fps == pytest.approx(25.0) and c.duration == pytest.approx(0.24)
    assert c.pixel_spacing_mm == pytest.approx([0.2, 0.1])  # PhysicalDeltaY/X 0.02/0.01 cm
    frames, times = _read_all(c)
    assert times == pytest.approx([i * 0.04 for i in range(6)])
    for f, r in zip(frames, ref):
        np.testing.assert_array_equal(f, r)
    gray = next(iter(open_cine(files["rgb"])))[0]
    assert gray.shape == (48, 64)


def test_dicom_ybr_full_422_jpeg(files):
    ref = S.sample_frames(6, 48, 64, rgb=True)
    c = open_cine(files["ybr"], rgb=True)
    info = c.info()
    assert info["frames"] == 6 and info["fps"] == pytest.approx(25.0)
    assert info["pixel_spacing_mm"] == pytest.approx([0.2, 0.1])
    frames, times = _read_all(c)
    assert len(frames) == 6 and times[-1] == pytest.approx(0.2)
    for f, r in zip(frames, ref):
        # colour came back as RGB (not raw YCbCr): channel means match the reference to JPEG accuracy
        assert np.abs(f.astype(int) - r).mean() < 4
        assert np.abs(f.reshape(-1, 3).mean(0) - r.reshape(-1, 3).mean(0)).max() < 2


def test_dicom_mono16_cine_rate(files):
    c = open_cine(files["mono16"])
    assert c.fps == pytest.approx(30.0) and c.pixel_spacing_mm is None
    frames, times = _read_all(c)
    assert times[1] == pytest.approx(1 / 30)
    for f, r in zip(frames, S.sample_frames(6, 48, 64)):
        assert np.abs(f.astype(int) - r).max() <= 1  # 12-bit scaled back to 8-bit
    assert any("12-bit" in n for n in c.notes)


def test_dicom_frame_time_vector(files):
    c = open_cine(files["ftv"])
    _, times = _read_all(c)
    assert times == pytest.approx([0.0, 0.02, 0.06, 0.08])
    assert c.fps == pytest.approx(3 / 0.08)


def test_mha_sequence(files):
    c = open_cine(files["mha"])
    assert (c.frames, c.width, c.height, c.format) == (5, 56, 40, "mha")
    assert c.fps == pytest.approx(20.0) and c.time_offset_s == pytest.approx(1234.5)
    assert c.pixel_spacing_mm is None  # PLUS writes unit spacing
    frames, times = _read_all(c)
    assert times == pytest.approx([0, 0.05, 0.1, 0.15, 0.2])
    for f, r in zip(frames, S.sample_frames(5, 40, 56)):
        np.testing.assert_array_equal(f, r)


def test_mha_with_spacing(tmp_path):
    c = open_cine(S.write_mha(tmp_path / "s.mha", spacing=(0.3, 0.2)))
    assert c.pixel_spacing_mm == pytest.approx([0.3, 0.2])


def test_png16_folder_natural_sort(files):
    c = open_cine(files["png16"])
    assert c.names == ["f1.png", "f5.png", "f10.png", "f15.png", "f20.png"]
    assert (c.frames, c.width, c.height, c.fps) == (5, 56, 40, None)
    assert any("16-bit" in n for n in c.notes)
    frames, times = _read_all(c)
    assert times == [None] * 5
    for f, r in zip(frames, S.sample_frames(5, 40, 56)):
        np.testing.assert_array_equal(f, r)  # v*257 scaled by 255/65535 gives v back


def test_sequence_folder_reads_meta(tmp_path):
    from needletrack.data.folder import SequenceWriter

    with SequenceWriter(tmp_path, "s1", {"fps": 10, "pixel_spacing_mm": [0.15, 0.1]}) as w:
        for f in S.sample_frames(3, 20, 30):
            w.add(f, np.zeros_like(f, bool))
    for p in (tmp_path / "s1", tmp_path / "s1" / "frames"):
        c = open_cine(p)
        assert c.fps == 10 and c.pixel_spacing_mm == [0.15, 0.1] and c.frames == 3
        assert [t for _, t in c] == pytest.approx([0, 0.1, 0.2])


def test_iterating_twice_and_stopping_early(files):
    c = open_cine(files["mp4"])
    first = [img.copy() for img, _ in c]
    for img, _ in c:
        break
    again = [img for img, _ in c]
    assert len(again) == 6 and all((a == b).all() for a, b in zip(first, again))


def test_mask_io(tmp_path):
    m = np.zeros((10, 12), bool)
    m[2:5, 3:9] = True
    write_mask(tmp_path / "m.png", m)
    np.testing.assert_array_equal(read_mask(tmp_path / "m.png"), m)
    import cv2

    grey = np.where(m, 200, 90).astype(np.uint8)  # values other than 0/255: >= 128 is needle
    cv2.imwrite(str(tmp_path / "g.png"), grey)
    np.testing.assert_array_equal(read_mask(tmp_path / "g.png"), m)
    with pytest.raises(InputError, match=r"m\.png: mask size 12x10 differs from the frame size 13x10"):
        read_mask(tmp_path / "m.png", shape=(10, 13))


# ---- bad inputs (the CLI side is in test_cli_basic.py) ----

def _corrupt(src, dst, keep=None, garble=False):
    data = bytearray(src.read_bytes())
    if keep is not None:
        data = data[:keep]
    if garble:
        for i in range(len(data) // 3, len(data), 3):
            data[i] = (data[i] * 7 + 13) % 256
    dst.write_bytes(bytes(data))
    return dst


def test_bad_inputs_name_the_file(files, tmp_path):
    (tmp_path / "text.mp4").write_text("hello, not a video\n")
    (tmp_path / "x.xyz").write_text("?")
    (tmp_path / "empty").mkdir()
    cases = {
        tmp_path / "missing.mp4": "no such file",
        tmp_path / "x.xyz": "unknown input format",
        tmp_path / "text.mp4": "not a readable video",
        _corrupt(files["mp4"], tmp_path / "trunc.mp4", keep=2000): "video",
        _corrupt(files["rgb"], tmp_path / "trunc.dcm", keep=3000): "truncated DICOM",
        tmp_path / "empty": "holds no images",
    }
    for path, msg in cases.items():
        with pytest.raises(InputError) as ei:
            c = open_cine(path)
            list(c)
        assert path.name in str(ei.value) and msg in str(ei.value), str(ei.value)


def test_dicom_without_extension_is_detected(files, tmp_path):
    import shutil

    p = tmp_path / "IM000001"
    shutil.copy(files["rgb"], p)
    c = open_cine(p)
    assert c.format == "dicom" and c.frames == 6
