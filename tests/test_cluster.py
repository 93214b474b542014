"""Ingest and flow on a real two-node Ray cluster (``ray.cluster_utils.Cluster``: a raylet per
node, one CPU each, on 127.0.0.1 only): the local executor's manifest and byte-identical
records, a lost node and a crashing video cost nothing else, a wrong address fails fast.

The cluster's processes are started by this module and stopped by ``Cluster.shutdown`` (their
own ids); the scratch projects' private Ray instances are stopped by the stage that started
them (``ray.shutdown``).
"""

import os

# Before Ray is imported: every node stays on 127.0.0.1 (on Linux Ray otherwise swaps in the
# machine's interface address; no traffic may leave loopback on the test machines).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import csv  # noqa: E402
import dataclasses  # noqa: E402
import functools  # noqa: E402
import json  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import yaml  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402

from pipeline import cluster, contracts  # noqa: E402
from pipeline import flow as fl  # noqa: E402
from pipeline import ingest as ing  # noqa: E402
from pipeline.flow_compute import flow_video  # noqa: E402
from pipeline.flow_schedulers import ray_scheduler  # noqa: E402
from pipeline.params import ParamsError, parse_params  # noqa: E402
from pipeline.synthesize import write_video  # noqa: E402

from .conftest import ROOT, SMALL_TVL1  # noqa: E402

LOOPBACK = "127.0.0.1"


@pytest.fixture(scope="module")
def two_nodes():
    """A head and a worker node, one CPU each, and this process connected as the driver."""
    nodes = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "include_dashboard": False, "node_ip_address": LOOPBACK},
    )
    try:
        nodes.add_node(num_cpus=1, node_ip_address=LOOPBACK)
        nodes.wait_for_nodes()
        c = parse_params_cluster(address=nodes.address, gpus_per_worker=0.0, max_in_flight=8)
        with cluster.connect(c):
            yield nodes, c
    finally:
        nodes.shutdown()


def parse_params_cluster(**keys):
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["cluster"].update(executor="ray", **keys)
    return parse_params(raw).cluster


@pytest.fixture
def fp(raw_params):
    raw_params["flow"].update(workers=2, size=None, max_failure_fraction=0.5)
    return parse_params(raw_params).flow


def _videos(root, n=4, frames=5, size=32):
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        path = root / f"vid{i}.avi"
        path.parent.mkdir(parents=True, exist_ok=True)
        base = rng.uniform(0, 255, (size + 8, size + 8, 3))
        video = [np.roll(base, k * (i + 1), axis=1)[4:-4, 4:-4] for k in range(frames)]
        write_video(path, np.stack(video).astype(np.uint8))
        rows.append({"video_id": path.stem, "path": str(path), "label": i % 2, "frames": frames})
    return rows


def _same_records(a, b, rows):
    for row in rows:
        name = f"{row['video_id']}.tfrecord"
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


# ---- tasks the workers run (this module is importable on the test cluster's workers) --------


def slow_probe(path):
    if "slow" in path:
        time.sleep(30)
    if "crash" in path:
        os._exit(3)  # as a decoder's segfault would end the worker
    return ing.probe_video(path)


def slow_flow(calls, slow_node, path, frames, p):
    """flow_video after half a second (3 s on ``slow_node``), leaving a file per call (and so
    per retry) that names the video and the node, and another once it is done."""
    import ray

    node = ray.get_runtime_context().get_node_id()
    name = f"{Path(path).stem}-{node}-{time.monotonic_ns()}"
    Path(calls, name).touch()
    time.sleep(3.0 if node == slow_node else 0.5)
    result = flow_video(path, frames, p)
    Path(calls, "done", name).touch()
    return result


def crashing_flow(victim, path, frames, p):
    if Path(path).stem == victim:
        os._exit(3)  # as a decoder's segfault or the OOM killer would end the worker
    return flow_video(path, frames, p)


