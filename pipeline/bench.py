"""Benchmarks that print measured numbers (not tests).

    python -m pipeline.bench flow [--videos 4] [--frames 25] [--executor local|ray]
    python -m pipeline.bench reader [--seconds 20]
    python -m pipeline.bench train [--steps 20] [-S key=value ...]
    python -m pipeline.bench tvl1 [--pairs 8]
    python -m pipeline.bench compiles [--sizes 85x64,114x64,...] [--videos 8] [--buckets 1,32]
    python -m pipeline.bench rawframes [--videos 8] [--frames 100]
    python -m pipeline.bench scale [--videos 1000,4000,13320] [--upto STAGE] [--keep DIR]

``flow``: on the same 320×240 videos, frame pairs per second of (1) a bare
``DualTVL1OpticalFlow.calc`` loop on one core over frames decoded beforehand, (2) the flow stage
(``run_flow``: decode, resize, TV-L1, quantise, JPEG, record writing, cache) with one worker and
(3) with all cores. The last line is ``flow overhead ratio: X.XX  scaling efficiency: Y.YY``:
(2)/(1), and (3)/(cores × (2)). With ``--executor ray`` (2) and (3) run through a two-node
Ray cluster started on this machine (``ray.cluster_utils.Cluster``, loopback only, the cores
split between the nodes): (2) with one video in flight at a time, (3) with all in flight.

``reader``: training clips per second from shards at the paper's sizes (T = 5, tau = 5, L = 10,
224² multi-scale crops from 340×256 frames) in mode ``both``, with one core and with all cores
(each in its own process, pinned with ``sched_setaffinity`` before TensorFlow starts). The last
line is ``reader clips/s per core: X.X`` (all cores' rate / cores).

``train``: training clips per second of the configured model (``params.yaml``, with ``-S``
overrides; ``fusion`` by default, ``--stream rgb|flow`` for one stream) on random uint8 clips
held in memory, so only the device is measured, with the precision and XLA settings the
training stage would use. Ends with ``train clips/s: X.X (device)``.

``tvl1``: frame pairs per second of TV-L1 at 340×256 with ``flow.tvl1``: OpenCV on one core,
OpenCV on all cores (one process per core), and the keras engine (``pipeline.tvl1``, batches
of ``flow.batch`` pairs, after compiling) under every installed Keras backend, each in its own
process, on whatever device that backend sees (a GPU when there is one). Ends with
``keras tvl1 speedup vs one opencv core: X.X (device)`` for the fastest keras run.

``compiles``: the keras engine's flow stage (``run_flow``) on a folder of videos of mixed frame
sizes, under every installed Keras backend (TensorFlow and JAX), once per ``flow.bucket`` value,
each run in a fresh process: compiles, compile seconds and wall seconds. Under JAX each run is
made twice over one persistent compilation cache (``.cache/xla`` in a project): cold, then warm.
``--code DIR`` runs the stage of another checkout (a before/after comparison; cold runs only).

``scale``: every stage through ``dvc repro`` on UCF101-shaped synthetic sets of growing size,
each in a fresh DVC project, a stage at every size before the next stage: wall seconds,
seconds per video, peak memory and CPU seconds per stage and size, then ``dvc status`` and a
no-op ``dvc repro`` (``pipeline/bench_scale.py``). Ends with ``scale: worst per-video growth
X.XX (stage S), in CPU Z.ZZ (stage S), ...``.

``rawframes``: the cost of importing a denseflow frame tree (``data.layout: rawframes``) at
340×256: folders per second through ingest's probe (every image decoded), and frame pairs per
second through the flow stage's records with the flows copied (the tree's bound is ours) and
quantised again (bound 32), with one worker and all cores. The flows are smooth random fields
(what they hold does not change the cost). Ends with ``rawframes records pairs/s (flows
copied, best): X.X``, to hold against TV-L1's pairs/s (``flow``, ``tvl1``).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np

from pipeline import cluster, contracts
from pipeline.flow import Summary, run_flow
from pipeline.flow_compute import create_tvl1
from pipeline.flow_schedulers import ray_scheduler
from pipeline.params import FlowParams, load_params
from pipeline.synthesize import write_video


def _scene(seed: int, frames: int, width: int = 320, height: int = 240) -> np.ndarray:
    """A textured background drifting right with a bright blob moving down: real work for TV-L1."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, (height // 8 + 8, width // 8 + 8, 3)).astype(np.float32)
    tex = cv2.GaussianBlur(
        cv2.resize(coarse, None, fx=8, fy=8, interpolation=cv2.INTER_CUBIC), (0, 0), 2.0
    )
    out = np.empty((frames, height, width, 3), np.uint8)
    for t in range(frames):
        m = np.float32([[1, 0, -32 + 0.7 * t], [0, 1, -32]])
        frame = cv2.warpAffine(tex, m, (width, height), flags=cv2.INTER_CUBIC)
        cv2.circle(frame, (width // 2, 40 + 3 * t), 20, (255, 230, 200), -1, cv2.LINE_AA)
        out[t] = np.clip(frame, 0, 255)
    return out


def bench_flow(videos: int, frames: int, executor: str = "local") -> None:
    p = load_params().flow
    cores = len(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        rows = []
        for i in range(videos):
            path = tmp / f"bench{i}.avi"
            write_video(path, _scene(i, frames))
            rows.append({"video_id": path.stem, "path": str(path), "label": 0, "frames": frames})
        pairs = videos * (frames - 1)
        print(
            f"flow benchmark: {videos} videos x {frames} frames at 320x240 = {pairs} pairs, "
            f"OpenCV {cv2.__version__}, {cores} cores, TV-L1 {p.tvl1}, executor {executor}"
        )

        cv2.setNumThreads(1)
        decoded = []
        for row in rows:
            cap = cv2.VideoCapture(row["path"])
            grey = []
            while (frame := cap.read())[0]:
                grey.append(cv2.cvtColor(frame[1], cv2.COLOR_BGR2GRAY))
            decoded.append(grey)
        start = time.perf_counter()
        for grey in decoded:
            tvl1 = create_tvl1(p.tvl1)
            for a, b in zip(grey, grey[1:], strict=False):
                tvl1.calc(a, b, None)
        bare = pairs / (time.perf_counter() - start)
        print(f"bare calc() loop, 1 core:        {bare:7.2f} pairs/s")

        with contextlib.ExitStack() as stack:
            run = run_flow if executor == "local" else stack.enter_context(_ray_run(cores))
            rates = {}
            for workers in (1, cores):
                q = dataclasses.replace(p, workers=workers, size=None)
                start = time.perf_counter()
                summary = run(q, rows, tmp / f"out{workers}", tmp / f"failed{workers}.csv")
                assert summary.computed == videos and not summary.failed
                rates[workers] = pairs / (time.perf_counter() - start)
                label = f"flow stage, {workers} worker{'s' if workers > 1 else ''}:"
                print(f"{label:<32} {rates[workers]:7.2f} pairs/s")
        overhead = rates[1] / bare
        scaling = rates[cores] / (cores * rates[1])
        print(f"flow overhead ratio: {overhead:.2f}  scaling efficiency: {scaling:.2f}")


@contextlib.contextmanager
def _ray_run(cores: int) -> Iterator[Callable[..., Summary]]:
    """``run_flow`` through a two-node Ray cluster on this machine (``flow.workers`` videos in
    flight at a time); the cluster's processes are stopped after, by their own ids."""
    os.environ.setdefault(cluster.LOOPBACK_ONLY, "0")  # before Ray is imported: loopback only
    from ray.cluster_utils import Cluster

    loopback = {"node_ip_address": "127.0.0.1"}
    nodes = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": max(1, cores // 2), "include_dashboard": False, **loopback},
    )
    try:
        nodes.add_node(num_cpus=max(1, cores - cores // 2), **loopback)
        nodes.wait_for_nodes()
        raw = load_params().cluster
        c = dataclasses.replace(raw, executor="ray", address=nodes.address, cpus_per_video=1.0)
        with cluster.connect(c):

            def run(p: FlowParams, rows: list[dict], out: Path, failed: Path) -> Summary:
                scheduler, settings = ray_scheduler(
                    p, dataclasses.replace(c, max_in_flight=p.workers)
                )
                return run_flow(p, rows, out, failed, scheduler=scheduler, settings=settings)

            yield run
    finally:
        nodes.shutdown()


def _grey_pairs(pairs: int) -> np.ndarray:
    frames = _scene(0, pairs + 1, 340, 256)
    return np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames])


def _opencv_pairs(args: tuple) -> int:
    """Worker of the all-cores OpenCV measurement: the flow of pairs ``lo .. hi - 1``."""
    lo, hi, pairs = args
    cv2.setNumThreads(1)
    grey = _grey_pairs(pairs)
    tvl1 = create_tvl1(load_params().flow.tvl1)
    for i in range(lo, hi):
        tvl1.calc(grey[i], grey[i + 1], None)
    return hi - lo


def keras_tvl1_rate(pairs: int) -> tuple[float, str]:
    """Pairs/s of the keras engine on this process's backend and device, after compiling."""
    import keras

    from pipeline import tvl1

    p = load_params().flow
    grey = _grey_pairs(p.batch)
    i0, i1 = grey[:-1], grey[1:]
    i0, i1 = np.resize(i0, (p.batch, *i0.shape[1:])), np.resize(i1, (p.batch, *i1.shape[1:]))
    start = time.perf_counter()
    tvl1.tvl1(i0, i1, p.tvl1)  # compiles
    compile_s = time.perf_counter() - start
    calls = max(1, -(-pairs // p.batch))
    start = time.perf_counter()
    for _ in range(calls):
        tvl1.tvl1(i0, i1, p.tvl1)
    rate = calls * p.batch / (time.perf_counter() - start)
    device = "GPU" if tvl1.gpu_visible() else "CPU"
    print(f"# first call (compiling) {compile_s:.1f} s", file=sys.stderr)
    return rate, f"{keras.backend.backend()} {device}"


def bench_tvl1(pairs: int) -> None:
    import importlib.util
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    p = load_params().flow
    cores = len(os.sched_getaffinity(0))
    print(f"tvl1 benchmark: 340x256, OpenCV {cv2.__version__}, {cores} cores, {p.tvl1}")
    cv2.setNumThreads(1)
    grey = _grey_pairs(pairs)
    tvl1 = create_tvl1(p.tvl1)
    start = time.perf_counter()
    for i in range(pairs):
        tvl1.calc(grey[i], grey[i + 1], None)
    one = pairs / (time.perf_counter() - start)
    print(f"opencv, 1 core:                 {one:7.2f} pairs/s ({1000 / one:.0f} ms per pair)")
    n = max(pairs, cores)
    chunks = [(k * n // cores, (k + 1) * n // cores, n) for k in range(cores)]
    with ProcessPoolExecutor(cores, mp_context=get_context("spawn")) as pool:
        list(pool.map(_opencv_pairs, [(0, 1, 1)] * cores))  # start the workers
        start = time.perf_counter()
        done = sum(pool.map(_opencv_pairs, chunks))
    allcores = done / (time.perf_counter() - start)
    print(f"opencv, {cores} cores:{'':<{17 - len(str(cores))}}{allcores:7.2f} pairs/s")
    best = None
    for backend in ("tensorflow", "jax", "torch"):
        if importlib.util.find_spec(backend) is None:
            continue
        env = {**os.environ, "KERAS_BACKEND": backend}
        out = subprocess.run(
            [sys.executable, "-m", "pipeline.bench", "tvl1-rate", str(pairs)],
            env=env,
            capture_output=True,
            text=True,
        )
        if out.returncode != 0:
            print(f"keras ({backend}): failed\n{out.stderr[-2000:]}")
            continue
        rate, device = out.stdout.strip().splitlines()[-1].split(" ", 1)
        rate = float(rate)
        label = f"keras ({device}, batch {p.batch}):"
        print(f"{label:<32}{rate:7.2f} pairs/s ({1000 / rate:.0f} ms per pair)")
        if best is None or rate > best[0]:
            best = (rate, device)
    if best:
        print(f"keras tvl1 vs opencv on all cores: {best[0] / allcores:.2f}x ({best[1]})")
        print(f"keras tvl1 speedup vs one opencv core: {best[0] / one:.1f} ({best[1]})")


COMPILES_RUN = """
import dataclasses, json, sys, time
from pathlib import Path
from pipeline import flow
from pipeline.params import load_params
folder, bucket, cache = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
p = dataclasses.replace(load_params().flow, engine="keras", size=None, workers=1)
if hasattr(p, "bucket"):
    p = dataclasses.replace(p, bucket=bucket)
rows = json.loads((folder / "rows.json").read_text())
from pipeline import tvl1
if cache != "-" and hasattr(tvl1, "use_compilation_cache"):  # older code: none
    tvl1.use_compilation_cache(cache)
out = Path(sys.argv[4])
start = time.perf_counter()
summary = flow.run_flow(p, rows, out / "videos", out / "failed.csv")
wall = time.perf_counter() - start
stats = getattr(tvl1, "STATS", None)
print(json.dumps({
    "wall": wall, "pairs": summary.pairs, "failed": len(summary.failed),
    "compiles": stats.compiles if stats else None, "cached": stats.cached if stats else None,
    "compile_s": stats.seconds if stats else None,
}))
"""


def bench_compiles(
    sizes: list[tuple[int, int]], videos: int, frames: int, buckets: list[int], code: str | None
) -> None:
    import importlib.util
    import json

    env = {**os.environ, "PYTHONPATH": str(Path(code).resolve()) if code else os.getcwd()}
    print(
        f"compiles benchmark: {videos} videos of {len(sizes)} sizes "
        f"({', '.join(f'{w}x{h}' for w, h in sizes)}), {frames} frames each, "
        f"flow.batch {load_params().flow.batch}, {len(os.sched_getaffinity(0))} cores"
        + (f", the stage of {code}" if code else "")
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        rows = []
        for v in range(videos):
            w, h = sizes[v % len(sizes)]
            path = root / "raw" / f"mixed{v:03d}.avi"
            path.parent.mkdir(exist_ok=True)
            write_video(path, _scene(v, frames, w, h))
            rows.append({"video_id": path.stem, "path": str(path), "label": 0, "frames": frames})
        (root / "rows.json").write_text(json.dumps(rows))
        for backend in ("tensorflow", "jax"):
            if importlib.util.find_spec(backend) is None:
                continue
            for bucket in buckets:
                cache = str(root / f"xla-{bucket}") if backend == "jax" else "-"
                warm = backend == "jax" and not code  # another checkout: cold runs only
                for run in ("cold", "warm") if warm else ("",):
                    out = root / f"out-{backend}-{bucket}-{run}"
                    done = subprocess.run(
                        [sys.executable, "-c", COMPILES_RUN, str(root), str(bucket), cache, out],
                        env={**env, "KERAS_BACKEND": backend},
                        cwd=code or None,  # its params.yaml
                        capture_output=True,
                        text=True,
                    )
                    label = f"{backend} bucket {bucket}" + (f", {run} cache" if run else "")
                    if done.returncode != 0:
                        print(f"compiles {label}: failed\n{done.stderr[-2000:]}")
                        continue
                    r = json.loads(done.stdout.strip().splitlines()[-1])
                    made = "?" if r["compiles"] is None else r["compiles"]
                    loaded = f" ({r['cached']} loaded from the cache)" if r["cached"] else ""
                    secs = "" if r["compile_s"] is None else f" in {r['compile_s']:.1f} s"
                    print(
                        f"compiles {label:<32} {made} compiles{loaded}{secs}, "
                        f"wall {r['wall']:.1f} s for {r['pairs']} pairs ({r['failed']} failed)"
                    )


def _reader_corpus(root: Path, videos: int = 16, frames: int = 48) -> str:
    """Records and shards of 340×256 videos: textured frames and smooth flows, JPEG q95."""
    from pipeline.shard import write_shards

    p = load_params()
    jpeg = [cv2.IMWRITE_JPEG_QUALITY, p.flow.jpeg_quality]
    (root / "videos").mkdir(parents=True)
    rows = []
    for v in range(videos):
        scene = _scene(v, frames, 340, 256)
        rng = np.random.default_rng(v)
        coarse = rng.normal(0, 2, (frames - 1, 9, 12, 2)).astype(np.float32)
        rgb = [cv2.imencode(".jpg", f, jpeg)[1].tobytes() for f in scene]
        fx, fy = [], []
        for c in coarse:
            q = contracts.quantize_flow(
                cv2.resize(c, (340, 256), interpolation=cv2.INTER_CUBIC), 20.0
            )
            fx.append(cv2.imencode(".jpg", q[..., 0], jpeg)[1].tobytes())
            fy.append(cv2.imencode(".jpg", q[..., 1], jpeg)[1].tobytes())
        vid = f"bench{v:02d}"
        contracts.write_record(
            contracts.record_path(vid, root / "videos"),
            contracts.encode_record(
                video_id=vid,
                label=v % 4,
                height=256,
                width=340,
                flow_bound=20.0,
                rgb=rgb,
                flow_x=fx,
                flow_y=fy,
                flow_engine="bench",
                flow_params={},
                cache_key=vid,
            ),
        )
        rows.append({"video_id": vid, "label": v % 4, "class_name": f"c{v % 4}", "split": "train"})
    shard = dataclasses.replace(p.shard, min_shards=4)
    write_shards(rows, shard, str(root / "videos"), str(root / "shards"))
    return str(root / "shards")


def _reader_rate(shards: str, cores: int, seconds: float) -> float:
    """Clips/s of the training reader; call before TensorFlow is imported in this process."""
    os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[:cores]))
    from pipeline.dataset import clip_dataset

    p = load_params()
    clip = dataclasses.replace(
        p.clip,
        frames=5,
        stride=5,
        flow_stack=10,
        crop=224,
        scales=[1.0, 0.875, 0.75, 0.66],
        shuffle_buffer=16,
    )
    ds = clip_dataset(
        "train",
        dataclasses.replace(p, clip=clip),
        "both",
        training=True,
        batch_size=8,
        shards_dir=shards,
    ).repeat()
    it = iter(ds)
    for _ in range(3):  # warm-up: graph tracing, file opening, autotuning
        next(it)
    clips, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        x, y = next(it)
        clips += int(y.shape[0])
    return clips / (time.perf_counter() - start)


def bench_reader(seconds: float) -> None:
    cores = len(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory() as tmp:
        shards = _reader_corpus(Path(tmp))
        print(
            f"reader benchmark: T=5, tau=5, L=10, 224x224 crops of 340x256 frames, mode both, "
            f"{cores} cores"
        )
        rates = {}
        for n in sorted({1, cores}):
            cmd = [
                sys.executable,
                "-m",
                "pipeline.bench",
                "reader-rate",
                shards,
                str(n),
                str(seconds),
            ]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True)
            rates[n] = float(out.stdout.strip().splitlines()[-1])
            print(f"reader, {n} core{'s' if n > 1 else ''}: {rates[n]:7.1f} clips/s")
        print(f"reader clips/s per core: {rates[cores] / cores:.1f}")


def bench_train(overrides: list[str], stream: str, steps: int) -> None:
    import keras
    import tensorflow as tf
    import yaml

    from pipeline.model import apply_overrides, build_fused, build_stream, count_params
    from pipeline.params import PARAMS_FILE, parse_params
    from pipeline.train import precision_policy

    raw = yaml.safe_load(Path(PARAMS_FILE).read_text(encoding="utf-8"))
    params = parse_params(apply_overrides(raw, overrides))
    policy = precision_policy(params.train.mixed_precision)
    keras.mixed_precision.set_global_policy(policy)
    classes = params.model.num_classes or 101
    model = (
        build_fused(params, classes)
        if stream == "fusion"
        else build_stream(stream, params, classes)
    )
    outputs = list(model.output.keys())
    model.compile(
        optimizer=keras.optimizers.SGD(1e-3, momentum=0.9),
        loss={k: "sparse_categorical_crossentropy" for k in outputs},
        jit_compile=params.train.jit_compile,
    )
    b, c = params.train.batch_size, params.clip
    rng = np.random.default_rng(0)
    x = {
        "rgb": rng.integers(0, 256, (b, c.frames, c.crop, c.crop, 3), dtype=np.uint8),
        "flow": rng.integers(
            0, 256, (b, c.frames, c.crop, c.crop, 2 * c.flow_stack), dtype=np.uint8
        ),
    }
    if stream != "fusion":
        x = x[stream]
    y = {k: rng.integers(0, classes, b) for k in outputs}
    ds = tf.data.Dataset.from_tensors((x, y)).repeat()
    model.fit(ds, steps_per_epoch=3, epochs=1, verbose=0)  # compile, warm up
    start = time.perf_counter()
    model.fit(ds, steps_per_epoch=steps, epochs=1, verbose=0)
    rate = steps * b / (time.perf_counter() - start)
    gpus = tf.config.list_physical_devices("GPU")
    device = (
        tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU")
        if gpus
        else "CPU"
    )
    print(
        f"train benchmark: {model.name}, {count_params(model)} parameters, batch {b}, "
        f"T={c.frames}, "
        f"L={c.flow_stack}, {c.crop}x{c.crop}, {policy}, jit_compile={params.train.jit_compile}"
    )
    print(f"train clips/s: {rate:.1f} ({device})")


def _write_tree(root: Path, videos: int, frames: int) -> list[dict]:
    """A denseflow tree of ``videos`` folders at 340×256 and its manifest rows."""
    rows = []
    rng = np.random.default_rng(0)
    for i in range(videos):
        folder = root / "bench" / f"bench{i}"
        folder.mkdir(parents=True)
        for j, frame in enumerate(_scene(i, frames, 340, 256)):
            cv2.imwrite(str(folder / f"img_{j:05d}.jpg"), frame)
            if j < frames - 1:
                for c in "xy":
                    coarse = rng.normal(0, 4, (9, 11)).astype(np.float32)
                    v = cv2.resize(coarse, (340, 256), interpolation=cv2.INTER_CUBIC)
                    q = np.clip(np.round(255 * (np.clip(v, -20, 20) + 20) / 40), 0, 255)
                    cv2.imwrite(str(folder / f"flow_{c}_{j:05d}.jpg"), q.astype(np.uint8))
        rows.append({"video_id": folder.name, "path": str(folder), "label": 0, "frames": frames})
    return rows


def bench_rawframes(videos: int, frames: int) -> None:
    from functools import partial

    from pipeline import rawframes
    from pipeline.flow_compute import rawframes_flow, rawframes_settings
    from pipeline.ingest import probe_all

    p = load_params().flow
    cores = len(os.sched_getaffinity(0))
    pairs = videos * (frames - 1)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        rows = _write_tree(tmp, videos, frames)
        contracts.encode_record(
            video_id="warm",
            label=0,
            height=1,
            width=1,
            flow_bound=1.0,
            rgb=[b""],
            flow_x=[],
            flow_y=[],
            flow_engine="",
            flow_params={},
            cache_key="",
        )  # fmt: skip  (imports TF)
        print(
            f"rawframes benchmark: {videos} denseflow folders x {frames} frames at 340x256 = "
            f"{pairs} pairs, OpenCV {cv2.__version__}, {cores} cores"
        )
        for workers in (1, cores):
            start = time.perf_counter()
            probes = probe_all([Path(r["path"]) for r in rows], workers, 300, rawframes.probe)
            assert all(not isinstance(v, str) for v in probes.values()), probes
            rate = pairs / (time.perf_counter() - start)
            print(f"ingest probe, {workers} worker(s):            {rate:8.1f} pairs/s")
        rates = {}
        for bound, kind in ((p.bound, "copied"), (32.0, "quantised again")):
            for workers in (1, cores):
                q = dataclasses.replace(p, workers=workers, size=None)
                task = partial(rawframes_flow, source_bound=bound, rounding="round")
                out = tmp / f"out_{bound}_{workers}"
                start = time.perf_counter()
                summary = run_flow(q, rows, out, tmp / "failed.csv", task=task,
                                   settings=rawframes_settings(q, bound, "round"))  # fmt: skip
                assert summary.computed == videos and not summary.failed
                rates[bound, workers] = pairs / (time.perf_counter() - start)
                label = f"records, flows {kind}, {workers} worker(s):"
                print(f"{label:<40} {rates[bound, workers]:8.1f} pairs/s")
        best = max(rates[p.bound, w] for w in (1, cores))
        print(f"rawframes records pairs/s (flows copied, best): {best:.1f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Benchmarks that print measured numbers.")
    sub = parser.add_subparsers(dest="what", required=True)
    flow = sub.add_parser("flow", help="TV-L1 stage against a bare calc() loop")
    flow.add_argument("--videos", type=int, default=4)
    flow.add_argument("--frames", type=int, default=25)
    flow.add_argument("--executor", choices=("local", "ray"), default="local")
    reader = sub.add_parser("reader", help="training clips/s from shards, 1 core and all")
    reader.add_argument("--seconds", type=float, default=20.0)
    rate = sub.add_parser("reader-rate")  # one pinned measurement, run by `reader` itself
    rate.add_argument("shards")
    rate.add_argument("cores", type=int)
    rate.add_argument("seconds", type=float)
    trainer = sub.add_parser("train", help="training clips/s of the configured model")
    trainer.add_argument("--steps", type=int, default=20)
    trainer.add_argument("--stream", choices=("rgb", "flow", "fusion"), default="fusion")
    trainer.add_argument("-S", "--set", action="append", default=[], metavar="KEY=VALUE")
    tv = sub.add_parser("tvl1", help="TV-L1 pairs/s: OpenCV against the keras engine")
    tv.add_argument("--pairs", type=int, default=8)
    one = sub.add_parser("tvl1-rate")  # one keras measurement, run by `tvl1` per backend
    one.add_argument("pairs", type=int)
    raw = sub.add_parser("rawframes", help="importing a denseflow tree: probe and records")
    raw.add_argument("--videos", type=int, default=8)
    raw.add_argument("--frames", type=int, default=100)
    comp = sub.add_parser("compiles", help="keras engine compiles on mixed frame sizes")
    comp.add_argument(
        "--sizes",
        type=lambda t: [tuple(int(v) for v in x.split("x")) for x in t.split(",")],
        default=[(85, 64), (114, 64), (64, 114), (96, 64), (80, 64), (64, 64), (78, 64), (86, 64)],
        help="comma-separated WxH, one video each in turn",
    )
    comp.add_argument("--videos", type=int, default=8)
    comp.add_argument("--frames", type=int, default=6)
    comp.add_argument("--buckets", type=lambda t: [int(x) for x in t.split(",")], default=[1, 32])
    comp.add_argument("--code", metavar="DIR", help="run the flow stage of this checkout")
    scale = sub.add_parser("scale", help="every stage at growing dataset sizes, through DVC")
    scale.add_argument(
        "--videos",
        type=lambda t: [int(x) for x in t.split(",")],
        default=[1000, 4000, 13320],
        help="comma-separated sizes (each at least 303: three groups a class)",
    )
    scale.add_argument("--keep", metavar="DIR", help="keep the projects in DIR")
    scale.add_argument(
        "--upto", metavar="STAGE", default="report", help="run the stages up to this one"
    )
    args = parser.parse_args(argv)
    if args.what == "scale":
        from pipeline.bench_scale import bench_scale

        bench_scale(args.videos, args.keep, args.upto)
    elif args.what == "compiles":
        bench_compiles(args.sizes, args.videos, args.frames, args.buckets, args.code)
    elif args.what == "rawframes":
        bench_rawframes(args.videos, args.frames)
    elif args.what == "tvl1":
        bench_tvl1(args.pairs)
    elif args.what == "tvl1-rate":
        rate, device = keras_tvl1_rate(args.pairs)
        print(f"{rate} {device}")
    elif args.what == "train":
        bench_train(args.set, args.stream, args.steps)
    elif args.what == "flow":
        bench_flow(args.videos, args.frames, args.executor)
    elif args.what == "reader":
        bench_reader(args.seconds)
    else:
        print(_reader_rate(args.shards, args.cores, args.seconds))


if __name__ == "__main__":
    main()
