"""Typed, validated view of ``params.yaml``.

Every stage reads its configuration through :func:`load_params`. The whole file is checked
before any work starts: unknown keys, missing keys, wrong types and out-of-range values are
collected and reported together in one :class:`ParamsError` that names each bad key, what it
got and what is allowed. The values themselves live only in ``params.yaml`` (no defaults are
repeated here), so that file stays the single place where a default is set.

Each section is a frozen dataclass. A field's allowed values are declared next to it with
:func:`_between` or :func:`_one_of`; cross-field rules live in the section's ``_check``.

dvc.yaml declares, per stage, the keys that stage reads, except the keys of :data:`RUN_ONLY`,
which steer a run without changing its outputs. With :data:`READS_LOG` set, every section
records the keys a process reads, which is how the tests hold dvc.yaml to the code.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import gc
import json
import os
import sys
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

PARAMS_FILE = "params.yaml"

# Every stage imports this module: at its exit, the objects still alive are frozen (moved out
# of the garbage collector's reach) before the interpreter's own teardown, whose collections
# would otherwise walk them all: after TensorFlow and Keras are imported, about 1 s of every
# stage's exit here, for memory the process is about to hand back anyway. Only cycles are left
# to the OS this way: objects outside cycles are still freed (and files closed) by their
# reference counts, and Python never promised `__del__` for what is alive at exit (the data
# model's `object.__del__`). Freezing frees nothing: the exit handlers that run after this one
# see every object as before.
atexit.register(gc.freeze)

RUN_ONLY = {
    "data.workers": "how many processes probe the videos; the manifest is the same for any "
    "number (but for a video that decodes in about data.probe_timeout_s on a loaded machine)",
    "data.max_rejected_fraction": "only whether ingest gives up; what it writes is the same",
    "flow.workers": "how many processes compute flow; the records are the same for any number",
    "flow.max_failure_fraction": "only whether the flow stage gives up; the records are the same",
    "cluster.executor": "where ingest and flow run their per-video work; the manifest and the "
    "records are the same on any executor (tests/test_cluster.py)",
    "cluster.address": "which Ray cluster runs the work",
    "cluster.cpus_per_video": "the CPUs Ray reserves for one video's task",
    "cluster.gpus_per_worker": "the GPUs Ray reserves for one keras-engine TV-L1 actor",
    "cluster.max_in_flight": "how many videos are in the air at once",
}
"""Keys that steer a run and never change what a stage writes: no stage declares them in
dvc.yaml, so editing one re-runs nothing (tests/test_dvc_pipeline.py checks every other key a
stage reads is declared, and every declared key is read)."""

READS_LOG = "PIPELINE_PARAMS_LOG"
"""When this environment variable names a file, every process that calls :func:`load_params`
appends to it, as it exits, one JSON line: its DVC stage (``DVC_STAGE``), its command line, and
each params key it read (``tests/test_dvc_pipeline.py`` checks them against dvc.yaml). Worker
processes do not load params, so their reads are not recorded: the stage process reads every
key it hands them (the flow stage stamps them all into each record)."""

_reads: set[str] | None = None  # the keys read so far, while recording


class _Section:
    """Base of every section: knows its dotted name, and records the keys read from it while
    :data:`READS_LOG` is set (a recording view of params.yaml, for the dvc.yaml check)."""

    _name = ""

    def __init_subclass__(cls, name: str = "", **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._name = name

    def __getattribute__(self, attr: str) -> Any:
        value = object.__getattribute__(self, attr)
        if _reads is not None and not attr.startswith("_"):
            cls = type(self)
            f = cls.__dataclass_fields__.get(attr)
            if f is not None and not isinstance(value, _Section):
                _reads.add(f"{cls._name}.{f.metadata.get('key', attr)}")
        return value


@contextlib.contextmanager
def unrecorded() -> Iterator[None]:
    """Reads in this block are not recorded: for keys that only make a cache or checkpoint key
    (hashing a whole section), which are not what the stage's output depends on."""
    global _reads
    saved, _reads = _reads, None
    try:
        yield
    finally:
        _reads = saved


