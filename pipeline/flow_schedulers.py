"""How the flow stage gets the flows of many videos computed: one small interface, two local
schedulers (one per engine).

A scheduler's ``run(tasks)`` yields ``(task, VideoFlow)`` for every task as it finishes, in any
order, or ``(task, exception)`` when that video failed (the others go on); closing the iterator
(the stage does, on an error or Ctrl-C) stops all work at once. Everything else stays with the
stage: the cache, the record writes, the cache log, the failed list and the progress, so any
scheduler (a cluster's too) gives the same records and the same resume behaviour.

- :class:`OpenCVScheduler`: one task per video in a pool of spawned worker processes, each
  decoding its video and computing OpenCV's TV-L1 (``flow_compute.flow_video``).
- :class:`KerasScheduler`: worker processes decode and resize ahead; this process, where the
  accelerator is, computes ``flow.batch`` pairs at a time with the keras engine, pairs of
  several short videos together when their frames have the same size.
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from pipeline import pools
from pipeline.flow_compute import (
    DecodedVideo,
    VideoFlow,
    batched_flow,
    decode_video,
    encode_flow,
    flow_video,
    init_worker,
)
from pipeline.params import FlowParams


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
    """Each of ``workers`` spawned processes decodes a video and computes its flow with
    ``task`` (OpenCV's TV-L1 by default); a worker that dies costs its video alone."""

    params: FlowParams
    workers: int
    task: Callable[[str, int, FlowParams], VideoFlow] = flow_video

    def run(self, tasks: Sequence[VideoTask]) -> Generator[Outcome, None, None]:
        arguments = [(t.path, t.frames, self.params) for t in tasks]
        done = pools.run_each(self.task, arguments, self.workers, initializer=init_worker)
        try:
            for i, result in done:
                yield tasks[i], result
        finally:
            done.close()  # stops the workers, also on an error or Ctrl-C


@dataclass
class _Job:
    """A decoded video waiting for the flows of its pairs."""

    task: VideoTask
    video: DecodedVideo
    left: int  # pairs still to come; -1 once the video failed
    start: float
    flow_x: list[bytes]
    flow_y: list[bytes]


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
            i0 = np.stack([job.video.grey[i] for job, i in chunk])
            i1 = np.stack([job.video.grey[i + 1] for job, i in chunk])
            try:
                flows = self.compute(i0, i1, p)
            except Exception as exc:  # noqa: BLE001 (the videos of this batch fail, not the run)
                for job in {id(job): job for job, _ in chunk}.values():
                    if job.left > 0:
                        job.left = -1
                        yield job.task, exc
                return
            for (job, i), flow in zip(chunk, flows, strict=True):
                if job.left <= 0:
                    continue
                job.flow_x[i], job.flow_y[i] = encode_flow(flow, p)
                job.left -= 1
                if job.left == 0:
                    h, w = job.video.grey.shape[1:]
                    seconds = time.perf_counter() - job.start
                    yield job.task, VideoFlow(job.video.rgb, job.flow_x, job.flow_y, w, h, seconds)

        def collect(done: set) -> Iterator[Outcome]:
            for future in done:
                task, start = in_flight.pop(future)
                try:
                    video = future.result()
                except Exception as exc:  # noqa: BLE001 (this video fails, not the run)
                    yield task, exc
                    continue
                n = len(video.grey) - 1
                job = _Job(task, video, n, start, [b""] * n, [b""] * n)
                queues.setdefault(video.grey.shape[1:], []).extend((job, i) for i in range(n))

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
