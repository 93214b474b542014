"""The data contracts: every file one stage hands another, where it lives, what is in it, and
how it is written and read.

Stages import this module and never each other (``tests/test_dvc_yaml.py`` fails if one does),
so an edit of one stage's code re-runs that stage alone, and a file's format is changed in one
place for its writer and its readers alike. What each file is, who writes and who reads it:

- ``data/manifest.csv``: ingest writes it; flow and shard read it.
- ``data/classes.txt``: ingest; train, evaluate and predict read it (:func:`read_classes`).
- ``data/rejected.csv``: ingest; for people.
- ``data/videos/<video_id>.tfrecord``: flow; shard copies them byte for byte.
- ``data/flow_failed.csv``: flow; for people.
- ``data/shards/`` and its ``index.json``: shard; train and evaluate (``pipeline.dataset``).
- ``models/<name>.keras``: train; train (fusion), evaluate and predict load them with
  ``layers`` imported (its custom layers), which this module does not import: every stage
  would then depend on ``layers/``.
- ``scores/<name>.npz``: evaluate; evaluate (late).
- ``metrics/<name>.json`` and its per-class and confusion tables: evaluate; report, DVC.
- ``reports/summary.{md,png}``: report; for people.
- ``models/imagenet/<backbone>.h5``: ``python -m pipeline.weights import`` (a tool, not a
  stage) writes it from MatConvNet's file; train reads it (:func:`read_pretrained`).

The raw videos and their split lists are the datasets' own formats (UCF101's, HMDB51's, a
folder per class), read by ingest's listers; ``synthesize`` writes UCF101's. Frame folders of
other tools (denseflow's, mmaction2's "rawframes") and their list files are read by ingest and
flow, and written by ``python -m pipeline.export rawframes`` (a tool), through the one module
that knows their names and levels, ``pipeline.rawframes``.

Every writer here is atomic (:func:`atomic_path`): the file appears whole, under its final
name, in one rename, so a reader never sees half of it and a killed stage leaves the previous
file (or none). Text is UTF-8 whatever the locale, so class names and paths in any script
survive. A missing input raises :class:`MissingInputError`, naming the stage that makes it.

The per-video record is one ``tf.train.SequenceExample`` per video. Context: ``video_id``,
``label``, ``num_frames``, ``height``, ``width``, ``flow_bound``, and what made it:
``flow_engine`` (engine and library versions), ``flow_params`` (JSON of every value that shapes
the record), ``cache_key``, ``schema_version``. Feature lists: ``rgb`` (N JPEG frames),
``flow_x`` and ``flow_y`` (N - 1 greyscale JPEGs each). Flow is stored as
``uint8 = round(128 + v·127.5/bound)`` after clipping ``v`` to ``[-bound, bound]``: 128 means
zero, and a horizontal flip maps ``u -> 256 - u`` (clipped), which keeps zero at zero.

TensorFlow is imported only inside the functions that need it, so flow workers (which only
compute and encode) start fast and small.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.params import PipelineError

# ---- where the files live (dvc.yaml names the same paths: tests/test_dvc_yaml.py) ----------

DATA_DIR = Path("data")
MANIFEST = DATA_DIR / "manifest.csv"
CLASSES = DATA_DIR / "classes.txt"
"""Class names, one per line, in label order: what models and reports name labels by."""
REJECTED = DATA_DIR / "rejected.csv"
VIDEOS_DIR = DATA_DIR / "videos"
FLOW_FAILED = DATA_DIR / "flow_failed.csv"
SHARDS_DIR = "data/shards"
"""A string, not a Path: shard I/O goes through ``tf.io.gfile``, so it may be a ``gs://`` URL."""
SHARD_INDEX = "index.json"
MODELS_DIR = Path("models")
SCORES_DIR = Path("scores")
METRICS_DIR = Path("metrics")
LIVE_DIR = Path("dvclive")
"""Training curves (DVCLive): DVC metrics and plots, read by people and ``dvc plots``."""
REPORTS_DIR = Path("reports")
IMAGENET_DIR = MODELS_DIR / "imagenet"
"""ImageNet weights converted by ``python -m pipeline.weights import`` (not a DVC output: the
user puts them there once, like the raw videos)."""
RELEASED_DIR = MODELS_DIR / "released"
"""Trained streams converted by ``python -m pipeline.weights import`` from the authors' released
DagNN models (``train.streams``; not a DVC output either)."""
SPLITS = ("train", "val", "test")


