"""End to end: `dvc repro` of the real dvc.yaml on tiny params, in a scratch git repo."""

import csv
import json
import os
import shutil
import subprocess
import sys

import pytest
import yaml

from pipeline.params import READS_LOG, RUN_ONLY

from .conftest import ROOT, SMALL_TVL1, copy_project


def _reads_log(cwd):
    """Where every stage run by these tests logs the params keys it read (pipeline/params.py):
    one file for both scratch projects, which tmp_path_factory makes side by side."""
    return cwd.parent / "params_reads.jsonl"


def _run(cwd, *args, stdout_only=False):
    env = {
        **os.environ,
        "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}",
        READS_LOG: str(_reads_log(cwd)),
    }
    out = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    assert out.returncode == 0, f"{' '.join(args)} failed:\n{out.stdout}\n{out.stderr}"
    return out.stdout if stdout_only else out.stdout + out.stderr


def _scratch_project(dst, edit):
    """A copy of the project (code, dvc.yaml, .dvc) in ``dst``, its params.yaml edited by
    ``edit(params)``, committed to a new git repository."""
    for name in ("dvc.yaml", ".dvcignore", ".gitignore"):
        shutil.copy(ROOT / name, dst / name)
    for name in ("pipeline", "layers", ".dvc"):
        shutil.copytree(
            ROOT / name,
            dst / name,
            ignore=shutil.ignore_patterns("__pycache__", "tmp", "cache", "config.local"),
        )
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    edit(params)
    (dst / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False, allow_unicode=True))
    _run(dst, "git", "init", "-q")
    _commit(dst, "init", "-A")
    return dst


def _commit(cwd, message, *paths):
    """``git add`` of ``paths`` and a commit, by a throwaway author."""
    git = ("git", "-c", "user.email=t@t", "-c", "user.name=t")
    _run(cwd, *git, "add", *paths)
    _run(cwd, *git, "commit", "-qm", message)


def tiny_params(params: dict) -> None:
    """Params for a whole pipeline in a few minutes: 2 x 2 classes of tiny videos, one epoch,
    TV-L1 at :data:`SMALL_TVL1` (these tests check the stages' plumbing, not the flow's
    quality: tests/test_tvl1.py does)."""
    params["synthetic"].update(
        colors=2, motions=2, videos_per_class=4, frames=16, size=48, test_fraction=0.25
    )
    params["data"].update(min_frames=8)
    params["flow"]["tvl1"].update(SMALL_TVL1)
    params["clip"].update(flow_stack=4, crop=40)
    params["eval"].update(clips=2)
    params["train"].update(epochs=1, batch_size=4, run_eagerly=True)  # tracing > 2 steps
    params["fusion"].update(epochs=1)


@pytest.fixture(scope="module")
def project(tiny_repro, tmp_path_factory):
    """A copy of the project (code, dvc.yaml, .dvc) with tiny params, committed to git, after
    its first `dvc repro` (tests/conftest.py: tiny_repro, which test_faults.py shares)."""
    return copy_project(tiny_repro[0], tmp_path_factory.mktemp("project"))


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


def test_repro_runs_every_stage_then_skips_them(project, tiny_repro):
    out = tiny_repro[1]  # the first `dvc repro`, in the project this one is a copy of
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


def _repro_with_edited(project, module):
    """`dvc repro` with a comment appended to ``pipeline/<module>.py`` (restored after)."""
    code = project / f"pipeline/{module}.py"
    original = code.read_text()
    code.write_text(original + "# an edit that changes no output\n")
    try:
        return _run(project, "dvc", "repro")
    finally:
        code.write_text(original)


def test_flow_rerun_by_dvc_reuses_its_persisted_cache(project):
    _run(project, "dvc", "repro")
    out = _repro_with_edited(project, "flow")
    assert "Running stage 'flow'" in out
    assert "flow: 16 videos (16 reused from cache, 0 computed, 0 failed)" in out
    _run(project, "dvc", "repro")  # back to the committed code


