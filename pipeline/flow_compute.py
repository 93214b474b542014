"""One video's frames and flows, and the record they make: the same code for the flow stage,
its worker processes, its schedulers and ``pipeline.predict``.

A video is decoded frame by frame and resized by ``flow.size``; each consecutive pair of grey
frames gets TV-L1 flow, from OpenCV (:func:`flow_video`, in a worker process, one fresh
``DualTVL1OpticalFlow`` per video) or from the keras engine (``pipeline.tvl1``, batches of
``flow.batch`` pairs: :func:`decode_video` in a worker, :func:`batched_flow` where the
accelerator is); flows are quantised to uint8 and JPEG-encoded with the frames
(:func:`encode_flow`), so only bytes travel between processes. :func:`video_record` turns them
into the per-video record of ``pipeline.contracts``, stamped with :func:`record_settings`.

Nothing here imports TensorFlow (:func:`video_record` builds the record with protobuf, through
the contracts): neither the workers nor the stage process, unless the keras engine brings in
Keras, on whatever backend.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np

from pipeline import contracts, rawframes, video
from pipeline.params import FlowParams, TVL1Params


def create_tvl1(t: TVL1Params) -> cv2.optflow.DualTVL1OpticalFlow:
    """OpenCV's TV-L1 with ``flow.tvl1`` (note its Python spellings lambda_, innnerIterations)."""
    return cv2.optflow.DualTVL1OpticalFlow_create(
        tau=t.tau,
        lambda_=t.lambda_,
        theta=t.theta,
        nscales=t.nscales,
        warps=t.warps,
        epsilon=t.epsilon,
        innnerIterations=t.inner_iterations,
        outerIterations=t.outer_iterations,
        scaleStep=t.scale_step,
        gamma=t.gamma,
        medianFiltering=t.median_filtering,
    )


def init_worker() -> None:
    """Once per worker process: one thread for OpenCV (the pool gives the parallelism)."""
    cv2.setNumThreads(1)


def target_size(width: int, height: int, size: int | list[int] | None) -> tuple[int, int]:
    """(W, H) after the ``flow.size`` policy: null keeps, N sets the shorter side, [W, H] fixes."""
    if size is None:
        return width, height
    if isinstance(size, list):
        return size[0], size[1]
    scale = size / min(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


@dataclass
class VideoFlow:
    """What a worker sends back: encoded frames and flows, and how long the flow took."""

    rgb: list[bytes]
    flow_x: list[bytes]
    flow_y: list[bytes]
    width: int
    height: int
    seconds: float
    source: dict | None = None  # where the frames came from, when not a video (rawframes)


def _frames(path: str, p: FlowParams) -> Iterator[np.ndarray]:
    """The video's BGR frames as displayed (``pipeline.video``), resized by ``flow.size``, one
    at a time: a 4K frame lives only until it is resized."""
    size = None
    try:
        for frame in video.frames(path):
            if size is None:
                size = target_size(frame.shape[1], frame.shape[0], p.size)
            if (frame.shape[1], frame.shape[0]) != size:
                shrink = size[0] * size[1] < frame.shape[0] * frame.shape[1]
                interp = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
                frame = cv2.resize(frame, size, interpolation=interp)
            yield frame
    except video.VideoError as exc:
        raise ValueError(
            f"cannot be opened as a video any more: {exc} (changed since ingest?)"
        ) from exc


def _check_count(decoded: int, expected_frames: int) -> None:
    if decoded < max(2, expected_frames):
        raise ValueError(
            f"decoded only {decoded} of the {expected_frames} frames the manifest lists "
            "(the file changed or broke since ingest; re-run ingest)"
        )


def encode_flow(flow: np.ndarray, p: FlowParams) -> tuple[bytes, bytes]:
    """One flow field ``(H, W, 2)`` in pixels as the records keep it: two uint8 JPEGs."""
    q = contracts.quantize_flow(flow, p.bound)
    jpeg = [cv2.IMWRITE_JPEG_QUALITY, p.jpeg_quality]
    return tuple(cv2.imencode(".jpg", q[..., c], jpeg)[1].tobytes() for c in (0, 1))


def flow_video(path: str, expected_frames: int, p: FlowParams) -> VideoFlow:
    """Decode ``path`` and compute OpenCV's flow of every consecutive pair (frames streamed).

    Raises:
        ValueError: the video cannot be opened, or decodes fewer frames than ``expected_frames``
            (the manifest's count: the file changed or broke since ingest).
    """
    # A fresh instance per video: OpenCV's DualTVL1 keeps state across calls, and after a
    # frame pair of another size its results differ (up to 0.28 px measured), so reusing one
    # instance would make a record depend on which video its worker happened to do before.
    tvl1 = create_tvl1(p.tvl1)
    jpeg = [cv2.IMWRITE_JPEG_QUALITY, p.jpeg_quality]
    rgb, flow_x, flow_y = [], [], []
    prev, start = None, time.perf_counter()
    for frame in _frames(path, p):
        rgb.append(cv2.imencode(".jpg", frame, jpeg)[1].tobytes())
        grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        if prev is not None:
            x, y = encode_flow(tvl1.calc(prev, grey, None), p)
            flow_x.append(x)
            flow_y.append(y)
        prev = grey
    _check_count(len(rgb), expected_frames)
    h, w = prev.shape
    return VideoFlow(rgb, flow_x, flow_y, w, h, time.perf_counter() - start)


@dataclass
class DecodedVideo:
    """What a decoding worker of the keras engine sends back: RGB JPEGs and grey frames."""

    rgb: list[bytes]
    grey: np.ndarray  # (F, H, W) uint8


def decode_video(path: str, expected_frames: int, p: FlowParams) -> DecodedVideo:
    """Decode ``path`` for the keras engine (the flow is computed in batches by the parent)."""
    jpeg = [cv2.IMWRITE_JPEG_QUALITY, p.jpeg_quality]
    rgb, grey = [], []
    for frame in _frames(path, p):
        rgb.append(cv2.imencode(".jpg", frame, jpeg)[1].tobytes())
        grey.append(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY))
    _check_count(len(rgb), expected_frames)
    return DecodedVideo(rgb, np.stack(grey))


