"""Stages ``train_rgb``, ``train_flow``, ``train_fusion``: the paper's training protocol.

Each stream is trained alone first; the fusion stage then builds the fused net, fills it from
the two trained streams (:func:`pipeline.model.init_from_streams`) and fine-tunes it (with the
layers below the fusion point frozen unless ``fusion.train_below``; with both towers' losses
when ``fusion.also_late``). The streams read ``train.epochs`` and ``train.lr``, the fusion stage
``fusion.epochs`` and ``fusion.lr``, so a change of ``fusion.*`` never re-trains a stream.

- **Devices**: ``train.strategy: auto`` uses ``MultiWorkerMirroredStrategy`` when ``TF_CONFIG``
  is set, ``MirroredStrategy`` over all GPUs when there are several, else the default strategy.
  ``train.batch_size`` is the global batch. Keras 3's ``fit`` is broken under
  MultiWorkerMirrored (keras-team/keras#20585), so that path is a custom loop with the same
  model, optimizer, losses and schedule.
- **Precision**: ``train.mixed_precision: auto`` is ``mixed_bfloat16`` on GPUs that have it
  (compute capability 8+), ``mixed_float16`` on older GPUs, float32 on a CPU.
- **Resume**: after every epoch the model (with its optimizer state) is saved to
  ``checkpoints/<stream>/``, keyed by everything the run depends on; a killed stage continues
  from its last finished epoch. Every epoch's data comes from its own seed
  (``train.seed`` and the epoch), so a resumed run sees the same clips as an uninterrupted one.
- **Determinism**: on a CPU, the same ``train.seed`` gives the same model.

Outputs: ``models/<stream>.keras`` (loads without ``custom_objects`` once ``layers`` is
imported) and per-epoch curves in ``dvclive/<stream>/`` (DVC plots).

Run: ``python -m pipeline.train --stream rgb|flow|fusion``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from pipeline import contracts
from pipeline.contracts import LIVE_DIR, MODELS_DIR, SHARDS_DIR, count_videos
from pipeline.dataset import clip_dataset, plain
from pipeline.model import (
    build_fused,
    build_stream,
    count_params,
    flow_normalisation,
    init_from_streams,
    num_classes,
    rgb_normalisation,
)
from pipeline.params import Params, PipelineError, load_params, unrecorded

STREAMS = ("rgb", "flow", "fusion")
CHECKPOINTS_DIR = Path("checkpoints")
"""The stage's own: the last finished epoch of a run in progress (removed when it ends)."""


class TrainError(PipelineError):
    """Training cannot start or go on; the message says why."""


# ---- devices and precision -----------------------------------------------------------------


def make_strategy(name: str) -> tf.distribute.Strategy:
    """The tf.distribute strategy for ``train.strategy``.

    Call it before anything else touches TensorFlow: MultiWorkerMirroredStrategy must configure
    collective ops at program start-up.
    """
    if name == "auto":
        if os.environ.get("TF_CONFIG"):
            name = "multi_worker"
        else:  # list_physical_devices does not start the runtime
            name = "mirrored" if len(tf.config.list_physical_devices("GPU")) > 1 else "default"
    if name == "multi_worker":
        if not os.environ.get("TF_CONFIG"):
            raise TrainError("train.strategy: multi_worker needs TF_CONFIG (see docs/training.md)")
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def strategy_name(strategy: tf.distribute.Strategy) -> str:
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return "MultiWorkerMirroredStrategy"
    if isinstance(strategy, tf.distribute.MirroredStrategy):
        return "MirroredStrategy"
    return "default strategy"


def precision_policy(setting: str) -> str:
    """``train.mixed_precision`` resolved for the devices at hand."""
    if setting != "auto":
        return setting
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return "float32"  # MaxPool3D has no float16 kernel on the CPU
    details = tf.config.experimental.get_device_details(gpus[0])
    major = (details.get("compute_capability") or (0, 0))[0]
    return "mixed_bfloat16" if major >= 8 else "mixed_float16"


