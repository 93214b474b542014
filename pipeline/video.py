"""What a video is to the pipeline: the frames its decoder returns, as displayed, in 8-bit BGR.

One decoder for every stage (FFmpeg, through PyAV's wheels: H.264, H.265, VP9, AV1, MPEG-4
Part 2 / Xvid, MJPEG, FFV1, ... with no system package): ingest probes a video with
:func:`probe`, the flow stage and ``pipeline.predict`` read it with :func:`frames`, so both see
the same frames. Every source is converted once, here, to 8-bit BGR (grey, yuv444p, 10-bit
and RGB sources alike; bicubic chroma, as OpenCV's reader, whose frames these equal), and
turned and mirrored as its display matrix says, the way the ``ffmpeg`` command does (a
portrait phone clip comes out portrait). Frames are used as decoded: a variable frame rate
keeps its frames, and :attr:`Probe.fps` is their average rate.

A video is *truncated* when its decodable stream ends clearly before the end its container
claims for it (:meth:`Probe.truncated`), not when fewer frames decode than the container counts:
AVI counts the empty chunks an encoder writes for dropped frames, and a player shows the
previous frame there. Only where timestamps or a duration are missing are the counts compared.
Containers that estimate their duration from the file itself (a cut MPEG-TS, a fragmented MP4)
cannot show that they were cut.

:class:`VideoError` says why a file cannot be read, in the user's terms: an empty file, a folder,
a still image, not a video, no video stream, a codec this build cannot decode (named), an MP4
whose index was never written, a broken link.

Decoding and conversion run on one thread per process: the worker pools give the parallelism.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

VIDEO_EXTENSIONS = {
    ".avi",
    ".mp4",
    ".mkv",
    ".mov",
    ".webm",
    ".mpg",
    ".mpeg",
    ".m4v",
    ".wmv",
    ".flv",
    ".3gp",
    ".ogv",
    ".ts",
    ".mts",
    ".m2ts",
}
"""File name endings the ``folder`` layout takes for videos (compared in lower case)."""


class VideoError(ValueError):
    """The file cannot be used as a video; the message says why."""


@dataclass(frozen=True)
class Probe:
    """What decoding a whole video found out."""

    frames: int  # frames that decode
    claimed: int  # frames the container counts (0: it does not say)
    fps: float  # the decoded frames' average rate (the container's nominal rate without times)
    width: int  # as displayed (a 90° rotation swaps them)
    height: int
    duration: float  # seconds the container claims for the video stream (0: unknown)
    end: float  # seconds from the stream's start to the end of its last decodable frame
    codec: str
    rotation: int  # degrees counter-clockwise the frames were turned for display

    def truncated(self) -> str | None:
        """Why the video counts as cut short, or None.

        With timestamps and a duration: the decodable stream must reach to within
        max(2 frames, 5 %) of the claimed duration. Without: at most max(2, 5 %) of the claimed
        frames may fail to decode.
        """
        if self.duration > 0 and self.end > 0:
            step = 1 / self.fps if self.fps > 0 else 0.04
            if self.duration - self.end > max(2 * step, 0.05 * self.duration):
                return (
                    f"truncated: the decodable stream ends at {self.end:.2f} s of the "
                    f"{self.duration:.2f} s the container claims ({self.frames} of "
                    f"{self.claimed or '?'} frames decode)"
                )
            return None
        if self.claimed and self.claimed - self.frames > max(2, 0.05 * self.claimed):
            return (
                f"truncated: the container claims {self.claimed} frames but only "
                f"{self.frames} decode (it gives no timestamps to judge by)"
            )
        return None


# ---- opening, with the true reason when it fails ----------------------------------------------


def _box_types(path: str, limit: int = 64) -> list[bytes]:
    """The top-level box types of an ISO media file (MP4, MOV, 3GP), read box by box."""
    types = []
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        pos = 0
        while pos + 8 <= size and len(types) < limit:
            f.seek(pos)
            head = f.read(16)
            length, kind = int.from_bytes(head[:4], "big"), head[4:8]
            if length == 1 and len(head) >= 16:
                length = int.from_bytes(head[8:16], "big")
            elif length == 0:
                length = size - pos
            if length < 8:
                break
            types.append(kind)
            pos += length
    return types


def _codec_tag(path: str) -> str | None:
    """The video codec as the file names it (AVI's fourcc, MP4's sample entry, Matroska's
    codec id), for the message when FFmpeg has no decoder for it; None when unsure."""
    with open(path, "rb") as f:
        head = f.read(1 << 20)
    if head[:4] == b"RIFF":  # strh "vids" ... strf: a BITMAPINFOHEADER (biCompression)
        m = re.search(rb"strh.{4}vids.*?strf.{4}.{16}(.{4})", head, re.S)
    elif head[4:8] == b"ftyp":  # the sample entry of the track whose handler is "vide"
        m = re.search(rb"hdlr.{12}vide.*?stsd.{12}(.{4})", head, re.S)
    else:  # Matroska: the CodecID element (0x86), a one-byte size, "V_..."
        m = re.search(rb"\x86[\x81-\xbf](V_[A-Z0-9/_.]+)", head)
    if not m:
        return None
    tag = m.group(1).decode("latin-1").strip("\0 ")
    return tag if tag.isprintable() and tag else None


def _open(path: str):  # noqa: ANN202 (PyAV's container and stream)
    """The container and its first video stream, or :class:`VideoError` saying why not."""
    import av

    if os.path.isdir(path):
        raise VideoError("a folder, not a video file")
    if not os.path.exists(path):
        if os.path.islink(path):
            raise VideoError(
                f"a symbolic link that leads nowhere (to {os.readlink(path)}: missing, or a loop)"
            )
        raise VideoError("no such file")
    try:
        if os.path.getsize(path) == 0:
            raise VideoError("an empty file (0 bytes)")
        try:
            container = av.open(path, metadata_errors="ignore")
        except av.FFmpegError as exc:
            boxes = _box_types(path)
            if boxes[:1] == [b"ftyp"] and b"moov" not in boxes:
                raise VideoError(
                    "an MP4/MOV without its index (no 'moov' box): a recording that was never "
                    "finished, or a file cut before its end"
                ) from exc
            raise VideoError(
                f"not a readable video: FFmpeg cannot open it ({exc.strerror})"
            ) from exc
    except OSError as exc:  # permissions, a vanished file, an I/O error
        raise VideoError(f"cannot be read: {exc.strerror or exc}") from exc
    form = container.format.name
    if form.endswith("_pipe") or form == "image2":
        container.close()
        raise VideoError(f"a still image ({form.split('_')[0]}), not a video")
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams})
        container.close()
        held = f"holds {' and '.join(kinds)} only" if kinds else "holds no streams"
        raise VideoError(f"no video stream (the file {held})")
    stream = container.streams.video[0]
    if stream.codec_context is None:
        container.close()
        tag = _codec_tag(path)
        raise VideoError(
            f"its video codec{f' {tag!r}' if tag else ''} cannot be decoded by this FFmpeg "
            f"build (PyAV {av.__version__}), or its header is damaged; re-encode it, e.g. "
            "ffmpeg -i IN -c:v libx264 OUT.mp4"
        )
    stream.codec_context.thread_count = 1
    return container, stream


def _decoded(container: object, stream: object) -> Iterator[object]:
    """PyAV's frames of an open stream; a packet that does not decode is skipped (FFmpeg goes
    on at the next one), so a damaged stretch costs its frames, never the video."""
    import av

    for packet in container.demux(stream):
        try:
            decoded = packet.decode()
        except av.FFmpegError:
            continue
        yield from decoded


# ---- as displayed, in 8-bit BGR -------------------------------------------------------------


def _display(frame: object) -> tuple[Callable[[np.ndarray], np.ndarray], int]:
    """How to turn a decoded image to show it as its display matrix says, and by how many
    degrees (counter-clockwise): the ``ffmpeg`` command's autorotate rules, flips included."""
    matrix = None
    for data in frame.side_data:  # its keys: the side data objects themselves
        if "DISPLAYMATRIX" in str(data.type):
            matrix = np.frombuffer(bytes(data), np.int32).tolist()
    if matrix is None:
        return (lambda image: image), 0
    a, b, c, d = (v / 65536 for v in (matrix[0], matrix[1], matrix[3], matrix[4]))
    if math.hypot(a, c) == 0 or math.hypot(b, d) == 0:
        return (lambda image: image), 0
    theta = round(math.degrees(math.atan2(b / math.hypot(b, d), a / math.hypot(a, c))))
    theta -= 360 * math.floor(theta / 360 + 0.9 / 360)  # [0, 360)
    if abs(theta - 90) < 1:
        if matrix[3] > 0:
            return (lambda image: image.transpose(1, 0, 2)), 270  # counter-clockwise, flipped
        return (lambda image: np.rot90(image, -1)), 270  # clockwise
    if abs(theta - 270) < 1:
        if matrix[3] < 0:
            return (lambda image: image.transpose(1, 0, 2)[::-1, ::-1]), 90
        return (lambda image: np.rot90(image, 1)), 90
    if abs(theta - 180) < 1:
        rows, cols = (-1 if matrix[4] < 0 else 1), (-1 if matrix[0] < 0 else 1)
        return (lambda image: image[::rows, ::cols]), 180
    if matrix[4] < 0:  # no turn, a vertical mirror
        return (lambda image: image[::-1]), 0
    return (lambda image: image), 0