def batched_flow(i0: np.ndarray, i1: np.ndarray, p: FlowParams) -> np.ndarray:
    """The keras engine's flow of up to ``flow.batch`` pairs, always run as a full batch (the
    last pair repeated): one compiled shape, and a pair's flow never depends on how many
    pairs came with it (XLA's code, and so its rounding, changes with the batch size). The
    frames are padded to ``flow.bucket`` (:func:`pipeline.tvl1.bucket_of`), their flow
    computed as if unpadded."""
    from pipeline import tvl1

    n = len(i0)
    pad = [n - 1] * (p.batch - n)
    i0, i1 = np.concatenate([i0, i0[pad]]), np.concatenate([i1, i1[pad]])
    bucket = tvl1.bucket_of(*i0.shape[1:], p.bucket)  # padded: one compile serves many sizes
    return tvl1.tvl1(i0, i1, p.tvl1, bucket)[:n]


def flow_video_keras(path: str, expected_frames: int, p: FlowParams) -> VideoFlow:
    """:func:`flow_video` with the keras engine, in this process (``pipeline.predict``)."""
    start = time.perf_counter()
    decoded = decode_video(path, expected_frames, p)
    grey = decoded.grey
    flow_x, flow_y = [], []
    for lo in range(0, len(grey) - 1, p.batch):
        hi = min(lo + p.batch, len(grey) - 1)
        for flow in batched_flow(grey[lo:hi], grey[lo + 1 : hi + 1], p):
            x, y = encode_flow(flow, p)
            flow_x.append(x)
            flow_y.append(y)
    h, w = grey.shape[1:]
    return VideoFlow(decoded.rgb, flow_x, flow_y, w, h, time.perf_counter() - start)


def resolve_engine(engine: str) -> str:
    """``flow.engine`` as run: ``auto`` is ``keras`` when a GPU is visible, else ``opencv``."""
    if engine != "auto":
        return engine
    from pipeline import tvl1

    return "keras" if tvl1.gpu_visible() else "opencv"


def video_record(
    video_id: str, label: int, result: VideoFlow, p: FlowParams, settings: dict, key: str
) -> bytes:
    """The serialised record of one video's frames and flows (:func:`record_settings` stamped)."""
    return contracts.encode_record(
        video_id=video_id,
        label=label,
        height=result.height,
        width=result.width,
        flow_bound=p.bound,
        rgb=result.rgb,
        flow_x=result.flow_x,
        flow_y=result.flow_y,
        flow_engine=settings["engine_version"],
        flow_params=settings if result.source is None else {**settings, "source": result.source},
        cache_key=key,
    )


def versions_here(engine: str, device: bool = True) -> dict[str, str]:
    """The libraries a record of ``engine`` depends on, as installed where this runs: OpenCV,
    the decoder and, for keras, Keras, its backend and (unless ``device`` is false) the device
    (a cluster's workers report theirs, ``pipeline.cluster``)."""
    v = {"opencv": cv2.__version__, "decoder": video.decoder_version()}
    if engine == "keras":
        from pipeline import tvl1

        v.update(tvl1.engine_parts(device))
    return v


