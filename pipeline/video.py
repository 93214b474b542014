"""What a video is to the pipeline: the frames its decoder returns, as displayed, in 8-bit BGR.

One decoder for every stage (FFmpeg, through PyAV's wheels: H.264, H.265, VP9, AV1, MPEG-4
Part 2 / Xvid, MJPEG, FFV1, ... with no system package): ingest probes a video with
:func:`probe`, the flow stage and ``pipeline.predict`` read it with :func:`frames`, so both see
the same frames. Every source is converted once, here, to 8-bit BGR (grey, yuv444p, 10-bit
and RGB sources alike), and turned as its display matrix says (a portrait phone clip comes out
portrait). Frames are used as decoded: a variable frame rate keeps its frames, and
:attr:`Probe.fps` is their average rate.

A video is *truncated* when its decodable stream ends clearly before the duration its container
claims (:meth:`Probe.truncated`), not when fewer frames decode than the container counts: AVI
counts the empty chunks an encoder writes for dropped frames, and a player shows the previous
frame there. Only where timestamps or a duration are missing are the counts compared.

:class:`VideoError` says why a file cannot be read, in the user's terms: an empty file, not a
video, no video stream, a codec this build cannot decode (named), an MP4 whose index was never
written.

Decoding runs on one thread per process: the worker pools give the parallelism.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterator
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
    end: float  # seconds: where the decodable stream ends, the last frame's included (0: unknown)
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
    """The video codec's tag as the file names it (AVI fourcc, MP4 sample entry, Matroska
    codec id), for a message when FFmpeg has no decoder for it."""
    with open(path, "rb") as f:
        head = f.read(1 << 20)
    if head[:4] == b"RIFF":  # strf: a BITMAPINFOHEADER, whose biCompression is the fourcc
        i = head.find(b"strf")
        if i >= 0 and len(head) >= i + 28:
            return head[i + 24 : i + 28].decode("latin-1").strip("\0 ") or None
    i = head.find(b"stsd")
    if i >= 0 and len(head) >= i + 20:
        return head[i + 16 : i + 20].decode("latin-1").strip("\0 ") or None
    m = re.search(rb"V_[A-Z0-9/_.]+", head)
    return m.group(0).decode("latin-1") if m else None


def _open(path: str):  # noqa: ANN202 (PyAV's container and stream)
    """The container and its first video stream, or :class:`VideoError` saying why not."""
    import av

    if not os.path.exists(path):
        if os.path.islink(path):
            raise VideoError(f"a broken symbolic link (to {os.readlink(path)}, which is not there)")
        raise VideoError("no such file")
    if os.path.getsize(path) == 0:
        raise VideoError("an empty file (0 bytes)")
    try:
        container = av.open(path, metadata_errors="ignore")
    except av.FFmpegError as exc:
        if _box_types(path)[:1] == [b"ftyp"] and b"moov" not in _box_types(path):
            raise VideoError(
                "an MP4/MOV without its index (no 'moov' box): a recording that was never "
                "finished, or a file cut before its end"
            ) from exc
        raise VideoError(f"not a readable video: FFmpeg cannot open it ({exc.strerror})") from exc
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams}) or ["nothing"]
        container.close()
        raise VideoError(f"no video stream (the file holds {' and '.join(kinds)} only)")
    stream = container.streams.video[0]
    if stream.codec_context is None:
        container.close()
        tag = _codec_tag(path)
        raise VideoError(
            f"its video codec{f' {tag!r}' if tag else ''} cannot be decoded by this FFmpeg "
            f"build (PyAV {av.__version__}); re-encode it, e.g. ffmpeg -i IN -c:v libx264 OUT.mp4"
        )
    stream.codec_context.thread_count = 1
    return container, stream


def _decoded(path: str) -> Iterator[tuple[object, float | None]]:
    """PyAV frames with their times; a packet that does not decode is skipped (FFmpeg goes on
    at the next one), so a damaged stretch costs its frames, never the video."""
    import av

    container, stream = _open(path)
    try:
        for packet in container.demux(stream):
            try:
                decoded = packet.decode()
            except av.FFmpegError:
                continue
            for frame in decoded:
                yield frame, frame.time
    finally:
        container.close()


def _to_bgr(frame: object) -> tuple[np.ndarray, int]:
    """8-bit BGR ``(H, W, 3)`` as displayed, and the rotation applied."""
    image = frame.to_ndarray(format="bgr24")
    rotation = int(round((getattr(frame, "rotation", 0) or 0) / 90)) % 4 * 90
    if rotation:
        image = np.ascontiguousarray(np.rot90(image, rotation // 90))
    return image, rotation


def frames(path: str | Path) -> Iterator[np.ndarray]:
    """The video's frames, one at a time: 8-bit BGR ``(H, W, 3)``, as displayed.

    Raises:
        VideoError: the file cannot be opened as a video (the message says why).
    """
    for frame, _ in _decoded(str(path)):
        yield _to_bgr(frame)[0]


def probe(path: str | Path) -> Probe:
    """Decode every frame of ``path`` and report what it holds (:class:`Probe`).

    Raises:
        VideoError: the file cannot be opened as a video (the message says why).
    """
    path = str(path)
    container, stream = _open(path)
    rate = float(stream.average_rate or stream.guessed_rate or 0)
    claimed = int(stream.frames or 0)
    lengths = []
    if stream.duration and stream.time_base:
        lengths.append(float(stream.duration * stream.time_base))
    if claimed and rate > 0:
        lengths.append(claimed / rate)
    if not lengths and container.duration:
        lengths.append(container.duration / 1e6)
    duration = max(lengths, default=0.0)
    codec = stream.codec_context.codec.canonical_name  # "av1", whichever decoder reads it
    container.close()
    count, first, last, width, height, rotation = 0, None, None, 0, 0, 0
    timed = True
    for frame, time in _decoded(path):
        if count == 0:
            image, rotation = _to_bgr(frame)
            height, width = image.shape[:2]
        count += 1
        if time is None:
            timed = False
        elif first is None:
            first = last = time
        else:
            first, last = min(first, time), max(last, time)
    fps = rate
    end = 0.0
    if timed and count and first is not None:
        span = last - first
        if count > 1 and span > 0:
            fps = (count - 1) / span
        end = span + (1 / rate if rate > 0 else 0.0)
    fps = fps if math.isfinite(fps) and fps > 0 else 0.0
    return Probe(count, claimed, fps, width, height, duration, end, codec, rotation)


def decoder_version() -> str:
    """PyAV's version and its FFmpeg's: what decides the frames (part of the flow cache key)."""
    import av

    ffmpeg = ".".join(str(v) for v in av.library_versions.get("libavcodec", ()))
    return f"pyav {av.__version__} (libavcodec {ffmpeg})"
