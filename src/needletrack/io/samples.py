"""Small synthetic cine files in every supported format (for tests, the demo and bug reports).

Each frame shows a bright line (a "needle") moving one step per frame on a speckle-like background, so
frames differ and gray levels survive lossy codecs well enough to check.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np


def sample_frames(n: int = 6, h: int = 48, w: int = 64, rgb: bool = False, seed: int = 0) -> list[np.ndarray]:
    """n H×W uint8 frames (H×W×3 when rgb): smooth background + a diagonal bright line that advances."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = (60 + 40 * np.sin(xx / 7.0) * np.cos(yy / 5.0) + rng.normal(0, 4, (h, w))).clip(0, 255)
    out = []
    for i in range(n):
        img = base.copy()
        length = w // 4 + i * 3
        for k in range(length):
            x, y = k, h // 6 + k // 2
            if 0 <= x < w and 0 <= y < h:
                img[max(0, y - 1):y + 1, x] = 230
        img = img.astype(np.uint8)
        if rgb:
            img = np.stack([img, (img * 0.9).astype(np.uint8), (img * 0.8).astype(np.uint8)], axis=2)
        out.append(img)
    return out


def write_mp4(path, n: int = 6, h: int = 48, w: int = 64, fps: int = 25, codec: str = "libx264") -> Path:
    """H.264 (yuv420p) mp4 — or another PyAV codec/container by name and extension."""
    import av

    path = Path(path)
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=fps)
        s.width, s.height = w, h
        s.pix_fmt = "yuv420p"
        if codec == "libx264":
            s.options = {"crf": "10", "preset": "ultrafast"}
        for img in sample_frames(n, h, w):
            for pkt in s.encode(av.VideoFrame.from_ndarray(img, format="gray")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    return path


def _us_dataset(n: int, h: int, w: int, frame_time_ms: float | None, spacing_cm):
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.3.1"  # Ultrasound Multi-frame Image Storage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "US"
    ds.PatientName = "Phantom^Needle"
    ds.Rows, ds.Columns = h, w
    ds.NumberOfFrames = n
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    if frame_time_ms is not None:
        ds.FrameTime = frame_time_ms
        ds.FrameIncrementPointer = pydicom.tag.Tag(0x0018, 0x1063)
    if spacing_cm is not None:
        r = Dataset()
        r.RegionSpatialFormat = 1
        r.RegionDataType = 1
        r.RegionFlags = 0
        r.RegionLocationMinX0, r.RegionLocationMinY0 = 0, 0
        r.RegionLocationMaxX1, r.RegionLocationMaxY1 = w - 1, h - 1
        r.PhysicalUnitsXDirection = 3  # cm
        r.PhysicalUnitsYDirection = 3
        r.PhysicalDeltaX = spacing_cm[1]
        r.PhysicalDeltaY = spacing_cm[0]
        ds.SequenceOfUltrasoundRegions = [r]
    return ds


def write_dicom(path, kind: str = "ybr_jpeg", n: int = 6, h: int = 48, w: int = 64,
                frame_time_ms: float | None = 40.0, spacing_cm=(0.02, 0.01),
                frame_time_vector_ms=None, cine_rate=None) -> Path:
    """Ultrasound multi-frame DICOM. kind: "rgb" (native), "ybr_jpeg" (YBR_FULL_422, JPEG baseline),
    "mono8", "mono16" (MONOCHROME2, 12 bits stored). spacing_cm: (row, col) PhysicalDeltaY/X in cm."""
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit

    path = Path(path)
    ds = _us_dataset(n, h, w, frame_time_ms, spacing_cm)
    if frame_time_vector_ms is not None:
        ds.FrameTimeVector = list(frame_time_vector_ms)
    if cine_rate is not None:
        ds.CineRate = int(cine_rate)
    if kind == "rgb":
        frames = sample_frames(n, h, w, rgb=True)
        ds.SamplesPerPixel = 3
        ds.PhotometricInterpretation = "RGB"
        ds.PlanarConfiguration = 0
        ds.PixelData = b"".join(f.tobytes() for f in frames)
    elif kind == "ybr_jpeg":
        import io

        from PIL import Image

        frames = sample_frames(n, h, w, rgb=True)
        blobs = []
        for f in frames:
            buf = io.BytesIO()
            Image.fromarray(f, "RGB").save(buf, format="JPEG", quality=95, subsampling=1)  # 4:2:2
            blobs.append(buf.getvalue())
        ds.SamplesPerPixel = 3
        ds.PhotometricInterpretation = "YBR_FULL_422"
        ds.PlanarConfiguration = 0
        ds.LossyImageCompression = "01"
        ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
        ds.PixelData = encapsulate(blobs)
        ds["PixelData"].VR = "OB"
    elif kind in ("mono8", "mono16"):
        frames = sample_frames(n, h, w)
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        if kind == "mono16":
            ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
            frames = [(f.astype(np.uint32) * 4095 // 255).astype("<u2") for f in frames]
        ds.PixelData = b"".join(f.tobytes() for f in frames)
    else:
        raise ValueError(f"unknown DICOM kind {kind!r}")
    ds.save_as(str(path), enforce_file_format=True)
    return path


def write_mha(path, n: int = 5, h: int = 40, w: int = 56, t0: float = 1234.5, dt: float = 0.05,
              spacing=(1.0, 1.0)) -> Path:
    """PLUS-style sequence file with Seq_Frame####_Timestamp fields (uint8, DimSize = W H N)."""
    import SimpleITK as sitk

    path = Path(path)
    arr = np.stack(sample_frames(n, h, w))
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((float(spacing[1]), float(spacing[0]), 1.0))
    for i in range(n):
        img.SetMetaData(f"Seq_Frame{i:04d}_Timestamp", f"{t0 + i * dt:.6f}")
        img.SetMetaData(f"Seq_Frame{i:04d}_ImageStatus", "OK")
    img.SetMetaData("UltrasoundImageOrientation", "MF")
    sitk.WriteImage(img, str(path))
    return path


def write_png16_folder(folder, n: int = 5, h: int = 40, w: int = 56, names=None) -> Path:
    """16-bit grayscale PNGs, full 16-bit range (v8 * 257), named so natural sort matters (f1, f2, f10...)."""
    import cv2

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    names = names or [f"f{i * 5 if i else 1}.png" for i in range(n)]
    for img, name in zip(sample_frames(n, h, w), names):
        cv2.imwrite(str(folder / name), img.astype(np.uint16) * 257)
    return folder
