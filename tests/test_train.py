"""Training stages on a tiny synthetic project (tests/conftest.py: tiny_project)."""

import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest

from pipeline import contracts
from pipeline import train as tr
from pipeline.params import load_params

from .conftest import ROOT

ENV = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}


def _weights(model):
    return [keras.ops.convert_to_numpy(w) for w in model.weights]


def _train(project, stream, tmp, **train):
    params = load_params(project / "params.yaml")
    if train:
        params = dataclasses.replace(params, train=dataclasses.replace(params.train, **train))
    here = os.getcwd()
    os.chdir(project)
    try:
        return tr.train(
            stream,
            params,
            shards_dir="data/shards",
            models_dir=tmp / "models",
            checkpoints_dir=tmp / "checkpoints",
            live_dir=tmp / "dvclive",
        )
    finally:
        os.chdir(here)


def _epoch_losses(text, stream):
    return [
        float(line.split("loss ")[1].split(",")[0])
        for line in text.splitlines()
        if line.startswith(f"train {stream}: epoch")
    ]


def train_set_loss(model, params, mode):
    """Mean loss of ``model`` on the training videos' centre clips (deterministic)."""
    from pipeline.dataset import clip_dataset

    losses = []
    for x, y, _ in clip_dataset("train", params, mode, training=False, batch_size=16):
        p = model(x, training=False)["prediction"]
        losses.append(
            keras.ops.convert_to_numpy(keras.losses.sparse_categorical_crossentropy(y, p))
        )
    return float(np.concatenate(losses).mean())


def test_streams_train_save_and_log_curves(tiny_project, tmp_path, capsys, monkeypatch):
    params = load_params(tiny_project / "params.yaml")
    keras.utils.set_random_seed(params.train.seed)
    monkeypatch.chdir(tiny_project)
    before = train_set_loss(tr.build_model("flow", params, 4)[0], params, "flow")
    trained = _train(tiny_project, "flow", tmp_path, epochs=6)
    monkeypatch.chdir(tiny_project)
    assert train_set_loss(trained, params, "flow") < before
    out = capsys.readouterr().out
    assert len(_epoch_losses(out, "flow")) == 6
    assert "clips/s" in out and "val_accuracy" in out
    loaded = keras.saving.load_model(tmp_path / "models/flow.keras")  # no custom_objects
    assert set(loaded.output) == {"prediction"}
    metrics = json.loads((tmp_path / "dvclive/flow/metrics.json").read_text())
    assert metrics["step"] == 5 and "val_accuracy" in metrics
    tsv = (tmp_path / "dvclive/flow/plots/metrics/loss.tsv").read_text().splitlines()
    assert len(tsv) == 7  # header + 6 epochs
    assert not (tmp_path / "checkpoints/flow").exists()  # removed once the stage is done


@pytest.fixture(scope="module")
def streams(tiny_project, tmp_path_factory):
    """Both streams trained (models in ``<folder>/models``): RGB as its stage trains it (the
    project's 3 epochs), flow one epoch. For the tests of the fused net that starts from them,
    of a second training with the same seed, and of a killed training's resumed result."""
    folder = tmp_path_factory.mktemp("streams")
    return (
        folder,
        _train(tiny_project, "rgb", folder),
        _train(tiny_project, "flow", folder, epochs=1),
    )


def test_same_seed_same_model(tiny_project, streams, tmp_path):
    a = _weights(streams[1])
    b = _weights(_train(tiny_project, "rgb", tmp_path))
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)


def test_fusion_starts_from_the_streams(tiny_project, streams):
    folder, rgb, flow = streams
    params = load_params(tiny_project / "params.yaml")
    for head_init in ("streams", "random"):
        p = dataclasses.replace(
            params, fusion=dataclasses.replace(params.fusion, head_init=head_init)
        )
        fused, notes = tr.build_model("fusion", p, 4, folder / "models")
        sources = {layer.name: layer for layer in rgb.layers + flow.layers}
        above = set(fused.appearance_above)
        for layer in fused.layers:
            if not layer.weights or layer.name == "fusion":
                continue
            same = all(
                np.array_equal(keras.ops.convert_to_numpy(w), keras.ops.convert_to_numpy(v))
                for w, v in zip(layer.weights, sources[layer.name].weights, strict=True)
            )
            assert same == (head_init == "streams" or layer.name not in above), layer.name
        assert any("fusion: not in the stream models" in n for n in notes)
        assert any("rgb_fc6: left at its initialisation" in n for n in notes) == (
            head_init == "random"
        )


def test_fusion_stage_trains_and_late_fusion_only_assembles(
    tiny_project, streams, tmp_path, capsys
):
    (tmp_path / "models").mkdir()
    for name in ("rgb", "flow"):
        shutil.copy(streams[0] / f"models/{name}.keras", tmp_path / f"models/{name}.keras")
    capsys.readouterr()
    _train(tiny_project, "fusion", tmp_path)
    assert "train fusion: epoch 2/2" in capsys.readouterr().out
    fused = keras.saving.load_model(tmp_path / "models/fusion.keras")
    assert fused.get_layer("fusion").__class__.__name__ == "ConvFusion"
    params = load_params(tiny_project / "params.yaml")
    late = dataclasses.replace(
        params, fusion=dataclasses.replace(params.fusion, method="sum", layer="softmax")
    )
    here = os.getcwd()
    os.chdir(tiny_project)
    try:
        model = tr.train(
            "fusion",
            late,
            shards_dir="data/shards",
            models_dir=tmp_path / "models",
            checkpoints_dir=tmp_path / "ck",
            live_dir=None,
        )
    finally:
        os.chdir(here)
    out = capsys.readouterr().out
    assert ", 0 epochs of" in out and "train fusion: epoch 1/" not in out  # nothing to train
    assert set(model.output) == {"prediction", "appearance", "motion"}


