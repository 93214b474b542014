import dataclasses
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import yaml

from pipeline import contracts, flow_compute
from pipeline import flow as fl
from pipeline.params import parse_params
from pipeline.synthesize import write_video

from .conftest import SMALL_TVL1


@pytest.fixture
def fp(raw_params):
    raw_params["flow"].update(workers=2, size=None)
    return parse_params(raw_params).flow


def _texture(size, seed):
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, (size // 4, size // 4)).astype(np.float32)
    tex = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
    return cv2.GaussianBlur(tex, (0, 0), 1.0)


def _shifted_video(path, dx, dy, frames=3, size=64, seed=0):
    """A smooth texture moving by (dx, dy) px per frame, written losslessly."""
    tex = _texture(size + 16, seed)
    out = []
    for k in range(frames):
        m = np.float32([[1, 0, k * dx], [0, 1, k * dy]])
        moved = cv2.warpAffine(tex, m, tex.shape[::-1], flags=cv2.INTER_CUBIC)[8:-8, 8:-8]
        out.append(np.repeat(np.clip(moved, 0, 255).astype(np.uint8)[..., None], 3, 2))
    write_video(path, np.stack(out))
    return path


def _rows(paths):
    return [
        {"video_id": p.stem, "path": str(p), "label": i % 3, "frames": _count(p)}
        for i, p in enumerate(paths)
    ]


def _count(path):
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.grab():
        n += 1
    return n


def _record(out_dir, video_id):
    return contracts.decode_record(
        next(contracts.read_records(str(out_dir / f"{video_id}.tfrecord")))
    )


def _decoded_flow(rec, i):
    xy = [
        cv2.imdecode(np.frombuffer(rec[k][i], np.uint8), cv2.IMREAD_GRAYSCALE)
        for k in ("flow_x", "flow_y")
    ]
    return contracts.dequantize_flow(np.stack(xy, -1), rec["flow_bound"])


def test_quantisation_round_trip():
    bound = 20.0
    v = np.array([-50.0, -20.0, -1.0, 0.0, 0.3, 19.99, 20.0, 35.0])
    q = contracts.quantize_flow(v, bound)
    assert q.dtype == np.uint8
    assert q.tolist() == [0, 0, 122, 128, 130, 255, 255, 255]
    back = contracts.dequantize_flow(q, bound)
    assert back[3] == 0.0
    assert np.all(np.abs(back[1:-1] - np.clip(v[1:-1], -bound, bound)) <= bound / 127.5 / 2 + 1e-6)
    assert contracts.dequantize_flow(np.uint8(0), bound) == pytest.approx(-20.078, abs=1e-3)


@pytest.mark.parametrize(
    ("size", "expected"),
    [(None, (320, 240)), (120, (160, 120)), (300, (400, 300)), ([64, 48], (64, 48))],
)
def test_size_policy(size, expected):
    assert flow_compute.target_size(320, 240, size) == expected
    if isinstance(size, int):  # the shorter side, in portrait too
        assert flow_compute.target_size(240, 320, size) == expected[::-1]


@pytest.mark.parametrize(("dx", "dy"), [(0.6, -0.4), (-1.3, 0.8)])
def test_known_subpixel_motion_and_sign_convention(tmp_path, fp, dx, dy):
    video = _shifted_video(tmp_path / "shift.avi", dx, dy)
    fl.run_flow(fp, _rows([video]), tmp_path / "videos", tmp_path / "failed.csv")
    rec = _record(tmp_path / "videos", "shift")
    assert rec["num_frames"] == 3 and len(rec["flow_x"]) == 2
    for i in range(2):
        f = _decoded_flow(rec, i)[12:-12, 12:-12]  # away from borders
        assert abs(f[..., 0].mean() - dx) < 0.15, f[..., 0].mean()  # positive x = rightward
        assert abs(f[..., 1].mean() - dy) < 0.15, f[..., 1].mean()  # positive y = downward


def test_record_contents_are_stamped(tmp_path, raw_params):
    raw_params["flow"].update(workers=1, size=[48, 32], bound=15.0)
    p = parse_params(raw_params).flow
    video = _shifted_video(tmp_path / "v1.avi", 1, 0, frames=4)
    fl.run_flow(p, _rows([video]), tmp_path / "videos", tmp_path / "failed.csv")
    rec = _record(tmp_path / "videos", "v1")
    assert (rec["video_id"], rec["label"], rec["num_frames"]) == ("v1", 0, 4)
    assert (rec["width"], rec["height"], rec["flow_bound"]) == (48, 32, 15.0)
    assert rec["flow_engine"] == f"opencv {cv2.__version__}"
    assert rec["flow_params"]["tvl1"] == dataclasses.asdict(p.tvl1)
    assert rec["flow_params"]["size"] == [48, 32] and rec["schema_version"] == 1
    assert len(rec["rgb"]) == 4 and len(rec["flow_x"]) == len(rec["flow_y"]) == 3
    frame = cv2.imdecode(np.frombuffer(rec["rgb"][0], np.uint8), cv2.IMREAD_COLOR)
    assert frame.shape == (32, 48, 3)


@pytest.fixture
def videos(tmp_path):
    paths = [tmp_path / "raw" / f"vid{i}.avi" for i in range(4)]
    for i, p in enumerate(paths):
        p.parent.mkdir(exist_ok=True)
        _shifted_video(p, 0.5 + 0.1 * i, 0.2, frames=4, size=32, seed=i)
    return paths


def test_cache_reuse_content_change_touch_param_change_and_removal(tmp_path, fp, videos):
    out, failed = tmp_path / "videos", tmp_path / "failed.csv"
    rows = _rows(videos)
    first = fl.run_flow(fp, rows, out, failed)
    assert (first.reused, first.computed, first.failed) == (0, 4, [])
    stamp = {p.name: p.stat().st_mtime_ns for p in out.glob("*.tfrecord")}

    again = fl.run_flow(
        dataclasses.replace(fp, workers=1, max_failure_fraction=0.5), rows, out, failed
    )
    assert (again.reused, again.computed) == (4, 0)

    os.utime(videos[1])  # a bare touch: same content
    _shifted_video(videos[2], -0.7, 0.0, frames=4, size=32, seed=9)  # new content
    changed = fl.run_flow(fp, rows, out, failed)
    assert (changed.reused, changed.computed) == (3, 1)
    now = {p.name: p.stat().st_mtime_ns for p in out.glob("*.tfrecord")}
    assert [n for n in now if now[n] != stamp[n]] == ["vid2.tfrecord"]

    rebound = fl.run_flow(dataclasses.replace(fp, bound=10.0), rows, out, failed)
    assert (rebound.reused, rebound.computed) == (0, 4)
    assert _record(out, "vid0")["flow_bound"] == 10.0

    fewer = fl.run_flow(dataclasses.replace(fp, bound=10.0), rows[:2], out, failed)
    assert (fewer.reused, fewer.computed) == (2, 0)
    assert sorted(p.name for p in out.glob("*.tfrecord")) == ["vid0.tfrecord", "vid1.tfrecord"]
    assert len((out / fl.CACHE_LOG).read_text().splitlines()) == 2


def _project(tmp_path, rows, params):
    """A scratch project dir with params.yaml and data/manifest.csv, for running the stage."""
    (tmp_path / "data").mkdir(parents=True, exist_ok=True)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    cols = ["video_id", "path", "label", "class_name", "split", "frames", "fps", "width", "height"]
    lines = [",".join(cols)] + [
        f"{r['video_id']},{r['path']},{r['label']},c,train,{r['frames']},25,32,32" for r in rows
    ]
    (tmp_path / "data/manifest.csv").write_text("\n".join(lines) + "\n")
    return tmp_path


def crashing_task(path, expected_frames, p):
    """Stands in for a decoder that segfaults on one hostile file."""
    if path.endswith("vid3.avi"):
        os.abort()
    return fl.flow_video(path, expected_frames, p)


def test_bad_videos_are_recorded_and_the_rest_finishes(tmp_path, fp, videos):
    rows = _rows(videos)
    videos[0].write_text("not a video any more")
    rows[1]["frames"] = 8  # the manifest knew more frames than the file now has (truncated)
    out, failed = tmp_path / "videos", tmp_path / "failed.csv"
    with pytest.raises(fl.FlowError) as err:
        fl.run_flow(fp, rows, out, failed, task=crashing_task)
    msg = str(err.value)
    assert "3 of 4 videos failed (75.0%), more than flow.max_failure_fraction = 0.05" in msg
    assert "vid0" in msg and "the 1 finished records are kept" in msg
    table = failed.read_text().splitlines()
    reasons = {line.split(",")[0]: line for line in table[1:]}
    assert "cannot be opened as a video" in reasons["vid0"]
    assert "decoded only 4 of the 8 frames the manifest lists" in reasons["vid1"]
    assert "the worker died" in reasons["vid3"] and "exit code -6" in reasons["vid3"]
    assert [p.name for p in out.glob("*.tfrecord")] == ["vid2.tfrecord"]
    # under the limit the stage succeeds, and keeps the failures on record
    summary = fl.run_flow(
        dataclasses.replace(fp, max_failure_fraction=0.8), rows, out, failed, task=crashing_task
    )
    assert (summary.reused, summary.computed, len(summary.failed)) == (1, 0, 3)
    assert len(failed.read_text().splitlines()) == 4


def test_progress_lines_summary_and_preview(tmp_path, raw_params, videos, monkeypatch, capsys):
    rows = _rows(videos)
    raw_params["flow"].update(workers=1, size=None)
    project = _project(tmp_path / "p", rows, raw_params)
    monkeypatch.chdir(project)
    fl.main([])
    out = capsys.readouterr().out
    assert "flow: 4/4 videos, 12 pairs" in out  # not a TTY: plain lines
    assert "flow: 4 videos (0 reused from cache, 4 computed, 0 failed), 12 pairs in" in out
    fl.main(["--preview", "vid2"])
    png = cv2.imread(str(project / "reports/flow_preview/vid2.png"))
    assert png is not None and png.shape[1] >= 960
    with pytest.raises(SystemExit, match="no record"):
        fl.main(["--preview", "nope"])


def test_missing_manifest_says_run_ingest(tmp_path, raw_params, monkeypatch):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw_params))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit, match="run the ingest stage first"):
        fl.main([])