def timed(log, path):
    start = time.monotonic()
    time.sleep(0.3)
    with open(log, "a") as f:
        f.write(json.dumps([start, time.monotonic()]) + "\n")
    return path


# ---- the tests -----------------------------------------------------------------------------


def test_the_work_reaches_both_nodes_with_our_versions(two_nodes):
    from pipeline.flow_compute import versions_here

    seen = cluster.on_every_node(versions_here, "opencv")
    assert len(seen) == 2 and all("127.0.0.1" in node for node in seen)
    cluster.check_versions(versions_here("opencv"), seen, "decoding")  # raises on a mismatch


def test_a_node_with_other_versions_is_named():
    ours = {"opencv": "5.0.0", "decoder": "pyav 18.1.0"}
    theirs = {"gpu-7 (10.0.0.7, node ab12)": {"opencv": "4.10.0", "decoder": "pyav 18.1.0"}}
    with pytest.raises(cluster.ClusterError, match=r"gpu-7 .*opencv '4.10.0' \(here '5.0.0'\)"):
        cluster.check_versions(ours, {**theirs, "ok": dict(ours)}, "decoding")


def test_cluster_params_are_validated(raw_params):
    raw_params["cluster"].update(executor="dask", max_in_flight=0)
    with pytest.raises(ParamsError) as err:
        parse_params(raw_params)
    text = str(err.value)
    assert "cluster.executor: got 'dask'" in text and "cluster.max_in_flight: got 0" in text
    raw_params["cluster"].update(executor="ray", max_in_flight=4, address="headnode")
    with pytest.raises(ParamsError, match=r"cluster.address: got 'headnode'.*ray://host:port"):
        parse_params(raw_params)
    for good in (None, "auto", "10.0.0.1:6379", "ray://head.example:10001"):
        raw_params["cluster"].update(address=good)
        assert parse_params(raw_params).cluster.address == good


@pytest.mark.alone  # a probe over 1 s is rejected: on a loaded machine so is a normal one
def test_ingest_on_ray_gives_the_local_manifest_and_rejections(
    two_nodes, tmp_path, raw_params, make_video
):
    _, c = two_nodes
    root = tmp_path / "videos"
    for k, name in enumerate(("Ape", "Bat")):
        for i in range(4):
            make_video(root / name / f"{name}_{i}.avi", seed=10 * k + i)
    (root / "Ape" / "broken.avi").write_bytes(b"not a video at all")
    make_video(root / "Bat" / "slow.avi", seed=99)  # its probe overruns data.probe_timeout_s
    make_video(root / "Bat" / "crash.avi", seed=98)  # its probe kills the worker, every time
    raw_params["data"].update(
        layout="folder", root=str(root), lists=str(root), min_frames=10, workers=2
    )
    raw_params["data"].update(max_rejected_fraction=0.5, probe_timeout_s=1.0, test_fraction=0.4)
    p = parse_params(raw_params).data
    local = ing.ingest(p, probe=slow_probe)
    on_ray = ing.ingest(p, probe=slow_probe, executor=cluster.RayExecutor(c))
    ing.write_outputs(tmp_path / "local", *local)
    ing.write_outputs(tmp_path / "ray", *on_ray)
    for f in (contracts.MANIFEST, contracts.CLASSES):
        assert (tmp_path / "local" / f.name).read_bytes() == (
            tmp_path / "ray" / f.name
        ).read_bytes()
    ours = {Path(r.path).name: r.reason for r in local[2]}
    reasons = {Path(r.path).name: r.reason for r in on_ray[2]}
    assert reasons.keys() == ours.keys() == {"broken.avi", "slow.avi", "crash.avi"}
    assert reasons["slow.avi"] == "decoding took longer than data.probe_timeout_s = 1.0 s"
    assert reasons["broken.avi"] == ours["broken.avi"] and reasons["slow.avi"] == ours["slow.avi"]
    # a crash reads alike; Ray cannot tell the exit code, it tells how often it tried
    assert (
        ours["crash.avi"].startswith("the decoder crashed (") and "exit code 3" in ours["crash.avi"]
    )
    assert reasons["crash.avi"] == (
        f"the decoder crashed (its Ray worker process (or its node) died {cluster.RETRIES + 1} "
        "times; see the workers' logs (ray logs))"
    )
    assert len(on_ray[1]) == 8
    # a node that cannot see a video says so, naming itself
    ((_, missing),) = cluster.RayExecutor(c).each(ing.probe_video, [("/nowhere/clip.avi",)])
    assert isinstance(missing, FileNotFoundError)
    assert "no such file on Ray node" in str(missing) and "shared mount" in str(missing)


