"""The Ray executor: per-video work (ingest's probes, flow's videos) as Ray tasks on a cluster.

``cluster.executor: ray`` runs through here, ``local`` through :mod:`pipeline.pools`; both give
the same manifest and byte-identical records, because the stage process alone writes them and
only the computation moves (DESIGN.md, Executors).

- :func:`connect` joins the cluster at ``cluster.address`` (or starts a private Ray instance on
  this machine for the run, on loopback), fails fast with the address when nothing answers
  there, and ships the project's code (``pipeline/``, ``layers/``) to the workers in Ray's
  runtime environment (``py_modules``). Everything else the workers import (OpenCV, PyAV,
  Keras and its backend, NumPy) must be installed on every node, the versions of
  ``requirements.lock``: :func:`check_versions` compares each node's with this process's.
- :class:`RayExecutor` is :class:`pipeline.pools.LocalExecutor`'s twin: ``each(fn, arguments)``
  yields ``(i, result or exception)`` as tasks finish, with at most ``cluster.max_in_flight``
  tasks in the air. The first argument of every task is a video's path, made absolute here:
  every node must see the videos at that path (a shared mount), and a worker that cannot says
  so, naming its node.
- Faults are Ray's to handle: a task whose worker process dies (a decoder's crash, an OOM kill)
  or whose node is lost runs again elsewhere, up to :data:`RETRIES` more times; past that it
  yields :class:`pipeline.pools.WorkerDied`. An exception the task itself raised (a bad video)
  is yielded as itself, not retried.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from pipeline.params import ClusterParams, PipelineError
from pipeline.pools import WorkerDied

RETRIES = 3
"""How many more times Ray runs a task whose worker process or node died."""

PACKAGES = ("pipeline", "layers")
"""The project's code, shipped to every worker by Ray (runtime environment ``py_modules``)."""

LOOPBACK_ONLY = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
"""With this set to 0 before Ray is imported, Ray keeps every node of this machine on
127.0.0.1 (on Linux it otherwise swaps 127.0.0.1 for the machine's interface address): set for
a private instance, which no other machine joins."""


class ClusterError(PipelineError):
    """The cluster cannot run the work; the message names the address or node and the fix."""


def _ray(private: bool = False) -> Any:  # noqa: ANN401 (the ray module)
    if private and "ray" not in sys.modules:
        os.environ.setdefault(LOOPBACK_ONLY, "0")
    try:
        import ray
    except ImportError as exc:
        raise ClusterError(
            "cluster.executor is 'ray' but Ray is not installed here: "
            'pip install -e ".[cluster]" (make install does), or set cluster.executor: local'
        ) from exc
    return ray


def _check_reachable(address: str, given: str | None, timeout_s: float = 5.0) -> None:
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            pass
    except OSError as exc:
        raise ClusterError(
            f"cannot reach a Ray cluster at cluster.address = {given!r} ({address}: "
            f"{exc.strerror or exc}); start one (docs/cluster.md: `ray start --head` "
            "on the head node), fix the address, or set cluster.address: null for a private "
            "Ray instance on this machine"
        ) from exc


def _resolve(given: str) -> str:
    """``auto`` as Ray resolves it (``RAY_ADDRESS``, else the cluster ``ray start`` runs here)."""
    if given != "auto":
        return given
    from ray._private.services import canonicalize_bootstrap_address

    try:
        found = canonicalize_bootstrap_address("auto")
    except ConnectionError as exc:
        found, why = None, str(exc)
    else:
        why = "none found"
    if not found:
        raise ClusterError(
            f"cluster.address = 'auto' but no Ray cluster runs on this machine ({why}): start "
            "one with `ray start --head`, set RAY_ADDRESS, or give the head's host:port"
        )
    return found


@contextlib.contextmanager
def connect(c: ClusterParams) -> Iterator[None]:
    """Join the Ray cluster of ``cluster.address`` for the block (null: start a private one on
    this machine, with its cores, and stop it after); raises :class:`ClusterError` at once when
    no cluster answers at the address, before any work."""
    private = c.address is None
    ray = _ray(private)
    if ray.is_initialized():  # already connected (a test's driver, a notebook): use it
        yield
        return
    runtime_env = {"py_modules": [str(Path(__file__).parent.parent / p) for p in PACKAGES]}
    kwargs: dict[str, Any] = {"runtime_env": runtime_env, "logging_level": logging.WARNING}
    if private:
        kwargs.update(
            address="local",  # a new instance, whatever RAY_ADDRESS says
            num_cpus=len(os.sched_getaffinity(0)),
            include_dashboard=False,
            _node_ip_address="127.0.0.1",
        )
    else:
        address = _resolve(c.address)
        _check_reachable(address, c.address)
        kwargs["address"] = address
    try:
        ray.init(**kwargs)
    except (ConnectionError, RuntimeError) as exc:
        raise ClusterError(
            f"cannot join the Ray cluster at cluster.address = {c.address!r}: {exc}"
        ) from exc
    try:
        yield
    finally:
        ray.shutdown()


