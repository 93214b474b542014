"""The per-video records and TFRecord files, written and read without TensorFlow
(``pipeline.contracts``), against TensorFlow itself: the program whose files these are. The
same bytes as ``tf.train.SequenceExample`` and ``tf.io.TFRecordWriter``, TensorFlow's readers
read ours, damage is found wherever TensorFlow's reader finds it, and the flow and shard stages
run without importing TensorFlow."""

import json
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from pipeline import contracts

from .conftest import copy_project

FIELDS = {
    "video_id": "v_ApplyEyeMakeup_g01_c01",
    "label": 7,
    "height": 256,
    "width": 340,
    "flow_bound": 20.0,
    "flow_engine": "opencv 5.0.0",
    "flow_params": {"bound": 20.0, "size": [340, 256], "tvl1": {"tau": 0.25}},
    "cache_key": "3f2a",
}


def _tensorflows_record(rgb, flow_x, flow_y, **f):
    """The record as this project wrote it with TensorFlow's own classes (until 2026-12)."""

    def one(kind, value):
        if kind == "bytes":
            return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))
        if kind == "int":
            return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))
        return tf.train.Feature(float_list=tf.train.FloatList(value=[value]))

    context = {
        "video_id": one("bytes", f["video_id"].encode()),
        "label": one("int", f["label"]),
        "num_frames": one("int", len(rgb)),
        "height": one("int", f["height"]),
        "width": one("int", f["width"]),
        "flow_bound": one("float", f["flow_bound"]),
        "flow_engine": one("bytes", f["flow_engine"].encode()),
        "flow_params": one("bytes", json.dumps(f["flow_params"], sort_keys=True).encode()),
        "cache_key": one("bytes", f["cache_key"].encode()),
        "schema_version": one("int", contracts.SCHEMA_VERSION),
    }
    lists = {
        name: tf.train.FeatureList(feature=[one("bytes", b) for b in values])
        for name, values in (("rgb", rgb), ("flow_x", flow_x), ("flow_y", flow_y))
    }
    example = tf.train.SequenceExample(
        context=tf.train.Features(feature=context),
        feature_lists=tf.train.FeatureLists(feature_list=lists),
    )
    return example.SerializeToString(deterministic=True)


@pytest.mark.parametrize("frames", [1, 2, 9])
def test_a_record_is_tensorflows_sequence_example_byte_for_byte(frames):
    rng = np.random.default_rng(frames)
    rgb = [rng.bytes(int(n)) for n in rng.integers(1, 3000, frames)]
    flow_x = [rng.bytes(int(n)) for n in rng.integers(0, 300, frames - 1)]
    flow_y = [rng.bytes(int(n)) for n in rng.integers(1, 300, frames - 1)]
    ours = contracts.encode_record(rgb=rgb, flow_x=flow_x, flow_y=flow_y, **FIELDS)
    assert ours == _tensorflows_record(rgb, flow_x, flow_y, **FIELDS)
    assert contracts.decode_record(ours) == {
        **FIELDS,
        "num_frames": frames,
        "schema_version": contracts.SCHEMA_VERSION,
        "rgb": rgb,
        "flow_x": flow_x,
        "flow_y": flow_y,
    }
    parsed = contracts.parse_record(tf.constant(ours))  # what training reads (tf.data's parser)
    assert parsed["video_id"].numpy().decode() == FIELDS["video_id"]
    assert int(parsed["label"]) == 7 and int(parsed["num_frames"]) == frames
    assert [b.numpy() for b in parsed["rgb"]] == rgb
    assert [b.numpy() for b in parsed["flow_x"]] == flow_x


RECORDS = [b"", b"x", bytes(range(256)) * 4, np.random.default_rng(0).bytes(3 << 20)]


