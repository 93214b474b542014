"""Local worker processes for per-video work (ingest's probes, the flow schedulers), and the
executor interface that the Ray executor (``pipeline.cluster``) implements too.

Workers are *spawned*, never forked (forking a process that has TensorFlow loaded can deadlock
the child), and run in a ``pebble`` pool, which replaces a worker that dies (a decoder's
segfault, an abort) or overruns its timeout and fails that one task alone: a
``concurrent.futures`` pool would break for every task after the first crash.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import contextlib
import functools
import itertools
import multiprocessing
import os
import signal
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from pebble import ProcessPool

QUEUED_PER_WORKER = 4
"""Tasks handed to the local pool at a time, per worker: enough that no worker waits."""


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


def _start_worker(initializer: Callable[[], None] | None) -> None:
    """Run in each worker as it starts: once it begins to exit, SIGTERM is ignored, then the
    pool's ``initializer``.

    pebble stops a pool by closing its workers' pipe, on which a worker exits on its own, and
    then sending each a SIGTERM. One that arrived while the worker was already past its exit
    handlers printed a traceback ("OSError: Signal 15 ignored due to race condition", once in a
    fresh-clone CI run of the fault tests) into the stage's output. An exiting worker now
    ignores it; one that hangs on its way out is still killed, by the SIGKILL pebble sends
    after 3 s."""
    atexit.register(signal.signal, signal.SIGTERM, signal.SIG_IGN)
    if initializer is not None:
        initializer()


@contextlib.contextmanager
def spawn_pool(
    workers: int, initializer: Callable[[], None] | None = None
) -> Iterator[ProcessPool]:
    """A pool of ``workers`` spawned processes; on leaving the block (an error or Ctrl-C
    included) the workers are stopped at once, without waiting for queued tasks."""
    pool = ProcessPool(
        max_workers=workers,
        initializer=functools.partial(_start_worker, initializer),
        context=multiprocessing.get_context("spawn"),
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
    when its worker died. Closing the iterator stops the workers.

    At most :data:`QUEUED_PER_WORKER` tasks a worker are handed to the pool at a time, and a
    result is dropped here once it is handed over, so what this holds does not grow with the
    number of tasks. (Scheduling all of them at once and keeping their futures held every
    record of the flow stage to the end of the run: its peak memory grew from 767 MB at 1,000
    videos to 1,319 MB at 13,320, 45 kB a video of 32×32 frames, megabytes at 340×256.)"""
    with spawn_pool(workers, initializer) as pool:
        pending: dict[concurrent.futures.Future, int] = {}
        queue = iter(enumerate(arguments))

        def top_up() -> None:
            for i, args in itertools.islice(queue, QUEUED_PER_WORKER * workers - len(pending)):
                pending[pool.schedule(fn, args, timeout=timeout)] = i

        top_up()
        while pending:
            done, _ = concurrent.futures.wait(
                pending, return_when=concurrent.futures.FIRST_COMPLETED
            )
            while done:  # popped, so that no finished future (and its result) stays in `done`
                future = done.pop()
                i = pending.pop(future)
                try:
                    result = future.result()
                except Exception as exc:  # noqa: BLE001 (handed to the caller, which records it)
                    result = exc
                del future
                top_up()  # the workers stay busy while the caller takes the result
                yield i, result
                del result


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
