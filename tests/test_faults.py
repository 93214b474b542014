"""Faults a long run meets (docs/faults.md): a process killed at any point, a
full disk, two runs at once, a damaged file. Every stage resumes to the outputs of an
uninterrupted run, or refuses with one message that names the file and the fix.

The kills are real SIGKILLs, at chosen points: a ``sitecustomize`` module on ``PYTHONPATH``
makes a stage's own process (``python -m pipeline.X``: not DVC, not a spawned worker) kill
itself just before its K-th rename onto a path matching a pattern, i.e. with that file whole
under its temporary name and not yet under its real one. The reference is the shared tiny
project of ``tests/conftest.py`` (``tiny_repro``), run once without faults.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml

from .conftest import copy_project

SITE = r"""
import fnmatch, os, signal, sys
_spec = os.environ.get("FAULT_KILL_AT")
if _spec and sys.argv[:1] == ["-m"]:  # python -m pipeline.X itself (not DVC, not a worker)
    _pattern, _, _k = _spec.rpartition("#")
    _hits = [0]
    def _wrap(real):
        def rename(src, dst, *args, **kwargs):
            path = os.path.relpath(os.fspath(dst))
            if fnmatch.fnmatch(path, _pattern):
                _hits[0] += 1
                if _hits[0] == int(_k):
                    os.kill(os.getpid(), signal.SIGKILL)
            return real(src, dst, *args, **kwargs)
        return rename
    os.replace, os.rename = _wrap(os.replace), _wrap(os.rename)
