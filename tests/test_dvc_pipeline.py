"""End to end: `dvc repro` of the real dvc.yaml on tiny params, in a scratch git repo."""

import csv
import json
import os
import shutil
import subprocess
import sys

import pytest
import yaml

from .conftest import ROOT


def _run(cwd, *args, stdout_only=False):
    env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}"}
    out = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    assert out.returncode == 0, f"{' '.join(args)} failed:\n{out.stdout}\n{out.stderr}"
    return out.stdout if stdout_only else out.stdout + out.stderr


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A copy of the project (code, dvc.yaml, .dvc) with tiny params, committed to git."""
    dst = tmp_path_factory.mktemp("project")
    for name in ("dvc.yaml", ".dvcignore", ".gitignore"):
        shutil.copy(ROOT / name, dst / name)
    for name in ("pipeline", "layers", ".dvc"):
        shutil.copytree(
            ROOT / name,
            dst / name,
            ignore=shutil.ignore_patterns("__pycache__", "tmp", "cache", "config.local"),
        )
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["synthetic"].update(
        colors=2, motions=2, videos_per_class=4, frames=16, size=48, test_fraction=0.25
    )
    params["data"].update(min_frames=8)
    params["clip"].update(flow_stack=4, crop=40)
    params["eval"].update(clips=2)
    params["train"].update(epochs=1, batch_size=4)
    params["fusion"].update(epochs=1)
    (dst / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _run(dst, "git", "init", "-q")
    _run(dst, "git", "-c", "user.email=t@t", "-c", "user.name=t", "add", "-A")
    _run(dst, "git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "init")
    return dst


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


def test_repro_runs_every_stage_then_skips_them(project):
    out = _run(project, "dvc", "repro")
    for stage in STAGES:
        assert f"Running stage '{stage}'" in out
    with open(project / "data/manifest.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 16 and {r["split"] for r in rows} == {"train", "val", "test"}
    assert (project / "data/classes.txt").read_text().split() == [
        "RedUp",
        "RedDown",
        "GreenUp",
        "GreenDown",
    ]
    assert len(list((project / "data/videos").glob("*.tfrecord"))) == 16
    assert "flow: 16 videos (0 reused from cache, 16 computed, 0 failed), 240 pairs" in out
    assert "shard: train 8 videos in 2 shards, val 4 videos in 2 shards, test 4 videos in 2" in out
    for name in ("rgb", "flow", "fusion", "late"):
        metrics = json.loads((project / f"metrics/{name}.json").read_text())
        assert metrics["videos"] == 4 and 0 <= metrics["top1"] <= 1
        assert (project / f"metrics/{name}_confusion.png").exists()
    plots = _run(project, "dvc", "plots", "show", "--json")
    assert "metrics/fusion_confusion.csv" in plots
    summary = (project / "reports/summary.md").read_text()
    assert summary in out  # the stage prints its table: `make repro` ends with it
    assert "| Two-stream fusion | conv | relu5 | avg2d |" in summary
    assert "Margin of the fused net over the best baseline" in summary
    assert (project / "reports/summary.png").exists()
    out = _run(project, "dvc", "repro")
    for stage in STAGES:
        assert f"Stage '{stage}' didn't change" in out
    assert "Running stage" not in out


def test_flow_rerun_by_dvc_reuses_its_persisted_cache(project):
    _run(project, "dvc", "repro")
    code = project / "pipeline/flow.py"
    original = code.read_text()
    code.write_text(original + "# an edit that makes DVC re-run the stage\n")
    try:
        out = _run(project, "dvc", "repro")
    finally:
        code.write_text(original)
    assert "Running stage 'flow'" in out
    assert "flow: 16 videos (16 reused from cache, 0 computed, 0 failed)" in out
    _run(project, "dvc", "repro")  # back to the committed code


def test_a_fusion_change_leaves_the_streams_cached(project):
    _run(project, "dvc", "repro")
    params = yaml.safe_load((project / "params.yaml").read_text())
    original = params["fusion"]["method"]
    params["fusion"]["method"] = "max"
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        status = _run(project, "dvc", "status")
        assert "train_fusion:" in status and "modified:" in status
        assert "train_rgb" not in status and "train_flow" not in status
        out = _run(project, "dvc", "repro")
        rerun = ("train_fusion", "evaluate_fusion", "report")
        assert sorted(line for line in out.splitlines() if line.startswith("Running stage")) == [
            f"Running stage '{stage}':" for stage in sorted(rerun)
        ]
        for stage in set(STAGES) - set(rerun):
            assert f"Stage '{stage}' didn't change" in out
        assert "| Two-stream fusion | max | relu5 | avg2d |" in out
    finally:
        params["fusion"]["method"] = original
        (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def test_steering_params_rerun_nothing(project):
    _run(project, "dvc", "repro")
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["flow"]["workers"] = 1
    params["data"]["workers"] = 1
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = _run(project, "dvc", "repro")
    assert "Running stage" not in out


def test_exp_run_with_a_new_seed_reruns_every_stage(project):
    _run(project, "dvc", "repro")
    before = (project / "data/raw/synthetic/RedUp/v_RedUp_g01_c01.avi").read_bytes()
    out = _run(project, "dvc", "exp", "run", "-S", "synthetic.seed=1")
    for stage in STAGES:
        assert f"Running stage '{stage}'" in out
    assert "16 computed" in out  # new videos: the flow cache has nothing for them
    after = (project / "data/raw/synthetic/RedUp/v_RedUp_g01_c01.avi").read_bytes()
    assert before != after
    # one table over the workspace, the commit and the experiment (dvc exp show --json)
    out = _run(project, sys.executable, "-m", "pipeline.report", "--experiments", stdout_only=True)
    rows = [line for line in out.splitlines() if line.startswith("| ")][1:]
    assert rows and all("| conv | relu5 | avg2d |" in row for row in rows)
    assert not rows[0].startswith("| workspace |")  # the experiment, under its own name
    assert (project / "reports/experiments.png").exists()


def test_predict_one_video_with_the_trained_model(project):
    _run(project, "dvc", "repro")
    video = "data/raw/synthetic/GreenUp/v_GreenUp_g01_c01.avi"
    out = _run(
        project, sys.executable, "-m", "pipeline.predict", video, "--top", "3", stdout_only=True
    )
    lines = out.strip().splitlines()
    assert lines[0].startswith(f"{video} (models/fusion.keras")
    ranked = [line.split() for line in lines[1:]]
    assert [r[0] for r in ranked] == ["1.", "2.", "3."]
    names = (project / "data/classes.txt").read_text().split()
    assert all(r[1] in names for r in ranked)
    scores = [float(r[2]) for r in ranked]
    assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1.0001
    out = _run(
        project, sys.executable, "-m", "pipeline.predict", video, "--model", "models/rgb.keras"
    )
    assert "1. " in out


def test_bad_params_stop_the_stage_before_any_work(project):
    original = (project / "params.yaml").read_text()
    params = yaml.safe_load(original)
    params["synthetic"]["colors"] = 9
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}"}
    try:
        out = subprocess.run(["dvc", "repro"], cwd=project, env=env, capture_output=True, text=True)
    finally:
        (project / "params.yaml").write_text(original)
    assert out.returncode != 0
    assert "synthetic.colors: got 9; allowed: an integer in [2, 6]" in out.stdout + out.stderr


def test_keras_flow_engine_feeds_the_same_stages(project):
    _run(project, "dvc", "repro")
    out = _run(project, "dvc", "exp", "run", "-S", "flow.engine=keras")
    assert "Running stage 'flow'" in out and "16 computed" in out  # the engine is in the key
    for stage in ("shard", "train_fusion", "evaluate_fusion", "report"):
        assert f"Running stage '{stage}'" in out
    index = json.loads((project / "data/shards/index.json").read_text())
    assert index["flow_params"]["engine"] == "keras"
    assert json.loads((project / "metrics/fusion.json").read_text())["videos"] == 4
