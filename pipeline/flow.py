"""Stage ``flow``: TV-L1 optical flow for every video, one record per video, cached, resumable.

For each manifest row a worker process decodes the video frame by frame, resizes it by
``flow.size``, computes OpenCV's TV-L1 between consecutive grey frames, quantises the flow to
uint8 (``pipeline.records``) and JPEG-encodes the RGB frames and both flow components; only
the encoded bytes are kept, so a worker's memory does not grow with the video's resolution.
The parent writes ``data/videos/<video_id>.tfrecord`` atomically (temporary name + rename).

Cache: ``data/videos/_cache.jsonl`` logs, per finished video, the key it was made with: a hash
of the video's *content*, its id and label, and every value that shapes a record (``flow.size``,
``bound``, ``jpeg_quality``, ``tvl1.*``, the engine and its library version). A record is
reused only under the same key, so a changed parameter recomputes everything and a changed
video recomputes itself, while ``flow.workers`` and ``flow.max_failure_fraction`` (and a bare
``touch``) reuse everything. Records of videos no longer in the manifest are removed. A killed
run loses only the videos in flight; the next run picks up where it stopped.

Videos that fail (decode error, truncated since ingest, a worker that dies in the decoder) go
to ``data/flow_failed.csv`` with the reason; the stage fails only if more than
``flow.max_failure_fraction`` of the videos failed.

Run: ``python -m pipeline.flow`` (the stage), or ``python -m pipeline.flow --preview VIDEO_ID``
to draw ``reports/flow_preview/<video_id>.png`` (RGB frames above colour-coded flow).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import csv
import dataclasses
import hashlib
import json
import multiprocessing
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from pebble import ProcessExpired, ProcessPool
from tqdm import tqdm

from pipeline import records
from pipeline.ingest import MANIFEST, read_manifest
from pipeline.params import FlowParams, PipelineError, TVL1Params, load_params

OUT_DIR = Path("data/videos")
FAILED_CSV = Path("data/flow_failed.csv")
CACHE_LOG = "_cache.jsonl"
PREVIEW_DIR = Path("reports/flow_preview")


class FlowError(PipelineError):
    """The stage cannot finish; the message says why and what to change."""


# ---- the work of one video (runs in a worker process) --------------------------------------


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


def _init_worker() -> None:
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


def _frames(path: str, p: FlowParams) -> Iterator[np.ndarray]:
    """The video's BGR frames, resized by ``flow.size``, one at a time."""
    cap = cv2.VideoCapture(path)
    if not cap.isOpened():
        raise ValueError("cannot be opened as a video any more (changed since ingest?)")
    size = None
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                return
            if size is None:
                size = target_size(frame.shape[1], frame.shape[0], p.size)
            if (frame.shape[1], frame.shape[0]) != size:
                shrink = size[0] * size[1] < frame.shape[0] * frame.shape[1]
                interp = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
                frame = cv2.resize(frame, size, interpolation=interp)
            yield frame
    finally:
        cap.release()


def _check_count(decoded: int, expected_frames: int) -> None:
    if decoded < max(2, expected_frames):
        raise ValueError(
            f"decoded only {decoded} of the {expected_frames} frames the manifest lists "
            "(the file changed or broke since ingest; re-run ingest)"
        )


