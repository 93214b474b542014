"""Stage ``flow``: TV-L1 optical flow for every video, one record per video, cached, resumable.

For each manifest row a worker process decodes the video frame by frame, resizes it by
``flow.size``, computes TV-L1 between consecutive grey frames, quantises the flow to uint8 and
JPEG-encodes the RGB frames and both flow components (``pipeline.flow_compute``); only the
encoded bytes are kept, so a worker's memory does not grow with the video's resolution. A
scheduler (``pipeline.flow_schedulers``: one per engine) runs that work; this process alone
writes ``data/videos/<video_id>.tfrecord`` (``pipeline.contracts``), atomically. With
``cluster.executor: ray`` the schedulers run the same work as Ray tasks and actors on a cluster
(``pipeline.cluster``); this process still does everything else, so the records are the same.

With ``data.layout: rawframes`` the videos are frame folders that another tool already computed
flow for: each record is made from its folder's JPEGs (``flow_compute.rawframes_flow``: bytes
copied, or flow levels quantised again from ``data.rawframes_bound``), by the same workers and
with the same cache, and nothing is computed.

Cache: ``data/videos/_cache.jsonl`` logs, per finished video, the key it was made with: a hash
of the video's *content* (a frame folder's: of its images), its id and label, and every value
that shapes a record (``flow.size``, ``bound``, ``jpeg_quality``, ``tvl1.*``, the engine and
its library version; for frame folders, their bound and rounding instead). A record is
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
import functools
import hashlib
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pebble import ProcessExpired
from tqdm import tqdm

from pipeline import contracts, pools, rawframes
from pipeline.flow_compute import (
    VideoFlow,
    batched_flow,
    flow_video,
    rawframes_flow,
    rawframes_settings,
    record_settings,
    resolve_engine,
    video_record,
)
from pipeline.flow_schedulers import (
    KerasScheduler,
    OpenCVScheduler,
    Scheduler,
    VideoTask,
    ray_scheduler,
)
from pipeline.params import ClusterParams, DataParams, FlowParams, PipelineError, load_params

CACHE_LOG = "_cache.jsonl"
"""The flow stage's own memory, inside ``data/videos``: the cache key of each finished record."""


class FlowError(PipelineError):
    """The stage cannot finish; the message says why and what to change."""


# ---- cache ---------------------------------------------------------------------------------


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
        for line in log.read_text(encoding="utf-8").splitlines():
            try:
                entry = json.loads(line)
                entries[entry["video_id"]] = entry
            except (json.JSONDecodeError, KeyError, TypeError):
                continue
    return entries


def _content_hash(row: dict, old: dict | None) -> tuple[str, dict]:
    """The video's sha256 (a frame folder's: of its images, ``rawframes.folder_sha256``),
    reusing the logged one while the size and mtime are unchanged."""
    path = row["path"]
    if os.path.isdir(path):
        stat = {"path": path, **rawframes.folder_stat(path)}
        digest = rawframes.folder_sha256
    else:
        st = os.stat(path)
        stat, digest = {"path": path, "size": st.st_size, "mtime_ns": st.st_mtime_ns}, file_sha256
    if old and all(old.get(k) == v for k, v in stat.items()):
        return old["content_sha256"], stat
    return digest(path), stat


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
    if isinstance(exc, pools.WorkerDied):
        return f"the worker died while decoding or computing flow ({exc})"
    return str(exc) or type(exc).__name__