def record_settings(
    p: FlowParams, engine: str | None = None, versions: dict[str, str] | None = None
) -> dict:
    """Every value that shapes a record; part of each record's cache key and context.

    ``engine`` is the engine actually run (``flow.engine`` resolved); the versions of its
    libraries (:func:`versions_here`, or ``versions`` where the work runs elsewhere) and, for
    keras, the batch size and bucket step it compiles for are part of the key.
    """
    engine = engine or resolve_engine(p.engine)
    v = versions or versions_here(engine)
    settings = {
        "schema_version": contracts.SCHEMA_VERSION,
        "engine": engine,
        "engine_version": f"opencv {v['opencv']}",
        "decoder": v["decoder"],
        "size": p.size,
        "bound": p.bound,
        "jpeg_quality": p.jpeg_quality,
        "tvl1": dataclasses.asdict(p.tvl1),
    }
    if engine == "keras":
        # OpenCV still resizes and encodes: its version stays in the key
        keras = f"keras {v['keras']} ({v['backend']}, {v['device']})"
        settings.update(
            engine_version=f"{keras}; opencv {v['opencv']}", batch=p.batch, bucket=p.bucket
        )
    return settings


# ---- frames and flows that another tool computed (data.layout: rawframes) ------------------


def _resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    shrink = size[0] * size[1] < image.shape[0] * image.shape[1]
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def rawframes_flow(
    folder: str, expected_frames: int, p: FlowParams, source_bound: float, rounding: str
) -> VideoFlow:
    """A record's frames and flows from a frame folder (``pipeline.rawframes``; for the
    authors' layout the RGB folder, its flows read from the tree's ``tvl1_flow/u`` and
    ``tvl1_flow/v``): nothing is computed. RGB JPEGs are copied byte for byte and so are
    the flow JPEGs when the tree's bound and rounding are ours (``source_bound`` =
    ``flow.bound``, ``round``); otherwise each flow is read back to pixels
    (:func:`rawframes.dequantize`) and quantised again with ``flow.bound``. When
    ``flow.size`` changes the frame size, frames and flows are resized (the flows' components
    scaled with their axis) and encoded again.

    Raises:
        RawframesError: the folder no longer holds a usable video, or holds another number of
            frames than ``expected_frames`` (the manifest's: it changed since ingest).
    """
    start = time.perf_counter()
    frames = rawframes.scan(folder)
    if len(frames.rgb) != expected_frames:
        raise rawframes.RawframesError(
            f"the folder holds {len(frames.rgb)} frames, the manifest {expected_frames} "
            "(it changed since ingest; re-run ingest)"
        )

    def read(name: str) -> bytes:
        with open(frames.path(name), "rb") as f:
            return f.read()

    rgb = [read(name) for name in frames.rgb]
    for name, data in zip(frames.rgb, rgb, strict=True):
        rawframes.check_jpeg(name, data)
    h, w = rawframes.decode(frames.rgb[0], rgb[0]).shape[:2]
    size = target_size(w, h, p.size)
    resize = size != (w, h)
    jpeg = [cv2.IMWRITE_JPEG_QUALITY, p.jpeg_quality]
    if resize:
        rgb = [
            cv2.imencode(".jpg", _resize(rawframes.decode(n, b, cv2.IMREAD_COLOR), size), jpeg)[
                1
            ].tobytes()
            for n, b in zip(frames.rgb, rgb, strict=True)
        ]
    same_levels = source_bound == p.bound and rounding == "round"
    flow_x, flow_y = [], []
    for nx, ny in zip(frames.flow_x, frames.flow_y, strict=True):
        bx, by = read(nx), read(ny)
        if same_levels and not resize:
            rawframes.check_jpeg(nx, bx)  # whole, as ingest found it; copied as it is
            rawframes.check_jpeg(ny, by)
            flow_x.append(bx)
            flow_y.append(by)
            continue
        v = [
            rawframes.dequantize(rawframes.decode(n, b, cv2.IMREAD_GRAYSCALE), source_bound,
                                 rounding)
            for n, b in ((nx, bx), (ny, by))
        ]  # fmt: skip
        if resize:  # flow is in pixels of the frames it was computed on
            v = [_resize(v[0], size) * (size[0] / w), _resize(v[1], size) * (size[1] / h)]
        x, y = encode_flow(np.stack(v, axis=-1), p)
        flow_x.append(x)
        flow_y.append(y)
    source = {
        "kind": "rawframes",
        "convention": frames.convention.describe(),
        "bound": source_bound,
        "rounding": rounding,
        "rgb": f"resized from {w}x{h}" if resize else "copied",
        "flow": "copied" if same_levels and not resize else "quantised again",
    }
    width, height = size
    return VideoFlow(rgb, flow_x, flow_y, width, height, time.perf_counter() - start, source)


def rawframes_settings(p: FlowParams, source_bound: float, rounding: str) -> dict:
    """Every value that shapes a record made from a frame folder (:func:`rawframes_flow`):
    the engine's ``tvl1`` and ``batch`` are not among them, so editing those reuses the
    records."""
    return {
        "schema_version": contracts.SCHEMA_VERSION,
        "engine": "rawframes",
        "engine_version": f"rawframes import; opencv {cv2.__version__}",
        "size": p.size,
        "bound": p.bound,
        "jpeg_quality": p.jpeg_quality,
        "rawframes_bound": source_bound,
        "rawframes_rounding": rounding,
    }