def test_keras_engine_writes_the_records_opencv_does(tmp_path, fp, videos, raw_params):
    """Same schema and frames, flows within JPEG rounding; a bad video fails alone; the cache
    keys on the engine actually run; the reader takes the records unchanged. Both engines
    with a small TV-L1 (conftest.SMALL_TVL1): the solvers' agreement at the defaults is
    tests/test_tvl1.py's, on both backends; here, the records around them."""
    fp = dataclasses.replace(fp, tvl1=dataclasses.replace(fp.tvl1, **SMALL_TVL1))
    wide = _shifted_video(tmp_path / "raw" / "wide.avi", 1.0, 0.0, frames=5, size=48)
    broken = tmp_path / "raw" / "broken.avi"
    broken.write_bytes(b"not a video")
    rows = _rows([*videos, wide])
    rows.append({"video_id": "broken", "path": str(broken), "label": 0, "frames": 5})
    keras_p = dataclasses.replace(fp, engine="keras", batch=4, bucket=64, max_failure_fraction=0.5)
    from pipeline import tvl1

    compiles = tvl1.STATS.compiles
    ours = fl.run_flow(keras_p, rows, tmp_path / "k", tmp_path / "kf.csv")
    assert tvl1.STATS.compiles == compiles + 1  # 32x32 and 48x48 frames: one 64x64 bucket
    fl.run_flow(fp, rows[:-1], tmp_path / "o", tmp_path / "of.csv")
    assert (ours.computed, ours.pairs, len(ours.failed)) == (5, 16, 1)
    assert "cannot be opened" in ours.failed[0]["reason"]
    for row in rows[:-1]:
        k, o = _record(tmp_path / "k", row["video_id"]), _record(tmp_path / "o", row["video_id"])
        assert k.keys() == o.keys() and k["rgb"] == o["rgb"]
        assert (k["width"], k["height"], k["num_frames"]) == (
            o["width"],
            o["height"],
            o["num_frames"],
        )
        assert k["flow_params"]["engine"] == "keras" and k["flow_engine"].startswith("keras ")
        for i in range(len(k["flow_x"])):
            diff = np.abs(_decoded_flow(k, i) - _decoded_flow(o, i))
            step = 2 * fp.bound / 255  # one uint8 level: engines agree to a fraction of it
            assert diff.mean() < step / 2, (row["video_id"], i, diff.mean())
    _read_back(tmp_path, rows[:-1], raw_params)
    direct = flow_compute.flow_video_keras(str(wide), 5, keras_p)  # what pipeline.predict runs
    rec = _record(tmp_path / "k", "wide")
    assert direct.rgb == rec["rgb"] and len(direct.flow_x) == len(rec["flow_x"]) == 4
    again = fl.run_flow(keras_p, rows[:-1], tmp_path / "k", tmp_path / "kf.csv")
    assert (again.reused, again.computed) == (5, 0)
    switched = fl.run_flow(fp, rows[:-1], tmp_path / "k", tmp_path / "kf.csv")
    assert (switched.reused, switched.computed) == (0, 5)  # another engine: recomputed


