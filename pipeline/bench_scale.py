"""``python -m pipeline.bench scale``: the whole pipeline at growing dataset sizes.

For each size N (``--videos 1000,4000,13320``) a fresh DVC project (this one's code,
``dvc.yaml`` and ``params.yaml`` with :func:`scale_params` on top) writes a UCF101-shaped
synthetic set of N videos (``synthetic.ucf101_like``: 101 classes, UCF101's naming and split
lists, read through ``data.layout: ucf101`` as the real dataset is) and runs every stage in
order with ``dvc repro --single-item``, a stage at every size before the next stage (so that
the runs compared are seconds apart, not minutes: this machine's speed drifts). Per stage
and size it prints:

- ``wall s``: the ``dvc repro`` of that stage (DVC's hashing of deps and outs included);
- ``stage s``: the stage's own process, from its start to its exit;
- ``s/video``: wall s / N;
- ``cpu s``: the CPU seconds (user and system) of DVC, the stage process and the workers it
  waits for (``RUSAGE_CHILDREN``: not a daemon that outlives its parent): what the stage
  costs, whatever else the machine runs meanwhile;
- ``peak MB``: the stage process's peak resident memory (``ru_maxrss``, Linux's VmHWM), and
  ``workers MB``, the largest peak of its spawned worker processes (ingest's probes, flow's
  TV-L1 workers), counted apart: their VmHWM, read every 0.25 s while they live.

Both come from a ``sitecustomize`` module this benchmark puts on ``PYTHONPATH``, which makes
every Python process DVC starts for a stage append one JSON line as it exits. Then ``dvc
status`` and a no-op ``dvc repro`` are timed at each size, and the last line reads ``scale:
worst per-video growth X.XX (stage S), in CPU Z.ZZ (stage S), worst peak-memory growth Y.YY
(stage S), no-op repro N s at N``: the largest ratio, over stages, of s/video (of CPU s per
video, and of peak MB) at the largest size to that at the smallest. The table before it adds
each stage's marginal cost, (wall s at the largest size - at the smallest) / (the videos
between them): the cost of one more video with the fixed costs (imports, model building)
aside, the number to extrapolate from.

The sizes are cheap by design so that the pipeline's own overheads, not the arithmetic, are
measured: 64×64 frames (flow at 32×32 with a 2-scale, 2-warp TV-L1), 20 frames, the small
backbone on 28×28 crops, one epoch of each training stage, 10 clips per test video and their
mirrors. Kept in ``--keep DIR`` (default: a temporary folder, removed).
"""

from __future__ import annotations

import copy
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]

STAGES = (
    "synthesize",
    "ingest",
    "flow",
    "shard",
    "train_rgb",
    "train_flow",
    "train_fusion",
    "evaluate_rgb",
    "evaluate_flow",
    "evaluate_fusion",
    "evaluate_late",
    "report",
)

SITECUSTOMIZE = """\
import atexit, glob, json, multiprocessing, os, resource, sys, threading, time
_start = time.time()
_workers = {}  # pid -> peak kB of each spawned worker process seen

def _hwm(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0

def _poll():  # VmHWM only grows: the last look before a worker exits is (near) its peak
    while True:
        todo, seen = [os.getpid()], set()
        while todo:
            pid = todo.pop()
            seen.add(pid)
            for path in glob.glob(f"/proc/{pid}/task/*/children"):
                try:
                    with open(path) as f:
                        todo += [int(c) for c in f.read().split()]
                except OSError:
                    pass
        for pid in seen - {os.getpid()}:
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if b"multiprocessing" not in f.read():
                        continue  # not a spawned worker (a fork before its exec counts its parent)
                _workers[pid] = max(_workers.get(pid, 0), _hwm(pid))
            except OSError:
                pass
        time.sleep(0.25)

def _log():
    if os.path.basename(os.path.dirname(sys.argv[0])) != "pipeline":
        return
    line = {"stage": os.environ["DVC_STAGE"], "argv": sys.argv, "seconds": time.time() - _start,
            "peak_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
            "workers_kb": max(_workers.values(), default=0), "workers": len(_workers)}
    with open(os.environ["PIPELINE_SCALE_LOG"], "a") as f:
        f.write(json.dumps(line) + "\\n")

# a stage process, `python -m pipeline.X` (argv[0] is "-m" until runpy finds the module): not
# DVC itself, not a spawned worker ("-c")
if os.environ.get("DVC_STAGE") and os.environ.get("PIPELINE_SCALE_LOG") and sys.argv[:1] == ["-m"]:
    threading.Thread(target=_poll, daemon=True).start()
    atexit.register(_log)
"""
"""Put on ``PYTHONPATH`` of the stages: each stage process logs its time and peak memory."""