def run_flow(
    p: FlowParams,
    rows: list[dict],
    out_dir: Path = contracts.VIDEOS_DIR,
    failed_csv: Path = contracts.FLOW_FAILED,
    task: Callable[[str, int, FlowParams], VideoFlow] = flow_video,
    scheduler: Scheduler | None = None,
    settings: dict | None = None,
) -> Summary:
    """Bring ``out_dir`` up to date with ``rows``; raises :class:`FlowError` past the limit.

    ``scheduler`` computes the videos to do (default: :func:`local_scheduler` of the engine
    run, whose opencv scheduler calls ``task`` for each video); its ``run`` must be a generator
    (closing it stops the work). ``settings`` are the record settings of the engine it runs
    (default: ``record_settings`` of the engine run here).
    """
    start = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    wanted = {row["video_id"] for row in rows}
    for f in out_dir.iterdir():  # leftovers of a killed run, and videos no longer listed
        if contracts.is_temporary(f.name) or (f.suffix == ".tfrecord" and f.stem not in wanted):
            f.unlink()
    settings = settings or record_settings(p, resolve_engine(p.engine))
    logged = load_cache_log(out_dir)
    entries: dict[str, dict] = {}  # the cache log rewritten at the end: current videos only
    todo, failed, damaged = [], [], []
    for row in rows:
        old = logged.get(row["video_id"])
        try:
            content, stat = _content_hash(row, old)
        except OSError as exc:
            Path(contracts.record_path(row["video_id"], out_dir)).unlink(
                missing_ok=True
            )  # no stale
            failed.append({**row, "reason": f"cannot read the video: {exc}"})
            continue
        key = cache_key(settings, content, row["video_id"], row["label"])
        entry = {"video_id": row["video_id"], "key": key, "content_sha256": content, **stat}
        record = Path(contracts.record_path(row["video_id"], out_dir))
        if old and old.get("key") == key and record.exists():
            stamp = _record_stamp(record)
            touched = not all(old.get(k) == v for k, v in stamp.items())  # copied? damaged?
            if touched and (problem := contracts.record_problem(record, row["video_id"], key)):
                damaged.append(f"{record}: {problem}")
                todo.append((row, entry))
                continue
            entries[row["video_id"]] = {**old, **entry, **stamp}
        else:
            todo.append((row, entry))
    reused = len(entries)
    if damaged:  # never reused: computed again below
        print(
            f"flow: {len(damaged)} damaged records are computed again: "
            + "; ".join(damaged[:5])
            + (" ..." if len(damaged) > 5 else ""),
            flush=True,
        )

    log = open(out_dir / CACHE_LOG, "a", encoding="utf-8")  # noqa: SIM115 (open all run long)
    progress = Progress(len(todo))
    pairs = 0
    jobs = {row["video_id"]: (row, entry) for row, entry in todo}
    tasks = [VideoTask(row["video_id"], row["path"], row["frames"]) for row, _ in todo]
    if scheduler is None:
        workers = pools.worker_count(p.workers, len(todo))
        scheduler = local_scheduler(settings["engine"], p, workers, task)
    results = scheduler.run(tasks)
    written = 0  # bytes of the records written by this run: the disk-full estimate
    finished = False
    try:
        for task_done, result in results:
            row, entry = jobs[task_done.video_id]
            record = Path(contracts.record_path(row["video_id"], out_dir))
            if isinstance(result, BaseException):  # a bad video, or a worker that died
                record.unlink(missing_ok=True)  # never leave a stale record behind
                failed.append({**row, "reason": _failure_reason(result)})
                progress.update(0)
                continue
            contracts.write_record(
                record,
                video_record(row["video_id"], row["label"], result, p, settings, entry["key"]),
            )
            entry = {**entry, **_record_stamp(record)}
            written += entry["record_size"]
            with contracts.disk_full_guard(out_dir / CACHE_LOG):
                log.write(json.dumps(entry) + "\n")
                log.flush()
            entries[row["video_id"]] = entry
            pairs += len(result.flow_x)
            progress.update(len(result.flow_x))
        finished = True
    except contracts.DiskFullError as exc:
        done = len(entries) - reused
        left = len(todo) - progress.done
        size = contracts.size_text
        needs = (
            f"the {left} videos left need about {size(written / done * left)}, at the "
            f"{size(written / done)} a record of the {done} this run wrote (those are kept, "
            "and reused)"
            if done
            else exc.needs
        )
        raise contracts.DiskFullError(exc.path, needs) from exc
    finally:
        results.close()  # stops the worker processes, also on an error or Ctrl-C
        progress.close()
        log.close()
        _finish(out_dir, entries, failed_csv, failed, quiet=not finished)
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


