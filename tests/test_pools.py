"""The local worker pool (pipeline/pools.py) holds no result it has handed over: the flow
stage's records pass through it, one video each, for the whole dataset."""

import gc
import subprocess
import sys
import weakref

from pipeline import pools

from .conftest import ROOT


class Blob:
    """A result that can be watched with a weak reference (bytes cannot)."""

    def __init__(self, size: int) -> None:
        self.data = bytes(size)


def make_blob(size: int) -> Blob:
    return Blob(size)


def failing(size: int) -> Blob:
    raise ValueError(f"no blob of {size}")


def test_results_are_not_kept_once_handed_over():
    # gc.collect() walks only what is made from here on (the worker process may hold all of
    # TensorFlow: a full collection then takes about a second, 25 of them most of this test)
    gc.freeze()
    try:
        _results_are_not_kept()
    finally:
        gc.unfreeze()


def _results_are_not_kept():
    watched = []
    results = pools.run_each(make_blob, [(1 << 20,)] * 24, workers=2)
    for _, blob in results:
        assert isinstance(blob, Blob) and len(blob.data) == 1 << 20
        watched.append(weakref.ref(blob))
        del blob
        gc.collect()
        # no result handed over before this one is held by run_each or a future it keeps. One
        # may be held by pebble: its scheduler thread keeps the task it scheduled last (and
        # with it that task's future and result) in a local until it schedules the next, so
        # the last one scheduled can finish, be handed over, and still be alive for a while.
        kept = [k for k, w in enumerate(watched[:-1]) if w() is not None]
        assert len(kept) <= 1, f"results {kept} kept after they were handed over"
    assert len(watched) == 24
    del results
    gc.collect()
    assert [k for k, w in enumerate(watched) if w() is not None] == []


def test_a_failed_task_yields_its_exception_and_the_rest_still_run():
    out = dict(pools.run_each(failing, [(3,)], workers=1))
    assert isinstance(out[0], ValueError) and "no blob of 3" in str(out[0])
    done = sorted(i for i, r in pools.run_each(make_blob, [(10,)] * 3, workers=2))
    assert done == [0, 1, 2]


def test_at_most_a_few_tasks_a_worker_are_queued(monkeypatch):
    scheduled = []
    real = pools.ProcessPool.schedule

    def counting(self, fn, args=(), kwargs=None, timeout=None):  # noqa: ANN001
        scheduled.append(args)
        return real(self, fn, args=args, kwargs=kwargs or {}, timeout=timeout)

    monkeypatch.setattr(pools.ProcessPool, "schedule", counting)
    results = pools.run_each(make_blob, [(i,) for i in range(40)], workers=2)
    first = next(results)
    assert len(scheduled) <= pools.QUEUED_PER_WORKER * 2 + 1  # not all 40 up front
    rest = list(results)
    assert sorted(i for i, _ in [first, *rest]) == list(range(40)) and len(scheduled) == 40
    assert all(len(blob.data) == i for i, blob in [first, *rest])


EXITING = """
import atexit, os, signal, sys
from pebble.common import process_exit
from pipeline import pools
atexit.register(os.kill, os.getpid(), signal.SIGTERM)  # runs after the worker's own handlers
pools._start_worker(lambda: print("initializer ran", flush=True))
signal.signal(signal.SIGTERM, process_exit)  # what pebble's worker installs next
"""


def test_a_worker_that_is_exiting_ignores_the_pools_sigterm():
    """pebble stops a pool by closing the workers' pipe, then sending each a SIGTERM: one that
    found a worker already exiting printed "Signal 15 ignored due to race condition" and a
    traceback into the stage's output. A worker started by spawn_pool ignores SIGTERM once it
    exits (without: pebble's handler ends it with exit code 15), and still runs the pool's own
    initializer."""
    run = subprocess.run(
        [sys.executable, "-c", EXITING], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, (run.returncode, run.stderr)
    assert run.stdout == "initializer ran\n" and "Traceback" not in run.stderr, run.stderr
    with pools.spawn_pool(1) as pool:  # the pool starts its workers through it
        assert pool.schedule(make_blob, (3,)).result(timeout=60).data == bytes(3)