def _record_reads(log: str) -> None:
    global _reads
    if _reads is not None:
        return
    _reads = set()

    def write() -> None:
        entry = {"stage": os.environ.get("DVC_STAGE"), "argv": sys.argv, "reads": sorted(_reads)}
        with open(log, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry) + "\n")

    atexit.register(write)


MOTIONS = ("up", "down", "shake", "grow", "shrink")
"""Motions of the synthetic dataset, in the order ``synthetic.motions: M`` takes them. A
horizontal mirror leaves each one unchanged, so flip augmentation never changes a label."""

ORDER_MOTIONS = ("updown", "downup")
"""Motions whose class is their order, which ``synthetic.motions`` may name in a list: up then
down, and down then up (each reverses halfway). A "downup" video is the frames of an "updown"
one rolled by half its length, so a single frame or snippet cannot tell the two apart; only a
temporal fusion that keeps the order of snippets can."""

MAX_COLORS = 6
"""Most object colours the synthetic dataset can draw at one grey level and still tell apart."""


UCF101_CLASSES = 101
"""Classes of the UCF101-shaped synthetic set (``synthetic.ucf101_like``), as UCF101's."""

UCF101_LIKE_MIN = 3 * UCF101_CLASSES
"""Fewest videos of a UCF101-shaped set: three groups of one clip a class (each split then
tests one group and trains on two)."""


class PipelineError(RuntimeError):
    """A stage cannot go on; the message says why and what to change. Stages exit with it."""


class ParamsError(PipelineError, ValueError):
    """``params.yaml`` is invalid; the message lists every problem found."""


def _between(lo: float | None = None, hi: float | None = None) -> dict[str, Any]:
    return {"lo": lo, "hi": hi}


def _one_of(*choices: Any) -> dict[str, Any]:
    return {"choices": choices}


@dataclass(frozen=True)
class SyntheticParams(_Section, name="synthetic"):
    """``synthetic``: the embedded "which object moves" dataset."""

    seed: int = field(metadata=_between(0))
    colors: int = field(metadata=_between(2, MAX_COLORS))
    motions: int | list[str] = field(metadata=_between(1, len(MOTIONS)))
    videos_per_class: int = field(metadata=_between(2, 10_000))
    frames: int = field(metadata=_between(2, 10_000))
    size: int = field(metadata=_between(32, 1024))
    test_fraction: float = field(metadata=_between(0.0, 0.9))
    ucf101_like: int | None = field(metadata=_between(UCF101_LIKE_MIN, 1_000_000))
    out: str

    def motion_names(self) -> list[str]:
        """The motions of the classes: the first ``M`` of :data:`MOTIONS`, or the list."""
        if isinstance(self.motions, int):
            return list(MOTIONS[: self.motions])
        return list(self.motions)

    def _check(self) -> list[str]:
        if isinstance(self.motions, list):
            known = MOTIONS + ORDER_MOTIONS
            bad = [m for m in self.motions if m not in known]
            if bad or not self.motions or len(set(self.motions)) < len(self.motions):
                return [
                    f"synthetic.motions: got {self.motions}; allowed: a number of motions "
                    f"(1..{len(MOTIONS)}) or a list of distinct names from {', '.join(known)}"
                ]
        n_test = round(self.videos_per_class * self.test_fraction)
        if n_test < 1 or n_test >= self.videos_per_class:
            return [
                f"synthetic.test_fraction: {self.test_fraction} of "
                f"{self.videos_per_class} videos per class gives {n_test} test videos; "
                "allowed: at least 1 test and 1 training video per class"
            ]
        return []