def test_flow_on_ray_writes_the_local_records_and_resumes_from_the_cache(two_nodes, tmp_path, fp):
    _, c = two_nodes
    rows = _videos(tmp_path / "raw")
    rows.append({**rows[0], "video_id": "short", "frames": 99})  # fails alike on both
    local = fl.run_flow(fp, rows, tmp_path / "local", tmp_path / "lf.csv")
    scheduler, settings = ray_scheduler(fp, c)
    on_ray = fl.run_flow(
        fp, rows, tmp_path / "ray", tmp_path / "rf.csv", scheduler=scheduler, settings=settings
    )
    assert (on_ray.computed, len(on_ray.failed)) == (local.computed, len(local.failed)) == (4, 1)
    _same_records(tmp_path / "local", tmp_path / "ray", rows[:-1])
    assert (tmp_path / "lf.csv").read_text() == (tmp_path / "rf.csv").read_text()
    assert "decoded only 5 of the 99 frames" in (tmp_path / "rf.csv").read_text()

    def logged(folder: Path) -> list[dict]:  # each record's mtime aside: when it was written
        lines = (folder / fl.CACHE_LOG).read_text().splitlines()
        return [{k: v for k, v in json.loads(x).items() if k != "record_mtime_ns"} for x in lines]

    assert logged(tmp_path / "local") == logged(tmp_path / "ray")
    again = fl.run_flow(
        fp, rows, tmp_path / "ray", tmp_path / "rf.csv", scheduler=scheduler, settings=settings
    )
    assert (again.reused, again.computed) == (4, 0)


def test_frame_folders_on_ray_give_the_local_manifest_and_records(
    two_nodes, tmp_path, raw_params, monkeypatch
):
    """data.layout: rawframes on the cluster: the probes and the records (flows quantised
    again from a bound of 32: the work a Ray task does) are the local ones."""
    _, c = two_nodes
    root, rng = tmp_path / "frames", np.random.default_rng(0)
    for name in ("Ape", "Bat"):
        for i in range(3):
            folder = root / name / f"v_{name}_g0{i}_c01"
            folder.mkdir(parents=True)
            for j in range(6):
                image = rng.integers(0, 256, (32, 40, 3), dtype=np.uint8)
                cv2.imwrite(str(folder / f"img_{j:05d}.jpg"), image)
                for axis in "xy" if j < 5 else "":
                    flow = rng.integers(90, 166, (32, 40), dtype=np.uint8)
                    cv2.imwrite(str(folder / f"flow_{axis}_{j:05d}.jpg"), flow)
    (root / "Bat" / "v_Bat_g00_c01" / "img_00002.jpg").write_bytes(b"broken")
    raw_params["data"].update(layout="rawframes", root=str(root), lists=str(root), min_frames=4)
    raw_params["data"].update(workers=2, max_rejected_fraction=0.5, test_fraction=0.4)
    raw_params["data"].update(rawframes_bound=32.0)
    raw_params["flow"].update(workers=2, size=None)
    params = parse_params(raw_params)
    local = ing.ingest(params.data)
    on_ray = ing.ingest(params.data, executor=cluster.RayExecutor(c))
    assert (
        [(Path(r.path).name, r.reason) for r in on_ray[2]]
        == [("v_Bat_g00_c01", "img_00002.jpg is not a JPEG (it starts b'broken')")]
        == [(Path(r.path).name, r.reason) for r in local[2]]
    )
    for where, executor in (("local", dataclasses.replace(c, executor="local")), ("ray", c)):
        ing.write_outputs(tmp_path / where / "data", *(local if where == "local" else on_ray))
        monkeypatch.chdir(tmp_path / where)
        rows = contracts.read_manifest()
        summary = fl.run_flow_on(params.flow, executor, rows, params.data)
        assert (summary.computed, summary.failed) == (5, [])
    manifest = contracts.MANIFEST
    assert (tmp_path / "local" / manifest).read_bytes() == (
        tmp_path / "ray" / manifest
    ).read_bytes()
    _same_records(tmp_path / "local/data/videos", tmp_path / "ray/data/videos", rows)