def scale_params(params: dict, videos: int) -> dict:
    """``params`` (params.yaml as a dict) set for the scale benchmark at ``videos`` videos."""
    p = copy.deepcopy(params)
    p["synthetic"].update(ucf101_like=videos, size=64, frames=20, seed=0)
    p["data"].update(layout="ucf101", root=p["synthetic"]["out"], lists=p["synthetic"]["out"])
    p["data"].update(split=1, min_frames=16)
    p["flow"].update(engine="opencv", size=32)
    p["flow"]["tvl1"].update(nscales=2, warps=2, inner_iterations=10, outer_iterations=5)
    p["clip"].update(frames=1, flow_stack=10, crop=28)
    p["model"].update(backbone="small", flow_backbone=None, num_classes=None)
    p["train"].update(epochs=1, weights="none", streams={"rgb": None, "flow": None})
    p["fusion"].update(epochs=1)
    p["eval"].update(clips=10, flip=True)
    return p


def make_project(dst: Path, videos: int) -> Path:
    """A fresh project in ``dst``: this one's code and dvc.yaml, scale params, a git repo."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in ("dvc.yaml", ".dvcignore", ".gitignore"):
        shutil.copy(ROOT / name, dst / name)
    for name in ("pipeline", "layers", ".dvc"):
        shutil.copytree(
            ROOT / name,
            dst / name,
            ignore=shutil.ignore_patterns("__pycache__", "tmp", "cache", "config.local"),
        )
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    text = yaml.safe_dump(scale_params(params, videos), sort_keys=False)
    (dst / "params.yaml").write_text(text)
    git = ["git", "-c", "user.email=bench@localhost", "-c", "user.name=bench"]
    for cmd in (["git", "init", "-q"], [*git, "add", "-A"], [*git, "commit", "-qm", "scale"]):
        subprocess.run(cmd, cwd=dst, check=True, capture_output=True)
    return dst


def _stage_log(project: Path) -> Path:
    """Where the stage processes of ``project`` log (:data:`SITECUSTOMIZE`)."""
    return project / ".bench_site" / "stages.jsonl"


def _env(project: Path) -> dict[str, str]:
    site = project / ".bench_site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    path = os.environ.get("PYTHONPATH")
    return {
        **os.environ,
        "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}",
        "PYTHONPATH": f"{site}:{path}" if path else str(site),
        "PIPELINE_SCALE_LOG": str(_stage_log(project)),
    }


def _cpu_of_children() -> float:
    """CPU seconds of this process's finished children and theirs (those waited for)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _dvc(project: Path, env: dict[str, str], *args: str) -> tuple[float, str, float]:
    """Seconds that ``dvc ARGS`` took in ``project``, what it printed, and the CPU seconds of
    it and all it ran; a failure stops the benchmark."""
    start, cpu = time.perf_counter(), _cpu_of_children()
    out = subprocess.run(["dvc", *args], cwd=project, env=env, capture_output=True, text=True)
    seconds, cpu = time.perf_counter() - start, _cpu_of_children() - cpu
    if out.returncode != 0:
        sys.exit(
            f"bench scale: dvc {' '.join(args)} failed in {project}:\n{out.stdout}{out.stderr}"
        )
    return seconds, out.stdout + out.stderr, cpu


def run_stage(project: Path, videos: int, stage: str) -> dict:
    """``dvc repro --single-item stage`` in ``project`` (of ``videos`` videos), measured; its
    line printed."""
    log = _stage_log(project)
    wall, _, cpu = _dvc(project, _env(project), "repro", "--single-item", stage)
    lines = [json.loads(x) for x in log.read_text().splitlines()] if log.exists() else []
    mine = [x for x in lines if x["stage"] == stage]
    r = {
        "wall_s": wall,
        "stage_s": sum(x["seconds"] for x in mine),
        "per_video_s": wall / videos,
        "cpu_s": cpu,
        "peak_mb": max((x["peak_kb"] for x in mine), default=0) / 1024,
        "workers_mb": max((x["workers_kb"] for x in mine), default=0) / 1024,
    }
    print(
        f"scale {videos:>6} {stage:<16} wall {r['wall_s']:8.1f} s  stage {r['stage_s']:8.1f} s"
        f"  {1000 * r['per_video_s']:7.2f} ms/video  peak {r['peak_mb']:7.0f} MB"
        f"  workers {r['workers_mb']:6.0f} MB  cpu {r['cpu_s']:7.1f} s",
        flush=True,
    )
    return r