@dataclass(frozen=True)
class DataParams(_Section, name="data"):
    """``data``: where the raw videos are, how they are split, what gets rejected."""

    layout: str = field(metadata=_one_of("ucf101", "hmdb51", "folder", "rawframes"))
    root: str
    lists: str
    split: int = field(metadata=_between(1, 3))
    seed: int = field(metadata=_between(0))
    val_fraction: float = field(metadata=_between(0.0, 0.5))
    test_fraction: float = field(metadata=_between(0.0, 0.9))
    min_frames: int = field(metadata=_between(1))
    max_rejected_fraction: float = field(metadata=_between(0.0, 1.0))
    workers: int = field(metadata=_between(0, 1024))
    probe_timeout_s: float = field(metadata=_between(1.0))
    rawframes_bound: float = field(metadata=_between(0.01, 1000.0))
    rawframes_rounding: str = field(metadata=_one_of("round", "floor"))

    def _check(self) -> list[str]:
        return []


@dataclass(frozen=True)
class TVL1Params(_Section, name="flow.tvl1"):
    """``flow.tvl1``: OpenCV's DualTVL1OpticalFlow parameters (its defaults in params.yaml)."""

    tau: float = field(metadata=_between(0.0, 1.0))
    # "lambda" is a Python keyword: the attribute is lambda_, as in OpenCV's Python binding.
    lambda_: float = field(metadata={**_between(0.0), "key": "lambda"})
    theta: float = field(metadata=_between(0.0, 1.0))
    nscales: int = field(metadata=_between(1, 20))
    warps: int = field(metadata=_between(1, 100))
    epsilon: float = field(metadata=_between(0.0))
    inner_iterations: int = field(metadata=_between(1, 10_000))
    outer_iterations: int = field(metadata=_between(1, 10_000))
    scale_step: float = field(metadata=_between(0.1, 0.99))
    gamma: float = field(metadata=_between(0.0))
    median_filtering: int = field(metadata=_between(1, 15))

    def _check(self) -> list[str]:
        if self.median_filtering % 2 == 0:
            return [
                f"flow.tvl1.median_filtering: got {self.median_filtering}; allowed: an odd "
                "integer (1 = off)"
            ]
        return []


@dataclass(frozen=True)
class FlowParams(_Section, name="flow"):
    """``flow``: TV-L1 optical flow for every video, and how the per-video records look."""

    engine: str = field(metadata=_one_of("opencv", "keras", "auto"))
    batch: int = field(metadata=_between(1, 4096))
    bucket: int = field(metadata=_between(1, 1024))
    size: int | list[int] | None = field(metadata=_between(16, 4096))
    bound: float = field(metadata=_between(0.5, 1000.0))
    jpeg_quality: int = field(metadata=_between(1, 100))
    workers: int = field(metadata=_between(0, 1024))
    max_failure_fraction: float = field(metadata=_between(0.0, 1.0))
    tvl1: TVL1Params

    def _check(self) -> list[str]:
        problems = []
        if isinstance(self.size, list) and (
            len(self.size) != 2 or any(not 16 <= v <= 4096 for v in self.size)
        ):
            problems.append(
                f"flow.size: got {self.size}; allowed: null (keep), N (shorter side), "
                "or [W, H] with each in [16, 4096]"
            )
        t = self.tvl1
        if self.engine != "opencv" and (t.gamma != 0 or t.median_filtering not in (1, 5)):
            problems.append(
                f"flow.engine {self.engine!r} implements flow.tvl1.gamma 0 and "
                "median_filtering 1 (off) or 5, OpenCV's defaults (got gamma "
                f"{t.gamma}, median_filtering {t.median_filtering}): use engine opencv"
            )
        return problems