def _bgr(frame: object) -> np.ndarray:
    return frame.to_ndarray(format="bgr24", interpolation="BICUBIC", threads=1)


def frames(path: str | Path) -> Iterator[np.ndarray]:
    """The video's frames, one at a time: 8-bit BGR ``(H, W, 3)``, as displayed.

    Raises:
        VideoError: the file cannot be opened as a video (the message says why).
    """
    container, stream = _open(str(path))
    try:
        show = None
        for frame in _decoded(container, stream):
            if show is None:
                show = _display(frame)[0]
            yield np.ascontiguousarray(show(_bgr(frame)))
    finally:
        container.close()


def _claimed(container: object, stream: object, rate: float) -> tuple[float, float, int]:
    """(start, end) in seconds that the container claims for the video stream, and the frames it
    counts. MP4 and MOV give the track's own duration (edit lists applied); Matroska a per-track
    DURATION tag (its end); AVI a frame count, which outlasts a duration estimated from what is
    left of a cut file. The container's overall duration only when the video is all it holds."""
    tb = float(stream.time_base) if stream.time_base else 0.0
    start = stream.start_time * tb if stream.start_time is not None and tb else 0.0
    counted = int(stream.frames or 0)
    ends = []
    if stream.duration and tb:
        ends.append(start + stream.duration * tb)
    tag = re.fullmatch(r"(\d+):(\d+):(\d+(?:\.\d+)?)", str(stream.metadata.get("DURATION", "")))
    if tag:
        h, m, s = tag.groups()
        ends.append(int(h) * 3600 + int(m) * 60 + float(s))
    if counted and rate > 0 and (container.format.name == "avi" or not ends):
        ends.append(start + counted / rate)
    if not ends and container.duration and len(container.streams) == 1:
        ends.append((container.start_time or 0) / 1e6 + container.duration / 1e6)
    return start, max(ends, default=0.0), counted