class MissingInputError(PipelineError):
    """A file a stage reads is not there; the message names the stage that makes it."""


def require(path: str | Path, stage: str) -> None:
    """Raise :class:`MissingInputError` unless ``path`` exists (``stage`` makes it)."""
    if not _exists(str(path)):
        raise MissingInputError(
            f"{path} not found: run the {stage} stage first (dvc repro {stage})"
        )


# ---- atomic writes -------------------------------------------------------------------------

TEMP_MARK = ".tmp"


def temporary_name(path: str | Path, keep_suffix: bool = False) -> str:
    """Where :func:`atomic_path` writes before the rename: ``<path>.tmp``, or
    ``<stem>.tmp<suffix>`` with ``keep_suffix`` (for writers that insist on a suffix, as Keras
    does on ``.keras``)."""
    path = str(path)
    if keep_suffix:
        stem, dot, suffix = path.rpartition(".")
        if dot and "/" not in suffix:
            return f"{stem}{TEMP_MARK}.{suffix}"
    return path + TEMP_MARK


def is_temporary(name: str) -> bool:
    """Whether ``name`` is the leftover of a write that a kill interrupted (the default
    ``<path>.tmp`` names; ``keep_suffix`` ones are for Keras models, in folders nobody scans)."""
    return name.endswith(TEMP_MARK)


def _is_url(path: str) -> bool:
    return "://" in path


def _exists(path: str) -> bool:
    if _is_url(path):
        import tensorflow as tf

        return tf.io.gfile.exists(path)
    return os.path.exists(path)


@contextlib.contextmanager
def atomic_path(path: str | Path, keep_suffix: bool = False) -> Iterator[str]:
    """A temporary name beside ``path`` to write to; moved over ``path`` in one rename when the
    block ends, removed when it raises. Local paths and ``tf.io.gfile`` URLs alike.

    >>> with atomic_path("out.json") as tmp:  # doctest: +SKIP
    ...     Path(tmp).write_text("{}")
    """
    path = str(path)
    tmp = temporary_name(path, keep_suffix)
    try:
        yield tmp
    except BaseException:
        with contextlib.suppress(Exception):  # the error that got us here is the one to see
            if _is_url(tmp):
                import tensorflow as tf

                tf.io.gfile.remove(tmp)
            else:
                os.remove(tmp)
        raise
    if _is_url(path):
        import tensorflow as tf

        tf.io.gfile.rename(tmp, path, overwrite=True)
    else:
        os.replace(tmp, path)


@contextlib.contextmanager
def atomic_paths(*paths: str | Path) -> Iterator[list[str]]:
    """:func:`atomic_path` for several files that belong together: every one is written to its
    temporary name first, then all are moved into place (none, if the block raises)."""
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(atomic_path(path)) for path in paths]


def write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as f:
        f.write(text)


def write_json(path: str | Path, data: object) -> None:
    write_text(path, json.dumps(data, indent=1) + "\n")