def test_a_node_lost_mid_run_loses_nothing_and_writes_nothing_twice(
    two_nodes, tmp_path, fp, monkeypatch
):
    nodes, c = two_nodes
    extra = nodes.add_node(num_cpus=1, node_ip_address=LOOPBACK)
    nodes.wait_for_nodes()
    rows = _videos(tmp_path / "raw", n=6)
    calls = tmp_path / "calls"
    (calls / "done").mkdir(parents=True)
    task = functools.partial(slow_flow, str(calls), extra.node_id)
    scheduler, settings = ray_scheduler(fp, c, task)
    written = []
    real_write = contracts.write_record
    monkeypatch.setattr(
        contracts,
        "write_record",
        lambda path, *a: [written.append(Path(path).name), real_write(path, *a)],
    )

    removed, stop = [], threading.Event()

    def lose_the_node():
        """Remove the extra node as soon as a video is seen running on it (started, not done)."""
        while not stop.is_set():
            finished = {f.name for f in (calls / "done").iterdir()}
            running = [f.name for f in calls.iterdir() if f.is_file() and f.name not in finished]
            mine = {n.split("-")[0] for n in running if n.split("-")[1] == extra.node_id}
            if mine:
                nodes.remove_node(extra)
                removed.extend(mine)
                return
            stop.wait(0.05)

    watcher = threading.Thread(target=lose_the_node)
    watcher.start()
    try:
        summary = fl.run_flow(
            fp, rows, tmp_path / "ray", tmp_path / "rf.csv", scheduler=scheduler, settings=settings
        )
    finally:
        stop.set()
        watcher.join()
    assert removed, "the extra node ran no video"
    assert (summary.computed, summary.failed) == (6, [])
    assert sorted(written) == sorted(f"{r['video_id']}.tfrecord" for r in rows)  # once each
    started = [f.name.split("-")[0] for f in calls.iterdir() if f.is_file()]
    for video in removed:  # in flight on the lost node, it ran again elsewhere
        assert started.count(video) >= 2, (video, sorted(started))
    monkeypatch.undo()
    fl.run_flow(fp, rows, tmp_path / "local", tmp_path / "lf.csv")
    _same_records(tmp_path / "local", tmp_path / "ray", rows)


def test_a_video_that_keeps_killing_its_worker_goes_to_flow_failed(two_nodes, tmp_path, fp):
    _, c = two_nodes
    rows = _videos(tmp_path / "raw", n=3)
    scheduler, settings = ray_scheduler(fp, c, functools.partial(crashing_flow, "vid1"))
    summary = fl.run_flow(
        fp, rows, tmp_path / "ray", tmp_path / "rf.csv", scheduler=scheduler, settings=settings
    )
    assert summary.computed == 2 and [f["video_id"] for f in summary.failed] == ["vid1"]
    (failed,) = csv.DictReader((tmp_path / "rf.csv").open())
    assert failed["video_id"] == "vid1"
    assert failed["reason"].startswith("the worker died while decoding or computing flow")
    assert f"died {cluster.RETRIES + 1} times" in failed["reason"]
    assert not (tmp_path / "ray" / "vid1.tfrecord").exists()


