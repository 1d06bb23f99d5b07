"""MP4 / AVI / MKV / MOV via PyAV: exact per-frame timestamps from the stream's presentation times.

Only ordinary video containers are opened (``VIDEO_FORMATS``, passed to FFmpeg as its ``format_whitelist``, and
only the local ``file`` protocol): FFmpeg would otherwise follow what a file names inside it (an HLS playlist
or an ``ffconcat`` list saved as ``.mp4`` names other files, local or remote). Such files are refused before
FFmpeg reads past the header probe.
"""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np

from needletrack.errors import InputError
from needletrack.io.base import Cine

VIDEO_EXTS = (".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv")
# FFmpeg demuxers allowed to open a cine: containers that hold their own frames (no playlists, concat lists,
# image sequences or network protocols). MOV/MP4 external data references stay off (FFmpeg's default).
VIDEO_FORMATS = ("mov", "mp4", "m4a", "3gp", "3g2", "mj2", "avi", "matroska", "webm", "mpeg", "mpegts",
                 "mpegvideo", "asf", "m4v", "h264", "hevc")
_OPEN_OPTIONS = {"format_whitelist": ",".join(VIDEO_FORMATS), "protocol_whitelist": "file"}


def _av_errors():
    import av

    return (av.FFmpegError, EOFError, ValueError, IndexError, OSError)


def _open(path):
    """``av.open`` limited to the allowed containers; raises InputError for anything else."""
    import av

    try:
        return av.open(str(path), options=dict(_OPEN_OPTIONS))
    except av.ArgumentError:   # EINVAL: FFmpeg recognised a format that is not on the list
        raise InputError("not a video container (playlists, concat lists and other formats that name further "
                         "files are not read)", path) from None


class VideoCine(Cine):
    def __init__(self, path: Path, rgb: bool = False):
        super().__init__(path, rgb)
        try:
            container = _open(path)
        except _av_errors() as e:
            raise InputError(f"not a readable video (truncated, corrupt or not a video: {_short(e)})", path) from None
        try:
            if not container.streams.video:
                raise InputError("no video stream found (truncated or corrupt file, or audio only)", path)
            stream = container.streams.video[0]
            ext = Path(path).suffix.lower().lstrip(".")
            self.format = f"video/{ext if '.' + ext in VIDEO_EXTS else container.format.name.split(',')[0]}"
            cc = stream.codec_context
            self.codec = cc.name
            self.notes.append(f"codec {cc.name}")
            self.width, self.height = int(cc.width), int(cc.height)
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            self.fps = float(rate) if rate else None
            self._time_base = stream.time_base or Fraction(1, 1)
            self._start = stream.start_time
            n = int(stream.frames or 0)
            counted = n <= 0
            if counted:
                n = self._count_packets(container, stream)
            self.frames = n
            if stream.duration:
                self.duration = float(stream.duration * self._time_base)
            elif container.duration:
                self.duration = container.duration / 1e6
            if counted and self.duration and self.fps and n < round(self.duration * self.fps) - 1:
                raise InputError(f"truncated video: {n} frames found, the header promises "
                                 f"{self.duration:.2f} s at {self.fps:g} fps", path)
        finally:
            container.close()
        if self.width <= 0 or self.height <= 0:
            raise InputError("video stream has no frame size (corrupt header)", path)
        if self.frames <= 0:
            raise InputError("video holds no frames", path)
        self._finish_timing()

    @staticmethod
    def _count_packets(container, stream) -> int:
        n = 0
        try:
            for pkt in container.demux(stream):
                if pkt.size:
                    n += 1
        except _av_errors():
            pass
        return n

    def __iter__(self):
        import av

        try:
            container = _open(self.path)
        except _av_errors() as e:
            raise InputError(f"not a readable video ({_short(e)})", self.path) from None
        fmt = "rgb24" if self.rgb else "gray"
        i = 0
        t0 = None
        try:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for frame in container.decode(stream):
                if frame.pts is not None:
                    t = float(frame.pts * self._time_base)
                    if t0 is None:
                        t0 = float(self._start * self._time_base) if self._start is not None else t
                    t -= t0
                elif self.fps:
                    t = i / self.fps
                else:
                    t = None
                img = frame.to_ndarray(format=fmt)
                i += 1
                yield np.ascontiguousarray(img), t
        except av.FFmpegError as e:
            raise InputError(f"corrupt video: decoding failed after {i} frames ({_short(e)})", self.path) from None
        finally:
            container.close()
        if i == 0:
            raise InputError("video holds no decodable frames (truncated or corrupt)", self.path)
        if i < self.frames:
            raise InputError(f"truncated or corrupt video: {i} of {self.frames} frames could be decoded", self.path)


def _short(e: Exception) -> str:
    s = str(e).strip().replace("\n", " ")
    return s[:160] if s else type(e).__name__