def write_csv(path: str | Path, header: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    """A CSV table (UTF-8, quoted where needed) written atomically."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def read_csv(path: str | Path) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


# ---- ingest: manifest, classes, rejected ---------------------------------------------------

MANIFEST_COLUMNS = (
    "video_id",
    "path",
    "label",
    "class_name",
    "split",
    "frames",  # that decode: what flow computes on
    "claimed_frames",  # that the container counts (0: it does not say)
    "duration_s",  # that the container claims
    "fps",  # the decoded frames' average rate
    "width",  # as displayed
    "height",
    "codec",
)
REJECTED_COLUMNS = ("path", "class_name", "split", "reason")


def write_manifest(path: str | Path, rows: Iterable[dict]) -> None:
    """One row per usable video, :data:`MANIFEST_COLUMNS` (other keys of ``rows`` ignored)."""
    rows = [[row[c] for c in MANIFEST_COLUMNS] for row in rows]
    write_csv(path, MANIFEST_COLUMNS, rows)


def read_manifest(path: str | Path = MANIFEST) -> list[dict]:
    """The manifest's rows, with ``label`` and ``frames`` as ints."""
    require(path, "ingest")
    rows = read_csv(path)
    for row in rows:
        row["label"], row["frames"] = int(row["label"]), int(row["frames"])
    return rows


def check_class_name(name: str) -> str | None:
    """Why ``name`` cannot be a class name in :data:`CLASSES` (one per line), or None."""
    if not name.strip():
        return "it is empty or only white space"
    if any(c in name for c in "\n\r"):
        return "it holds a line break"
    return None


def write_classes(path: str | Path, names: Sequence[str]) -> None:
    """Class names in label order, one per line (any script; spaces kept)."""
    for name in names:
        if why := check_class_name(name):
            raise ValueError(f"class name {name!r} cannot be written to {path}: {why}")
    write_text(path, "".join(name + "\n" for name in names))


def read_classes(path: str | Path = CLASSES) -> list[str]:
    """The class names of :data:`CLASSES`, in label order: the one reader every stage uses.

    A line is a name, spaces and all ("air drumming"); only the line breaks separate names.
    """
    require(path, "ingest")
    text = Path(path).read_text(encoding="utf-8")
    return [line for line in text.split("\n") if line.strip()]


def write_rejected(path: str | Path, rows: Iterable[Sequence[object]]) -> None:
    """Videos ingest did not take: :data:`REJECTED_COLUMNS`, the reason last."""
    write_csv(path, REJECTED_COLUMNS, rows)


# ---- flow: the per-video record, and the failed list ---------------------------------------

SCHEMA_VERSION = 1
FLOW_FAILED_COLUMNS = ("video_id", "path", "reason")


def record_path(video_id: str, videos_dir: str | Path = VIDEOS_DIR) -> str:
    """``<videos_dir>/<video_id>.tfrecord``, a string: ``videos_dir`` may be a ``gs://`` URL."""
    return f"{videos_dir}/{video_id}.tfrecord"


def write_flow_failed(path: str | Path, rows: Iterable[dict]) -> None:
    """Videos the flow stage could not do: :data:`FLOW_FAILED_COLUMNS`."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_csv(path, FLOW_FAILED_COLUMNS, ([r[c] for c in FLOW_FAILED_COLUMNS] for r in rows))


def quantize_flow(flow: np.ndarray, bound: float) -> np.ndarray:
    """Flow in pixels -> uint8, ``round(128 + v·127.5/bound)`` after clipping to ±bound."""
    v = np.clip(flow, -bound, bound)
    return np.clip(np.round(128.0 + v * (127.5 / bound)), 0, 255).astype(np.uint8)


def dequantize_flow(q: np.ndarray, bound: float) -> np.ndarray:
    """uint8 -> flow in pixels (128 -> 0)."""
    return (q.astype(np.float32) - 128.0) * (bound / 127.5)


def _bytes(values: Sequence[bytes]) -> Any:
    import tensorflow as tf

    return tf.train.Feature(bytes_list=tf.train.BytesList(value=list(values)))


def encode_record(
    *,
    video_id: str,
    label: int,
    height: int,
    width: int,
    flow_bound: float,
    rgb: Sequence[bytes],
    flow_x: Sequence[bytes],
    flow_y: Sequence[bytes],
    flow_engine: str,
    flow_params: dict,
    cache_key: str,
) -> bytes:
    """Serialise one video's record (deterministically: same inputs, same bytes)."""
    import tensorflow as tf

    if not (len(flow_x) == len(flow_y) == len(rgb) - 1):
        raise ValueError(
            f"{video_id}: {len(rgb)} frames need {len(rgb) - 1} flows, "
            f"got {len(flow_x)} x and {len(flow_y)} y"
        )

    def i64(v: int) -> Any:
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v)]))

    context = {
        "video_id": _bytes([video_id.encode()]),
        "label": i64(label),
        "num_frames": i64(len(rgb)),
        "height": i64(height),
        "width": i64(width),
        "flow_bound": tf.train.Feature(float_list=tf.train.FloatList(value=[flow_bound])),
        "flow_engine": _bytes([flow_engine.encode()]),
        "flow_params": _bytes([json.dumps(flow_params, sort_keys=True).encode()]),
        "cache_key": _bytes([cache_key.encode()]),
        "schema_version": i64(SCHEMA_VERSION),
    }
    lists = {
        name: tf.train.FeatureList(feature=[_bytes([b]) for b in values])
        for name, values in (("rgb", rgb), ("flow_x", flow_x), ("flow_y", flow_y))
    }
    example = tf.train.SequenceExample(
        context=tf.train.Features(feature=context),
        feature_lists=tf.train.FeatureLists(feature_list=lists),
    )
    return example.SerializeToString(deterministic=True)