"""

KILLS = {
    "synthesize": ["data/raw/synthetic#1"],  # its one write: the whole set, renamed into place
    "ingest": ["data/rejected.csv#1", "data/manifest.csv#1"],  # the first and last of three
    "flow": ["data/videos/*.tfrecord#4", "data/flow_failed.csv#1"],
    "shard": ["data/shards#1"],  # the finished set, moved into place
    # between an epoch's checkpoint and its state.json, then before the model is in place
    "train_rgb": ["checkpoints/rgb/state.json#1", "models/rgb.keras#1"],
    "train_flow": ["models/flow.keras#1"],
    "train_fusion": ["models/fusion.keras#1"],
    "evaluate_rgb": ["metrics/rgb_confusion.png#1"],  # the last of its five writes
    "evaluate_flow": ["metrics/flow.json#1"],  # the second
    "evaluate_fusion": ["metrics/fusion_confusion.png#1"],
    "evaluate_late": ["scores/late.npz#1", "metrics/late_confusion.png#1"],  # first and last
    "report": ["reports/summary.md#1", "reports/summary.png#1"],
}
"""Per stage, where its runs are killed, one after the other (each run resumes what the one
before left), after the run that met a full disk: that one stops early or in the middle (flow
after about half its records, shard at its second shard, training at its first checkpoint,
evaluation at its third file), the kills add the middle and the final write."""


def _env(site: Path | None = None, **extra: str) -> dict[str, str]:
    env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}"}
    if site is not None:
        env["PYTHONPATH"] = f"{site}:{env['PYTHONPATH']}" if env.get("PYTHONPATH") else str(site)
    return {**env, **extra}


def _site(tmp_path: Path) -> Path:
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(SITE)
    return site


def _stages(project: Path) -> dict:
    return yaml.safe_load((project / "dvc.yaml").read_text())["stages"]


def outputs(project: Path, stage: str) -> list[str]:
    """The paths ``stage`` writes (outs, metrics, plots of dvc.yaml), ``${...}`` resolved."""
    params = yaml.safe_load((project / "params.yaml").read_text())

    def resolve(path: str) -> str:
        def value(m: re.Match) -> str:
            node = params
            for part in m.group(1).split("."):
                node = node[part]
            return str(node)

        return re.sub(r"\$\{([^}]+)\}", value, path)

    s = _stages(project)[stage]
    paths = []
    for key in ("outs", "metrics", "plots"):
        for item in s.get(key, []):
            paths.append(resolve(next(iter(item)) if isinstance(item, dict) else item))
    return paths


def _keras_weights(path: Path) -> list[np.ndarray]:
    import keras

    import layers  # noqa: F401  (the custom layers)

    return keras.saving.load_model(path, compile=False).get_weights()


def difference(ours: Path, reference: Path) -> str | None:
    """How the output ``ours`` differs from ``reference``, or None. Bytes, except: a `.keras`
    file (a zip with the time it was saved) by its weights, DVCLive's curves without their
    timestamps and training speeds (clips/s), and the flow cache log without the records'
    mtimes."""
    if reference.is_dir():
        if not ours.is_dir():
            return f"{ours} is not a folder"
        names = {p.relative_to(reference) for p in reference.rglob("*") if p.is_file()}
        mine = {p.relative_to(ours) for p in ours.rglob("*") if p.is_file()}
        if names != mine:
            return f"{ours}: files {sorted(map(str, mine ^ names))[:5]} differ"
        for name in sorted(names):
            if why := difference(ours / name, reference / name):
                return why
        return None
    if not ours.is_file():
        return f"{ours} is missing"
    if ours.suffix == ".keras":
        a, b = _keras_weights(ours), _keras_weights(reference)
        same = len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
        return None if same else f"{ours}: weights differ"
    if ours.suffix == ".tsv":  # DVCLive: [timestamp,] step, value; clips/s: a measured speed
        rows = []
        for path in (ours, reference):
            table = list(csv.reader(path.open(), delimiter="\t"))
            keep = [i for i, k in enumerate(table[0]) if k not in ("timestamp", "clips_per_s")]
            rows.append([[row[i] for i in keep] for row in table])
        return None if rows[0] == rows[1] else f"{ours}: {rows[0]} != {rows[1]}"
    if ours.name == "metrics.json" and "dvclive" in ours.parts:
        a, b = ({k: v for k, v in json.loads(p.read_text()).items() if k != "clips_per_s"}
                for p in (ours, reference))  # fmt: skip
        return None if a == b else f"{ours}: {a} != {b}"
    if ours.name == "_cache.jsonl":
        stamps = ("record_mtime_ns",)
        entries = [
            [{k: v for k, v in json.loads(line).items() if k not in stamps} for line in lines]
            for lines in (ours.read_text().splitlines(), reference.read_text().splitlines())
        ]
        return None if entries[0] == entries[1] else f"{ours}: entries differ"
    return None if ours.read_bytes() == reference.read_bytes() else f"{ours}: bytes differ"


def partial_outputs(project: Path, reference: Path, stage: str) -> list[str]:
    """What of ``stage``'s outputs is visible under its real name and is not the reference's
    (a file cut short, a folder with a file too many or too few). A folder the stage fills
    one file at a time (data/videos: its records and cache log) may lack files."""
    problems = []
    for out in outputs(project, stage):
        ours, ref = project / out, reference / out
        if not ours.exists():
            continue
        if out == "data/videos":
            for f in ours.iterdir():  # a temporary name is no real one: ignored
                if f.suffix == ".tmp" or f.name == "_cache.jsonl":
                    continue
                if why := difference(f, ref / f.name):
                    problems.append(why)
            continue
        if why := difference(ours, ref):
            problems.append(why)
    return problems


@contextlib.contextmanager
def small_disk(path: Path, size: int) -> Iterator[str | None]:
    """A tmpfs of ``size`` bytes mounted at ``path`` for the block; yields None, or why it
    could not be mounted (it needs root, or CAP_SYS_ADMIN in a container)."""
    path.mkdir(parents=True, exist_ok=True)
    mount = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    try:
        yield (
            mount.stderr.strip() or f"mount exited {mount.returncode}" if mount.returncode else None
        )
    finally:
        if not mount.returncode:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def _bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def _stage_run(project: Path, stage: str, env: dict) -> subprocess.CompletedProcess:
    cmd = _stages(project)[stage]["cmd"].split()
    assert cmd[0] == "python"
    return subprocess.run(
        [sys.executable, *cmd[1:]], cwd=project, env=env, capture_output=True, text=True
    )


SIZE = r"[\d.]+ (bytes|kB|MB|GB)"
"""A size as the messages write it (contracts.size_text)."""


def disk_full(stage: str, project: Path, reference: Path) -> tuple[list[str], str]:
    """``stage`` run with room on its disk for about half of what it writes: it must stop with
    one message naming the path, the space free and the space needed, and leave nothing
    partial under a real name. (What went wrong, the message.)"""
    need = sum(_bytes(reference / out) for out in outputs(reference, stage))
    ballast = project.parent / "ballast"
    with open(ballast, "wb") as f:
        os.posix_fallocate(f.fileno(), 0, shutil.disk_usage(project).free - max(need // 2, 4096))
    try:
        run = _stage_run(project, stage, _env())
    finally:
        ballast.unlink()
    said = run.stderr.strip().splitlines()[-1] if run.stderr.strip() else ""
    if run.returncode != 1 or "Traceback" in run.stderr or "no space left on the dev" not in said:
        return [f"{stage} on a full disk: exit {run.returncode}: {run.stderr[-3000:]}"], said
    problems = []
    where = said.split("no space left on the device of ", 1)[1].split(" (", 1)[0]
    if not any(where.startswith(p) for p in (*outputs(project, stage), "checkpoints", "dvclive")):
        problems.append(f"{stage}: the message names {where}, none of its outputs: {said}")
    if "free there" not in said or not re.search(
        rf"needs? (about |more than (the )?)?{SIZE}", said
    ):
        problems.append(f"{stage}: the message does not say the space free and needed: {said}")
    problems += [f"{stage} on a full disk: {p}" for p in partial_outputs(project, reference, stage)]
    return problems, said


def fault_chain(stage: str, reference: Path, work: Path, site: Path, disk: bool) -> dict:
    """``stage`` in a copy of ``reference`` without its outputs: run out of disk (``disk``:
    the copy is on a small filesystem), then killed at each of :data:`KILLS`, then `dvc repro`
    of it. Returns what went wrong (``problems``) and the disk-full message (``said``)."""
    project = copy_project(reference, work / "project", cache=False)
    for out in outputs(project, stage):
        path = project / out
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    shutil.rmtree(project / "checkpoints", ignore_errors=True)
    problems, said, kept = [], "", 0
    if disk:
        problems, said = disk_full(stage, project, reference)
        kept = len(list((project / "data/videos").glob("*.tfrecord"))) if stage == "flow" else 0
    for spec in KILLS[stage]:
        run = _stage_run(project, stage, _env(site, FAULT_KILL_AT=spec))
        if run.returncode != -signal.SIGKILL:
            problems.append(f"{stage}: not killed at {spec} (exit {run.returncode}): {run.stderr}")
            continue
        partial = partial_outputs(project, reference, stage)
        problems += [f"{stage} killed at {spec}: {p}" for p in partial]
    run = subprocess.run(
        ["dvc", "repro", "--single-item", stage],
        cwd=project,
        env=_env(),
        capture_output=True,
        text=True,
    )
    if run.returncode or f"Running stage '{stage}'" not in run.stdout:
        problems.append(f"{stage}: dvc repro after the faults: {run.stdout}{run.stderr}")
        return {"problems": problems, "said": said}
    for out in outputs(project, stage):
        if why := difference(project / out, reference / out):
            problems.append(f"{stage} after the faults and dvc repro: {why}")
    reused = re.search(r"\((\d+) reused from cache", run.stdout)
    if stage == "flow" and not (reused and int(reused.group(1)) >= max(kept, 1)):
        problems.append(f"flow kept {kept} records on the full disk; then: {run.stdout}")
    return {"problems": problems, "said": said}


def test_every_stage_survives_a_full_disk_and_kills_anywhere(tiny_repro, tmp_path):
    """Every stage, in a copy of the reference project on a small filesystem of its own:

    - run with room for half of what it writes, it stops with one line naming the path, the
      space free and the space needed, and leaves nothing partial under a real name (flow
      keeps the records it finished);
    - then killed early, in the middle and before its final write (each run picking up what
      the one before left), it never shows a partial output under its real name;
    - then `dvc repro` of it ends with the outputs of the run that met no fault, and flow
      reuses the records finished before the faults.

    Two stages at a time (2 cores). Where no filesystem can be mounted, the kills run on the
    local disk and the test is then skipped for its disk-full part, saying why."""
    reference = tiny_repro[0]
    site = _site(tmp_path)
    assert set(KILLS) == set(_stages(reference))
    size = _bytes(reference) + (16 << 20)
    with contextlib.ExitStack() as stack:
        why = {s: stack.enter_context(small_disk(tmp_path / s, size)) for s in KILLS}
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            runs = {
                s: pool.submit(fault_chain, s, reference, tmp_path / s, site, why[s] is None)
                for s in KILLS
            }
            results = {s: run.result() for s, run in runs.items()}
    for stage, result in results.items():
        print(f"{stage} on a full disk: {result['said']}")  # docs/faults.md
    problems = [p for result in results.values() for p in result["problems"]]
    assert not problems, "\n".join(problems)
    if unmounted := {w for w in why.values() if w}:
        pytest.skip(f"the kills passed; no small filesystem could be mounted: {unmounted}")


# ---- two runs at once ----------------------------------------------------------------------

SITE_PAUSE = r"""
import fnmatch, os, sys, time
_pause = os.environ.get("FAULT_PAUSE_AT")
if _pause and sys.argv[:1] == ["-m"]:
    _pattern, _, _until = _pause.rpartition("#")
    _real = os.replace
    def _replace(src, dst, *args, **kwargs):
        if fnmatch.fnmatch(os.path.relpath(os.fspath(dst)), _pattern):
            while not os.path.exists(_until):  # held here until the test says go on
                time.sleep(0.05)
        return _real(src, dst, *args, **kwargs)
    os.replace = _replace
