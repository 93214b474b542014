"""The files users really bring, made with real encoders at test time (PyAV's own FFmpeg:
libx264, libx265, libvpx-vp9, SVT-AV1, MPEG-4, MJPEG, FFV1; nothing from the system), tiny.

``CASES`` maps a case's name to the function that writes it into a folder and what ingest must
make of it: ``("accepted", frames, (width, height))`` or ``("rejected", words of the reason)``.
Every case is made and judged in a few seconds.
``tests/test_videos.py`` checks them; ``python benchmarks/video_cases.py`` prints the table.
"""

from __future__ import annotations

import fractions
from collections.abc import Callable
from pathlib import Path

import av
import cv2
import numpy as np


def scene(n: int, width: int, height: int, noise: bool = False) -> list[np.ndarray]:
    """``n`` BGR frames of a blocky texture drifting right by one pixel a frame (the same first
    frames whatever ``n``); with ``noise``, incompressible random frames instead."""
    rng = np.random.default_rng(0)
    if noise:
        return [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(n)]
    coarse = rng.integers(0, 256, (height // 4 + 2, (width + 64) // 4 + 2, 3)).astype(np.uint8)
    big = np.repeat(np.repeat(coarse, 4, 0), 4, 1)
    return [np.ascontiguousarray(big[:height, t % 64 : t % 64 + width]) for t in range(n)]


def encode(
    path: Path,
    codec: str = "libx264",
    n: int = 12,
    size: tuple[int, int] = (64, 48),
    pix_fmt: str = "yuv420p",
    pts: list[int] | None = None,
    rotation: int | None = None,
    options: dict | None = None,
    tag: str | None = None,
    container_options: dict | None = None,
    noise: bool = False,
    flip: bool = False,
    audio_seconds: float = 0.0,
) -> Path:
    """Write ``n`` frames of :func:`scene` with a real encoder; ``pts`` (in frames of 1/25 s)
    makes gaps, an irregular rate or a late start, ``rotation`` (counter-clockwise) and
    ``flip`` (mirrored after it) a display matrix (a phone held upright, a selfie), and
    ``audio_seconds`` an AAC track of that length beside the video."""
    path.parent.mkdir(parents=True, exist_ok=True)
    width, height = size
    with av.open(str(path), "w", options=container_options or {}) as out:
        stream = out.add_stream(codec, rate=25, options=options or {})
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        if tag:
            stream.codec_context.codec_tag = tag
        if rotation is not None or flip:
            stream.set_display_rotation(rotation or 0, hflip=flip)
        if audio_seconds:
            silence(out, audio_seconds)
        if pts is not None:
            stream.codec_context.time_base = fractions.Fraction(1, 25)
        for i, image in enumerate(scene(n, width, height, noise)):
            frame = av.VideoFrame.from_ndarray(image, format="bgr24")
            if pts is not None:
                frame.pts, frame.time_base = pts[i], fractions.Fraction(1, 25)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def _cut(source: Path, path: Path, fraction: float) -> Path:
    data = source.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


def dropped_frames_avi(d: Path) -> Path:
    """20 frames written with a gap of two after each: AVI's muxer fills the gaps with empty
    chunks, so the container counts 58 frames (as in OpenCV's own sample videos)."""
    return encode(d / "dropped.avi", "mpeg4", n=20, pts=[3 * i for i in range(20)])


def cut_avi(d: Path) -> Path:
    return _cut(encode(d / "whole.avi", "mpeg4", n=50, noise=True), d / "cut.avi", 0.4)


def cut_mp4_index_first(d: Path) -> Path:
    options = {"movflags": "faststart"}
    whole = encode(d / "whole.mp4", n=50, container_options=options, noise=True)
    return _cut(whole, d / "cut.mp4", 0.4)


def unknown_codec_avi(d: Path) -> Path:
    path = encode(d / "unknown.avi", "mpeg4")
    path.write_bytes(path.read_bytes().replace(b"FMP4", b"QQQQ"))
    return path


def silence(out: av.container.OutputContainer, seconds: float) -> None:
    """An AAC track of ``seconds`` of silence in ``out``."""
    stream = out.add_stream("aac", rate=44100)
    for i in range(int(seconds * 44100 / 1024)):
        chunk = av.AudioFrame.from_ndarray(
            np.zeros((1, 1024), np.float32), format="fltp", layout="mono"
        )
        chunk.sample_rate, chunk.pts = 44100, i * 1024
        for packet in stream.encode(chunk):
            out.mux(packet)
    for packet in stream.encode():
        out.mux(packet)


def audio_only_mp4(d: Path) -> Path:
    path = d / "audio.mp4"
    with av.open(str(path), "w") as out:
        silence(out, 0.25)
    return path


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _folder(path: Path) -> Path:
    path.mkdir()
    return path


def mp4_without_index(d: Path) -> Path:
    """An MP4 recording stopped before the end: the index (moov) comes last, so it is lost."""
    return _cut(encode(d / "whole.mp4", n=30, noise=True), d / "no_moov.mp4", 0.7)


def zeroed_middle_avi(d: Path) -> Path:
    path = encode(d / "zeroed.avi", "mpeg4", n=50, noise=True)
    data = bytearray(path.read_bytes())
    data[len(data) // 3 : len(data) // 2] = bytes(len(data) // 2 - len(data) // 3)
    path.write_bytes(bytes(data))
    return path


VFR_PTS = [0, 1, 2, 4, 5, 9, 10, 11, 15, 16, 17, 18]
"""Twelve frames over 19 frame times of 1/25 s: an average of 11/18 * 25 = 15.3 fps."""

Case = tuple[Callable[[Path], Path], tuple]
CASES: dict[str, Case] = {
    # 1. truncation, judged by where the decodable stream ends
    "AVI with dropped-frame chunks (20 frames, 58 counted)": (
        dropped_frames_avi,
        ("accepted", 20, (64, 48)),
    ),
    "AVI cut to its first 40 %": (cut_avi, ("rejected", "truncated: the decodable stream ends")),
    "MP4 (index first) cut to its first 40 %": (
        cut_mp4_index_first,
        ("rejected", "truncated: the decodable stream ends"),
    ),
    # 2. codecs and containers
    "H.264 in MP4, with B-frames": (
        lambda d: encode(d / "h264.mp4", options={"bf": "2"}),
        ("accepted", 12, (64, 48)),
    ),
    "H.265 in MP4": (lambda d: encode(d / "hevc.mp4", "libx265"), ("accepted", 12, (64, 48))),
    "VP9 in WebM": (lambda d: encode(d / "vp9.webm", "libvpx-vp9"), ("accepted", 12, (64, 48))),
    "MPEG-4 Part 2 in AVI, fourcc XVID (UCF101's)": (
        lambda d: encode(d / "xvid.avi", "mpeg4", tag="XVID"),
        ("accepted", 12, (64, 48)),
    ),
    "MJPEG in AVI": (
        lambda d: encode(d / "mjpeg.avi", "mjpeg", pix_fmt="yuvj420p"),
        ("accepted", 12, (64, 48)),
    ),
    "FFV1 in MKV": (
        lambda d: encode(d / "ffv1.mkv", "ffv1", pix_fmt="bgr0"),
        ("accepted", 12, (64, 48)),
    ),
    "AV1 in MKV": (
        lambda d: encode(d / "av1.mkv", "libsvtav1", options={"preset": "12"}),
        ("accepted", 12, (64, 48)),
    ),
    "AVI whose codec this build cannot decode (fourcc QQQQ)": (
        unknown_codec_avi,
        ("rejected", "its video codec 'QQQQ' cannot be decoded by this FFmpeg build"),
    ),
    # 3. timing and geometry
    "H.264 + AAC in MP4, the sound three times as long as the picture": (
        lambda d: encode(d / "with_sound.mp4", audio_seconds=1.5),
        ("accepted", 12, (64, 48)),
    ),
    "H.264 + AAC in MKV, the sound three times as long as the picture": (
        lambda d: encode(d / "with_sound.mkv", audio_seconds=1.5),
        ("accepted", 12, (64, 48)),
    ),
    "MP4 trimmed by an edit list (12 frames coded, the first 6 cut)": (
        lambda d: encode(d / "trimmed.mp4", pts=list(range(-6, 6))),
        ("accepted", 6, (64, 48)),
    ),
    "MKV whose video starts at 1 s": (
        lambda d: encode(d / "late.mkv", pts=list(range(25, 37))),
        ("accepted", 12, (64, 48)),
    ),
    "variable frame rate (H.264 in MKV, 12 frames over 0.76 s)": (
        lambda d: encode(d / "vfr.mkv", pts=VFR_PTS),
        ("accepted", 12, (64, 48)),
    ),
    "variable frame rate (H.264 in MP4, as phones record)": (
        lambda d: encode(d / "vfr.mp4", pts=VFR_PTS),
        ("accepted", 12, (64, 48)),
    ),
    "portrait phone clip (64x48 coded, displayed turned 90°)": (
        lambda d: encode(d / "portrait.mp4", rotation=90),
        ("accepted", 12, (48, 64)),
    ),
    "phone clip displayed turned -90°": (
        lambda d: encode(d / "minus90.mp4", rotation=-90),
        ("accepted", 12, (48, 64)),
    ),
    "phone clip displayed upside down (180°)": (
        lambda d: encode(d / "upside_down.mp4", rotation=180),
        ("accepted", 12, (64, 48)),
    ),
    "selfie clip displayed mirrored": (
        lambda d: encode(d / "mirrored.mp4", flip=True),
        ("accepted", 12, (64, 48)),
    ),
    "odd size 321x239 (FFV1)": (
        lambda d: encode(d / "odd.mkv", "ffv1", n=4, size=(321, 239), pix_fmt="bgr0"),
        ("accepted", 4, (321, 239)),
    ),
    "tiny 32x24 (H.264)": (
        lambda d: encode(d / "tiny.mp4", size=(32, 24)),
        ("accepted", 12, (32, 24)),
    ),
    "1920x1080 (H.264)": (
        lambda d: encode(d / "hd.mp4", n=4, size=(1920, 1080), options={"preset": "ultrafast"}),
        ("accepted", 4, (1920, 1080)),
    ),
    "3840x2160 (H.264)": (
        lambda d: encode(d / "uhd.mp4", n=4, size=(3840, 2160), options={"preset": "ultrafast"}),
        ("accepted", 4, (3840, 2160)),
    ),
    "greyscale (FFV1 gray)": (
        lambda d: encode(d / "grey.mkv", "ffv1", pix_fmt="gray"),
        ("accepted", 12, (64, 48)),
    ),
    "yuv444p (H.264 High 4:4:4)": (
        lambda d: encode(d / "yuv444.mp4", pix_fmt="yuv444p"),
        ("accepted", 12, (64, 48)),
    ),
    "10-bit (H.265 yuv420p10le)": (
        lambda d: encode(d / "ten_bit.mp4", "libx265", pix_fmt="yuv420p10le"),
        ("accepted", 12, (64, 48)),
    ),
    # 4. files that are not videos, or not whole
    "audio-only MP4": (audio_only_mp4, ("rejected", "no video stream (the file holds audio only)")),
    "one-frame video": (
        lambda d: encode(d / "one.mp4", n=1),
        ("rejected", "only 1 decodable frame; data.min_frames is 2"),
    ),
    "zero bytes": (lambda d: _write(d / "empty.mp4", b""), ("rejected", "an empty file (0 bytes)")),
    "a text file named .mp4": (
        lambda d: _write(d / "notes.mp4", b"meeting notes, not a video\n"),
        ("rejected", "not a readable video: FFmpeg cannot open it"),
    ),
    "random bytes": (
        lambda d: _write(d / "noise.avi", np.random.default_rng(0).bytes(20000)),
        ("rejected", "not a readable video: FFmpeg cannot open it"),
    ),
    "a PNG picture named .mp4": (
        lambda d: _write(d / "picture.mp4", cv2.imencode(".png", scene(1, 64, 48)[0])[1].tobytes()),
        ("rejected", "a still image (png), not a video"),
    ),
    "a folder named clip.mp4": (
        lambda d: _folder(d / "clip.mp4"),
        ("rejected", "a folder, not a video file"),
    ),
    "MP4 whose index (moov) never got written": (
        mp4_without_index,
        ("rejected", "an MP4/MOV without its index (no 'moov' box)"),
    ),
    "AVI with a zeroed stretch in the middle": (
        zeroed_middle_avi,
        ("rejected", "truncated: the decodable stream ends at"),  # FFmpeg loses it after
    ),
}