def decode_record(serialized: bytes) -> dict:
    """The record as plain Python: context values, and lists of JPEG bytes."""
    import tensorflow as tf

    example = tf.train.SequenceExample.FromString(serialized)
    out: dict[str, Any] = {}
    for key, feature in example.context.feature.items():
        kind = feature.WhichOneof("kind")
        value = getattr(feature, kind).value[0]
        out[key] = value.decode() if isinstance(value, bytes) else value
    out["flow_params"] = json.loads(out["flow_params"])
    for key, feature_list in example.feature_lists.feature_list.items():
        out[key] = [f.bytes_list.value[0] for f in feature_list.feature]
    return out


def parse_record(serialized: Any) -> dict:
    """In a ``tf.data`` graph: a record's context and its JPEG strings (none decoded)."""
    import tensorflow as tf

    context, lists = tf.io.parse_single_sequence_example(
        serialized,
        context_features={
            "video_id": tf.io.FixedLenFeature([], tf.string),
            "label": tf.io.FixedLenFeature([], tf.int64),
            "num_frames": tf.io.FixedLenFeature([], tf.int64),
            "height": tf.io.FixedLenFeature([], tf.int64),
            "width": tf.io.FixedLenFeature([], tf.int64),
        },
        sequence_features={
            name: tf.io.FixedLenSequenceFeature([], tf.string)
            for name in ("rgb", "flow_x", "flow_y")
        },
    )
    return {**context, **lists}


def write_records(path: str | Path, serialized: Iterable[bytes]) -> None:
    """A TFRecord file of ``serialized`` records, written atomically (``gs://`` too)."""
    import tensorflow as tf

    with atomic_path(path) as tmp, tf.io.TFRecordWriter(tmp) as writer:
        for record in serialized:
            writer.write(record)


def write_record(path: str | Path, serialized: bytes) -> None:
    """Write one record to ``path`` atomically: a temporary name, then a rename."""
    write_records(path, [serialized])


def read_records(path: str | Path | Sequence[str | Path]) -> Iterator[bytes]:
    """The serialised records of a TFRecord file, or of several files one after the other, in
    order (one reader for all of them)."""
    import tensorflow as tf

    paths = [str(path)] if isinstance(path, (str, Path)) else [str(p) for p in path]
    for record in tf.data.TFRecordDataset(paths):
        yield record.numpy()


# ---- shard: the shards and their index -----------------------------------------------------


def shard_name(split: str, index: int, count: int) -> str:
    return f"{split}-{index:05d}-of-{count:05d}.tfrecord"


def write_shard_index(index: dict, shards_dir: str = SHARDS_DIR) -> None:
    """``index.json``: schema version, flow parameters, and per shard, split and class counts."""
    import tensorflow as tf

    with atomic_path(f"{shards_dir}/{SHARD_INDEX}") as tmp, tf.io.gfile.GFile(tmp, "w") as f:
        f.write(json.dumps(index, indent=1) + "\n")


def read_shard_index(shards_dir: str = SHARDS_DIR) -> dict:
    import tensorflow as tf

    path = f"{shards_dir}/{SHARD_INDEX}"
    require(path, "shard")
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)


def shard_files(split: str, shards_dir: str = SHARDS_DIR) -> list[str]:
    """The shard paths of ``split``, from ``index.json``."""
    index = read_shard_index(shards_dir)
    files = [f"{shards_dir}/{s['file']}" for s in index["shards"] if s["split"] == split]
    if not files:
        raise MissingInputError(f"the {split} split has no shards in {shards_dir}")
    return files


def count_videos(split: str, shards_dir: str = SHARDS_DIR) -> int:
    """How many videos the shards of ``split`` hold."""
    return read_shard_index(shards_dir)["splits"][split]["videos"]


# ---- train and evaluate: models, scores, metrics -------------------------------------------


def model_path(name: str, models_dir: str | Path = MODELS_DIR) -> Path:
    """``models/<name>.keras``; load it with ``layers`` imported (its custom layers)."""
    return Path(models_dir) / f"{name}.keras"


def scores_path(name: str, scores_dir: str | Path = SCORES_DIR) -> Path:
    return Path(scores_dir) / f"{name}.npz"


def write_scores(
    path: str | Path, ids: Sequence[str], labels: np.ndarray, scores: np.ndarray
) -> None:
    """Per-video class scores: ``video_ids`` (V,), ``labels`` (V,), ``scores`` (V, classes)."""
    buffer = io.BytesIO()
    np.savez(buffer, video_ids=np.array(ids), labels=labels, scores=scores)
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(buffer.getvalue())


