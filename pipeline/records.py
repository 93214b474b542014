"""The per-video record: one ``tf.train.SequenceExample`` per video (DESIGN.md, data contracts).

Context: ``video_id``, ``label``, ``num_frames``, ``height``, ``width``, ``flow_bound``, plus
what made the record: ``flow_engine`` (engine and library version), ``flow_params`` (JSON of
every value that shapes the record, TV-L1 parameters included), ``cache_key`` and
``schema_version``. Feature lists: ``rgb`` (N JPEG frames), ``flow_x`` and ``flow_y`` (N - 1
greyscale JPEGs each).

Flow is stored as ``uint8 = round(128 + v·127.5/bound)`` after clipping ``v`` to
``[-bound, bound]``: 128 means zero, and a horizontal flip maps ``u -> 256 - u`` (clipped), which
keeps zero at zero. The flow stage writes these records; the shard stage copies them without
decoding; the reader parses them.

TensorFlow is imported only inside the functions that need it, so flow workers (which only
compute and encode) start fast and small.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

SCHEMA_VERSION = 1


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


def write_record(path: str, serialized: bytes) -> None:
    """Write one record to ``path`` atomically: a temporary name, then a rename."""
    import tensorflow as tf

    tmp = f"{path}.tmp"
    with tf.io.TFRecordWriter(tmp) as writer:
        writer.write(serialized)
    tf.io.gfile.rename(tmp, path, overwrite=True)


def read_records(path: str) -> Iterator[bytes]:
    """The serialised records of a TFRecord file, in order."""
    import tensorflow as tf

    for record in tf.data.TFRecordDataset(path):
        yield record.numpy()
