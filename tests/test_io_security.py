"""Readers never follow a file's own references out of the place they were given (issue 14, S1):
MetaImage ElementDataFile, image-folder links, FFmpeg playlists / concat lists."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from needletrack.errors import InputError
from needletrack.io import open_cine
from needletrack.io.mha import check_header

SECRET = bytes(range(65, 65 + 8)) * 2          # 16 bytes: "ABCDEFGH" twice, shown as a 4x4 uint8 image


def _header(data_file: str, dims=(4, 4)) -> bytes:
    return (f"ObjectType = Image\nNDims = 2\nDimSize = {dims[0]} {dims[1]}\nElementType = MET_UCHAR\n"
            f"ElementDataFile = {data_file}\n").encode()


@pytest.fixture
def secret(tmp_path) -> Path:
    """A file outside the folder the input lives in."""
    p = tmp_path / "private" / "secret.raw"
    p.parent.mkdir()
    p.write_bytes(SECRET)
    return p


@pytest.fixture
def up(tmp_path) -> Path:
    d = tmp_path / "upload"
    d.mkdir()
    return d


def _refused(path, *needles):
    with pytest.raises(InputError) as ei:
        open_cine(path)
    msg = str(ei.value)
    assert "\n" not in msg and str(path) in msg, msg
    for n in needles:
        assert n in msg, msg
    return msg


def test_absolute_element_data_file_is_refused(up, secret):
    import SimpleITK as sitk

    evil = up / "evil.mha"
    evil.write_bytes(_header(str(secret)))
    # without the check ITK would read the other file as pixels (the hole of issue 14 S1)
    raw = sitk.GetArrayFromImage(sitk.ReadImage(str(evil)))
    assert raw.tobytes() == SECRET
    _refused(evil, "ElementDataFile", "own folder")
    with pytest.raises(InputError):
        check_header(evil, allow_data_file=False)


@pytest.mark.parametrize("value", [
    "../private/secret.raw",
    "sub/../../private/secret.raw",
    "..",
    "LIST",
    "LIST 2D",
    "secret%d.raw 1 2 1",
    "file:///etc/passwd",
    "C:\\Windows\\win.ini",
    "\\\\server\\share\\x.raw",
])
def test_element_data_file_outside_the_folder_is_refused(up, secret, value):
    (up / "sub").mkdir()
    evil = up / "evil.mhd"
    body = _header(value)
    if value.startswith("LIST"):
        body += b"../private/secret.raw\n"
    evil.write_bytes(body)
    _refused(evil, "ElementDataFile")


@pytest.mark.parametrize("body", [
    # a CR inside the line: the value MetaIO reads runs to the LF
    b"ObjectType = Image\nNDims = 2\nDimSize = 4 4\nElementType = MET_UCHAR\nElementDataFile = LOCAL\r../private/secret.raw\n",
    # old Mac line ends only: one "line" holding every field
    b"ObjectType = Image\rNDims = 2\rDimSize = 4 4\rElementType = MET_UCHAR\rElementDataFile = ../private/secret.raw\r",
    # a NUL that C string compare stops at
    b"ObjectType = Image\nNDims = 2\nDimSize = 4 4\nElementType = MET_UCHAR\nElementDataFile\0x = ../private/secret.raw\n",
    # an over-long key that a fixed-size key buffer cuts
    b"ObjectType = Image\nNDims = 2\nDimSize = 4 4\nElementType = MET_UCHAR\n" + b"X" * 600
    + b"ElementDataFile = ../private/secret.raw\n",
    # a second field hidden in the "pixels" of a LOCAL file
    _header("LOCAL") + b"ElementDataFile = ../private/secret.raw\n" + SECRET,
    # no data field at all
    b"ObjectType = Image\nNDims = 2\nDimSize = 4 4\nElementType = MET_UCHAR\n",
])
def test_smuggled_data_file_lines_are_refused(up, secret, body):
    evil = up / "evil.mha"
    evil.write_bytes(body)
    _refused(evil)


def test_local_mha_is_read(up):
    p = up / "ok.mha"
    p.write_bytes(_header("LOCAL") + SECRET)
    assert check_header(p, allow_data_file=False) is None
    frames = [img for img, _t in open_cine(p)]
    assert len(frames) == 1 and frames[0].tobytes() == SECRET


def test_mhd_raw_pair_in_the_same_folder_is_read_locally_but_not_as_upload(up):
    (up / "scan.raw").write_bytes(SECRET[::-1])
    hdr = up / "scan.mhd"
    hdr.write_bytes(_header("scan.raw"))
    assert check_header(hdr) == str(up.resolve() / "scan.raw")
    frames = [img for img, _t in open_cine(hdr)]
    assert frames[0].tobytes() == SECRET[::-1]
    with pytest.raises(InputError, match="only a single-file .mha"):
        check_header(hdr, allow_data_file=False)


def test_missing_pixel_file_is_one_clear_line(up):
    hdr = up / "scan.mhd"
    hdr.write_bytes(_header("gone.raw"))
    msg = _refused(hdr, "'gone.raw'", "missing")
    assert "Reason" not in msg


def test_pixel_file_linked_out_of_the_folder_is_refused(up, secret):
    (up / "scan.raw").symlink_to(secret)
    hdr = up / "scan.mhd"
    hdr.write_bytes(_header("scan.raw"))
    _refused(hdr, "leads out of the header's folder")


def test_nrrd_content_in_an_mha_is_not_read_by_another_itk_reader(up, secret):
    # defence in depth: only ITK's MetaImage reader is used, never one chosen by content (a detached NRRD
    # header names another file)
    evil = up / "evil.mha"
    evil.write_bytes(b"NRRD0004\ntype: uchar\ndimension: 2\nsizes: 4 4\nencoding: raw\n"
                     b"data file: ../private/secret.raw\n")
    _refused(evil)


def test_cli_info_refuses_with_exit_2(up, secret, capsys):
    from needletrack.cli import main

    evil = up / "evil.mha"
    evil.write_bytes(_header(str(secret)))
    assert main(["info", str(evil)]) == 2
    err = capsys.readouterr().err.strip()
    assert "ElementDataFile" in err and "\n" not in err and "Traceback" not in err


# ------------------------------------------------------------------------------------------------ image folders
def _png(path: Path, value: int) -> None:
    import cv2

    cv2.imwrite(str(path), np.full((8, 10), value, np.uint8))


def test_folder_frame_linked_out_of_the_folder_is_refused(tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    _png(outside / "private.png", 200)
    folder = tmp_path / "frames"
    folder.mkdir()
    _png(folder / "f0.png", 10)
    (folder / "f1.png").symlink_to(outside / "private.png")
    _refused(folder, "f1.png", "leads out of the folder")


def test_folder_links_inside_the_folder_are_read(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    _png(folder / "f0.png", 10)
    (folder / "f1.png").symlink_to(folder / "f0.png")
    assert [int(img[0, 0]) for img, _t in open_cine(folder)] == [10, 10]


def test_meta_json_linked_out_of_the_folder_is_refused(tmp_path):
    (tmp_path / "other.json").write_text('{"fps": 25}')
    seq = tmp_path / "seq"
    (seq / "frames").mkdir(parents=True)
    (seq / "masks").mkdir()
    _png(seq / "frames" / "00000.png", 10)
    (seq / "meta.json").symlink_to(tmp_path / "other.json")
    _refused(seq, "meta.json")


# ------------------------------------------------------------------------------------------------ video (FFmpeg)
@pytest.fixture
def other_video(tmp_path) -> Path:
    from needletrack.io.samples import write_mp4

    d = tmp_path / "private"
    d.mkdir(exist_ok=True)
    return write_mp4(d / "other.mp4", n=3, h=32, w=48)


@pytest.mark.parametrize("kind", ["ffconcat_same_folder", "ffconcat_absolute", "hls"])
def test_video_that_names_other_files_is_refused(up, other_video, kind):
    import shutil

    if kind == "ffconcat_same_folder":     # FFmpeg's own 'safe' mode would allow this one
        shutil.copy(other_video, up / "neighbour.mp4")
        text = "ffconcat version 1.0\nfile neighbour.mp4\n"
    elif kind == "ffconcat_absolute":
        text = f"ffconcat version 1.0\nfile {other_video}\n"
    else:
        text = f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\n{other_video}\n#EXT-X-ENDLIST\n"
    evil = up / "evil.mp4"
    evil.write_text(text)
    if kind == "ffconcat_same_folder":     # proof that FFmpeg unrestricted would read the neighbour
        import av

        with av.open(str(evil)) as c:
            assert c.format.name == "concat" and c.streams.video[0].codec_context.width == 48
    _refused(evil)


def test_ordinary_video_still_opens(tmp_path):
    from needletrack.io.samples import write_mp4

    p = write_mp4(tmp_path / "loop.mp4", n=4, h=32, w=48)
    with open_cine(p) as c:
        assert (c.frames, c.width, c.height) == (4, 48, 32)
        assert len([1 for _ in c]) == 4


def test_dicom_reader_reads_only_the_given_file(tmp_path):
    # DICOM has no external pixel references that pydicom follows: a DICOMDIR-like file without pixels is
    # refused instead of being resolved to its referenced files
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.1.3.10"   # Media Storage Directory
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.ReferencedFileID = ["..", "private", "secret"]
    p = tmp_path / "DICOMDIR.dcm"
    ds.save_as(str(p), enforce_file_format=True)
    _refused(p, "no pixel data")