def _read_back(tmp_path, rows, raw_params):
    """The shard stage and the clip reader take the keras engine's records unchanged."""
    from pipeline import shard
    from pipeline.dataset import clip_dataset

    rows = [{**row, "split": "test", "class_name": f"c{row['label']}"} for row in rows]
    raw_params["shard"].update(min_shards=1)
    raw_params["clip"].update(frames=1, flow_stack=2, crop=24)
    raw_params["eval"].update(clips=2)
    params = parse_params(raw_params)
    shards = str(tmp_path / "shards")
    shard.write_shards(rows, params.shard, str(tmp_path / "k"), shards)
    ds = clip_dataset("test", params, "both", training=False, batch_size=4, shards_dir=shards)
    inputs, _, _ = next(iter(ds))
    assert inputs["flow"].shape == (4, 1, 24, 24, 4) and inputs["rgb"].shape == (4, 1, 24, 24, 3)


def test_auto_engine_follows_the_gpu(monkeypatch, raw_params):
    from pipeline import tvl1

    monkeypatch.setattr(tvl1, "gpu_visible", lambda: False)
    assert fl.resolve_engine("auto") == "opencv"
    monkeypatch.setattr(tvl1, "gpu_visible", lambda: True)
    assert fl.resolve_engine("auto") == "keras" and fl.resolve_engine("opencv") == "opencv"
    raw_params["flow"].update(engine="auto")
    raw_params["flow"]["tvl1"].update(median_filtering=3)
    with pytest.raises(Exception, match="implements flow.tvl1.gamma 0 and median_filtering 1"):
        parse_params(raw_params)


