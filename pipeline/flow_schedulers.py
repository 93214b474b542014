"""How the flow stage gets the flows of many videos computed: one small interface, a scheduler
per engine and executor (``cluster.executor``).

A scheduler's ``run(tasks)`` yields ``(task, VideoFlow)`` for every task as it finishes, in any
order, or ``(task, exception)`` when that video failed (the others go on); closing the iterator
(the stage does, on an error or Ctrl-C) stops all work at once. Everything else stays with the
stage: the cache, the record writes, the cache log, the failed list and the progress, so any
scheduler (a cluster's too) gives the same records and the same resume behaviour.

- :class:`OpenCVScheduler`: one task per video, each decoding its video and computing OpenCV's
  TV-L1 (``flow_compute.flow_video``), on an executor: a pool of spawned worker processes
  (``pools.LocalExecutor``) or Ray tasks on a cluster (``cluster.RayExecutor``).
- :class:`KerasScheduler`: worker processes decode and resize ahead; this process, where the
  accelerator is, computes ``flow.batch`` pairs at a time with the keras engine, pairs of
  several short videos together when their frames have the same size.
- :class:`RayKerasScheduler`: the same on a Ray cluster: CPU tasks decode and resize, GPU
  actors (:class:`TVL1Worker`) compute the batches this process assembles; the decoded frames
  go from the decoding node to the actor's, never through this process.

:func:`ray_scheduler` picks the Ray scheduler of the engine and returns the record settings of
the versions the cluster's workers run (``pipeline.cluster.check_versions``).
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from pipeline import cluster, pools
from pipeline.flow_compute import (
    VideoFlow,
    batched_flow,
    decode_video,
    encode_flow,
    flow_video,
    init_worker,
    record_settings,
    versions_here,
)
from pipeline.params import ClusterParams, FlowParams


@dataclass(frozen=True)
class VideoTask:
    """One video to compute: its id, its path, and the frames its manifest row lists."""

    video_id: str
    path: str
    frames: int


Outcome = tuple[VideoTask, "VideoFlow | BaseException"]


class Scheduler(Protocol):
    """Computes the flows of videos (see the module docstring)."""

    def run(self, tasks: Sequence[VideoTask]) -> Generator[Outcome, None, None]: ...


@dataclass
class OpenCVScheduler:
    """Each of ``executor``'s workers decodes a video and computes its flow with ``task``
    (OpenCV's TV-L1 by default); a worker that dies costs its video alone."""

    params: FlowParams
    executor: pools.Executor
    task: Callable[[str, int, FlowParams], VideoFlow] = flow_video

    def run(self, tasks: Sequence[VideoTask]) -> Generator[Outcome, None, None]:
        arguments = [(t.path, t.frames, self.params) for t in tasks]
        done = self.executor.each(self.task, arguments, initializer=init_worker)
        try:
            for i, result in done:
                yield tasks[i], result
        finally:
            done.close()  # stops the workers, also on an error or Ctrl-C


@dataclass
class _Job:
    """A decoded video waiting for the flows of its pairs (both keras schedulers)."""

    task: VideoTask
    rgb: list[bytes]
    grey: object  # the (F, H, W) grey frames; on Ray, the ObjectRef of them
    size: tuple[int, int]  # (H, W)
    start: float
    left: int = field(init=False)  # pairs still to come; -1 once the video failed
    flow_x: list[bytes] = field(init=False)
    flow_y: list[bytes] = field(init=False)

    def __post_init__(self) -> None:
        n = len(self.rgb) - 1
        self.left, self.flow_x, self.flow_y = n, [b""] * n, [b""] * n

    def add(self, i: int, x: bytes, y: bytes) -> VideoFlow | None:
        """Pair ``i``'s encoded flow; the video's flows once this was its last pair."""
        self.flow_x[i], self.flow_y[i] = x, y
        self.left -= 1
        if self.left:
            return None
        (h, w), seconds = self.size, time.perf_counter() - self.start
        return VideoFlow(self.rgb, self.flow_x, self.flow_y, w, h, seconds)


@dataclass
class KerasScheduler:
    """``workers`` spawned processes decode ahead (about ``2 × workers + 2`` decoded videos in
    memory); this process computes the flow of ``flow.batch`` pairs at a time with ``compute``
    (the keras engine by default), pairs of several videos together when they have the same
    frame size. A failed batch fails the videos it held; the run goes on."""

    params: FlowParams
    workers: int
    compute: Callable[[np.ndarray, np.ndarray, FlowParams], np.ndarray] = batched_flow

    def run(self, tasks: Sequence[VideoTask]) -> Generator[Outcome, None, None]:
        p = self.params
        pending = list(reversed(tasks))
        in_flight: dict = {}
        queues: dict[tuple[int, int], list[tuple[_Job, int]]] = {}
        window = 2 * self.workers + 2

        def held() -> int:  # decoded videos waiting for flows
            return len({id(job) for q in queues.values() for job, _ in q})

        def run_batch(size: tuple[int, int], n: int) -> Iterator[Outcome]:
            chunk, queues[size][:n] = queues[size][:n], []
            i0 = np.stack([job.grey[i] for job, i in chunk])
            i1 = np.stack([job.grey[i + 1] for job, i in chunk])
            try:
                flows = self.compute(i0, i1, p)
            except Exception as exc:  # noqa: BLE001 (the videos of this batch fail, not the run)
                for job in {id(job): job for job, _ in chunk}.values():
                    if job.left > 0:
                        job.left = -1
                        yield job.task, exc
                return
            for (job, i), flow in zip(chunk, flows, strict=True):
                if job.left > 0 and (done := job.add(i, *encode_flow(flow, p))):
                    yield job.task, done

        def collect(done: set) -> Iterator[Outcome]:
            for future in done:
                task, start = in_flight.pop(future)
                try:
                    video = future.result()
                except Exception as exc:  # noqa: BLE001 (this video fails, not the run)
                    yield task, exc
                    continue
                job = _Job(task, video.rgb, video.grey, video.grey.shape[1:], start)
                queues.setdefault(job.size, []).extend((job, i) for i in range(job.left))

        with pools.spawn_pool(self.workers, init_worker) as pool:
            while pending or in_flight or any(queues.values()):
                while pending and len(in_flight) + held() < window:
                    task = pending.pop()
                    future = pool.schedule(decode_video, (task.path, task.frames, p))
                    in_flight[future] = (task, time.perf_counter())
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


# ---- on a Ray cluster ----------------------------------------------------------------------


class TVL1Worker:
    """A Ray actor of the keras engine: batches of frame pairs in, their encoded flows out."""

    def __init__(self, p: FlowParams) -> None:
        init_worker()
        self.p = p

    def versions(self) -> dict[str, str]:
        return versions_here("keras")

    def flows(self, pairs: list[tuple[int, int]], *greys: np.ndarray) -> list[tuple[bytes, bytes]]:
        """The encoded flows of ``pairs``: (which of ``greys``, first frame of the pair)."""
        i0 = np.stack([greys[v][i] for v, i in pairs])
        i1 = np.stack([greys[v][i + 1] for v, i in pairs])
        return [encode_flow(flow, self.p) for flow in batched_flow(i0, i1, self.p)]


def decode_apart(path: str, expected_frames: int, p: FlowParams) -> tuple[tuple, np.ndarray]:
    """:func:`decode_video` as two Ray objects: (RGB JPEGs, frame size) for the stage process,
    the grey frames for the actors."""
    video = decode_video(path, expected_frames, p)
    return (video.rgb, video.grey.shape[1:]), video.grey


@dataclass
class RayKerasScheduler:
    """Decoding tasks on the cluster's CPUs, TV-L1 batches on ``workers`` (GPU actors); at most
    ``cluster.max_in_flight`` videos decoding or waiting for flows, two batches per actor in
    the air. Batches are made as :class:`KerasScheduler` makes them, so a record is the same.
    """

    params: FlowParams
    executor: cluster.RayExecutor
    workers: list

    def run(self, tasks: Sequence[VideoTask]) -> Generator[Outcome, None, None]:
        p, window = self.params, self.executor.max_in_flight
        pending = list(reversed(tasks))
        decoding: dict = {}  # ref of (rgb, size) -> (task, ref of grey, start)
        batches: dict = {}  # ref of flows -> (chunk, actor)
        busy = [0] * len(self.workers)
        queues: dict[tuple[int, int], list[tuple[_Job, int]]] = {}
        live: dict[int, _Job] = {}

        def fail(job: _Job, exc: BaseException) -> Iterator[Outcome]:
            live.pop(id(job), None)
            for size, queue in queues.items():
                queues[size] = [(j, i) for j, i in queue if j is not job]
            job.left = -1
            yield job.task, exc

        def submit(size: tuple[int, int], n: int) -> None:
            chunk, queues[size][:n] = queues[size][:n], []
            greys = list({id(job): job.grey for job, _ in chunk}.values())
            index = {id(g): v for v, g in enumerate(greys)}
            pairs = [(index[id(job.grey)], i) for job, i in chunk]
            k = busy.index(min(busy))
            busy[k] += 1
            batches[self.workers[k].flows.remote(pairs, *greys)] = (chunk, k)

        def decoded(ready: object) -> Iterator[Outcome]:
            task, grey, start = decoding.pop(ready)
            result = cluster.get(ready)
            if isinstance(result, BaseException):
                yield task, result
                return
            rgb, size = result
            job = _Job(task, rgb, grey, tuple(size), start)
            live[id(job)] = job
            queues.setdefault(job.size, []).extend((job, i) for i in range(job.left))

        def computed(ready: object) -> Iterator[Outcome]:
            chunk, k = batches.pop(ready)
            busy[k] -= 1
            result = cluster.get(ready)
            if isinstance(result, BaseException):  # the videos of this batch fail, not the run
                if isinstance(result, pools.WorkerDied):  # the actor is gone for good
                    busy[k] = 1 << 30  # never chosen again
                    if min(busy) >= 1 << 30:
                        raise cluster.ClusterError(
                            f"every TV-L1 actor died ({result}); the finished records are kept"
                        )
                for job in {id(job): job for job, _ in chunk}.values():
                    if job.left > 0:
                        yield from fail(job, result)
                return
            for (job, i), (x, y) in zip(chunk, result, strict=True):
                if job.left > 0 and (done := job.add(i, x, y)):
                    live.pop(id(job))
                    yield job.task, done

        try:
            while pending or decoding or batches or any(queues.values()):
                while pending and len(decoding) + len(live) < window:
                    task = pending.pop()
                    rgb, grey = self.executor.submit(
                        decode_apart,
                        (task.path, task.frames, p),
                        initializer=init_worker,
                        num_returns=2,
                    )
                    decoding[rgb] = (task, grey, time.perf_counter())
                for size in list(queues):
                    # as the local scheduler: a partial batch goes once nothing more can come,
                    # or when the decoded videos held fill the window (frames of many sizes
                    # must not pile up)
                    while min(busy) < 2 and (
                        len(queues[size]) >= p.batch
                        or (queues[size] and not (pending or decoding))
                        or (queues[size] and len(live) >= window)
                    ):
                        submit(size, min(len(queues[size]), p.batch))
                refs = [*decoding, *batches]
                if refs:
                    ready = cluster.wait_any(refs)
                    yield from decoded(ready) if ready in decoding else computed(ready)
        finally:
            for ref in decoding:
                cluster.cancel(ref)


ACTOR_START_S = 600.0
"""How long the keras engine's actors may take to start (a node to join, Keras to import)."""


def ray_scheduler(
    p: FlowParams,
    c: ClusterParams,
    task: Callable[[str, int, FlowParams], VideoFlow] = flow_video,
) -> tuple[Scheduler, dict]:
    """The Ray scheduler of the engine run (``auto``: keras when the cluster has GPUs) on the
    connected cluster, and the record settings of what its workers run; raises
    ``cluster.ClusterError`` when a node's versions differ from this process's, or the keras
    engine finds no GPUs for its actors."""
    executor = cluster.RayExecutor(c)
    engine = p.engine
    if engine == "auto":
        engine = "keras" if cluster.cluster_gpus() > 0 else "opencv"
    ours = versions_here("opencv")
    cluster.check_versions(ours, cluster.on_every_node(versions_here, "opencv"), "decoding")
    if engine == "opencv":
        return OpenCVScheduler(p, executor, task), record_settings(p, engine, ours)
    count = 1
    if c.gpus_per_worker > 0:
        count = cluster.gpu_slots(c.gpus_per_worker)
        if count < 1:
            raise cluster.ClusterError(
                f"the keras engine's actors each need cluster.gpus_per_worker = "
                f"{c.gpus_per_worker} GPUs on one node, and no node of the Ray cluster has "
                f"them (GPUs in all: {cluster.cluster_gpus():g}): add GPU nodes, set "
                "flow.engine: opencv, or cluster.gpus_per_worker: 0 (one actor on a CPU)"
            )
    workers = cluster.actors(TVL1Worker, count, c.gpus_per_worker, p)
    reported = cluster.get_all(
        [w.versions.remote() for w in workers], ACTOR_START_S, f"{count} TV-L1 actor(s)"
    )
    keras = versions_here("keras", device=False)  # asking for the device can take a GPU
    cluster.check_versions(keras, {f"TV-L1 actor {i}": v for i, v in enumerate(reported)}, "flow")
    devices = sorted({v["device"] for v in reported})
    if len(devices) > 1:
        raise cluster.ClusterError(
            f"the keras engine's actors run on {' and '.join(devices)}: a record's flow would "
            "depend on which actor computed it; give every actor a GPU (cluster.gpus_per_worker)"
        )
    return RayKerasScheduler(p, executor, workers), record_settings(p, engine, reported[0])
