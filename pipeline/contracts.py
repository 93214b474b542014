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

Records and TFRecord files are written and read here without TensorFlow (protobuf's classes
for TensorFlow's messages, :data:`_RECORD_PROTO`, and the TFRecord framing), byte for byte as
TensorFlow writes them: ingest, shard and flow (its opencv engine) never import it; here only
the ``tf.data`` reader (:func:`parse_record`) and ``gs://`` URLs (``tf.io.gfile``) do.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import functools
import io
import json
import os
import shutil
import socket
import struct
import sys
import time
import types
import warnings
import zlib
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
"""A string, not a Path: it may be a ``gs://`` URL (:func:`open_file`, ``tf.io.gfile``)."""
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
    if not exists(path):
        raise MissingInputError(
            f"{path} not found: run the {stage} stage first (dvc repro {stage})"
        )


# ---- faults: a full disk, a damaged file, a second run ------------------------------------


class DiskFullError(PipelineError):
    """A write found no space left on its device. The message names the path, the space free
    there and the space needed, and says that what is finished is kept."""

    def __init__(self, path: str | Path, needs: str = "") -> None:
        path = str(path)
        while path.endswith(TEMP_MARK):  # the file it was writing, not its temporary name
            path = path.removesuffix(TEMP_MARK)
        self.path, self.needs = path, needs
        free = free_bytes(path)
        where = f"{size_text(free)} free there" if free is not None else "its free space unknown"
        super().__init__(
            f"no space left on the device of {path} ({where}{'; ' if needs else ''}{needs}): "
            "free some space, or move the project to a larger disk, and run it again; what is "
            "already written whole is kept"
        )


class DamagedInputError(PipelineError):
    """A file a stage reads is there but is not what its writer wrote: cut short, bytes
    changed, or not its format. The message names the file, what is wrong and what to run;
    ``path`` and ``what`` hold the first two."""

    def __init__(self, message: str, path: str | Path = "", what: str = "") -> None:
        super().__init__(message)
        self.path, self.what = str(path), what


def size_text(n: int | None) -> str:
    """``n`` bytes in words: 345 bytes, 12 kB, 3.4 MB, 5.6 GB."""
    n = n or 0
    if n < 2**10:
        return f"{n:.0f} bytes"
    if n < 2**20:
        return f"{n / 2**10:.0f} kB"
    return f"{n / 2**20:.1f} MB" if n < 2**30 else f"{n / 2**30:.1f} GB"


def free_bytes(path: str | Path) -> int | None:
    """Free bytes on the filesystem of ``path`` (its nearest existing parent); None for URLs."""
    if _is_url(str(path)):
        return None
    here = Path(path).absolute()
    while not here.exists() and here != here.parent:
        here = here.parent
    return shutil.disk_usage(here).free


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` says the disk (or the user's quota) is full: an ``OSError`` of ENOSPC or
    EDQUOT, or the same reported by TensorFlow, h5py or zipfile in words."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(exc)
    return "No space left on device" in text or "Disk quota exceeded" in text


@contextlib.contextmanager
def disk_full_guard(path: str | Path, needs: str = "") -> Iterator[None]:
    """Turn a full disk met inside the block into :class:`DiskFullError` naming the file the
    error names (an ``OSError``'s ``filename``), or else ``path``; ``needs`` says how much
    space the rest of the work needs."""
    try:
        yield
    except DiskFullError:
        raise
    except Exception as exc:
        if not is_disk_full(exc):
            raise
        raise DiskFullError(getattr(exc, "filename", None) or path, needs) from exc


def damaged(path: str | Path, what: str, fix: str) -> DamagedInputError:
    """The error for a damaged ``path``: what is wrong with it and the command that fixes it."""
    return DamagedInputError(f"{path} is damaged ({what}): {fix}", path, what)


def dvc_fix(path: str | Path, stage: str) -> str:
    """What to run for a damaged output of ``stage`` that DVC caches."""
    return f"restore it with `dvc checkout {path}`, or make it again with `dvc repro -f {stage}`"


class StageLockedError(PipelineError):
    """Another run of the same stage (or tool) holds its lock in this project."""


LOCKS_DIR = Path(".locks")
"""Each stage's and tool's own lock file, ``.locks/<name>.lock`` (git-ignored): it holds the
process that has it, for the message a second run gets."""


@contextlib.contextmanager
def stage_lock(name: str, locks_dir: str | Path = LOCKS_DIR) -> Iterator[None]:
    """Hold ``<locks_dir>/<name>.lock`` for the block, or raise :class:`StageLockedError`
    naming the process that holds it. The lock is the kernel's (``flock``): a killed run
    releases it, so a stale file never blocks the next run. ``dvc repro`` has a lock of its own
    (a second one is refused by DVC); this one guards stages and tools run by hand."""
    import fcntl

    path = Path(locks_dir) / f"{name}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    f = open(path, "a+", encoding="utf-8")  # noqa: SIM115 (held open for the whole block)
    try:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "a process that has not written its name yet"
            raise StageLockedError(
                f"another {name} run is working in this project: {holder} holds {path}. "
                "Wait for it to finish, or stop it (kill PID) and run this again; two runs "
                "would write the same files"
            ) from None
        f.seek(0)
        f.truncate()
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime())
        spec = getattr(sys.modules.get("__main__"), "__spec__", None)
        command = ["-m", spec.name, *sys.argv[1:]] if spec else sys.argv
        f.write(
            f"pid {os.getpid()} on {socket.gethostname()}, started {started}: "
            f"{' '.join(['python', *command])}\n"
        )
        f.flush()
        yield
    finally:
        f.close()  # closing releases the lock


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


def _gfile() -> Any:
    """``tf.io.gfile``, for URLs (``gs://`` and the other schemes TensorFlow's file systems
    read): the one reason a stage that does not train imports TensorFlow."""
    import tensorflow as tf

    return tf.io.gfile


def open_file(path: str | Path, mode: str = "rb") -> Any:
    """``path`` opened in ``mode`` (binary, or text in UTF-8): a local file, or a URL through
    ``tf.io.gfile``."""
    path = str(path)
    if _is_url(path):
        return _gfile().GFile(path, mode)
    return open(path, mode, **({} if "b" in mode else {"encoding": "utf-8"}))  # noqa: SIM115


def exists(path: str | Path) -> bool:
    """Whether ``path`` is there (local or URL)."""
    path = str(path)
    return _gfile().exists(path) if _is_url(path) else os.path.exists(path)


def file_size(path: str | Path) -> int:
    """The bytes of the file ``path`` (local or URL)."""
    path = str(path)
    return _gfile().stat(path).length if _is_url(path) else os.path.getsize(path)


def _size(path: str) -> int:
    with contextlib.suppress(Exception):
        return file_size(path)
    return 0


def _remove(path: str) -> None:
    with contextlib.suppress(Exception):  # the error that got us here is the one to see
        if _is_url(path):
            _gfile().remove(path)
        else:
            os.remove(path)


def remove_tree(path: str) -> None:
    """Remove the folder ``path`` and all in it, if it is there (local or URL)."""
    if _is_url(path):
        if _gfile().exists(path):
            _gfile().rmtree(path)
    elif os.path.exists(path):
        shutil.rmtree(path)


def make_dirs(path: str) -> None:
    """The folder ``path`` and its parents (local or URL)."""
    if _is_url(path):
        _gfile().makedirs(path)
    else:
        os.makedirs(path, exist_ok=True)


@contextlib.contextmanager
def atomic_path(
    path: str | Path, keep_suffix: bool = False, size: int | None = None
) -> Iterator[str]:
    """A temporary name beside ``path`` to write to; moved over ``path`` in one rename when the
    block ends, removed when it raises. Local paths and ``tf.io.gfile`` URLs alike. A full
    disk raises :class:`DiskFullError` naming ``path`` and the space it needs: ``size``
    (the bytes the writer will write, where it knows them), or more than it had written.

    >>> with atomic_path("out.json") as tmp:  # doctest: +SKIP
    ...     Path(tmp).write_text("{}")
    """
    path = str(path)
    tmp = temporary_name(path, keep_suffix)
    try:
        yield tmp
    except BaseException as exc:
        written = _size(tmp)
        _remove(tmp)
        if isinstance(exc, Exception) and not isinstance(exc, DiskFullError) and is_disk_full(exc):
            needs = (
                f"this file needs {size_text(size)}"
                if size
                else (f"this file needs more than the {size_text(written)} written of it")
            )
            raise DiskFullError(path, needs) from exc
        raise
    try:
        if _is_url(path):
            _gfile().rename(tmp, path, overwrite=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise


@contextlib.contextmanager
def atomic_paths(*paths: str | Path) -> Iterator[list[str]]:
    """:func:`atomic_path` for several files that belong together: every one is written to its
    temporary name first, then all are moved into place (none, if the block raises)."""
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(atomic_path(path)) for path in paths]


def write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    write_bytes(path, text.encode("utf-8"))


def write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path, size=len(data)) as tmp, open(tmp, "wb") as f:
        f.write(data)


def write_json(path: str | Path, data: object) -> None:
    write_text(path, json.dumps(data, indent=1) + "\n")


def write_csv(path: str | Path, header: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    """A CSV table (UTF-8, quoted where needed) written atomically."""
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(header)
    writer.writerows(rows)
    write_text(path, text.getvalue())


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


_RECORD_PROTO = """
name: "twostream/record.proto"  package: "tensorflow"  syntax: "proto3"
message_type { name: "BytesList"
  field { name: "value" number: 1 label: LABEL_REPEATED type: TYPE_BYTES } }
message_type { name: "FloatList"
  field { name: "value" number: 1 label: LABEL_REPEATED type: TYPE_FLOAT } }
message_type { name: "Int64List"
  field { name: "value" number: 1 label: LABEL_REPEATED type: TYPE_INT64 } }
message_type { name: "Feature"  oneof_decl { name: "kind" }
  field { name: "bytes_list" number: 1 label: LABEL_OPTIONAL type: TYPE_MESSAGE
          type_name: ".tensorflow.BytesList" oneof_index: 0 }
  field { name: "float_list" number: 2 label: LABEL_OPTIONAL type: TYPE_MESSAGE
          type_name: ".tensorflow.FloatList" oneof_index: 0 }
  field { name: "int64_list" number: 3 label: LABEL_OPTIONAL type: TYPE_MESSAGE
          type_name: ".tensorflow.Int64List" oneof_index: 0 } }
message_type { name: "Features"
  field { name: "feature" number: 1 label: LABEL_REPEATED type: TYPE_MESSAGE
          type_name: ".tensorflow.Features.FeatureEntry" }
  nested_type { name: "FeatureEntry"  options { map_entry: true }
    field { name: "key" number: 1 label: LABEL_OPTIONAL type: TYPE_STRING }
    field { name: "value" number: 2 label: LABEL_OPTIONAL type: TYPE_MESSAGE
            type_name: ".tensorflow.Feature" } } }
message_type { name: "FeatureList"
  field { name: "feature" number: 1 label: LABEL_REPEATED type: TYPE_MESSAGE
          type_name: ".tensorflow.Feature" } }
message_type { name: "FeatureLists"
  field { name: "feature_list" number: 1 label: LABEL_REPEATED type: TYPE_MESSAGE
          type_name: ".tensorflow.FeatureLists.FeatureListEntry" }
  nested_type { name: "FeatureListEntry"  options { map_entry: true }
    field { name: "key" number: 1 label: LABEL_OPTIONAL type: TYPE_STRING }
    field { name: "value" number: 2 label: LABEL_OPTIONAL type: TYPE_MESSAGE
            type_name: ".tensorflow.FeatureList" } } }
message_type { name: "SequenceExample"
  field { name: "context" number: 1 label: LABEL_OPTIONAL type: TYPE_MESSAGE
          type_name: ".tensorflow.Features" }
  field { name: "feature_lists" number: 2 label: LABEL_OPTIONAL type: TYPE_MESSAGE
          type_name: ".tensorflow.FeatureLists" } }
"""
"""TensorFlow's ``tf.train.SequenceExample`` and the messages in it, as a protobuf file
descriptor in text: the names, field numbers and types of TensorFlow's
``tensorflow/core/example/feature.proto`` and ``example.proto`` (proto3: the repeated numbers
packed, as those files ask). Records are built and read with protobuf's classes for it, in a
pool of their own, so that flow and shard never import TensorFlow; the bytes are
``tf.train.SequenceExample``'s, and TensorFlow reads them (``tests/test_records.py``)."""


@functools.cache
def _record_messages() -> types.SimpleNamespace:
    """The message classes of :data:`_RECORD_PROTO` by name (``.SequenceExample``, ...)."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format

    pool = descriptor_pool.DescriptorPool()
    pool.Add(text_format.Parse(_RECORD_PROTO, descriptor_pb2.FileDescriptorProto()))
    names = ("SequenceExample", "Features", "Feature")
    return types.SimpleNamespace(
        **{
            n: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"tensorflow.{n}"))
            for n in names
        }
    )


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
    if not (len(flow_x) == len(flow_y) == len(rgb) - 1):
        raise ValueError(
            f"{video_id}: {len(rgb)} frames need {len(rgb) - 1} flows, "
            f"got {len(flow_x)} x and {len(flow_y)} y"
        )
    example = _record_messages().SequenceExample()
    context = example.context.feature
    for key, text in (
        ("video_id", video_id),
        ("flow_engine", flow_engine),
        ("flow_params", json.dumps(flow_params, sort_keys=True)),
        ("cache_key", cache_key),
    ):
        context[key].bytes_list.value.append(text.encode())
    for key, number in (
        ("label", label),
        ("num_frames", len(rgb)),
        ("height", height),
        ("width", width),
        ("schema_version", SCHEMA_VERSION),
    ):
        context[key].int64_list.value.append(int(number))
    context["flow_bound"].float_list.value.append(flow_bound)
    for name, values in (("rgb", rgb), ("flow_x", flow_x), ("flow_y", flow_y)):
        feature_list = example.feature_lists.feature_list[name].feature  # there when empty too
        for jpeg in values:
            feature_list.add().bytes_list.value.append(jpeg)
    return example.SerializeToString(deterministic=True)


def decode_record(serialized: bytes) -> dict:
    """The record as plain Python: context values, and lists of JPEG bytes."""
    example = _record_messages().SequenceExample.FromString(serialized)
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


# TFRecord files, as TensorFlow's ``tensorflow/core/lib/io/record_writer.cc`` writes them and
# its ``record_reader.cc`` reads them: per record, its length (uint64), the masked CRC-32C of
# those 8 bytes (uint32), the data, the masked CRC-32C of the data (uint32), little-endian. The
# same in TensorBoard's ``tensorboard/summary/writer/record_writer.py`` and in the ``tfrecord``
# package (``tfrecord/writer.py``, vahidk/tfrecord). Written and read here without TensorFlow;
# the bytes are ``tf.io.TFRecordWriter``'s (``tests/test_records.py``).


@functools.cache
def _crc32c() -> Any:
    """``google_crc32c.value``; a warning where its C extension is missing (pure Python is
    orders of magnitude slower on records of megabytes)."""
    import google_crc32c

    if google_crc32c.implementation != "c":
        warnings.warn(
            "google-crc32c runs without its C extension here: writing and reading records "
            "will be slow; reinstall it (pip install --force-reinstall google-crc32c)",
            stacklevel=3,
        )
    return google_crc32c.value


def _masked_crc(data: bytes) -> bytes:
    """CRC-32C (Castagnoli) of ``data``, masked as TFRecord files store it:
    ``((crc >> 15) | (crc << 17)) + 0xa282ead8`` (mod 2**32), 4 bytes little-endian."""
    crc = _crc32c()(data)
    return struct.pack("<I", (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF)


def write_records(path: str | Path, serialized: Iterable[bytes], size: int | None = None) -> None:
    """A TFRecord file of ``serialized`` records, written atomically (``gs://`` too); ``size``:
    its bytes where known (what a full disk's message says it needs)."""
    with atomic_path(path, size=size) as tmp, open_file(tmp, "wb") as f:
        for record in serialized:
            length = struct.pack("<Q", len(record))
            f.write(length + _masked_crc(length))
            f.write(record)
            f.write(_masked_crc(record))


def write_record(path: str | Path, serialized: bytes) -> None:
    """Write one record to ``path`` atomically: a temporary name, then a rename."""
    write_records(path, [serialized], len(serialized) + 16)  # 16: TFRecord's length and CRCs


def _records_in(path: str) -> Iterator[bytes]:
    """The records of the TFRecord file ``path``, each checked against its two CRCs;
    ``ValueError`` saying which record is cut short or has changed bytes otherwise."""
    n, left = 0, file_size(path)
    with open_file(path, "rb") as f:
        while header := f.read(12):
            n, left = n + 1, left - len(header)
            if len(header) < 12:
                raise ValueError(f"cut short: the file ends in record {n}'s length")
            if _masked_crc(header[:8]) != header[8:]:
                raise ValueError(f"changed bytes: record {n}'s length fails its CRC-32C")
            (length,) = struct.unpack("<Q", header[:8])
            if length + 4 > left:  # never read (or allocate) past the end of the file
                raise ValueError(
                    f"cut short: record {n} ends after {12 + left} of its {length + 16} bytes"
                )
            data, crc = f.read(length), f.read(4)
            left -= len(data) + len(crc)
            if _masked_crc(data) != crc:
                raise ValueError(f"changed bytes: record {n}'s data fails its CRC-32C")
            yield data


def read_records(path: str | Path | Sequence[str | Path]) -> Iterator[bytes]:
    """The serialised records of a TFRecord file, or of several files one after the other, in
    order, each checked against its CRCs: :class:`DamagedInputError` naming the file and the
    record cut short or changed otherwise."""
    paths = [str(path)] if isinstance(path, (str, Path)) else [str(p) for p in path]
    for one in paths:
        records = _records_in(one)
        while True:  # not `yield from`: an error its consumer throws in is not the file's
            try:
                record = next(records)
            except StopIteration:
                break
            except ValueError as exc:
                raise damaged(one, str(exc), DAMAGED_FIX) from None
            yield record


DAMAGED_FIX = "remove it and run the stage that writes it again (dvc repro)"


FLOW_FIX = "remove it and run the flow stage again, which computes it anew (dvc repro flow)"


def _one_record(path: str) -> bytes:
    """The one record of a per-video file, its CRCs checked; ``ValueError`` saying what is
    wrong otherwise."""
    records = list(_records_in(path))
    if len(records) != 1:
        raise ValueError(f"{len(records)} records where the flow stage writes one")
    return records[0]


def read_record_file(path: str | Path) -> bytes:
    """The one record of a per-video file; :class:`DamagedInputError` naming the file when it
    is cut short, has changed bytes, or holds other than one record."""
    try:
        return _one_record(str(path))
    except ValueError as exc:
        raise damaged(path, str(exc), FLOW_FIX) from exc


def record_problem(path: str | Path, video_id: str, key: str) -> str | None:
    """Why the per-video file ``path`` is not the whole record of ``video_id`` made under
    cache ``key`` (cut short, changed bytes, another video's or another key's), or None."""
    try:
        record = decode_record(_one_record(str(path)))
    except Exception as exc:  # noqa: BLE001 (damaged, or CRCs that pass on what does not parse)
        return str(exc) or type(exc).__name__
    if record.get("video_id") != video_id or record.get("cache_key") != key:
        return f"the record of {record.get('video_id')!r} under another cache key"
    return None


# ---- shard: the shards and their index -----------------------------------------------------


def shard_name(split: str, index: int, count: int) -> str:
    return f"{split}-{index:05d}-of-{count:05d}.tfrecord"


def write_shard_index(index: dict, shards_dir: str = SHARDS_DIR) -> None:
    """``index.json``: schema version, flow parameters, and per shard, split and class counts."""
    with atomic_path(f"{shards_dir}/{SHARD_INDEX}") as tmp, open_file(tmp, "w") as f:
        f.write(json.dumps(index, indent=1) + "\n")


def read_shard_index(shards_dir: str = SHARDS_DIR) -> dict:
    path = f"{shards_dir}/{SHARD_INDEX}"
    require(path, "shard")
    try:
        with open_file(path, "r") as f:
            return json.load(f)
    except (ValueError, UnicodeDecodeError) as exc:
        raise damaged(path, f"not JSON: {exc}", dvc_fix(shards_dir, "shard")) from exc


def file_crc32(path: str | Path) -> int:
    """CRC-32 (zlib) of a file, read in 1 MB blocks (``gs://`` too): about 3.7 GB/s here, four
    times SHA-256, and enough to tell a copy cut short or with changed bytes."""
    crc = 0
    with open_file(path, "rb") as f:
        while block := f.read(1 << 20):
            crc = zlib.crc32(block, crc)
    return crc


def check_shards(entries: Sequence[dict], shards_dir: str = SHARDS_DIR) -> None:
    """Raise :class:`DamagedInputError` unless every shard of ``entries`` (rows of
    ``index.json``) has the size and CRC-32 that the shard stage recorded: nothing trains or
    is scored on a shard cut short or changed."""
    fix = dvc_fix(shards_dir, "shard")
    for entry in entries:
        path = f"{shards_dir}/{entry['file']}"
        if not exists(path):
            raise damaged(path, "missing, though index.json lists it", fix)
        size = _size(path)
        if size != entry["bytes"]:
            cut = "cut short: " if size < entry["bytes"] else ""
            raise damaged(path, f"{cut}{size} bytes where index.json has {entry['bytes']}", fix)
        seen = (path, size, _mtime(path), entry.get("crc32"))
        if "crc32" in entry and not _is_url(path) and seen not in _CHECKED:  # URLs: sizes
            if file_crc32(path) != entry["crc32"]:
                raise damaged(
                    path, "its bytes changed since the shard stage wrote it (CRC-32)", fix
                )
            _CHECKED.add(seen)


_CHECKED: set[tuple] = set()
"""Shards this process has read whole and found as written (path, size, mtime, CRC): a stage
that asks twice (training: before it builds the model, then its reader) reads them once."""


def _mtime(path: str) -> int | None:
    return None if _is_url(path) else os.stat(path).st_mtime_ns


def shard_files(split: str, shards_dir: str = SHARDS_DIR, verify: bool = True) -> list[str]:
    """The shard paths of ``split``, from ``index.json``; each checked whole (size and CRC-32,
    :func:`check_shards`) unless ``verify`` is false."""
    index = read_shard_index(shards_dir)
    entries = [s for s in index["shards"] if s["split"] == split]
    if not entries:
        raise MissingInputError(f"the {split} split has no shards in {shards_dir}")
    if verify:
        check_shards(entries, shards_dir)
    return [f"{shards_dir}/{s['file']}" for s in entries]


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
    import zipfile

    buffer = io.BytesIO()  # an .npz as np.savez writes it, but for the members' times: with a
    with zipfile.ZipFile(buffer, "w") as npz:  # fixed one, the same scores give the same bytes
        for name, array in (("video_ids", np.array(ids)), ("labels", labels), ("scores", scores)):
            member = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            with npz.open(member, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asanyarray(array), allow_pickle=False)
    write_bytes(path, buffer.getvalue())


def read_scores(path: str | Path, stage: str = "") -> dict[str, np.ndarray]:
    """``video_ids``, ``labels`` and ``scores`` of :func:`write_scores`; a file that is not
    one raises :class:`DamagedInputError` (``stage`` made it: the fix names it)."""
    import zipfile

    try:
        with np.load(path) as npz:
            return {key: npz[key] for key in ("video_ids", "labels", "scores")}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        fix = dvc_fix(path, stage) if stage else "make it again"
        raise damaged(path, f"not the scores file of an evaluation: {exc}", fix) from exc


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
    size = sum(np.asarray(a).size * 4 for arrays in layers.values() for a in arrays)
    with atomic_path(path, size=size) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["twostream"] = json.dumps({"format": PRETRAINED_FORMAT, **meta})
        for name, arrays in layers.items():
            group = f.create_group(name)
            for i, array in enumerate(arrays):
                # no object timestamps: the same weights give the same bytes (a killed
                # import run again writes what an uninterrupted one does)
                group.create_dataset(str(i), data=np.asarray(array, "float32"), track_times=False)


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
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise damaged(path, f"not JSON: {exc}", dvc_fix(path, f"evaluate_{name}")) from exc
    if not isinstance(metrics, dict) or "top1" not in metrics:
        raise damaged(
            path, "JSON, but not an evaluation's metrics", dvc_fix(path, f"evaluate_{name}")
        )
    return metrics


def load_model(path: str | Path, stage: str, **kwargs: Any) -> Any:
    """``keras.saving.load_model(path, **kwargs)`` (import ``layers`` first: its custom
    layers); a file cut short or otherwise not a Keras model raises
    :class:`DamagedInputError` naming it and ``stage``, which made it."""
    import zipfile

    import keras

    path = Path(path)
    require(path, stage)
    if not zipfile.is_zipfile(path):
        raise damaged(
            path, "not a whole .keras file (a zip archive): cut short?", dvc_fix(path, stage)
        )
    try:
        return keras.saving.load_model(path, **kwargs)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise damaged(path, f"Keras cannot load it: {exc}", dvc_fix(path, stage)) from exc


def save_figure(figure: Any, path: str | Path, dpi: int = 100) -> None:
    """A matplotlib figure as a PNG, written atomically."""
    png = io.BytesIO()
    figure.savefig(png, dpi=dpi, format="png")
    write_bytes(path, png.getvalue())