def cluster_gpus() -> float:
    """GPUs the connected cluster has (``flow.engine: auto`` picks keras when there are any)."""
    return float(_ray().cluster_resources().get("GPU", 0))


@functools.cache
def _remote(fn: Callable[..., object]) -> Any:  # noqa: ANN401 (a Ray remote function)
    return _ray().remote(fn)


def _here() -> str:
    """This node, as messages name it: host, address and Ray's node id (several nodes can
    share one host)."""
    ray = _ray()
    node = ray.get_runtime_context().get_node_id()[:8]
    return f"{socket.gethostname()} ({ray.util.get_node_ip_address()}, node {node})"


def _call(
    fn: Callable[..., object],
    args: tuple,
    timeout_s: float | None,
    initializer: Callable[[], None] | None,
) -> object:
    """One task, on a worker: ``fn(*args)``, stopped with ``TimeoutError`` past ``timeout_s``."""
    path = args[0]
    if not os.path.lexists(path):
        raise FileNotFoundError(
            f"{path}: no such file on Ray node {_here()}; every node must see the videos at "
            "the same path (a shared mount, the same on every node; docs/cluster.md)"
        )
    if initializer is not None:
        initializer()
    if timeout_s is None:
        return fn(*args)

    def overrun(*_: object) -> None:
        raise _Overrun  # no Exception: nothing in the decoder may catch it

    previous = signal.signal(signal.SIGALRM, overrun)  # Ray runs a task in its main thread
    signal.setitimer(signal.ITIMER_REAL, timeout_s)
    try:
        return fn(*args)
    except _Overrun:
        raise TimeoutError(f"took longer than {timeout_s} s") from None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class _Overrun(BaseException):
    """A task's alarm went off (``TimeoutError`` would be caught as an ``OSError``)."""


def unwrap(exc: BaseException) -> BaseException:
    """What a failed Ray task raises, as the local pool would give it: the task's own exception,
    or :class:`WorkerDied` once its worker process, actor or node died more than
    :data:`RETRIES` times (``ray.get`` raised)."""
    ray = _ray()
    errors = ray.exceptions
    if isinstance(exc, errors.RayTaskError) and isinstance(exc.cause, BaseException):
        return exc.cause
    if isinstance(exc, errors.OutOfMemoryError):
        return WorkerDied(f"Ray's memory monitor killed its worker: {exc}")
    if isinstance(exc, errors.WorkerCrashedError | errors.NodeDiedError | errors.RayActorError):
        what = "its Ray worker process (or its node) died"
        return WorkerDied(f"{what} {RETRIES + 1} times; see the workers' logs (ray logs)")
    return exc


def check_versions(ours: dict[str, str], theirs: dict[str, dict[str, str]], what: str) -> None:
    """Raise :class:`ClusterError` naming every node whose versions differ from ours.

    ``theirs`` maps a node to the versions it reported (:func:`on_every_node`); the versions
    are part of each record's cache key, so a node with others would write other records."""
    wrong = [
        f"    {node}: " + ", ".join(f"{k} {v.get(k)!r} (here {ours[k]!r})" for k in ours)
        for node, v in sorted(theirs.items())
        if any(v.get(k) != ours[k] for k in ours)
    ]
    if wrong:
        raise ClusterError(
            f"{len(wrong)} Ray node(s) run other versions of what {what} depends on (part of "
            "every record's cache key):\n" + "\n".join(wrong) + "\n  install the versions of "
            "requirements.lock on every node (in the cluster's image: pip install -r "
            "requirements.lock)"
        )


def on_every_node(fn: Callable[..., dict[str, str]], *args: object) -> dict[str, dict[str, str]]:
    """``fn(*args)`` once on every alive node that has CPUs: node name -> its result."""
    ray = _ray()
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    task = _remote(_on_node)
    nodes = [n for n in ray.nodes() if n["Alive"] and n["Resources"].get("CPU", 0) > 0]
    if not nodes:
        raise ClusterError("the Ray cluster has no alive node with CPUs to run the work on")
    refs = [
        task.options(
            num_cpus=0,
            scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False),
        ).remote(fn, args)
        for n in nodes
    ]
    return dict(ray.get(refs))


def _on_node(fn: Callable[..., dict[str, str]], args: tuple) -> tuple[str, dict[str, str]]:
    return _here(), fn(*args)