def local_scheduler(
    engine: str,
    p: FlowParams,
    workers: int,
    task: Callable[[str, int, FlowParams], VideoFlow] = flow_video,
) -> Scheduler:
    """The scheduler of the engine run: ``task`` computes one video (opencv), the keras engine
    batches of pairs (:func:`pipeline.flow_compute.batched_flow`)."""
    if engine == "keras":
        return KerasScheduler(p, workers, batched_flow)
    return OpenCVScheduler(p, pools.LocalExecutor(workers), task)


def run_flow_on(p: FlowParams, c: ClusterParams, rows: list[dict], d: DataParams) -> Summary:
    """:func:`run_flow` on the executor of ``cluster.executor``; with ``data.layout:
    rawframes`` each record is made from its frame folder (``rawframes_flow``), by the
    executor's workers too."""
    if d.layout == "rawframes":
        task = functools.partial(
            rawframes_flow, source_bound=d.rawframes_bound, rounding=d.rawframes_rounding
        )
        settings = rawframes_settings(p, d.rawframes_bound, d.rawframes_rounding)
        if c.executor == "local":
            return run_flow(p, rows, task=task, settings=settings)
        from pipeline import cluster

        with cluster.connect(c):
            scheduler = OpenCVScheduler(p, cluster.RayExecutor(c), task)
            return run_flow(p, rows, scheduler=scheduler, settings=settings)
    if c.executor == "local":
        return run_flow(p, rows)
    from pipeline import cluster

    with cluster.connect(c):
        scheduler, settings = ray_scheduler(p, c)
        return run_flow(p, rows, scheduler=scheduler, settings=settings)


def _record_stamp(record: Path) -> dict:
    """What tells a record untouched since it was logged: its size and mtime (as DVC's own
    state does); a record that differs is read whole and checked before it is reused."""
    st = record.stat()
    return {"record_size": st.st_size, "record_mtime_ns": st.st_mtime_ns}


def _finish(
    out_dir: Path, entries: dict[str, dict], failed_csv: Path, failed: list, quiet: bool
) -> None:
    """The cache log rewritten and the failed list written. ``quiet`` (another error is on its
    way out): a full disk here is not raised over it; the appended log still holds every
    finished record."""
    try:
        _rewrite_log(out_dir, entries)
        contracts.write_flow_failed(failed_csv, failed)
    except contracts.DiskFullError:
        if not quiet:
            raise


def _rewrite_log(out_dir: Path, entries: dict[str, dict]) -> None:
    ordered = sorted(entries.values(), key=lambda e: e["video_id"])  # same cache, same bytes
    contracts.write_text(out_dir / CACHE_LOG, "".join(json.dumps(e) + "\n" for e in ordered))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preview", metavar="VIDEO_ID", help="draw a flow preview PNG and exit")
    args = parser.parse_args(argv)
    try:
        if args.preview:
            from pipeline.flow_preview import preview

            print(f"flow: wrote {preview(args.preview)}")
            return
        params = load_params()
        rows = contracts.read_manifest()
        keras_here = (
            params.data.layout != "rawframes"
            and params.cluster.executor == "local"
            and resolve_engine(params.flow.engine) == "keras"
        )
        if keras_here:
            from pipeline import tvl1

            tvl1.use_compilation_cache(tvl1.COMPILATION_CACHE)
        with contracts.stage_lock("flow"), contracts.disk_full_guard(contracts.VIDEOS_DIR):
            summary = run_flow_on(params.flow, params.cluster, rows, params.data)
    except PipelineError as exc:
        sys.exit(f"flow: {exc}")
    print(summary.line())
    if keras_here:
        print(f"flow: keras engine: {tvl1.STATS.line()}")


if __name__ == "__main__":
    main()