# ---- what one stage trains -----------------------------------------------------------------


def stage_settings(stream: str, params: Params) -> dict:
    """Epochs, learning rate and input mode of a stage."""
    if stream == "fusion":
        # late fusion (layer softmax) only averages the trained streams: nothing to train
        epochs = 0 if params.fusion.layer == "softmax" else params.fusion.epochs
        return {"epochs": epochs, "lr": params.fusion.lr, "mode": "both"}
    if getattr(params.train.streams, stream) is not None:  # a released stream, taken as it is
        return {"epochs": 0, "lr": params.train.lr, "mode": stream}
    return {"epochs": params.train.epochs, "lr": params.train.lr, "mode": stream}


def build_model(stream: str, params: Params, classes: int, models_dir: Path = MODELS_DIR) -> tuple:
    """The model a stage trains, and the lines to report about its initialisation."""
    if stream != "fusion":
        model = build_stream(stream, params, classes)
        return model, model.init_report
    streams = {}
    for name in ("rgb", "flow"):
        path = contracts.model_path(name, models_dir)
        if not path.exists():
            raise TrainError(
                f"{path} not found: train the {name} stream first (dvc repro train_{name})"
            )
        streams[name] = contracts.load_model(path, f"train_{name}", compile=False)
    fused = build_fused(
        params,
        classes,
        rgb_normalisation(streams["rgb"]),
        flow_normalisation(streams["flow"]),
    )
    skip = tuple(fused.appearance_above) if params.fusion.head_init == "random" else ()
    unfilled = init_from_streams(fused, streams["rgb"], streams["flow"], skip)
    return fused, [f"not from the streams: {line}" for line in unfilled]


def loss_weights(model: keras.Model) -> dict[str, float]:
    """Which outputs train: ``prediction``; or, with also_late, each tower's own output."""
    names = list(model.output.keys())
    if "fused" in names:
        return {"prediction": 0.0, "fused": 1.0, "motion": 1.0}
    return {name: float(name == "prediction") for name in names}


def make_optimizer(params: Params, lr: float, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    t = params.train
    schedule: float | keras.optimizers.schedules.LearningRateSchedule = lr
    if t.lr_decay_epochs:
        bounds = [e * steps_per_epoch for e in sorted(t.lr_decay_epochs)]
        values = [lr / 10**i for i in range(len(bounds) + 1)]
        schedule = keras.optimizers.schedules.PiecewiseConstantDecay(bounds, values)
    decay = t.weight_decay or None
    if t.optimizer == "sgd":
        return keras.optimizers.SGD(schedule, momentum=t.momentum, weight_decay=decay)
    return keras.optimizers.Adam(schedule, weight_decay=decay)


def run_key(stream: str, params: Params, shards_dir: str, models_dir: Path) -> str:
    """Everything a run depends on: a checkpoint is resumed only under the same key. It hashes
    whole sections (more than the stage reads: a checkpoint is then dropped more often than
    needed, never resumed wrongly), except what a stream never reads: ``fusion.*``, and for
    the rgb stream ``model.flow_backbone``. Not recorded as reads (:func:`unrecorded`)."""
    with unrecorded():
        model, train = asdict(params.model), asdict(params.train)
        if stream == "rgb":
            del model["flow_backbone"]
        if stream != "fusion":  # the other stream's released model is not this one's
            train["streams"] = train["streams"][stream]
        parts = {
            "stream": stream,
            "params": {"clip": asdict(params.clip), "model": model, "train": train},
            "eval.clips": params.eval.clips,
            "shards": contracts.read_shard_index(shards_dir),
        }
        if stream == "fusion":  # a stream never depends on fusion.*: its checkpoints survive
            parts["fusion"] = asdict(params.fusion)
    if stream == "fusion":
        for name in ("rgb", "flow"):
            path = contracts.model_path(name, models_dir)
            parts[name] = hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else ""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _seed_variables(model: keras.Model) -> list:
    return [v for v in model.variables if v.path.endswith("seed_generator_state")]


def seed_states(model: keras.Model) -> list[list[int]]:
    """The dropout layers' random-number states: a ``.keras`` file does not keep them, and a
    resumed run must not replay the masks of its first epochs."""
    return [np.asarray(keras.ops.convert_to_numpy(v)).tolist() for v in _seed_variables(model)]


def restore_seed_states(model: keras.Model, states: list[list[int]]) -> None:
    for variable, state in zip(_seed_variables(model), states, strict=True):
        variable.assign(np.asarray(state, dtype=variable.dtype))


def epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch) % (2**31 - 1)