@dataclass(frozen=True)
class ClusterParams(_Section, name="cluster"):
    """``cluster``: where ingest and flow run their per-video work (docs/cluster.md). Every
    key steers the run only (:data:`RUN_ONLY`)."""

    executor: str = field(metadata=_one_of("local", "ray"))
    address: str | None  # null: a private Ray instance on this machine, for this run
    cpus_per_video: float = field(metadata=_between(0.01, 1024.0))
    gpus_per_worker: float = field(metadata=_between(0.0, 64.0))
    max_in_flight: int = field(metadata=_between(1, 1_000_000))

    def _check(self) -> list[str]:
        a = self.address
        if a is None or a == "auto":
            return []
        host, _, port = a.removeprefix("ray://").rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            return [
                f"cluster.address: got {a!r}; allowed: null (a private Ray instance on this "
                "machine), 'auto' (the cluster `ray start` runs here), 'host:port' (the head's "
                "GCS port, 6379 by default) or 'ray://host:port' (Ray Client, 10001)"
            ]
        return []


@dataclass(frozen=True)
class ShardParams(_Section, name="shard"):
    """``shard``: how the per-video records are packed into shards."""

    target_mb: float = field(metadata=_between(1.0, 100_000.0))
    min_shards: int = field(metadata=_between(1, 100_000))
    seed: int = field(metadata=_between(0))


@dataclass(frozen=True)
class ClipParams(_Section, name="clip"):
    """``clip``: what one training or evaluation example is (DESIGN.md, Clips)."""

    frames: int = field(metadata=_between(1, 1000))  # T
    stride: int = field(metadata=_between(1, 1000))  # tau
    flow_stack: int = field(metadata=_between(2, 100))  # L
    crop: int = field(metadata=_between(16, 4096))
    scales: list[float] = field(metadata=_between(0.1, 1.0))
    shuffle_buffer: int = field(metadata=_between(1, 1_000_000))

    def _check(self) -> list[str]:
        problems = []
        if self.flow_stack % 2:
            problems.append(
                f"clip.flow_stack: got {self.flow_stack}; allowed: an even integer "
                "(the stack is centred: offsets -L/2 .. L/2-1)"
            )
        if not self.scales or any(not 0.1 <= s <= 1.0 for s in self.scales):
            problems.append(
                f"clip.scales: got {self.scales}; allowed: a non-empty list of "
                "numbers in [0.1, 1.0] (crop side / shorter frame side)"
            )
        return problems


@dataclass(frozen=True)
class EvalParams(_Section, name="eval"):
    """``eval``: the video-level test protocol."""

    clips: int = field(metadata=_between(1, 1000))
    flip: bool
    batch_size: int = field(metadata=_between(1, 100_000))


BACKBONES = ("small", "vgg_m_2048", "vgg16")
FUSION_METHODS = ("sum", "max", "concat", "conv", "bilinear")
FUSION_LAYERS = ("relu1", "relu2", "relu3", "relu4", "relu5", "softmax")
TEMPORAL = ("avg2d", "pool3d", "conv3d_pool3d")


@dataclass(frozen=True)
class ModelParams(_Section, name="model"):
    """``model``: the towers."""

    backbone: str = field(metadata=_one_of(*BACKBONES))
    flow_backbone: str | None = field(metadata=_one_of(None, *BACKBONES))
    num_classes: int | None = field(metadata=_between(2, 1_000_000))
    dropout: float = field(metadata=_between(0.0, 0.99))


@dataclass(frozen=True)
class FusionParams(_Section, name="fusion"):
    """``fusion``: where and how the motion tower is fused into the appearance tower."""

    method: str = field(metadata=_one_of(*FUSION_METHODS))
    layer: str = field(metadata=_one_of(*FUSION_LAYERS))
    also_late: bool
    temporal: str = field(metadata=_one_of(*TEMPORAL))
    conv_init: str = field(metadata=_one_of("sum", "sum_gaussian", "random"))
    conv_init_weights: list[float]
    train_below: bool
    head_init: str = field(metadata=_one_of("streams", "random"))
    epochs: int = field(metadata=_between(0, 100_000))
    lr: float = field(metadata=_between(0.0, 10.0))

    def _check(self) -> list[str]:
        if len(self.conv_init_weights) != 2:
            return [
                f"fusion.conv_init_weights: got {self.conv_init_weights}; allowed: "
                "[w_appearance, w_motion]"
            ]
        return []