def probe(path: str | Path) -> Probe:
    """Decode every frame of ``path`` and report what it holds (:class:`Probe`).

    Raises:
        VideoError: the file cannot be opened as a video (the message says why).
    """
    container, stream = _open(str(path))
    try:
        rate = float(stream.average_rate or stream.guessed_rate or 0)
        start, claimed_end, counted = _claimed(container, stream, rate)
        codec = stream.codec_context.codec.canonical_name  # "av1", whichever decoder reads it
        count, times, width, height, rotation = 0, [], 0, 0, 0
        for frame in _decoded(container, stream):
            if count == 0:
                show, rotation = _display(frame)
                height, width = show(_bgr(frame)).shape[:2]
            count += 1
            if frame.time is not None:
                times.append(frame.time)
    finally:
        container.close()
    fps, end, duration = rate, 0.0, 0.0
    if count and len(times) >= 0.9 * count:  # timestamps to judge by
        first, last = min(times), max(times)
        if len(times) > 1 and last > first:
            fps = (len(times) - 1) / (last - first)
        origin = min(start, first)
        end = last + (1 / rate if rate > 0 else 0.0) - origin
        duration = claimed_end - origin if claimed_end > origin else 0.0
    fps = fps if math.isfinite(fps) and fps > 0 else 0.0
    return Probe(count, counted, fps, width, height, duration, end, codec, rotation)


def decoder_version() -> str:
    """PyAV's version and its FFmpeg's: what decides the frames (part of the flow cache key)."""
    import av

    ffmpeg = ".".join(str(v) for v in av.library_versions.get("libavcodec", ()))
    return f"pyav {av.__version__} (libavcodec {ffmpeg})"