# ---- the loops -----------------------------------------------------------------------------


class EpochLog(keras.callbacks.Callback):
    """One line per epoch (loss, accuracy, validation, clips/s) and the DVCLive curves."""

    def __init__(self, stream: str, epochs: int, clips_per_epoch: int, live: object | None) -> None:
        super().__init__()
        self.stream, self.epochs, self.clips, self.live = stream, epochs, clips_per_epoch, live

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = dict(logs or {})
        rate = self.clips / max(time.perf_counter() - self.start, 1e-9)
        shown = {k: v for k, v in logs.items() if k in SHOWN}
        text = ", ".join(f"{k} {v:.4f}" for k, v in shown.items())
        print(
            f"train {self.stream}: epoch {epoch + 1}/{self.epochs}: {text}, {rate:.1f} clips/s",
            flush=True,
        )
        if self.live is not None:
            for key, value in shown.items():
                self.live.log_metric(key, float(value))
            self.live.log_metric("clips_per_s", rate)
            self.live.next_step()


SHOWN = ("loss", "accuracy", "val_loss", "val_accuracy")


def _standard_logs(logs: dict) -> dict:
    """Keras names metrics of dict outputs ``prediction_accuracy``: show them as ``accuracy``."""
    out = {}
    for key, value in logs.items():
        short = key.replace("prediction_", "")
        if short in SHOWN:
            out[short] = float(value)
    return out


