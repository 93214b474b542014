"""Tool: our records as frame folders, for denseflow users and mmaction2.

``python -m pipeline.export rawframes OUT [--split test] [--convention denseflow|mmaction2]``
writes the videos of the shards (``data/shards``; the splits asked for, all by default) as
``OUT/<class>/<video_id>/`` folders of JPEGs named by the convention (``pipeline.rawframes``):

- ``denseflow``: ``img_00000.jpg`` .. (N frames), ``flow_x_00000.jpg`` / ``flow_y_00000.jpg``
  .. (N - 1 flows, flow i from frame i to i + 1), numbered from 0, as denseflow writes them;
- ``mmaction2``: ``img_00001.jpg`` .., ``x_00001.jpg`` / ``y_00001.jpg`` .., numbered from 1,
  which mmaction2's default ``filename_tmpl`` and ``start_index`` read without edits.

The JPEGs are the records' bytes, copied: nothing is decoded or encoded again. A flow level
of ours, ``round(128 + v·127.5/B)``, read by those tools' ``(q/255)·2B - B``, comes out half
a level (``B/255`` px) high: within the level (docs/frames.md).

Beside the folders: mmaction2 list files per split (``<split>_list_rawframes.txt``,
``frame_dir total_frames label`` with the RGB count, and ``<split>_list_rawframes_flow.txt``
with the flow count, which flow configs need), ``classes.txt`` (the names of the labels) and
``rawframes.json``: the convention, bound and index base, and the ``filename_tmpl`` /
``start_index`` an mmaction2 config sets to read them.

Each video is written to ``<video_id>.tmp`` and renamed when whole, with its record's cache
key and the convention in a hidden ``.twostream`` file: a killed export, run again, keeps the
videos it finished and redoes only the rest (and any whose record or convention changed).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from pathlib import Path

from tqdm import tqdm

from pipeline import contracts, rawframes
from pipeline.contracts import SPLITS
from pipeline.params import PipelineError
from pipeline.rawframes import CONVENTIONS, Convention

EXPORT_FORMAT = "twostream-rawframes/1"
MARK = ".twostream"
"""In each exported video folder: the cache key of the record it was written from."""


class ExportError(PipelineError):
    """The export cannot be made; the message says why and what to change."""


def class_folder(name: str, label: int) -> str:
    """A class name as a folder mmaction2 can list: its list lines split on white space, so
    spaces (and path separators) become ``_`` (``classes.txt`` keeps the real names)."""
    folder = re.sub(r"[\s/\\]+", "_", name).strip("._")
    return folder or f"class_{label}"


def list_names(split: str) -> tuple[str, str]:
    """The RGB and the flow list files of ``split``."""
    return f"{split}_list_rawframes.txt", f"{split}_list_rawframes_flow.txt"


def write_video(folder: Path, record: dict, convention: Convention) -> None:
    """One record as a frame folder, whole or not at all (``<folder>.tmp``, then a rename)."""
    tmp = folder.with_name(folder.name + contracts.TEMP_MARK)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for i, data in enumerate(record["rgb"]):
        (tmp / convention.rgb_name(i)).write_bytes(data)
    for i, (x, y) in enumerate(zip(record["flow_x"], record["flow_y"], strict=True)):
        nx, ny = convention.flow_names(i)
        (tmp / nx).write_bytes(x)
        (tmp / ny).write_bytes(y)
    (tmp / MARK).write_text(_mark(record, convention), encoding="utf-8")
    shutil.rmtree(folder, ignore_errors=True)  # an older export of a record since changed
    tmp.rename(folder)


def _mark(record: dict, convention: Convention) -> str:
    return f"{record['cache_key']} {convention.name}\n"


def _done(folder: Path, record: dict, convention: Convention) -> bool:
    """Whether ``folder`` is this record, whole, in this convention (a killed export run
    again, even with another ``--convention``, redoes the rest)."""
    mark = folder / MARK
    return mark.is_file() and mark.read_text(encoding="utf-8") == _mark(record, convention)


def export_rawframes(
    out: Path,
    splits: list[str] | None = None,
    convention: str = "denseflow",
    shards_dir: str = contracts.SHARDS_DIR,
    classes_path: str | Path = contracts.CLASSES,
) -> tuple[dict, int]:
    """Write the records of ``splits`` (default: every split with videos) under ``out``;
    return what ``rawframes.json`` holds, and how many videos this run wrote (the others were
    there already: a killed export run again). Raises :class:`ExportError`."""
    conv = CONVENTIONS[convention]
    index = contracts.read_shard_index(shards_dir)
    classes = contracts.read_classes(classes_path)
    splits = splits or [s for s in SPLITS if index["splits"].get(s, {}).get("videos")]
    empty = [s for s in splits if not index["splits"].get(s, {}).get("videos")]
    if empty:
        raise ExportError(f"the shards in {shards_dir} hold no {empty[0]} videos")
    meta_path = out / "rawframes.json"
    if meta_path.is_file():
        old = json.loads(meta_path.read_text(encoding="utf-8"))
        if old.get("convention") != convention:
            raise ExportError(
                f"{out} holds a {old.get('convention')} export; export {convention} to another "
                "folder (the two name their files differently)"
            )
    out.mkdir(parents=True, exist_ok=True)
    for leftover in out.glob(f"*/*{contracts.TEMP_MARK}"):  # a killed run's half video
        shutil.rmtree(leftover, ignore_errors=True)
    folders = [class_folder(name, i) for i, name in enumerate(classes)]
    if len(set(folders)) < len(folders):
        folders = [f"{f}_{i}" for i, f in enumerate(folders)]
    total = sum(index["splits"][s]["videos"] for s in splits)
    bounds, lists, written = set(), {}, 0
    with tqdm(total=total, desc="export", unit="video") as bar:
        for split in splits:
            rgb_lines, flow_lines = [], []
            for path in contracts.shard_files(split, shards_dir):
                for serialized in contracts.read_records(path):
                    record = contracts.decode_record(serialized)
                    bounds.add(record["flow_bound"])
                    if len(bounds) > 1:
                        raise ExportError(
                            f"the records were made with different flow bounds {sorted(bounds)}"
                            f" ({record['video_id']}): re-run the flow stage"
                        )
                    rel = f"{folders[record['label']]}/{record['video_id']}"
                    folder = out / rel
                    if not _done(folder, record, conv):
                        write_video(folder, record, conv)
                        written += 1
                    rgb_lines.append((rel, len(record["rgb"]), record["label"]))
                    flow_lines.append((rel, len(record["flow_x"]), record["label"]))
                    bar.update()
            names = list_names(split)
            rawframes.write_list(out / names[0], sorted(rgb_lines))
            rawframes.write_list(out / names[1], sorted(flow_lines))
            lists[split] = {"rgb": names[0], "flow": names[1], "videos": len(rgb_lines)}
    contracts.write_classes(out / "classes.txt", classes)
    bound = bounds.pop()
    meta = {
        "format": EXPORT_FORMAT,
        "convention": convention,
        "description": conv.describe(),
        "index_base": conv.base,
        "bound": bound,
        "quantisation": (
            "flow uint8 = round(128 + v*127.5/bound), v clipped to [-bound, bound]; "
            "denseflow's round(255*(v + bound)/(2*bound)) reads it within half a level"
        ),
        "classes": "classes.txt",
        "lists": lists,
        "mmaction2": {
            modality: {
                "type": "RawframeDataset",
                "ann_file": {
                    s: str(out / v["rgb" if modality == "RGB" else "flow"])
                    for s, v in lists.items()
                },
                "data_prefix": {"img": str(out)},
                **fields,
                "modality": modality,
            }
            for modality, fields in conv.mmaction2().items()
        },  # fmt: skip
        "import": {
            "data.layout": "rawframes",
            "data.root": str(out),
            "data.lists": str(out),
            "data.rawframes_bound": bound,
            "data.rawframes_rounding": "round",
        },
        "flow_params": index.get("flow_params"),
    }
    contracts.write_json(meta_path, meta)
    return meta, written


def mmaction2_lines(meta: dict, split: str) -> list[str]:
    """The dataset lines of an mmaction2 config that reads ``split`` of an export."""
    lines = []
    for modality, d in meta["mmaction2"].items():
        lines.append(
            f"dict(type='RawframeDataset', ann_file='{d['ann_file'][split]}', "
            f"data_prefix=dict(img='{d['data_prefix']['img']}'), "
            f"filename_tmpl='{d['filename_tmpl']}', start_index={d['start_index']}, "
            f"modality='{modality}', pipeline=...)"
        )
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline.export", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    raw = sub.add_parser("rawframes", help="the records as denseflow/mmaction2 frame folders")
    raw.add_argument("out", help="the folder to write (made if missing)")
    raw.add_argument("--split", choices=SPLITS, action="append", help="default: all")
    raw.add_argument("--convention", choices=sorted(CONVENTIONS), default="denseflow")
    args = parser.parse_args(argv)
    try:
        with contracts.stage_lock("export"), contracts.disk_full_guard(args.out):
            meta, written = export_rawframes(Path(args.out), args.split, args.convention)
    except PipelineError as exc:
        sys.exit(f"export: {exc}")
    videos = sum(v["videos"] for v in meta["lists"].values())
    print(
        f"export: {videos} videos ({written} written, the rest already there) to "
        f"{args.out} as {meta['description']}; flow bound {meta['bound']:g}"
    )
    print(f"export: lists, classes.txt and rawframes.json in {args.out}; in mmaction2:")
    split = "test" if "test" in meta["lists"] else next(iter(meta["lists"]))
    print("\n".join(f"  {line}" for line in mmaction2_lines(meta, split)))


if __name__ == "__main__":
    main()