"""


def test_two_runs_at_once_one_is_refused_and_a_killed_dvc_repro_resumes(tiny_repro, tmp_path):
    """A `dvc repro` holds flow at its first record: a second `dvc repro` is refused by DVC's
    lock and `python -m pipeline.flow` by hand by the stage's own lock, each naming the first
    run's process. Then the node dies (the first run's DVC, stage and workers killed
    together): the next `dvc repro` goes past DVC's stale lock and ends with the reference's
    records, reusing those finished before."""
    reference = tiny_repro[0]
    project = copy_project(reference, tmp_path / "project", cache=False)
    shutil.rmtree(project / "data/videos")
    (project / "data/flow_failed.csv").unlink()
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITE_PAUSE)
    go = tmp_path / "go"
    first = subprocess.Popen(
        ["dvc", "repro", "--single-item", "flow"],
        cwd=project,
        env=_env(site, FAULT_PAUSE_AT=f"data/videos/*.tfrecord#{go}"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        lock = project / ".locks/flow.lock"
        deadline = time.monotonic() + 120
        while not (lock.exists() and lock.read_text()) or not list(
            (project / "data/videos").glob("*.tfrecord.tmp")
        ):
            assert time.monotonic() < deadline and first.poll() is None, first.communicate()[0]
            time.sleep(0.1)
        holder = lock.read_text()
        second = subprocess.run(
            ["dvc", "repro", "--single-item", "flow"], cwd=project, env=_env(),
            capture_output=True, text=True,
        )  # fmt: skip
        assert second.returncode != 0
        assert "is busy, it is being blocked by:" in second.stderr, second.stderr
        assert f"(PID {first.pid}): " in second.stderr and "dvc repro" in second.stderr
        by_hand = subprocess.run(
            [sys.executable, "-m", "pipeline.flow"], cwd=project, env=_env(),
            capture_output=True, text=True,
        )  # fmt: skip
        said = _one_line(by_hand)
        assert said.startswith("flow: another flow run is working in this project: pid ")
        assert holder.strip() in said and ".locks/flow.lock" in said
        assert "python -m pipeline.flow" in holder
        go.touch()  # the first run goes on; kill it when it has written a few records
        while len(list((project / "data/videos").glob("*.tfrecord"))) < 3:
            assert time.monotonic() < deadline and first.poll() is None
            time.sleep(0.02)
    finally:
        go.touch()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(first.pid, signal.SIGKILL)  # DVC, the stage and its workers at once
        first.wait()
    done = len((project / "data/videos/_cache.jsonl").read_text().splitlines())
    again = subprocess.run(
        ["dvc", "repro", "--single-item", "flow"], cwd=project, env=_env(),
        capture_output=True, text=True,
    )  # fmt: skip
    assert again.returncode == 0, again.stdout + again.stderr
    # every record the killed run finished (logged) is reused, and only those
    assert f"({done} reused from cache, {16 - done} computed" in again.stdout, again.stdout
    assert 3 <= done < 16, again.stdout
    for out_path in outputs(project, "flow"):
        assert difference(project / out_path, reference / out_path) is None


# ---- damaged files between stages ----------------------------------------------------------


def _one_line(run: subprocess.CompletedProcess) -> str:
    assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr
    return run.stderr.strip().splitlines()[-1]


def test_damaged_records_are_computed_again_and_never_packed(tiny_repro, tmp_path, monkeypatch):
    """A record cut short and one with a flipped byte (the same size): shard refuses both,
    naming them and the fix; flow's cache takes them for missing and computes them again, to
    the reference's bytes; then shard packs the reference's shards."""
    from pipeline import flow, shard
    from pipeline.contracts import DamagedInputError, read_manifest
    from pipeline.params import load_params

    reference = tiny_repro[0]
    project = copy_project(reference, tmp_path / "project", cache=False)
    monkeypatch.chdir(project)
    records = sorted((project / "data/videos").glob("*.tfrecord"))
    cut, flipped = records[0], records[5]
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    data = bytearray(flipped.read_bytes())
    data[len(data) // 2] ^= 0x10
    flipped.write_bytes(bytes(data))
    params, rows = load_params(), read_manifest()
    shards = {p.name: p.read_bytes() for p in (project / "data/shards").iterdir()}
    with pytest.raises(DamagedInputError) as refused:
        shard.write_shards(rows, params.shard)
    said = str(refused.value)
    assert "2 per-video records are damaged" in said and "dvc repro flow" in said
    size = (reference / "data/videos" / cut.name).stat().st_size
    assert f"data/videos/{cut.name} (cut short: record 1 ends after {size // 2} of its" in said
    assert f"data/videos/{flipped.name} (changed bytes: record 1's data fails its CRC" in said
    assert {p.name: p.read_bytes() for p in (project / "data/shards").iterdir()} == shards
    assert not (project / "data/shards.tmp").exists()
    summary = flow.run_flow(params.flow, rows)
    assert (summary.reused, summary.computed) == (len(records) - 2, 2)
    for path in (cut, flipped):
        assert path.read_bytes() == (reference / "data/videos" / path.name).read_bytes()
    shard.write_shards(rows, params.shard)
    assert difference(project / "data/shards", reference / "data/shards") is None


def test_damaged_shards_models_scores_and_metrics_are_refused_by_name(
    tiny_repro, tmp_path, monkeypatch
):
    """Training and evaluation never start on a shard cut short or changed; evaluation and the
    fused net refuse a model cut short, late fusion scores that are not an .npz, the report a
    metrics file that is not JSON: each stage's main exits with one line naming the file and
    the command that fixes it (run here in this process: the same main, no process start)."""
    from pipeline import evaluate, report, train

    project = copy_project(tiny_repro[0], tmp_path / "project", cache=False)
    monkeypatch.chdir(project)
    index = json.loads((project / "data/shards/index.json").read_text())
    train_shard = project / "data/shards" / index["shards"][0]["file"]
    test_shard = next(s["file"] for s in index["shards"] if s["split"] == "test")
    original = train_shard.read_bytes()
    mains = {"pipeline.train": train.main, "pipeline.evaluate": evaluate.main,
             "pipeline.report": report.main}  # fmt: skip

    def run(module: str, *args: str) -> str:
        with pytest.raises(SystemExit) as stopped:
            mains[module](list(args))
        said = str(stopped.value.code)
        assert "\n" not in said and "Traceback" not in said
        return said

    train_shard.write_bytes(original[:-100])
    said = run("pipeline.train", "--stream", "rgb")
    assert said.startswith(f"train rgb: data/shards/{train_shard.name} is damaged (cut short: ")
    assert "dvc checkout data/shards" in said and "dvc repro -f shard" in said
    flipped = bytearray(original)
    flipped[len(flipped) // 3] ^= 1
    train_shard.write_bytes(bytes(flipped))
    said = run("pipeline.train", "--stream", "flow")
    assert f"data/shards/{train_shard.name} is damaged (its bytes changed" in said
    train_shard.write_bytes(original)
    (project / "data/shards" / test_shard).write_bytes(b"")
    said = run("pipeline.evaluate", "--stream", "flow")
    assert f"data/shards/{test_shard} is damaged (cut short" in said

    model = project / "models/rgb.keras"
    model.write_bytes(model.read_bytes()[:1000])
    said = run("pipeline.evaluate", "--stream", "rgb")
    assert said.startswith("evaluate rgb: models/rgb.keras is damaged (not a whole .keras file")
    assert "dvc checkout models/rgb.keras" in said and "dvc repro -f train_rgb" in said
    (project / "scores/flow.npz").write_bytes(b"not an npz")
    said = run("pipeline.evaluate", "--stream", "late")
    assert "scores/flow.npz is damaged" in said and "dvc repro -f evaluate_flow" in said
    (project / "metrics/fusion.json").write_text('{"top1": 0.5,')
    said = run("pipeline.report")
    assert said.startswith("report: metrics/fusion.json is damaged (not JSON")
    assert "dvc checkout metrics/fusion.json" in said


# ---- the tools that write: export, weights import, ablate ----------------------------------


def _killed(cmd: list[str], cwd: Path, site: Path, spec: str) -> None:
    run = subprocess.run(cmd, cwd=cwd, env=_env(site, FAULT_KILL_AT=spec), capture_output=True)
    assert run.returncode == -signal.SIGKILL, (spec, run.returncode, run.stderr[-2000:])


def test_a_killed_export_run_again_writes_the_tree_of_an_uninterrupted_one(
    tiny_repro, tmp_path, monkeypatch
):
    """`python -m pipeline.export rawframes` killed in the middle (before its third video is
    in place) and again before its last write (rawframes.json), then run again: the same
    tree, file for file, as an export that was never killed, and no video folder partial."""
    from pipeline import export

    project = copy_project(tiny_repro[0], tmp_path / "project", cache=False)
    monkeypatch.chdir(project)
    export.main(["rawframes", "frames"])
    (project / "frames").rename(project / "whole")  # its lists name the folder: frames
    site = _site(tmp_path)
    cmd = [sys.executable, "-m", "pipeline.export", "rawframes", "frames"]
    _killed(cmd, project, site, "frames/*/*#3")
    done = [p for p in (project / "frames").glob("*/*") if not p.name.endswith(".tmp")]
    assert len(done) == 2
    for folder in done:  # in place means whole
        assert (
            difference(folder, project / "whole" / folder.relative_to(project / "frames")) is None
        )
    _killed(cmd, project, site, "frames/rawframes.json#1")
    export.main(["rawframes", "frames"])

    def tree(root: Path) -> dict[str, bytes]:
        return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}

    assert tree(project / "frames") == tree(project / "whole")


def test_a_killed_weights_import_run_again_writes_the_same_bytes(tmp_path, monkeypatch):
    """`python -m pipeline.weights import` killed before its write (the .h5 whole under its
    temporary name), then run again: no file under the real name in between, and then the
    bytes of an uninterrupted import (HDF5 without object times)."""
    from pipeline import weights

    from .test_weights import _vgg_m_layers, write_mat

    monkeypatch.chdir(tmp_path)
    write_mat(tmp_path / "vgg-m.mat", _vgg_m_layers())
    weights.main(["import", "vgg-m.mat", "--out", "whole.h5"])
    site = _site(tmp_path)
    cmd = [sys.executable, "-m", "pipeline.weights", "import", "vgg-m.mat", "--out", "out.h5"]
    _killed(cmd, tmp_path, site, "out.h5#1")
    assert not (tmp_path / "out.h5").exists()
    weights.main(["import", "vgg-m.mat", "--out", "out.h5"])
    assert (tmp_path / "out.h5").read_bytes() == (tmp_path / "whole.h5").read_bytes()


FAKE_DVC = """#!/bin/sh
# `dvc` for the ablate test: `exp run` writes the row's params into params.yaml as DVC does,
# then takes its time (FAKE_DVC=slow) or fails; `exp show` knows no experiments.
case "$1 $2" in
  "exp show") echo "[]" ;;
  "exp run")
    echo "# $*" >> params.yaml
    if [ "$FAKE_DVC" = slow ]; then sleep 60; fi
    echo "ERROR: failed to reproduce" >&2; exit 1 ;;
  *) ;;