def test_keras_engine_resumes_to_the_same_records(tmp_path, fp, videos, monkeypatch):
    """Interrupted after its first batch, the keras engine keeps the finished video; the rerun
    computes the rest, and every record equals an uninterrupted run's, byte for byte (a pair's
    flow does not depend on which pairs shared its batch). A small TV-L1 (2 levels, 1 warp):
    what is tested is the resume, and the solver compiles in a fraction of the time."""
    small = dataclasses.replace(fp.tvl1, **SMALL_TVL1)
    p = dataclasses.replace(fp, engine="keras", batch=4, tvl1=small)
    rows = _rows(videos)
    clean = fl.run_flow(p, rows, tmp_path / "clean", tmp_path / "f.csv")
    assert clean.computed == 4
    real, calls = fl.batched_flow, []

    def interrupted(*args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(fl, "batched_flow", interrupted)
    with pytest.raises(KeyboardInterrupt):
        fl.run_flow(p, rows, tmp_path / "k", tmp_path / "f.csv")
    monkeypatch.setattr(fl, "batched_flow", real)
    resumed = fl.run_flow(p, rows, tmp_path / "k", tmp_path / "f.csv")
    assert resumed.reused >= 1 and resumed.reused + resumed.computed == 4
    for row in rows:
        name = f"{row['video_id']}.tfrecord"
        assert (tmp_path / "k" / name).read_bytes() == (tmp_path / "clean" / name).read_bytes()


class InProcessScheduler:
    """The smallest scheduler: every video in this process, one after the other."""

    def __init__(self, p):
        self.p, self.done = p, []

    def run(self, tasks):
        for task in tasks:
            try:
                result = fl.flow_video(task.path, task.frames, self.p)
            except ValueError as exc:
                result = exc
            self.done.append(task.video_id)
            yield task, result


def test_any_scheduler_behind_the_interface_writes_the_same_records(tmp_path, fp, videos):
    """The seam a cluster executor implements: the stage keeps the cache and the writes."""
    rows = _rows(videos)
    rows.append({"video_id": "gone", "path": str(videos[0]), "label": 0, "frames": 99})
    p = dataclasses.replace(fp, max_failure_fraction=0.5)
    pooled = fl.run_flow(p, rows, tmp_path / "pool", tmp_path / "pf.csv")
    scheduler = InProcessScheduler(p)
    mine = fl.run_flow(p, rows, tmp_path / "mine", tmp_path / "mf.csv", scheduler=scheduler)
    assert sorted(scheduler.done) == sorted(r["video_id"] for r in rows)
    assert (mine.computed, len(mine.failed)) == (pooled.computed, len(pooled.failed)) == (4, 1)
    assert "decoded only 4 of the 99 frames" in mine.failed[0]["reason"]
    for row in rows[:-1]:
        name = f"{row['video_id']}.tfrecord"
        assert (tmp_path / "mine" / name).read_bytes() == (tmp_path / "pool" / name).read_bytes()
    assert (tmp_path / "mf.csv").read_text() == (tmp_path / "pf.csv").read_text()
    again = fl.run_flow(p, rows, tmp_path / "mine", tmp_path / "mf.csv", scheduler=scheduler)
    assert (again.reused, again.computed) == (4, 0) and len(scheduler.done) == 5 + 1


def test_a_second_jax_run_loads_the_compiled_solver(tmp_path):
    """Under JAX the keras engine keeps its compiled solvers on disk (the flow stage:
    .cache/xla): a second process loads them instead of compiling."""
    code = (
        "import sys, numpy as np; from pipeline import tvl1; from pipeline.params import "
        "TVL1Params; tvl1.use_compilation_cache(sys.argv[1]); "
        "t = TVL1Params(tau=0.25, lambda_=0.15, theta=0.3, nscales=1, warps=1, epsilon=0.01, "
        "inner_iterations=3, outer_iterations=2, scale_step=0.8, gamma=0.0, median_filtering=5); "
        "f = np.zeros((2, 16, 20), np.float32); tvl1.tvl1(f, f, t, (16, 32)); "
        "print(tvl1.STATS.line())"
    )
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    runs = [
        subprocess.run(
            [sys.executable, "-c", code, str(tmp_path / "xla")],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        for _ in range(2)
    ]
    assert runs[0].startswith("1 compiles in ") and "loaded" not in runs[0], runs
    assert runs[1].startswith("1 compiles, 1 loaded from the compilation cache in "), runs
    assert runs[1].endswith(": 2 pairs of 32x16"), runs