def check_noop(project: Path, videos: int, last: str) -> dict:
    """``dvc status`` and a no-op ``dvc repro`` of ``last``, timed; stops if that repro runs
    anything."""
    env = _env(project)
    status, said, _ = _dvc(project, env, "status", last)
    noop, ran, _ = _dvc(project, env, "repro", last)
    if "Running stage" in ran or "up to date" not in said:
        sys.exit(f"bench scale: the repro after the stages was not a no-op:\n{said}\n{ran}")
    print(f"scale {videos:>6} dvc status {status:.1f} s, no-op dvc repro {noop:.1f} s", flush=True)
    return {"status_s": status, "noop_repro_s": noop}


def growth(results: dict[int, dict]) -> tuple[tuple[float, str], ...]:
    """The worst ratio over stages of s/video, of CPU s/video, and of peak MB (stage or
    workers), at the largest size to the smallest: ``((ratio, stage), ...)`` in that order."""
    n, m = min(results), max(results)
    small, large = results[n]["stages"], results[m]["stages"]
    time_growth = max((large[s]["per_video_s"] / small[s]["per_video_s"], s) for s in small)
    cpu_growth = max((large[s]["cpu_s"] / m / (small[s]["cpu_s"] / n), s) for s in small)

    def peak(row: dict) -> float:
        return max(row["peak_mb"], row["workers_mb"])

    memory = max((peak(large[s]) / max(peak(small[s]), 1.0), s) for s in small)
    return time_growth, cpu_growth, memory


def bench_scale(
    sizes: list[int], keep: str | None = None, upto: str = STAGES[-1]
) -> dict[int, dict]:
    """Each size in its own fresh project, the stages up to ``upto`` (:func:`run_stage`, a
    stage at every size before the next stage), then :func:`check_noop`; print the summary
    lines."""
    stages = STAGES[: STAGES.index(upto) + 1]
    base = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="bench-scale-"))
    print(
        f"scale benchmark: {', '.join(map(str, sizes))} videos, UCF101-shaped, "
        f"{len(os.sched_getaffinity(0))} cores, in {base}",
        flush=True,
    )
    results: dict[int, dict] = {n: {"stages": {}} for n in sizes}
    try:
        projects = {n: make_project(base / f"videos-{n}", n) for n in sizes}
        for stage in stages:  # the sizes one after the other, stage by stage: a stage's runs
            for n in sizes:  # are seconds apart, and this machine's speed drifts over minutes
                results[n]["stages"][stage] = run_stage(projects[n], n, stage)
        for n in sizes:
            results[n].update(check_noop(projects[n], n, stages[-1]))
    finally:
        if not keep:
            shutil.rmtree(base, ignore_errors=True)
    small, large = min(sizes), max(sizes)
    print(
        f"\n{'stage':<16}"
        + "".join(f" {f'{n} ms/video':>16} {'peak MB':>8}" for n in sizes)
        + (f" {'marginal ms/video':>18}" if large > small else "")
    )
    for stage in stages:
        cells = [results[n]["stages"][stage] for n in sizes]
        line = f"{stage:<16}" + "".join(
            f" {1000 * c['per_video_s']:16.2f} {max(c['peak_mb'], c['workers_mb']):8.0f}"
            for c in cells
        )
        if large > small:  # the cost of one more video, fixed costs (imports, models) aside
            extra = (
                results[large]["stages"][stage]["wall_s"]
                - results[small]["stages"][stage]["wall_s"]
            )
            line += f" {1000 * extra / (large - small):18.2f}"
        print(line)
    (t, ts), (c, cs), (m, ms) = growth(results)
    print(
        f"scale: worst per-video growth {t:.2f} (stage {ts}), in CPU {c:.2f} (stage {cs}), "
        f"worst peak-memory growth {m:.2f} (stage {ms}), no-op repro "
        f"{results[large]['noop_repro_s']:.1f} s at {large}"
    )
    return results