def test_steering_params_rerun_nothing(project):
    _run(project, "dvc", "repro")
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["flow"]["workers"] = 1
    params["data"]["workers"] = 1
    params["flow"]["max_failure_fraction"] = 0.5
    params["data"]["max_rejected_fraction"] = 0.5
    # on a cluster (nothing runs, so nothing connects)
    params["cluster"].update(
        executor="ray", address="auto", cpus_per_video=0.5, gpus_per_worker=0, max_in_flight=3
    )
    assert set(RUN_ONLY) == {
        "flow.workers",
        "data.workers",
        "flow.max_failure_fraction",
        "data.max_rejected_fraction",
        *(f"cluster.{k}" for k in params["cluster"]),
    }
    original = (project / "params.yaml").read_text()
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        out = _run(project, "dvc", "repro")
    finally:  # the later tests of this project run stages, here and not on a cluster
        (project / "params.yaml").write_text(original)
    assert "Running stage" not in out


def test_a_new_seed_reaches_ingest_through_the_videos(project):
    """synthetic.seed is read by synthesize alone: ingest re-runs because the videos it depends
    on changed (dvc.yaml's ``${data.root}``), not because of a key of its own."""
    _run(project, "dvc", "repro")
    video = project / "data/raw/synthetic/RedUp/v_RedUp_g01_c01.avi"
    before, original = video.read_bytes(), (project / "params.yaml").read_text()
    params = yaml.safe_load(original)
    params["synthetic"]["seed"] = 1
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        out = _run(project, "dvc", "repro", "ingest")
        after = video.read_bytes()
    finally:
        (project / "params.yaml").write_text(original)
    assert _ran(out) == ["synthesize", "ingest"], out
    assert before != after
    _run(project, "dvc", "repro", "ingest")  # back: both restored from DVC's run cache
    assert video.read_bytes() == before


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


KERAS_FLOW = ["-S", "flow.engine=keras"]
"""The keras engine in a DVC run, at the tiny params' TV-L1 (conftest.SMALL_TVL1: compiled
quickly): these tests are about the stages it feeds and the params they read, not the flow."""