def encode_flow(flow: np.ndarray, p: FlowParams) -> tuple[bytes, bytes]:
    """One flow field ``(H, W, 2)`` in pixels as the records keep it: two uint8 JPEGs."""
    q = records.quantize_flow(flow, p.bound)
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
    pairs came with it (XLA's code, and so its rounding, changes with the batch size)."""
    from pipeline import tvl1

    n = len(i0)
    pad = [n - 1] * (p.batch - n)
    i0, i1 = np.concatenate([i0, i0[pad]]), np.concatenate([i1, i1[pad]])
    return tvl1.tvl1(i0, i1, p.tvl1)[:n]


def flow_video_keras(path: str, expected_frames: int, p: FlowParams) -> VideoFlow:
    """:func:`flow_video` with the keras engine, in this process (``pipeline.predict``)."""
    start = time.perf_counter()
    video = decode_video(path, expected_frames, p)
    flow_x, flow_y = [], []
    for lo in range(0, len(video.grey) - 1, p.batch):
        hi = min(lo + p.batch, len(video.grey) - 1)
        for flow in batched_flow(video.grey[lo:hi], video.grey[lo + 1 : hi + 1], p):
            x, y = encode_flow(flow, p)
            flow_x.append(x)
            flow_y.append(y)
    h, w = video.grey.shape[1:]
    return VideoFlow(video.rgb, flow_x, flow_y, w, h, time.perf_counter() - start)


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
    return records.encode_record(
        video_id=video_id,
        label=label,
        height=result.height,
        width=result.width,
        flow_bound=p.bound,
        rgb=result.rgb,
        flow_x=result.flow_x,
        flow_y=result.flow_y,
        flow_engine=settings["engine_version"],
        flow_params=settings,
        cache_key=key,
    )


# ---- cache ---------------------------------------------------------------------------------


def record_settings(p: FlowParams, engine: str | None = None) -> dict:
    """Every value that shapes a record; part of each record's cache key and context.

    ``engine`` is the engine actually run (``flow.engine`` resolved); its library versions
    (and, for keras, the backend and the batch size it compiles for) are part of the key.
    """
    engine = engine or resolve_engine(p.engine)
    settings = {
        "schema_version": records.SCHEMA_VERSION,
        "engine": engine,
        "engine_version": f"opencv {cv2.__version__}",
        "size": p.size,
        "bound": p.bound,
        "jpeg_quality": p.jpeg_quality,
        "tvl1": dataclasses.asdict(p.tvl1),
    }
    if engine == "keras":
        from pipeline import tvl1

        # OpenCV still decodes, resizes and encodes: its version stays in the key
        settings.update(
            engine_version=f"{tvl1.engine_version()}; opencv {cv2.__version__}", batch=p.batch
        )
    return settings


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def cache_key(settings: dict, content_sha256: str, video_id: str, label: int) -> str:
    blob = json.dumps([settings, content_sha256, video_id, label], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def load_cache_log(out_dir: Path) -> dict[str, dict]:
    """video_id -> its last logged entry; a line torn by a kill is skipped."""
    entries: dict[str, dict] = {}
    log = out_dir / CACHE_LOG
    if log.exists():
        for line in log.read_text().splitlines():
            try:
                entry = json.loads(line)
                entries[entry["video_id"]] = entry
            except (json.JSONDecodeError, KeyError, TypeError):
                continue
    return entries


def _content_hash(row: dict, old: dict | None) -> tuple[str, dict]:
    """The video's sha256, reusing the logged one while the file's size and mtime are unchanged."""
    st = os.stat(row["path"])
    stat = {"path": row["path"], "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    if old and all(old.get(k) == v for k, v in stat.items()):
        return old["content_sha256"], stat
    return file_sha256(row["path"]), stat


# ---- the stage ----------------------------------------------------------------------------


class Progress:
    """A tqdm bar on a terminal; a plain log line every ``every`` seconds otherwise."""

    def __init__(self, total: int, every: float = 30.0) -> None:
        self.total, self.every, self.done, self.pairs = total, every, 0, 0
        self.start = self.last = time.perf_counter()
        self.bar = tqdm(total=total, desc="flow", unit="video") if sys.stderr.isatty() else None

    def update(self, pairs: int) -> None:
        self.done, self.pairs = self.done + 1, self.pairs + pairs
        now = time.perf_counter()
        rate = self.pairs / max(now - self.start, 1e-9)
        if self.bar is not None:
            self.bar.set_postfix_str(f"{rate:.1f} pairs/s", refresh=False)
            self.bar.update()
        elif now - self.last >= self.every or self.done == self.total:
            eta = (now - self.start) / self.done * (self.total - self.done)
            print(
                f"flow: {self.done}/{self.total} videos, {self.pairs} pairs, {rate:.1f} pairs/s, "
                f"ETA {eta:.0f} s",
                flush=True,
            )
            self.last = now

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@dataclass
class Summary:
    videos: int
    reused: int
    computed: int
    failed: list[dict]
    pairs: int
    seconds: float

    def line(self) -> str:
        rate = self.pairs / max(self.seconds, 1e-9)
        return (
            f"flow: {self.videos} videos ({self.reused} reused from cache, {self.computed} "
            f"computed, {len(self.failed)} failed), {self.pairs} pairs in {self.seconds:.1f} s, "
            f"{rate:.1f} pairs/s"
        )


def _failure_reason(exc: BaseException) -> str:
    if isinstance(exc, ProcessExpired):
        return f"the worker died while decoding or computing flow ({exc}; exit code {exc.exitcode})"
    return str(exc) or type(exc).__name__


def run_flow(
    p: FlowParams,
    rows: list[dict],
    out_dir: Path = OUT_DIR,
    failed_csv: Path = FAILED_CSV,
    task: Callable[[str, int, FlowParams], VideoFlow] = flow_video,
) -> Summary:
    """Bring ``out_dir`` up to date with ``rows``; raises :class:`FlowError` past the limit."""
    start = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    wanted = {row["video_id"] for row in rows}
    for f in out_dir.iterdir():  # leftovers of a killed run, and videos no longer listed
        if f.name.endswith(".tmp") or (f.suffix == ".tfrecord" and f.stem not in wanted):
            f.unlink()
    engine = resolve_engine(p.engine)
    settings = record_settings(p, engine)
    logged = load_cache_log(out_dir)
    entries: dict[str, dict] = {}  # the cache log rewritten at the end: current videos only
    todo, failed = [], []
    for row in rows:
        old = logged.get(row["video_id"])
        try:
            content, stat = _content_hash(row, old)
        except OSError as exc:
            (out_dir / f"{row['video_id']}.tfrecord").unlink(missing_ok=True)  # never stale
            failed.append({**row, "reason": f"cannot read the video: {exc}"})
            continue
        key = cache_key(settings, content, row["video_id"], row["label"])
        entry = {"video_id": row["video_id"], "key": key, "content_sha256": content, **stat}
        record = out_dir / f"{row['video_id']}.tfrecord"
        if old and old.get("key") == key and record.exists():
            entries[row["video_id"]] = {**old, **entry}
        else:
            todo.append((row, entry))
    reused = len(entries)

    log = open(out_dir / CACHE_LOG, "a")  # noqa: SIM115 (kept open across the whole run)
    workers = min(p.workers or len(os.sched_getaffinity(0)), max(len(todo), 1))
    progress = Progress(len(todo))
    pairs = 0
    if engine == "keras":
        results = _keras_results(todo, p, workers)
    else:
        results = _opencv_results(todo, p, workers, task)
    try:
        for row, entry, result in results:
            record = out_dir / f"{row['video_id']}.tfrecord"
            if isinstance(result, BaseException):  # a bad video, or a worker that died
                record.unlink(missing_ok=True)  # never leave a stale record behind
                failed.append({**row, "reason": _failure_reason(result)})
                progress.update(0)
                continue
            records.write_record(
                str(record),
                video_record(row["video_id"], row["label"], result, p, settings, entry["key"]),
            )
            log.write(json.dumps(entry) + "\n")
            log.flush()
            entries[row["video_id"]] = entry
            pairs += len(result.flow_x)
            progress.update(len(result.flow_x))
    finally:
        results.close()  # stops the worker processes, also on an error or Ctrl-C
        progress.close()
        log.close()
        _rewrite_log(out_dir, entries)
        _write_failed(failed_csv, failed)
    summary = Summary(
        len(rows), reused, len(entries) - reused, failed, pairs, time.perf_counter() - start
    )
    if failed and len(failed) / max(len(rows), 1) > p.max_failure_fraction:
        reasons = Counter(f["reason"] for f in failed).most_common(5)
        worst = "\n".join(f"    {n} x {reason}" for reason, n in reasons)
        examples = "\n".join(f"    {f['video_id']} ({f['path']})" for f in failed[:10])
        raise FlowError(
            f"{len(failed)} of {len(rows)} videos failed ({len(failed) / len(rows):.1%}), more "
            f"than flow.max_failure_fraction = {p.max_failure_fraction}:\n{worst}\n  e.g.\n"
            f"{examples}\n  see {failed_csv}; the {len(entries)} finished records are kept"
        )
    return summary


Result = tuple[dict, dict, "VideoFlow | BaseException"]


def _opencv_results(
    todo: list[tuple[dict, dict]],
    p: FlowParams,
    workers: int,
    task: Callable[[str, int, FlowParams], VideoFlow],
) -> Iterator[Result]:
    """OpenCV engine: each worker process decodes a video and computes its flow."""
    with ProcessPool(
        max_workers=workers,
        initializer=_init_worker,
        context=multiprocessing.get_context("spawn"),
    ) as pool:
        futures = {
            pool.schedule(task, (row["path"], row["frames"], p)): (row, entry)
            for row, entry in todo
        }
        try:
            for future in concurrent.futures.as_completed(futures):
                row, entry = futures[future]
                try:
                    yield row, entry, future.result()
                except Exception as exc:
                    yield row, entry, exc
        finally:
            pool.stop()  # on an error or Ctrl-C: do not wait for the queued videos


@dataclass
class _Job:
    """A decoded video waiting for the flows of its pairs (keras engine)."""

    row: dict
    entry: dict
    video: DecodedVideo
    flow_x: list
    flow_y: list
    left: int
    start: float


def _keras_results(todo: list[tuple[dict, dict]], p: FlowParams, workers: int) -> Iterator[Result]:
    """Keras engine: worker processes decode ahead (about ``2 × workers + 2`` decoded videos
    in memory); this process computes the flow of ``flow.batch`` pairs at a time, pairs of
    several videos together when they have the same frame size."""
    pending = list(reversed(todo))
    in_flight: dict = {}
    queues: dict[tuple[int, int], list[tuple[_Job, int]]] = {}
    window = 2 * workers + 2

    def held() -> int:  # decoded videos waiting for flows
        return len({id(job) for q in queues.values() for job, _ in q})

    def run_batch(size: tuple[int, int], n: int) -> Iterator[Result]:
        chunk, queues[size][:n] = queues[size][:n], []
        i0 = np.stack([job.video.grey[i] for job, i in chunk])
        i1 = np.stack([job.video.grey[i + 1] for job, i in chunk])
        try:
            flows = batched_flow(i0, i1, p)
        except Exception as exc:  # noqa: BLE001 (the videos of this batch fail, the run goes on)
            for job in {id(job): job for job, _ in chunk}.values():
                if job.left > 0:
                    job.left = -1
                    yield job.row, job.entry, exc
            return
        for (job, i), flow in zip(chunk, flows, strict=True):
            if job.left <= 0:
                continue
            job.flow_x[i], job.flow_y[i] = encode_flow(flow, p)
            job.left -= 1
            if job.left == 0:
                h, w = job.video.grey.shape[1:]
                seconds = time.perf_counter() - job.start
                yield (
                    job.row,
                    job.entry,
                    VideoFlow(job.video.rgb, job.flow_x, job.flow_y, w, h, seconds),
                )

    def collect(done: set) -> Iterator[Result]:
        for future in done:
            row, entry, start = in_flight.pop(future)
            try:
                video = future.result()
            except Exception as exc:
                yield row, entry, exc
                continue
            n = len(video.grey) - 1
            job = _Job(row, entry, video, [b""] * n, [b""] * n, n, start)
            queues.setdefault(video.grey.shape[1:], []).extend((job, i) for i in range(n))

    with ProcessPool(
        max_workers=workers,
        initializer=_init_worker,
        context=multiprocessing.get_context("spawn"),
    ) as pool:
        try:
            while pending or in_flight or any(queues.values()):
                while pending and len(in_flight) + held() < window:
                    row, entry = pending.pop()
                    future = pool.schedule(decode_video, (row["path"], row["frames"], p))
                    in_flight[future] = (row, entry, time.perf_counter())
                full = any(len(q) >= p.batch for q in queues.values())
                if in_flight:
                    done, _ = concurrent.futures.wait(
                        in_flight,
                        timeout=0 if full else None,
                        return_when=concurrent.futures.FIRST_COMPLETED,
                    )
                    yield from collect(done)
                for size, queue in queues.items():
                    # a partial batch runs once nothing more can come, or when the decoded
                    # videos held fill the window (frames of many sizes must not pile up)
                    while len(queue) >= p.batch or (
                        queue and ((not in_flight and not pending) or held() >= window)
                    ):
                        yield from run_batch(size, min(len(queue), p.batch))
        finally:
            pool.stop()  # on an error or Ctrl-C: do not wait for the queued videos


def _rewrite_log(out_dir: Path, entries: dict[str, dict]) -> None:
    tmp = out_dir / (CACHE_LOG + ".tmp")
    ordered = sorted(entries.values(), key=lambda e: e["video_id"])  # same cache, same bytes
    tmp.write_text("".join(json.dumps(e) + "\n" for e in ordered))
    os.replace(tmp, out_dir / CACHE_LOG)


def _write_failed(path: Path, failed: Iterable[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["video_id", "path", "reason"])
        w.writerows((r["video_id"], r["path"], r["reason"]) for r in failed)
    os.replace(tmp, path)


# ---- preview -------------------------------------------------------------------------------


def flow_to_colour(flow: np.ndarray, max_magnitude: float) -> np.ndarray:
    """Flow (H, W, 2) in px -> RGB: hue = direction (HSV wheel), brightness = speed."""
    mag, ang = cv2.cartToPolar(flow[..., 0], flow[..., 1], angleInDegrees=True)
    hsv = np.zeros((*flow.shape[:2], 3), np.uint8)
    hsv[..., 0] = (ang / 2).astype(np.uint8)  # OpenCV hue is 0..179
    hsv[..., 1] = 255
    hsv[..., 2] = np.clip(mag / max(max_magnitude, 1e-6) * 255, 0, 255).astype(np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def preview(
    video_id: str, out_dir: Path = OUT_DIR, dest: Path = PREVIEW_DIR, columns: int = 8
) -> Path:
    """PNG strip for one record: RGB frames above their colour-coded flow, plus a colour key."""
    path = out_dir / f"{video_id}.tfrecord"
    if not path.exists():
        raise FlowError(f"no record {path}; ids are in {MANIFEST} (run the flow stage first)")
    rec = records.decode_record(next(records.read_records(str(path))))
    n = len(rec["flow_x"])
    picks = sorted({round(float(i)) for i in np.linspace(0, n - 1, min(columns, n))})

    def grey(b: bytes) -> np.ndarray:
        return cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_GRAYSCALE)

    bound = rec["flow_bound"]
    flows = [
        records.dequantize_flow(
            np.stack([grey(rec["flow_x"][i]), grey(rec["flow_y"][i])], -1), bound
        )
        for i in picks
    ]
    top = max(float(np.hypot(f[..., 0], f[..., 1]).max()) for f in flows)
    rgb = [
        cv2.cvtColor(
            cv2.imdecode(np.frombuffer(rec["rgb"][i], np.uint8), cv2.IMREAD_COLOR),
            cv2.COLOR_BGR2RGB,
        )
        for i in picks
    ]
    row1 = np.concatenate([np.pad(f, ((2, 2), (2, 2), (0, 0))) for f in rgb], 1)
    row2 = np.concatenate(
        [np.pad(flow_to_colour(f, top), ((2, 2), (2, 2), (0, 0))) for f in flows], 1
    )
    h = row1.shape[0]
    yy, xx = np.mgrid[-1 : 1 : h * 1j, -1 : 1 : h * 1j]
    key = flow_to_colour(np.stack([xx, yy], -1).astype(np.float32) * top, top)
    key[np.hypot(xx, yy) > 1] = 0  # the colour key: a disc, right = +x, down = +y
    strip = np.concatenate(
        [np.concatenate([row1, np.zeros_like(key)], 1), np.concatenate([row2, key], 1)], 0
    )
    scale = -(-960 // strip.shape[1])  # at least 960 px wide, in whole pixels
    strip = cv2.resize(strip, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    text = (
        f"{video_id}: frames {list(picks)}; flow colour: direction, full brightness = {top:.2f} px"
    )
    band = np.zeros((22, strip.shape[1], 3), np.uint8)
    cv2.putText(band, text, (4, 15), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
    dest.mkdir(parents=True, exist_ok=True)
    out = dest / f"{video_id}.png"
    cv2.imwrite(str(out), cv2.cvtColor(np.concatenate([band, strip], 0), cv2.COLOR_RGB2BGR))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preview", metavar="VIDEO_ID", help="draw a flow preview PNG and exit")
    args = parser.parse_args(argv)
    try:
        if args.preview:
            print(f"flow: wrote {preview(args.preview)}")
            return
        p = load_params().flow
        summary = run_flow(p, read_manifest())
    except PipelineError as exc:
        sys.exit(f"flow: {exc}")
    print(summary.line())


if __name__ == "__main__":
    main()