def read_scores(path: str | Path) -> dict[str, np.ndarray]:
    """``video_ids``, ``labels`` and ``scores`` of :func:`write_scores`."""
    with np.load(path) as npz:
        return {key: npz[key] for key in ("video_ids", "labels", "scores")}


PRETRAINED_FORMAT = "twostream-pretrained/1"


def imagenet_path(backbone: str, imagenet_dir: str | Path = IMAGENET_DIR) -> Path:
    """``models/imagenet/<backbone>.h5``: where ``train.weights: imagenet`` looks for weights
    that Keras cannot download (VGG-M-2048)."""
    return Path(imagenet_dir) / f"{backbone}.h5"


def released_path(name: str, released_dir: str | Path = RELEASED_DIR) -> Path:
    """``models/released/<name>.h5``: where ``python -m pipeline.weights import`` writes a
    trained stream from a released ``<name>.mat`` (``train.streams`` names it); ``name`` is
    the file's stem as it is (``ucf101-img-vgg16-split1-dr0.85``)."""
    return Path(released_dir) / f"{name}.h5"


def write_pretrained(path: str | Path, layers: dict[str, list[np.ndarray]], meta: dict) -> None:
    """Pretrained weights by layer name: an HDF5 file with one group per layer (datasets ``0``,
    ``1``, ... in Keras' ``layer.get_weights()`` order) and the JSON ``meta`` (backbone, input
    size, channel order, mean, classes, source) as the root attribute ``twostream``. Readable
    with h5py alone; keyed by layer names, not by Keras' object paths, so a change in how a
    layer is wrapped does not orphan the file."""
    import h5py

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["twostream"] = json.dumps({"format": PRETRAINED_FORMAT, **meta})
        for name, arrays in layers.items():
            group = f.create_group(name)
            for i, array in enumerate(arrays):
                group.create_dataset(str(i), data=np.asarray(array, "float32"))


def pretrained_meta(path: str | Path) -> dict | None:
    """The ``meta`` of a :func:`write_pretrained` file; None for any other HDF5 file (e.g. a
    Keras weights file). A file that is not HDF5 raises :class:`PipelineError`."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            text = f.attrs.get("twostream")
    except OSError as exc:
        raise PipelineError(f"{path} is not an HDF5 weights file: {exc}") from exc
    if text is None:
        return None
    meta = json.loads(text)
    if meta.get("format") != PRETRAINED_FORMAT:
        raise PipelineError(
            f"{path} is {meta.get('format')!r} weights; this code reads {PRETRAINED_FORMAT!r}: "
            "import the .mat again (python -m pipeline.weights import FILE.mat)"
        )
    return meta


def read_pretrained(path: str | Path) -> tuple[dict[str, list[np.ndarray]], dict]:
    """The layers and ``meta`` of a :func:`write_pretrained` file."""
    import h5py

    meta = pretrained_meta(path)
    if meta is None:
        raise PipelineError(f"{path} was not written by python -m pipeline.weights import")
    with h5py.File(path, "r") as f:
        layers = {
            name: [f[name][str(i)][()] for i in range(len(f[name]))]
            for name in f
            if isinstance(f[name], h5py.Group)
        }
    return layers, meta


def metrics_path(name: str, metrics_dir: str | Path = METRICS_DIR) -> Path:
    """``metrics/<name>.json``: top1, top5, top5_k, mean_class_accuracy, videos,
    clips_per_video, params (what the model was: fusion settings, parameter count)."""
    return Path(metrics_dir) / f"{name}.json"


def per_class_path(name: str, metrics_dir: str | Path = METRICS_DIR) -> Path:
    return Path(metrics_dir) / f"{name}_per_class.csv"


def confusion_paths(name: str, metrics_dir: str | Path = METRICS_DIR) -> tuple[Path, Path]:
    """The confusion matrix as a picture and as DVC plot data (one actual, predicted row
    per video)."""
    return Path(metrics_dir) / f"{name}_confusion.png", Path(metrics_dir) / f"{name}_confusion.csv"


def read_metrics(name: str, metrics_dir: str | Path = METRICS_DIR) -> dict:
    path = metrics_path(name, metrics_dir)
    require(path, f"evaluate_{name}")
    return json.loads(path.read_text(encoding="utf-8"))


def save_figure(figure: Any, path: str | Path, dpi: int = 100) -> None:
    """A matplotlib figure as a PNG, written atomically."""
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=dpi, format="png")