def _run_stage(project, stream, kill_after_epoch=None):
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.train", "--stream", stream],
        cwd=project,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    if kill_after_epoch is None:
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, out
        return out
    state = project / "checkpoints" / stream / "state.json"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if json.loads(state.read_text())["epochs_done"] >= kill_after_epoch:
                break
        except (OSError, ValueError):
            pass
        time.sleep(0.01)
    assert proc.poll() is None, "training finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return None


def test_killed_training_resumes_to_the_uninterrupted_result(tiny_project, streams, tmp_path):
    """The stage killed after its first epoch, then run again, ends with the weights of the
    uninterrupted training (``streams``: the same params, seed and data)."""
    project = tmp_path / "killed"
    project.mkdir()
    shutil.copy(tiny_project / "params.yaml", project / "params.yaml")
    (project / "data").symlink_to(tiny_project / "data")
    _run_stage(project, "rgb", kill_after_epoch=1)
    assert json.loads((project / "checkpoints/rgb/state.json").read_text())["epochs_done"] >= 1
    out = _run_stage(project, "rgb")
    assert "resuming after epoch" in out
    assert "epoch 1/3" not in out and "epoch 3/3" in out
    killed = _weights(keras.saving.load_model(project / "models/rgb.keras"))
    for a, b in zip(_weights(streams[1]), killed, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


MIRRORED = """
import sys, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from pathlib import Path
from pipeline.params import load_params
from pipeline.train import train
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
train("rgb", load_params(), strategy=strategy, live_dir=None)
"""


def test_mirrored_strategy_on_two_logical_cpus(tiny_project, tmp_path):
    import shutil

    shutil.copy(tiny_project / "params.yaml", tmp_path / "params.yaml")
    (tmp_path / "data").symlink_to(tiny_project / "data")
    out = subprocess.run(
        [sys.executable, "-c", MIRRORED],
        cwd=tmp_path,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "MirroredStrategy with 2 replica(s)" in out.stdout
    assert "epoch 3/3" in out.stdout and (tmp_path / "models/rgb.keras").exists()


WORKER = """
import sys, numpy as np, keras
from pathlib import Path
from pipeline.params import load_params
from pipeline.train import train, build_model
from tests.test_train import train_set_loss
index = sys.argv[1]
params = load_params()
model = train("flow", params, live_dir=None, checkpoints_dir=Path(f"ck{index}"),
              models_dir=Path(f"models{index}"))  # first: it starts the collective runtime
keras.utils.set_random_seed(params.train.seed)
before = train_set_loss(build_model("flow", params, 4)[0], params, "flow")
print("train-set loss", before, train_set_loss(model, params, "flow"))
np.savez(f"weights{index}.npz", *[keras.ops.convert_to_numpy(w) for w in model.weights])
"""


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def test_multi_worker_custom_loop_on_two_local_workers(tiny_project, tmp_path):
    import shutil

    shutil.copy(tiny_project / "params.yaml", tmp_path / "params.yaml")
    (tmp_path / "data").symlink_to(tiny_project / "data")
    workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    procs = []
    for index in range(2):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        env = {**ENV, "TF_CONFIG": json.dumps(tf_config)}
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", WORKER, str(index)],
                cwd=tmp_path,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    outs = [p.communicate(timeout=400)[0] for p in procs]
    for p, out in zip(procs, outs, strict=True):
        assert p.returncode == 0, out
    header = next(line for line in outs[0].splitlines() if " parameters, " in line)
    assert "MultiWorkerMirroredStrategy with 2 replica(s)" in header, header
    assert len(_epoch_losses(outs[0], "flow")) == 3
    for out in outs:
        line = next(x for x in out.splitlines() if x.startswith("train-set loss"))
        before, after = (float(v) for v in line.split()[-2:])
        assert after < before, line
    w0, w1 = np.load(tmp_path / "weights0.npz"), np.load(tmp_path / "weights1.npz")
    assert len(w0.files) == len(w1.files) > 0
    for key in w0.files:
        np.testing.assert_array_equal(w0[key], w1[key])
    assert (tmp_path / "models0/flow.keras").exists() and not (tmp_path / "models1").exists()


def test_strategy_and_precision_choices():
    assert tr.precision_policy("auto") == "float32"  # no GPU here
    assert tr.precision_policy("mixed_bfloat16") == "mixed_bfloat16"
    assert tr.strategy_name(tr.make_strategy("auto")) == "default strategy"
    with pytest.raises(tr.TrainError, match="multi_worker needs TF_CONFIG"):
        tr.make_strategy("multi_worker")


def test_stage_needs_trained_streams_for_fusion(tiny_project, tmp_path):
    params = load_params(tiny_project / "params.yaml")
    with pytest.raises(tr.TrainError, match="train the rgb stream first"):
        tr.build_model("fusion", params, 4, tmp_path / "nothing")
    assert Path(tiny_project / "data/classes.txt").exists()


def test_checkpoint_key_of_a_stream_ignores_fusion_params(tiny_project):
    params = load_params(tiny_project / "params.yaml")
    other = dataclasses.replace(params, fusion=dataclasses.replace(params.fusion, method="max"))
    shards = str(tiny_project / "data/shards")
    for stream in ("rgb", "flow"):
        assert tr.run_key(stream, params, shards, Path("m")) == tr.run_key(
            stream, other, shards, Path("m")
        )
    assert tr.run_key("fusion", params, shards, Path("m")) != tr.run_key(
        "fusion", other, shards, Path("m")
    )
    with pytest.raises(contracts.MissingInputError, match="run the shard stage first"):
        tr.count_videos("train", str(tiny_project / "nowhere"))