@dataclass(frozen=True)
class StreamsParams(_Section, name="train.streams"):
    """``train.streams``: trained stream models to use as they are instead of training them
    (``.h5`` files that ``python -m pipeline.weights import`` wrote from the authors' released
    DagNN models; docs/frames.md, The authors' released streams)."""

    rgb: str | None
    flow: str | None

    def _check(self) -> list[str]:
        return [
            f"train.streams.{name}: got {path!r}; allowed: null, or the path of the .h5 file "
            f"python -m pipeline.weights import wrote from a released {name} stream (.mat)"
            for name, path in (("rgb", self.rgb), ("flow", self.flow))
            if path is not None and not path.endswith(".h5")
        ]


@dataclass(frozen=True)
class TrainParams(_Section, name="train"):
    """``train``: how the networks are trained (the streams; the fusion stage takes its epochs
    and learning rate from ``fusion``)."""

    weights: str  # none | imagenet | the path of an .h5 weights file (docs/weights.md)
    optimizer: str = field(metadata=_one_of("adam", "sgd"))
    epochs: int = field(metadata=_between(1, 100_000))
    batch_size: int = field(metadata=_between(1, 1_000_000))
    lr: float = field(metadata=_between(0.0, 10.0))
    lr_decay_epochs: list[int]
    momentum: float = field(metadata=_between(0.0, 1.0))
    weight_decay: float = field(metadata=_between(0.0, 1.0))
    strategy: str = field(metadata=_one_of("auto", "default", "mirrored", "multi_worker"))
    mixed_precision: str = field(
        metadata=_one_of("auto", "float32", "mixed_bfloat16", "mixed_float16")
    )
    jit_compile: bool
    run_eagerly: bool
    seed: int = field(metadata=_between(0, 2**31 - 1))
    streams: StreamsParams

    def _check(self) -> list[str]:
        if self.weights not in ("none", "imagenet") and not self.weights.endswith(".h5"):
            return [
                f"train.weights: got {self.weights!r}; allowed: none, imagenet, or the path of "
                "an .h5 weights file (from python -m pipeline.weights import, or Keras' VGG-16)"
            ]
        if any(e < 1 for e in self.lr_decay_epochs):
            return [
                f"train.lr_decay_epochs: got {self.lr_decay_epochs}; allowed: epochs >= 1 "
                "after which the learning rate is divided by 10"
            ]
        if self.jit_compile and self.run_eagerly:
            return [
                "train.jit_compile and train.run_eagerly are both true: an eager step is not "
                "compiled; set one of them to false"
            ]
        return []


@dataclass(frozen=True)
class Params:
    """The whole ``params.yaml``: one attribute per section."""

    synthetic: SyntheticParams
    data: DataParams
    flow: FlowParams
    cluster: ClusterParams
    shard: ShardParams
    clip: ClipParams
    eval: EvalParams
    model: ModelParams
    fusion: FusionParams
    train: TrainParams


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) is list:
        item = _type_name(typing.get_args(tp)[0]).split(" ", 1)[-1]
        return f"a list of {item}s"
    return {int: "an integer", float: "a number", str: "a string", bool: "true/false"}.get(
        tp, "null" if tp is type(None) else str(tp)
    )


def _coerce(value: Any, tp: Any) -> tuple[bool, Any]:
    """Return (ok, value) for ``value`` read from YAML against the annotation ``tp``."""
    if typing.get_origin(tp) is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, list):
            return False, value
        coerced = [_coerce(v, item) for v in value]
        return all(ok for ok, _ in coerced), [v for _, v in coerced]
    args = typing.get_args(tp)
    if args:  # Optional / Union
        for arg in args:
            ok, out = _coerce(value, arg)
            if ok:
                return True, out
        return False, value
    if tp is type(None):
        return value is None, value
    if tp is bool:
        return isinstance(value, bool), value
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if tp is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return ok, float(value) if ok else value
    if tp is str:
        return isinstance(value, str) and value != "", value
    raise TypeError(f"unsupported annotation {tp!r}")  # a programming error, not a user one