def _datasets(params: Params, mode: str, batch: int, shards_dir: str, targets: list[str]) -> tuple:
    """(train dataset for an epoch, validation dataset, its steps), targets for every output."""

    @plain
    def with_targets(x: object, y: tf.Tensor, *rest: object) -> tuple:
        return x, {name: y for name in targets}

    def train(epoch: int) -> tf.data.Dataset:
        ds = clip_dataset(
            "train",
            params,
            mode,
            training=True,
            batch_size=batch,
            shards_dir=shards_dir,
            seed=epoch_seed(params.train.seed, epoch),
        )
        return ds.map(with_targets)

    val, val_steps = None, 0
    if count_videos("val", shards_dir):
        val = clip_dataset(
            "val", params, mode, training=False, batch_size=batch, shards_dir=shards_dir
        ).map(with_targets)
        val_steps = -(-count_videos("val", shards_dir) * params.eval.clips // batch)
    return train, val, val_steps


def fit_epochs(
    model: keras.Model,
    train_ds: Callable[[int], tf.data.Dataset],
    val_ds: tf.data.Dataset | None,
    val_steps: int,
    start: int,
    epochs: int,
    steps: int,
    on_epoch: Callable[[int, dict], None],
) -> None:
    """``model.fit``, one epoch per call so that each epoch reads its own seeded data."""
    verbose = 1 if sys.stdout.isatty() else 0
    for epoch in range(start, epochs):
        history = model.fit(
            train_ds(epoch).repeat(),
            steps_per_epoch=steps,
            epochs=epoch + 1,
            initial_epoch=epoch,
            validation_data=val_ds,
            validation_steps=val_steps or None,
            shuffle=False,
            verbose=verbose,
        )
        on_epoch(epoch, _standard_logs({k: v[-1] for k, v in history.history.items()}))


def custom_loop_epochs(
    model: keras.Model,
    strategy: tf.distribute.Strategy,
    train_ds: Callable[[int], tf.data.Dataset],
    val_ds: tf.data.Dataset | None,
    start: int,
    epochs: int,
    steps: int,
    global_batch: int,
    weights: dict[str, float],
    on_epoch: Callable[[int, dict], None],
    jit_compile: bool = False,
    run_eagerly: bool = False,
) -> None:
    """The same training as :func:`fit_epochs` with ``strategy.run``: for
    MultiWorkerMirroredStrategy, under which Keras 3's ``fit`` does not work. Its steps are
    ``tf.function`` s (``jit_compile``: XLA) traced without AutoGraph, as Keras traces its own
    (pipeline/dataset.py: plain), or plain eager calls (``run_eagerly``)."""
    optimizer = model.optimizer
    scaled = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)

    def per_example(outputs: dict, y: tf.Tensor) -> tf.Tensor:
        losses = [
            w * keras.losses.sparse_categorical_crossentropy(y, outputs[k])
            for k, w in weights.items()
            if w
        ]
        return tf.add_n(losses)

    def count_correct(outputs: dict, y: tf.Tensor) -> tf.Tensor:
        hits = tf.equal(tf.argmax(outputs["prediction"], -1, tf.int32), y)
        return tf.reduce_sum(tf.cast(hits, tf.float32))

    def step_fn(x: object, y: dict) -> tuple:
        labels = next(iter(y.values()))
        with tf.GradientTape() as tape:
            out = model(x, training=True)
            loss = tf.nn.compute_average_loss(
                per_example(out, labels), global_batch_size=global_batch
            )
            scaled_loss = optimizer.scale_loss(loss) if scaled else loss
        grads = tape.gradient(scaled_loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return loss, count_correct(out, labels)

    def train_step(iterator: object) -> tuple:
        loss, correct = strategy.run(step_fn, args=next(iterator))
        sum_ = tf.distribute.ReduceOp.SUM
        return strategy.reduce(sum_, loss, axis=None), strategy.reduce(sum_, correct, axis=None)

    if not run_eagerly:
        train_step = tf.function(train_step, jit_compile=jit_compile, autograph=False)

    def eval_step(x: object, y: dict) -> tuple:
        labels = next(iter(y.values()))
        out = model(x, training=False)
        loss = tf.reduce_sum(per_example(out, labels))
        return loss, count_correct(out, labels), tf.cast(tf.shape(labels)[0], tf.float32)

    if not run_eagerly:
        eval_step = tf.function(eval_step, autograph=False)

    for epoch in range(start, epochs):
        iterator = iter(strategy.experimental_distribute_dataset(train_ds(epoch).repeat()))
        total_loss = total_correct = 0.0
        for _ in range(steps):
            loss, correct = train_step(iterator)
            total_loss += float(loss)
            total_correct += float(correct)
        logs = {"loss": total_loss / steps, "accuracy": total_correct / (steps * global_batch)}
        if val_ds is not None:  # every worker scores the whole (small) validation split
            sums = np.zeros(3)
            for x, y in val_ds:
                sums += [float(v) for v in eval_step(x, y)]
            logs.update(val_loss=sums[0] / sums[2], val_accuracy=sums[1] / sums[2])
        on_epoch(epoch, logs)


# ---- the stage -----------------------------------------------------------------------------


def train(
    stream: str,
    params: Params,
    *,
    strategy: tf.distribute.Strategy | None = None,
    shards_dir: str = SHARDS_DIR,
    models_dir: Path = MODELS_DIR,
    checkpoints_dir: Path = CHECKPOINTS_DIR,
    live_dir: Path | None = LIVE_DIR,
    classes: int | None = None,
) -> keras.Model:
    """Train one stage's model and write ``models/<stream>.keras``; returns the model."""
    if stream not in STREAMS:
        raise TrainError(f"--stream must be one of {STREAMS}; got {stream!r}")
    t = params.train
    strategy = strategy or make_strategy(t.strategy)
    keras.utils.set_random_seed(t.seed)
    policy = precision_policy(t.mixed_precision)
    keras.mixed_precision.set_global_policy(policy)
    if policy == "float32" and not tf.config.list_physical_devices("GPU"):
        tf.config.experimental.enable_op_determinism()
    multi_worker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
    chief = not multi_worker or strategy.cluster_resolver.task_id == 0
    for split in ("train", "val"):  # read whole and checked before anything is built
        if count_videos(split, shards_dir):
            contracts.shard_files(split, shards_dir)
    classes = classes or num_classes(params)
    setting = stage_settings(stream, params)
    batch = t.batch_size
    steps = count_videos("train", shards_dir) // batch
    if steps < 1 and setting["epochs"]:
        raise TrainError(
            f"the train split has {count_videos('train', shards_dir)} videos, fewer "
            f"than one batch of train.batch_size = {batch}"
        )

    key = run_key(stream, params, shards_dir, models_dir)
    ckpt_dir = checkpoints_dir / stream
    start, state = resume_state(ckpt_dir, key)
    if start and live_dir is not None and chief and state.get("live"):
        # the curves as they were at the checkpoint: a kill after an epoch was logged but
        # before its checkpoint was written must not log that epoch twice
        shutil.rmtree(live_dir / stream, ignore_errors=True)
        shutil.copytree(ckpt_dir / state["live"], live_dir / stream)

    with strategy.scope():
        if start:
            ckpt = ckpt_dir / state["checkpoint"]
            model = contracts.load_model(ckpt, f"train_{stream}")  # weights, optimizer state
            restore_seed_states(model, state["seed_states"])
            notes = [f"resuming after epoch {start} from {ckpt}"]
        else:
            model, notes = build_model(stream, params, classes, models_dir)
        weights = loss_weights(model)
        if not start:
            optimizer = make_optimizer(params, setting["lr"], steps)
            if policy == "mixed_float16":
                optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
            model.compile(
                optimizer=optimizer,
                loss={k: "sparse_categorical_crossentropy" for k in weights},
                loss_weights=weights,
                metrics={"prediction": ["accuracy"]},
                jit_compile=t.jit_compile,
                run_eagerly=t.run_eagerly,
            )
    for line in notes:
        print(f"train {stream}: {line}", flush=True)
    print(
        f"train {stream}: {count_params(model)} parameters, {setting['epochs']} epochs of "
        f"{steps} steps x {batch} clips, {policy}, {strategy_name(strategy)} with "
        f"{strategy.num_replicas_in_sync} replica(s)",
        flush=True,
    )

    live = None
    if live_dir is not None and chief:
        from dvclive import Live

        live = Live(str(live_dir / stream), resume=start > 0, save_dvc_exp=False, dvcyaml=False)
    logger = EpochLog(stream, setting["epochs"], steps * batch, live)

    def on_epoch(epoch: int, logs: dict) -> None:
        logger.on_epoch_end(epoch, logs)
        logger.on_epoch_begin(epoch + 1)
        if chief:  # the checkpoint that a killed run resumes from
            copied = live_dir / stream if live is not None else None
            save_checkpoint(ckpt_dir, key, epoch + 1, model, copied)

    train_ds, val_ds, val_steps = _datasets(
        params, setting["mode"], batch, shards_dir, list(weights)
    )
    logger.on_epoch_begin(start)
    if multi_worker:
        custom_loop_epochs(
            model,
            strategy,
            train_ds,
            val_ds,
            start,
            setting["epochs"],
            steps,
            batch,
            weights,
            on_epoch,
            t.jit_compile,
            t.run_eagerly,
        )
    else:
        fit_epochs(model, train_ds, val_ds, val_steps, start, setting["epochs"], steps, on_epoch)
    if setting["epochs"] == 0 and stream != "fusion":  # a released stream, taken as it is
        logs = {}
        if val_ds is not None and not multi_worker:  # scored once (not under MultiWorker-
            # Mirrored, where Keras' fit and evaluate do not work: keras-team/keras#20585)
            scored = model.evaluate(val_ds, steps=val_steps, verbose=0, return_dict=True)
            logs = {k: v for k, v in _standard_logs(scored).items() if k in ("loss", "accuracy")}
            print(
                f"train {stream}: not trained; on the val split: "
                + ", ".join(f"{k} {v:.4f}" for k, v in logs.items()),
                flush=True,
            )
        if live is not None:
            for key, value in logs.items():
                live.log_metric(f"val_{key}", float(value))
            live.log_metric("epochs_trained", 0)
    if live is not None:
        live.end()
    if chief:
        models_dir.mkdir(parents=True, exist_ok=True)
        path = contracts.model_path(stream, models_dir)
        with contracts.atomic_path(path, keep_suffix=True, size=saved_size(model)) as tmp:
            model.save(tmp)
        shutil.rmtree(ckpt_dir, ignore_errors=True)
    return model


def resume_state(ckpt_dir: Path, key: str) -> tuple[int, dict]:
    """(epochs done, the state) of the checkpoint in ``ckpt_dir`` made under ``key``; (0, {})
    when there is none, and a checkpoint made for other params or data is removed: a run
    never resumes from it."""
    state_file = ckpt_dir / "state.json"
    if not state_file.exists():
        return 0, {}
    try:
        state = json.loads(state_file.read_text(encoding="utf-8"))
    except ValueError:
        state = {}  # written atomically, so only a hand-edited file gets here: start afresh
    state.setdefault("checkpoint", "last.keras")  # as checkpoints were named before
    if state.get("key") != key or not (ckpt_dir / state["checkpoint"]).exists():
        shutil.rmtree(ckpt_dir)
        return 0, {}
    return int(state["epochs_done"]), state


def saved_size(model: keras.Model) -> int:
    """About the bytes of ``model.save``: its variables and its optimizer's (the archive's
    config adds a few kB)."""
    optimizer = getattr(model, "optimizer", None)
    variables = [*model.variables, *(optimizer.variables if optimizer is not None else [])]
    return sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for v in variables)


