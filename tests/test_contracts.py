"""The data contracts module: atomic writers, the one class-name reader, missing inputs; and
the recording view of params.yaml that checks dvc.yaml."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from pipeline import contracts
from pipeline.params import READS_LOG

from .conftest import ROOT


def test_atomic_path_replaces_whole_or_keeps_the_old_file(tmp_path):
    target = tmp_path / "out.json"
    contracts.write_text(target, "old")
    with pytest.raises(RuntimeError), contracts.atomic_path(target) as tmp:
        with open(tmp, "w") as f:
            f.write("half of the new")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "old" and sorted(os.listdir(tmp_path)) == ["out.json"]
    with contracts.atomic_path(target) as tmp:
        assert tmp == f"{target}.tmp" and contracts.is_temporary(os.path.basename(tmp))
        with open(tmp, "w") as f:
            f.write("new")
    assert target.read_text() == "new" and sorted(os.listdir(tmp_path)) == ["out.json"]
    keras_tmp = contracts.temporary_name(tmp_path / "rgb.keras", keep_suffix=True)
    assert keras_tmp.endswith("rgb.tmp.keras")
    assert not contracts.is_temporary("clip.tmp.tfrecord")  # a video named clip.tmp.avi


def test_class_names_round_trip_with_spaces_and_any_script(tmp_path):
    names = ["air drumming", "café crème", "прыжки в длину", "跳舞", 'a,b "quoted"']
    path = tmp_path / "classes.txt"
    contracts.write_classes(path, names)
    assert contracts.read_classes(path) == names
    assert path.read_bytes().decode("utf-8").count("\n") == len(names)
    for bad in ("two\nlines", "   ", ""):
        with pytest.raises(ValueError, match="cannot be written"):
            contracts.write_classes(path, ["ok", bad])
    assert contracts.read_classes(path) == names  # a refused write leaves the file alone


def test_manifest_round_trip_and_missing_inputs_name_their_stage(tmp_path):
    row = {c: f"v{i}" for i, c in enumerate(contracts.MANIFEST_COLUMNS)}
    row.update(label=3, frames=17, class_name="air drumming", path="videos/café, crème/a b.avi")
    contracts.write_manifest(tmp_path / "m.csv", [{**row, "_extra": object()}])
    (back,) = contracts.read_manifest(tmp_path / "m.csv")
    assert back == {**row, "label": 3, "frames": 17}
    with pytest.raises(contracts.MissingInputError, match="run the ingest stage first"):
        contracts.read_manifest(tmp_path / "nope.csv")
    with pytest.raises(contracts.MissingInputError, match=r"dvc repro evaluate_late"):
        contracts.read_metrics("late", tmp_path)
    with pytest.raises(contracts.MissingInputError, match="run the shard stage first"):
        contracts.count_videos("train", str(tmp_path))


def test_scores_round_trip(tmp_path):
    scores = np.random.default_rng(0).dirichlet(np.ones(4), 3)
    path = contracts.scores_path("rgb", tmp_path)
    contracts.write_scores(path, ["a", "b", "c"], np.array([0, 3, 1]), scores)
    back = contracts.read_scores(path)
    assert list(back["video_ids"]) == ["a", "b", "c"] and back["labels"].tolist() == [0, 3, 1]
    np.testing.assert_array_equal(back["scores"], scores)
    assert sorted(os.listdir(tmp_path)) == ["rgb.npz"]


RECORDING = """
import dataclasses
from pipeline.params import load_params
p = load_params()
p.flow.tvl1.lambda_, p.clip.frames
dataclasses.asdict(p.eval)  # reads every key of the section
p.flow  # a section alone is no read
"""


def test_the_recording_view_logs_each_key_read_at_exit(tmp_path):
    log = tmp_path / "reads.jsonl"
    env = {**os.environ, READS_LOG: str(log), "DVC_STAGE": "some_stage", "PYTHONPATH": str(ROOT)}
    for _ in range(2):  # appends
        subprocess.run([sys.executable, "-c", RECORDING], cwd=ROOT, env=env, check=True)
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(entries) == 2 and entries[0]["stage"] == "some_stage"
    assert entries[0]["reads"] == [
        "clip.frames",
        "eval.batch_size",
        "eval.clips",
        "eval.flip",
        "flow.tvl1.lambda",
    ]
    env.pop(READS_LOG)
    subprocess.run([sys.executable, "-c", RECORDING], cwd=ROOT, env=env, check=True)
    assert len(log.read_text().splitlines()) == 2  # off unless asked for