def test_at_most_max_in_flight_tasks_are_in_the_air(two_nodes, tmp_path):
    _, c = two_nodes
    log = tmp_path / "times.jsonl"
    executor = cluster.RayExecutor(dataclasses.replace(c, max_in_flight=1))
    args = [(str(tmp_path / f"v{i}"),) for i in range(4)]
    for a in args:
        Path(a[0]).touch()
    done = dict(executor.each(functools.partial(timed, str(log)), args))
    assert sorted(done.values()) == sorted(a[0] for a in args)
    spans = sorted(json.loads(line) for line in log.read_text().splitlines())
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False))  # one at a time


def test_keras_engine_on_ray_actors_writes_the_local_records(two_nodes, tmp_path, fp):
    _, c = two_nodes
    small = dataclasses.replace(fp.tvl1, **SMALL_TVL1)  # the same code, compiled quickly
    p = dataclasses.replace(fp, engine="keras", batch=4, tvl1=small)
    rows = _videos(tmp_path / "raw", n=3, frames=4, size=24)
    rows.append({**rows[0], "video_id": "short", "frames": 99})
    local = fl.run_flow(p, rows, tmp_path / "local", tmp_path / "lf.csv")
    scheduler, settings = ray_scheduler(p, c)
    assert settings == fl.record_settings(p, "keras")
    on_ray = fl.run_flow(
        p, rows, tmp_path / "ray", tmp_path / "rf.csv", scheduler=scheduler, settings=settings
    )
    assert (on_ray.computed, len(on_ray.failed)) == (local.computed, len(local.failed)) == (3, 1)
    _same_records(tmp_path / "local", tmp_path / "ray", rows[:-1])
    assert (tmp_path / "lf.csv").read_text() == (tmp_path / "rf.csv").read_text()


def _scratch_project(tmp_path, raw_params, rows, **cluster_keys):
    raw_params["cluster"].update(cluster_keys)
    raw_params["flow"].update(size=None)
    (tmp_path / "data").mkdir(parents=True, exist_ok=True)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw_params))
    contracts.write_manifest(
        tmp_path / "data/manifest.csv",
        [
            {
                **r,
                "class_name": "c",
                "split": "train",
                "claimed_frames": r["frames"],
                "duration_s": 0.2,
                "fps": 25.0,
                "width": 32,
                "height": 32,
                "codec": "ffv1",
            }
            for r in rows
        ],
    )
    return tmp_path


def _free_port():
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def _flow_stage(project):
    """``python -m pipeline.flow`` run in ``project``, as dvc would."""
    return subprocess.run(
        [sys.executable, "-m", "pipeline.flow"],
        cwd=project,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=300,
    )


def test_an_unreachable_address_fails_fast_naming_it(tmp_path, raw_params):
    rows = _videos(tmp_path / "raw", n=1)
    address = f"{LOOPBACK}:{_free_port()}"
    project = _scratch_project(tmp_path, raw_params, rows, executor="ray", address=address)
    start = time.monotonic()
    run = _flow_stage(project)
    assert run.returncode != 0
    assert f"cannot reach a Ray cluster at cluster.address = '{address}'" in run.stderr
    assert time.monotonic() - start < 60
    assert not (project / "data/videos").exists()  # before any work


def test_a_private_ray_instance_runs_the_stage(tmp_path, raw_params):
    """cluster.address null: the stage starts Ray on this machine (loopback) and stops it."""
    rows = _videos(tmp_path / "raw", n=2)
    project = _scratch_project(tmp_path, raw_params, rows, executor="ray", address=None)
    run = _flow_stage(project)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "2 computed, 0 failed" in run.stdout
    p = parse_params(raw_params).flow
    fl.run_flow(p, rows, tmp_path / "local", tmp_path / "lf.csv")
    _same_records(tmp_path / "local", project / "data/videos", rows)
