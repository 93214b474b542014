"""Local worker processes for per-video work (ingest's probes, the flow schedulers), and the
executor interface that the Ray executor (``pipeline.cluster``) implements too.

Workers are *spawned*, never forked (forking a process that has TensorFlow loaded can deadlock
the child), and run in a ``pebble`` pool, which replaces a worker that dies (a decoder's
segfault, an abort) or overruns its timeout and fails that one task alone: a
``concurrent.futures`` pool would break for every task after the first crash.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from pebble import ProcessPool


class WorkerDied(RuntimeError):
    """The worker process (or the node) that ran a task died, however often it was retried."""


class Executor(Protocol):
    """Runs one function over many argument tuples: :class:`LocalExecutor` on this machine,
    ``pipeline.cluster.RayExecutor`` on a Ray cluster."""

    def each(
        self,
        fn: Callable[..., object],
        arguments: Sequence[tuple],
        *,
        timeout: float | None = None,
        initializer: Callable[[], None] | None = None,
    ) -> Iterator[tuple[int, object]]:
        """``(i, fn(*arguments[i]))`` as each finishes (see :func:`run_each`)."""
        ...


def worker_count(setting: int, tasks: int) -> int:
    """Workers for ``tasks`` tasks: ``setting``, where 0 means every core this process may use;
    never more than the tasks, and at least one."""
    return max(1, min(setting or len(os.sched_getaffinity(0)), tasks))


@contextlib.contextmanager
def spawn_pool(
    workers: int, initializer: Callable[[], None] | None = None
) -> Iterator[ProcessPool]:
    """A pool of ``workers`` spawned processes; on leaving the block (an error or Ctrl-C
    included) the workers are stopped at once, without waiting for queued tasks."""
    pool = ProcessPool(
        max_workers=workers, initializer=initializer, context=multiprocessing.get_context("spawn")
    )
    try:
        yield pool
    finally:
        pool.stop()
        pool.join()


def run_each(
    fn: Callable[..., object],
    arguments: Sequence[tuple],
    workers: int,
    *,
    timeout: float | None = None,
    initializer: Callable[[], None] | None = None,
) -> Iterator[tuple[int, object]]:
    """``fn(*arguments[i])`` for every ``i`` in worker processes, yielding ``(i, result)`` as
    each finishes; a task that failed yields its exception as the result: the function's own,
    ``concurrent.futures.TimeoutError`` past ``timeout`` seconds, or ``pebble.ProcessExpired``
    when its worker died. Closing the iterator stops the workers."""
    with spawn_pool(workers, initializer) as pool:
        futures = {pool.schedule(fn, args, timeout=timeout): i for i, args in enumerate(arguments)}
        for future in concurrent.futures.as_completed(futures):
            try:
                yield futures[future], future.result()
            except Exception as exc:  # noqa: BLE001 (handed to the caller, which records it)
                yield futures[future], exc


@dataclass(frozen=True)
class LocalExecutor:
    """:func:`run_each` in ``workers`` spawned processes (0: one per core)."""

    workers: int

    def each(
        self,
        fn: Callable[..., object],
        arguments: Sequence[tuple],
        *,
        timeout: float | None = None,
        initializer: Callable[[], None] | None = None,
    ) -> Iterator[tuple[int, object]]:
        workers = worker_count(self.workers, len(arguments))
        return run_each(fn, arguments, workers, timeout=timeout, initializer=initializer)