class RayExecutor:
    """Per-video work as Ray tasks (see the module docstring); ``cpus`` per task, at most
    ``max_in_flight`` tasks submitted and not yet handed back."""

    def __init__(self, c: ClusterParams) -> None:
        self.cpus, self.max_in_flight = c.cpus_per_video, c.max_in_flight

    def submit(
        self,
        fn: Callable[..., object],
        args: tuple,
        *,
        timeout: float | None = None,
        initializer: Callable[[], None] | None = None,
        num_returns: int = 1,
    ) -> Any:  # noqa: ANN401 (an ObjectRef, or a list of them)
        """Start ``fn(*args)`` on the cluster (``args[0]``, a path, made absolute)."""
        task = _remote(_call).options(
            num_cpus=self.cpus, max_retries=RETRIES, retry_exceptions=False, num_returns=num_returns
        )
        args = (os.path.abspath(args[0]), *args[1:])
        return task.remote(fn, args, timeout, initializer)

    def each(
        self,
        fn: Callable[..., object],
        arguments: Sequence[tuple],
        *,
        timeout: float | None = None,
        initializer: Callable[[], None] | None = None,
    ) -> Iterator[tuple[int, object]]:
        """``fn(*arguments[i])`` for every ``i``, yielding ``(i, result)`` as each finishes; a
        failed task yields its exception (:func:`unwrap`). Closing the iterator cancels the
        tasks still in the air."""
        queued = list(range(len(arguments)))[::-1]
        running: dict = {}
        try:
            while queued or running:
                while queued and len(running) < self.max_in_flight:
                    i = queued.pop()
                    ref = self.submit(fn, arguments[i], timeout=timeout, initializer=initializer)
                    running[ref] = i
                ready = wait_any(running)
                yield running.pop(ready), get(ready)
        finally:
            for ref in running:  # an error, Ctrl-C or a closed iterator: stop the rest
                cancel(ref)


def wait_any(refs: Sequence[Any]) -> Any:  # noqa: ANN401 (an ObjectRef)
    """The first of ``refs`` to finish."""
    (ready,), _ = _ray().wait(list(refs), num_returns=1)
    return ready


def get(ref: Any) -> object:  # noqa: ANN401 (an ObjectRef)
    """The value of ``ref``, or the exception its task failed with (:func:`unwrap`)."""
    try:
        return _ray().get(ref)
    except Exception as exc:  # noqa: BLE001 (handed to the caller, which records it)
        return unwrap(exc)


def cancel(ref: Any) -> None:  # noqa: ANN401 (an ObjectRef)
    """Stop the task of ``ref`` (its worker is killed)."""
    _ray().cancel(ref, force=True)


def gpu_slots(gpus: float) -> int:
    """How many actors of ``gpus`` GPUs each the alive nodes can hold (an actor's GPUs are all
    on one node)."""
    nodes = [n for n in _ray().nodes() if n["Alive"]]
    return sum(int(n["Resources"].get("GPU", 0) / gpus + 1e-9) for n in nodes)


def actors(cls: type, count: int, gpus: float, *args: object) -> list[Any]:
    """``count`` Ray actors of ``cls(*args)``, each holding ``gpus`` GPUs and one CPU; an actor
    whose process or node dies is restarted, and its calls retried, :data:`RETRIES` times.

    They run this process's Keras backend; an actor of no GPUs sees none, and one of a share
    of a GPU takes that share of its memory (not the backend's default of most of it)."""
    import keras

    env = {"KERAS_BACKEND": keras.backend.backend()}
    if gpus == 0:
        env["CUDA_VISIBLE_DEVICES"] = ""
    elif gpus < 1:
        env.update(
            XLA_PYTHON_CLIENT_MEM_FRACTION=f"{0.9 * gpus:.2f}", TF_FORCE_GPU_ALLOW_GROWTH="true"
        )
    remote = (
        _ray()
        .remote(cls)
        .options(
            num_cpus=1,
            num_gpus=gpus,
            max_restarts=RETRIES,
            max_task_retries=RETRIES,
            runtime_env={"env_vars": env},
        )
    )
    return [remote.remote(*args) for _ in range(count)]


def get_all(refs: Sequence[Any], timeout_s: float, what: str) -> list:
    """The values of ``refs``; :class:`ClusterError` naming ``what`` when they take longer than
    ``timeout_s`` (work the cluster cannot place waits for ever)."""
    ray = _ray()
    try:
        return ray.get(list(refs), timeout=timeout_s)
    except ray.exceptions.GetTimeoutError as exc:
        raise ClusterError(
            f"{what} did not start within {timeout_s:g} s: the cluster may lack the resources "
            "(`ray status` shows what is free and what is pending)"
        ) from exc