esac
"""


def test_a_killed_ablate_gives_the_user_back_their_params_yaml(tmp_path):
    """`dvc exp run -S` leaves a row's params in params.yaml while the row runs: an ablate
    killed then (with its `dvc`) leaves them there, and the next ablate puts the user's
    params.yaml back before anything else."""
    from .conftest import ROOT

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "dvc").write_text(FAKE_DVC)
    (bin_dir / "dvc").chmod(0o755)
    project = tmp_path / "project"
    project.mkdir()
    mine = (ROOT / "params.yaml").read_text() + "# mine\n"
    (project / "params.yaml").write_text(mine)
    shutil.copy(ROOT / "dvc.yaml", project / "dvc.yaml")
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    env = _env(PATH=f"{bin_dir}:{os.path.dirname(sys.executable)}:{os.environ['PATH']}")
    cmd = [sys.executable, "-m", "pipeline.ablate", "methods", "--rows", "conv"]
    run = subprocess.Popen(
        cmd, cwd=project, env={**env, "FAKE_DVC": "slow"}, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while (project / "params.yaml").read_text() == mine:
            assert time.monotonic() < deadline and run.poll() is None
            time.sleep(0.05)
    finally:
        os.killpg(run.pid, signal.SIGKILL)  # ablate and its dvc, as a dying node would
        run.wait()
    assert (project / "params.yaml").read_text() != mine  # the row's, as DVC left them
    again = subprocess.run(cmd, cwd=project, env=env, capture_output=True, text=True)
    assert "a killed run left an experiment's params.yaml: yours is back" in again.stdout
    assert again.returncode == 1 and "ablate: " in again.stderr  # the fake dvc fails the row
    assert (project / "params.yaml").read_text() == mine
    assert not (project / ".locks/ablate-params.yaml").exists()