def save_checkpoint(
    ckpt_dir: Path, key: str, epochs_done: int, model: keras.Model, live: Path | None
) -> None:
    """The checkpoint after ``epochs_done`` epochs: the model (weights and optimizer state) and
    a copy of the DVCLive folder ``live``, each under a name of its epoch, then ``state.json``
    naming them, then the older ones removed. ``state.json`` is written last, in one rename:
    a kill at any point leaves the previous checkpoint whole and named by it."""
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    name = f"epoch-{epochs_done:04d}"
    size = saved_size(model)
    with contracts.atomic_path(ckpt_dir / f"{name}.keras", keep_suffix=True, size=size) as tmp:
        model.save(tmp)
    state = {"key": key, "epochs_done": epochs_done, "checkpoint": f"{name}.keras"}
    if live is not None and live.exists():
        copy = ckpt_dir / f"{name}-live"
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(live, copy)
        state["live"] = copy.name
    state["seed_states"] = seed_states(model)
    contracts.write_text(ckpt_dir / "state.json", json.dumps(state))
    for old in ckpt_dir.iterdir():
        if old.name in (state["checkpoint"], state.get("live"), "state.json"):
            continue
        if old.is_dir():
            shutil.rmtree(old)
        else:
            old.unlink()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Train one stage: rgb, flow or fusion.")
    parser.add_argument("--stream", required=True, choices=STREAMS)
    args = parser.parse_args(argv)
    try:
        lock = contracts.stage_lock(f"train_{args.stream}")
        with lock, contracts.disk_full_guard(contracts.MODELS_DIR):
            train(args.stream, load_params())
    except PipelineError as exc:
        sys.exit(f"train {args.stream}: {exc}")
    print(f"train {args.stream}: wrote {contracts.model_path(args.stream)}")


if __name__ == "__main__":
    main()