def _ran(out):
    """The stages a `dvc repro` output says it ran, in order."""
    return [line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage")]


def test_editing_a_stage_module_reruns_that_stage_alone(project):
    """Stages share code only through the shared modules: an edit of ingest.py (or shard.py)
    that changes no output re-runs that stage, and DVC skips the rest (their inputs are the
    same bytes). Before the contracts module, every later stage depended on ingest.py."""
    _run(project, "dvc", "repro")
    for module in ("ingest", "shard"):
        out = _repro_with_edited(project, module)
        assert _ran(out) == [module], out
        for stage in STAGES[STAGES.index(module) + 1 :]:  # what follows: same inputs, skipped
            assert f"Stage '{stage}' didn't change" in out


CLASSES = ("air drumming", "café crème", "прыжки в длину")
"""Kinetics has spaces in its class names; other datasets use any script."""

FOLDER = [
    "-S", "data.layout=folder", "-S", "data.root=videos", "-S", "data.lists=videos",
    "-S", "data.test_fraction=0.25", "-S", "data.val_fraction=0.34", "-S", "clip.crop=28",
]  # fmt: skip
"""Params of a `folder` dataset of 3 classes x 4 videos of 32x32 in ``videos/``."""


@pytest.fixture(scope="module")
def experiment(tiny_repro, tmp_path_factory):
    """One `dvc exp run` that changes every stage's inputs at once, in a copy of the shared
    project: a new seed (synthesize), a `folder` dataset whose class folders and file names
    have spaces and non-ASCII letters (ingest, and all after), the keras flow engine (flow)
    and SGD (training: the other optimizer branch). Returns the project and what it printed.
    (Three full runs before: a new seed, the keras engine, and a project of its own for the
    folder dataset; one run of every stage checks what each of them checked.)"""
    from pipeline.params import SyntheticParams
    from pipeline.synthesize import render_video, write_video

    project = copy_project(tiny_repro[0], tmp_path_factory.mktemp("experiment"))
    look = SyntheticParams(
        seed=3, colors=2, motions=2, videos_per_class=4, frames=12, size=32,
        test_fraction=0.25, out="unused", ucf101_like=None,
    )  # fmt: skip
    for label, name in enumerate(CLASSES):
        (project / "videos" / name).mkdir(parents=True)
        for index in range(4):
            video = render_video(look, label, index)
            write_video(project / "videos" / name / f"clip {index} è.avi", video)
    _commit(project, "videos", "videos")
    synthetic = project / "data/raw/synthetic/RedUp/v_RedUp_g01_c01.avi"
    before = synthetic.read_bytes()
    out = _run(
        project, "dvc", "exp", "run", "-S", "synthetic.seed=1", *KERAS_FLOW, *FOLDER,
        "-S", "train.optimizer=sgd",
    )  # fmt: skip
    assert synthetic.read_bytes() != before  # the new seed reached synthesize
    return project, out


def test_exp_run_reruns_every_stage_and_reports_the_experiments(experiment):
    project, out = experiment
    for stage in STAGES:
        assert f"Running stage '{stage}'" in out
    assert "flow: 12 videos (0 reused from cache, 12 computed, 0 failed)" in out
    index = json.loads((project / "data/shards/index.json").read_text(encoding="utf-8"))
    assert index["flow_params"]["engine"] == "keras"
    for name in ("rgb", "flow", "fusion", "late"):
        metrics = json.loads((project / f"metrics/{name}.json").read_text())
        assert metrics["videos"] == 3 and 0 <= metrics["top1"] <= 1
    # one table over the workspace, the commit and the experiment (dvc exp show --json)
    out = _run(project, sys.executable, "-m", "pipeline.report", "--experiments", stdout_only=True)
    rows = [line for line in out.splitlines() if line.startswith("| ")][1:]
    assert rows and all("| conv | relu5 | avg2d |" in row for row in rows)
    assert not rows[0].startswith("| workspace |")  # the experiment, under its own name
    assert (project / "reports/experiments.png").exists()


def test_class_names_with_spaces_and_any_script_end_to_end(experiment):
    p = experiment[0]
    assert (p / "data/classes.txt").read_text(encoding="utf-8") == "".join(
        f"{name}\n" for name in CLASSES
    )
    with open(p / "data/manifest.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert {r["class_name"] for r in rows} == set(CLASSES) and len(rows) == 12
    assert "air_drumming__clip_0_è" in {r["video_id"] for r in rows}
    assert {s for r in rows for s in [r["split"]]} == {"train", "val", "test"}
    assert len(list((p / "data/videos").glob("*.tfrecord"))) == 12
    index = json.loads((p / "data/shards/index.json").read_text(encoding="utf-8"))
    assert set(index["splits"]["train"]["per_class"]) == set(CLASSES)
    for name in ("rgb", "flow", "fusion", "late"):
        with open(p / f"metrics/{name}_per_class.csv", encoding="utf-8") as f:
            assert [r["class_name"] for r in csv.DictReader(f)] == list(CLASSES)
        with open(p / f"metrics/{name}_confusion.csv", encoding="utf-8") as f:
            pairs = list(csv.DictReader(f))
        assert len(pairs) == 3 and {r["actual"] for r in pairs} == set(CLASSES)
        assert {r["predicted"] for r in pairs} <= set(CLASSES)
    summary = (p / "reports/summary.md").read_text(encoding="utf-8")
    assert "| Two-stream fusion | conv | relu5 | avg2d |" in summary
    assert "synthetic" not in summary  # not the bundled data: no check of the paper's point


def test_predict_one_video_with_the_trained_model(experiment):
    """The fused net of the experiment on a video of a class with a non-ASCII name."""
    project = experiment[0]
    video = "videos/café crème/clip 3 è.avi"
    out = _run(
        project, sys.executable, "-m", "pipeline.predict", video, "--top", "3", stdout_only=True
    )
    lines = out.strip().splitlines()
    assert lines[0].startswith(f"{video} (models/fusion.keras"), out
    ranked = [line.split(". ", 1) for line in lines[1:]]
    assert [number for number, _ in ranked] == ["1", "2", "3"], out
    ranked = [rest.rsplit(None, 1) for _, rest in ranked]
    assert sorted(name for name, _ in ranked) == sorted(CLASSES), out
    scores = [float(score) for _, score in ranked]
    assert scores == sorted(scores, reverse=True)
    assert 0 < sum(scores) <= 1 + 0.0005 * len(scores)  # all 3 classes, each rounded to 3 places


def test_predict_with_a_stream_model(project):
    """--model: one stream's model (the shared project's, whose flow engine is OpenCV's)."""
    video = "data/raw/synthetic/GreenUp/v_GreenUp_g01_c01.avi"
    out = _run(project, sys.executable, "-m", "pipeline.predict", video,
               "--model", "models/rgb.keras", stdout_only=True)  # fmt: skip
    assert out.splitlines()[0].startswith(f"{video} (models/rgb.keras") and "1. " in out, out


@pytest.fixture(scope="module")
def rawframes_project(project, tmp_path_factory):
    """The project's records exported as an mmaction2 frame tree (python -m pipeline.export),
    and a second project that imports that tree (data.layout: rawframes) up to the shards."""
    _run(project, "dvc", "repro", "shard")  # nothing to do if the project ran already
    dst = tmp_path_factory.mktemp("rawframes_project")
    _run(project, sys.executable, "-m", "pipeline.export", "rawframes", str(dst / "frames"),
         "--convention", "mmaction2")  # fmt: skip

    def frames(params):
        params["data"].update(layout="rawframes", root="frames", lists="frames", min_frames=8)

    _scratch_project(dst, frames)
    out = _run(dst, "dvc", "repro", "shard")
    assert "flow: 16 videos (0 reused from cache, 16 computed, 0 failed), 240 pairs" in out
    return dst


def test_a_frame_tree_through_dvc_gives_the_records_it_was_exported_from(
    project, rawframes_project
):
    from pipeline import contracts

    p = rawframes_project
    with open(p / "data/manifest.csv") as f:
        rows = list(csv.DictReader(f))
    with open(project / "data/manifest.csv") as f:
        before = {r["video_id"]: (r["split"], r["label"]) for r in csv.DictReader(f)}
    assert {r["video_id"]: (r["split"], r["label"]) for r in rows} == before
    assert {r["codec"] for r in rows} == {"rawframes mmaction2"}
    for row in rows:
        ours = contracts.decode_record(
            next(contracts.read_records(p / f"data/videos/{row['video_id']}.tfrecord"))
        )
        theirs = contracts.decode_record(
            next(contracts.read_records(project / f"data/videos/{row['video_id']}.tfrecord"))
        )
        for key in ("rgb", "flow_x", "flow_y"):
            assert ours[key] == theirs[key]
        assert ours["flow_params"]["source"]["convention"].startswith("mmaction2: img_, x_")
    params = yaml.safe_load((p / "params.yaml").read_text())
    params["flow"]["tvl1"]["warps"] = 3  # declared by flow, but not what a tree's records hold
    (p / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = _run(p, "dvc", "repro", "shard")
    assert "flow: 16 videos (16 reused from cache, 0 computed, 0 failed)" in out
    assert "Stage 'shard' didn't change" in out


def _declared(stage):
    return set(stage.get("params", []))


def _leaves(params, key):
    """The leaf keys under ``key`` in params.yaml (``key`` itself when it is a value)."""
    node = params
    for part in key.split("."):
        node = node[part]
    if not isinstance(node, dict):
        return {key}
    return {leaf for k in node for leaf in _leaves(params, f"{key}.{k}")}


def test_every_stage_declares_exactly_the_params_it_reads(
    tiny_repro, project, experiment, rawframes_project
):
    """Every stage run in this module logged the keys it read (pipeline/params.py: READS_LOG).
    Over all runs (three layouts, both flow engines, several fusions) each stage must declare in
    dvc.yaml every key it read, and read every key (every key of a section) it declares; the
    keys that only steer a run (RUN_ONLY) must be read by nobody's declaration."""
    reads = {}
    logs = {_reads_log(project), _reads_log(tiny_repro[0])}  # apart under pytest-xdist
    for line in (row for log in logs for row in log.read_text(encoding="utf-8").splitlines()):
        entry = json.loads(line)
        if entry["stage"]:
            reads.setdefault(entry["stage"], set()).update(entry["reads"])
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    problems = []
    for name, stage in stages.items():
        assert name in reads, f"stage {name} never ran here"
        read = reads[name] - set(RUN_ONLY)
        declared = _declared(stage)
        for key in sorted(read):
            if not any(key == d or key.startswith(d + ".") for d in declared):
                problems.append(f"{name} reads {key} but does not declare it")
        for key in sorted(declared):
            if unread := sorted(_leaves(params, key) - read):
                problems.append(f"{name} declares {key} but never reads {unread}")
    assert not problems, "\n".join(problems)
