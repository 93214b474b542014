"""Stage ``shard``: pack the per-video records into TFRecord shards, one set per split.

Reads the split of each video from the manifest, shuffles each split's videos with
``shard.seed``, and deals them round-robin into ``data/shards/<split>-NNNNN-of-MMMMM.tfrecord``
of about ``shard.target_mb`` each (at least ``shard.min_shards`` per non-empty split, so that
several readers or tf.distribute workers can split a split by file). Records are copied as the
serialised bytes the flow stage wrote: nothing is decoded or re-encoded. The same inputs and
seed give byte-identical shards. ``data/shards/index.json`` holds the schema version, the flow
parameters the records were made with, and per-shard, per-split and per-class counts.

All shard I/O goes through ``pipeline.contracts`` (``tf.io.gfile`` for URLs), so ``gs://``
paths work as well; local ones need no TensorFlow.

Run: ``python -m pipeline.shard`` (reads ``shard.*``; the manifest; ``data/videos``).
"""

from __future__ import annotations

import math
import os
import random
import shutil
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from pipeline import contracts
from pipeline.contracts import SHARDS_DIR, SPLITS, VIDEOS_DIR, shard_name
from pipeline.params import PipelineError, ShardParams, load_params


class ShardError(PipelineError):
    """The shards cannot be made; the message says why and what to change."""


def plan_shards(
    rows: list[dict], sizes: dict[str, int], p: ShardParams
) -> dict[str, list[list[dict]]]:
    """split -> shards -> rows, in the order they are written; raises :class:`ShardError`."""
    plan = {}
    for split in SPLITS:
        mine = sorted((r for r in rows if r["split"] == split), key=lambda r: r["video_id"])
        if not mine:
            plan[split] = []
            continue
        random.Random(f"{p.seed}/{split}").shuffle(mine)
        total_mb = sum(sizes[r["video_id"]] for r in mine) / 2**20
        count = max(p.min_shards, math.ceil(total_mb / p.target_mb))
        if len(mine) < count:
            if len(mine) < p.min_shards:
                raise ShardError(
                    f"the {split} split has {len(mine)} videos, fewer than shard.min_shards = "
                    f"{p.min_shards}; lower shard.min_shards or add videos"
                )
            count = len(mine)
        plan[split] = [mine[i::count] for i in range(count)]
    return plan


def write_shards(
    rows: list[dict],
    p: ShardParams,
    videos_dir: str | Path = VIDEOS_DIR,
    out_dir: str = SHARDS_DIR,
) -> dict:
    """Write the shards and index.json of ``rows``; return the index."""
    available, missing = [], []
    sizes = {}
    for row in rows:
        path = contracts.record_path(row["video_id"], videos_dir)
        if contracts.exists(path):
            sizes[row["video_id"]] = contracts.file_size(path)
            available.append(row)
        else:
            missing.append(row["video_id"])  # failed in the flow stage (data/flow_failed.csv)
    if not available:
        raise ShardError(f"no per-video records in {videos_dir}: run the flow stage first")
    plan = plan_shards(available, sizes, p)

    # a fresh set, written beside the old one and moved into place whole: never two runs'
    # shards mixed, and never a set without its index.json under the real name
    local = "://" not in out_dir
    work = f"{out_dir}{contracts.TEMP_MARK}" if local else out_dir
    for path in (work, f"{out_dir}.old") if local else (out_dir,):
        contracts.remove_tree(path)
    contracts.make_dirs(work)
    shards, first = [], []
    total = sum(sizes.values())
    damaged: list[str] = []

    def copied(group: list[dict]) -> Iterator[bytes]:
        for row in group:
            path = contracts.record_path(row["video_id"], videos_dir)
            try:
                serialized = contracts.read_record_file(path)  # its CRCs checked
            except contracts.DamagedInputError as exc:
                damaged.append(f"{exc.path} ({exc.what})")
                continue
            if not first:
                first.append(contracts.decode_record(serialized))
            yield serialized  # copied as is: no decode, no re-encode

    try:
        for split, groups in plan.items():
            for i, group in enumerate(groups):
                name = shard_name(split, i, len(groups))
                contracts.write_records(f"{work}/{name}", copied(group))
                shards.append(
                    {
                        "file": name,
                        "split": split,
                        "records": len(group),
                        "video_ids": [r["video_id"] for r in group],
                        "bytes": contracts.file_size(f"{work}/{name}"),
                        "crc32": contracts.file_crc32(f"{work}/{name}"),
                    }
                )
        if damaged:
            raise contracts.DamagedInputError(
                f"{len(damaged)} per-video records are damaged, and shard packs no damaged "
                "record: "
                + "; ".join(damaged[:5])
                + (" ..." if len(damaged) > 5 else "")
                + ". Remove them and run the flow stage again, which computes them anew "
                "(dvc repro flow), then shard"
            )
    except contracts.DiskFullError as exc:
        contracts.remove_tree(work)  # the shards are written as a whole set: free what was written
        needs = f"the shards are written as a whole set, which needs {contracts.size_text(total)}"
        raise contracts.DiskFullError(exc.path, needs) from exc
    except BaseException:
        if local:
            contracts.remove_tree(work)
        raise
    index = {
        "schema_version": contracts.SCHEMA_VERSION,
        "flow_engine": first[0]["flow_engine"],
        "flow_params": first[0]["flow_params"],
        "shard_params": {"target_mb": p.target_mb, "min_shards": p.min_shards, "seed": p.seed},
        "splits": {
            split: {
                "videos": sum(len(g) for g in groups),
                "shards": len(groups),
                "per_class": dict(
                    sorted(Counter(r["class_name"] for g in groups for r in g).items())
                ),
            }
            for split, groups in plan.items()
        },
        "missing_records": sorted(missing),
        "shards": shards,
    }
    contracts.write_shard_index(index, work)
    if local:
        if os.path.exists(out_dir):
            os.replace(out_dir, f"{out_dir}.old")
        os.replace(work, out_dir)
        shutil.rmtree(f"{out_dir}.old", ignore_errors=True)
    return index


def main() -> None:
    try:
        p = load_params().shard
        with contracts.stage_lock("shard"), contracts.disk_full_guard(SHARDS_DIR):
            index = write_shards(contracts.read_manifest(), p)
    except PipelineError as exc:
        sys.exit(f"shard: {exc}")
    parts = [
        f"{s} {v['videos']} videos in {v['shards']} shards" for s, v in index["splits"].items()
    ]
    missing = len(index["missing_records"])
    print(
        f"shard: {', '.join(parts)}"
        + (f"; {missing} videos without a record (failed flow)" if missing else "")
    )


if __name__ == "__main__":
    main()