def test_a_tfrecord_file_is_tensorflows_byte_for_byte_and_each_reads_the_other(tmp_path):
    ours, theirs = tmp_path / "ours.tfrecord", tmp_path / "theirs.tfrecord"
    contracts.write_records(ours, RECORDS)
    with tf.io.TFRecordWriter(str(theirs)) as writer:
        for record in RECORDS:
            writer.write(record)
    assert ours.read_bytes() == theirs.read_bytes()
    assert list(contracts.read_records(theirs)) == RECORDS
    assert [r.numpy() for r in tf.data.TFRecordDataset(str(ours))] == RECORDS
    assert list(contracts.read_records([ours, theirs])) == RECORDS + RECORDS
    assert not list(tf.io.gfile.glob(f"{tmp_path}/*.tmp"))


def _tensorflow_reads(path):
    """What TensorFlow's record reader makes of ``path``: its records, or "damaged"."""
    try:
        return list(tf.compat.v1.io.tf_record_iterator(str(path)))
    except tf.errors.DataLossError:
        return "damaged"


def _we_read(path):
    try:
        return list(contracts.read_records(path))
    except contracts.DamagedInputError as exc:
        assert exc.path == str(path)
        assert exc.what.startswith(("cut short: ", "changed bytes: ")), exc.what
        assert str(exc) == f"{path} is damaged ({exc.what}): {contracts.DAMAGED_FIX}"
        return "damaged"


def test_a_cut_or_a_changed_byte_is_found_wherever_tensorflows_reader_finds_it(tmp_path):
    """Every cut of a two-record file, and every byte of it flipped: our reader and
    TensorFlow's agree on the records, or on the file being damaged (a cut is called cut
    short, a flipped byte changed bytes), except where the file ends inside a record's
    12-byte length header: TensorFlow takes that for the end of the file (its
    ``RecordReader::ReadRecord`` passes on the header read's out-of-range, which readers
    stop at), ours calls it cut short."""
    whole = tmp_path / "whole.tfrecord"
    contracts.write_records(whole, [b"first record", b"2nd"])
    data = whole.read_bytes()
    assert len(data) == 12 + 16 + 3 + 16
    damaged = tmp_path / "damaged.tfrecord"
    for cut in range(len(data)):
        damaged.write_bytes(data[:cut])
        ours, theirs = _we_read(damaged), _tensorflow_reads(damaged)
        records_before = [] if cut < 28 else [b"first record"]
        if cut in (0, 28):
            assert ours == theirs == records_before, cut
            continue
        in_header = 0 < cut < 12 or 28 < cut < 40
        assert theirs == (records_before if in_header else "damaged"), cut
        with pytest.raises(contracts.DamagedInputError, match=r"\(cut short: ") as exc:
            list(contracts.read_records(damaged))
        assert ("length" in str(exc.value)) == in_header, (cut, exc.value)
    for at in range(len(data)):
        flipped = bytearray(data)
        flipped[at] ^= 0x10
        damaged.write_bytes(bytes(flipped))
        assert _we_read(damaged) == _tensorflow_reads(damaged) == "damaged", at
        with pytest.raises(contracts.DamagedInputError, match=r"\(changed bytes: record \d"):
            list(contracts.read_records(damaged))


def test_the_flow_and_shard_stages_run_without_tensorflow(tiny_repro, tmp_path):
    """flow (recomputing one record and checking the others it reuses) and shard, run as DVC
    runs them, never import TensorFlow, and end with the records and shards `dvc repro` made."""
    reference = tiny_repro[0]
    project = copy_project(reference, tmp_path / "project", cache=False)
    first = sorted((project / "data/videos").glob("*.tfrecord"))[0]
    first.unlink()
    script = (
        "import runpy, sys\n"
        "for stage in ('flow', 'shard'):\n"
        "    sys.argv = [f'pipeline/{stage}.py']\n"
        "    runpy.run_path(sys.argv[0], run_name='__main__')\n"
        "print(sorted(m for m in ('tensorflow', 'keras', 'jax') if m in sys.modules))\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", script], cwd=project, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().splitlines()[-1] == "[]", run.stdout
    assert re.search(r"\(\d+ reused from cache, 1 computed", run.stdout), run.stdout
    assert first.read_bytes() == (reference / "data/videos" / first.name).read_bytes()
    for shard in (reference / "data/shards").iterdir():
        assert (project / "data/shards" / shard.name).read_bytes() == shard.read_bytes()