def _allowed(f: dataclasses.Field, tp: Any) -> str:
    meta = f.metadata
    if "choices" in meta:
        return "one of " + ", ".join(repr(c) for c in meta["choices"])
    lo, hi = meta.get("lo"), meta.get("hi")
    text = _type_name(tp)
    if lo is not None and hi is not None:
        return f"{text} in [{lo}, {hi}]"
    if lo is not None:
        return f"{text} >= {lo}"
    return text


def _parse_section(cls: type, name: str, raw: Any, errors: list[str]) -> Any:
    """Build ``cls`` from the mapping ``raw`` found at ``name`` ("" for the whole file).

    Appends one message per problem to ``errors`` and returns None when there was any.
    """
    hints = typing.get_type_hints(cls)
    what = "sections" if not name else "keys"
    if not isinstance(raw, dict):
        errors.append(f"{name or 'params'}: expected a mapping of {what}, got {raw!r}")
        return None
    known = {f.metadata.get("key", f.name): f for f in dataclasses.fields(cls)}
    for key in sorted(set(raw) - set(known), key=str):
        where = f"{name}.{key}" if name else key
        errors.append(f"{where}: unknown {what[:-1]}; allowed {what}: {', '.join(known)}")
    before = len(errors)
    own_failed = False  # a problem with one of this section's own keys (not a nested section's)
    values: dict[str, Any] = {}
    for key, f in known.items():
        tp, where = hints[f.name], f"{name}.{key}" if name else key
        if dataclasses.is_dataclass(tp):  # a section, or a nested one such as flow.tvl1
            if key not in raw:
                errors.append(f"{where}: missing section")
                values[f.name] = None  # reported; the section's own rules still run
            else:
                values[f.name] = _parse_section(tp, where, raw[key], errors)
            continue
        if key not in raw:
            errors.append(f"{where}: missing; allowed: {_allowed(f, tp)}")
            own_failed = True
            continue
        ok, value = _coerce(raw[key], tp)
        meta = f.metadata
        if ok and "choices" in meta:
            ok = value in meta["choices"]
        if ok and isinstance(value, int | float) and not isinstance(value, bool):
            lo, hi = meta.get("lo"), meta.get("hi")
            ok = (lo is None or value >= lo) and (hi is None or value <= hi)
        if not ok:
            errors.append(f"{where}: got {raw[key]!r}; allowed: {_allowed(f, tp)}")
            own_failed = True
        values[f.name] = value
    if own_failed or len(errors) > before and not hasattr(cls, "_check"):
        return None
    # the cross-field rules run even when a nested section failed, so that every problem is
    # reported at once (a failed nested section is None here; no rule reads one)
    section = cls(**values)
    errors.extend(section._check() if hasattr(section, "_check") else [])
    return None if len(errors) > before else section


def parse_params(raw: Any, source: str = PARAMS_FILE) -> Params:
    """Validate a ``params.yaml`` mapping and return the typed sections.

    Raises:
        ParamsError: naming every bad, unknown or missing key at once.
    """
    errors: list[str] = []
    params = _parse_section(Params, "", raw, errors)
    if errors:
        lines = "\n".join(f"  - {e}" for e in errors)
        raise ParamsError(f"{source} has {len(errors)} problem(s):\n{lines}")
    return params


def load_params(path: str | Path = PARAMS_FILE) -> Params:
    """Read and validate ``params.yaml`` (see :func:`parse_params`)."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path}: not found; run from the project root (where dvc.yaml is)")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {exc}") from exc
    params = parse_params(raw, source=str(path))
    if os.environ.get(READS_LOG):
        _record_reads(os.environ[READS_LOG])
    return params
