"""Stage ``ingest``: find the videos, probe each one, split them, write the manifest.

Layouts (``data.layout``):

- ``ucf101``: ``<root>/<Class>/<video>.avi`` with UCF101's lists in ``data.lists``
  (``classInd.txt``, ``trainlist0N.txt``, ``testlist0N.txt``; N = ``data.split``). Listed
  paths that differ from the disk only in case (UCF101's ``HandStandPushups``) are found.
- ``hmdb51``: ``<root>/<class>/<video>.avi`` with HMDB51's ``<class>_test_splitN.txt`` lists
  (1 = train, 2 = test, 0 = unused).
- ``folder``: ``<root>/<Class>/<video>`` and no lists: test is split off by ``data.seed``.
  Videos may sit in sub-folders; symbolic links are followed; hidden files and folders
  (``.DS_Store``, macOS's ``._clip.mp4``) and ``__MACOSX`` are skipped.
- ``rawframes``: frame folders that denseflow or the older dense_flow tools made and mmaction2
  reads (``pipeline.rawframes``), listed by mmaction2 list files in ``data.lists``
  (``frame_dir total_frames label``; ``train``, ``test`` or ``val`` in their names), or, with
  none there, ``<root>/<Class>/<video>/`` split as ``folder`` is. Each folder's convention is
  read off its file names and counts, and every image is decoded; the flow stage builds the
  records from them without computing flow. A root holding the authors' ``jpegs_256/`` and
  ``tvl1_flow/`` (their ``ucf101_jpegs_256.zip`` and ``ucf101_tvl1_flow.zip``) is read as
  theirs (:func:`list_tsfusion`): one video per ``jpegs_256/<video>/``, split by UCF101's (or
  HMDB51's) own lists in ``data.lists``, or, with ``data.lists`` = ``data.root``, by the
  groups of the names ``v_<Class>_gXX_cXX``.

Train/val (and the ``folder`` layout's test split) are drawn per class over *groups*, so that
clips of one group (UCF101's ``_gXX_``; otherwise each video alone) never straddle two splits.

Every candidate (a frame folder: every image of it) is decoded in full in a worker process
(``pipeline.video``, ``pipeline.rawframes``; in a ``pebble`` pool, or as a Ray task with
``cluster.executor: ray``, ``pipeline.cluster``): a video that cannot be opened (with the true
reason: empty, not a video, no video stream, a codec this build cannot decode, an MP4 without
its index, a broken link; a frame folder with missing, cut or unreadable images, gaps or
counts no tool writes), is truncated (its decodable stream ends clearly before the duration
its container claims), has no or too few decodable frames (or not the frames its list line
counts), hangs (on Ray: past an alarm between packets, which a decoder stuck inside one call
does not hear), or crashes its decoder is written to ``data/rejected.csv`` with the reason,
and the stage goes on. It stops, leaving no outputs, when the root is empty, a class or split
ends up without usable videos, or more than ``data.max_rejected_fraction`` of the candidates
were rejected.

Outputs: ``data/manifest.csv`` (``contracts.MANIFEST_COLUMNS``: what decodes and what the
container claimed, the size as displayed, the average fps, the codec), ``data/classes.txt``
(one name per line, label order), ``data/rejected.csv``.

Run: ``python -m pipeline.ingest`` (reads ``data.*`` and ``cluster.*`` from ``params.yaml``).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import random
import re
import sys
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from pebble import ProcessExpired
from tqdm import tqdm

from pipeline import contracts, pools, rawframes, video
from pipeline.contracts import SPLITS
from pipeline.params import ClusterParams, DataParams, PipelineError, load_params
from pipeline.video import VIDEO_EXTENSIONS, Probe


class IngestError(PipelineError):
    """The stage cannot produce a usable manifest; the message says why and what to change."""


@dataclass(frozen=True)
class Candidate:
    """A video that a split list (or the folder tree) asks for."""

    path: Path
    class_name: str
    label: int
    split: str  # train | test (val is carved from train after probing)
    group: str  # videos of one group always land in the same split
    video_id: str
    listed_frames: int | None = None  # rawframes lists: the RGB frames the list line counts


@dataclass(frozen=True)
class Rejection:
    path: Path
    class_name: str
    split: str
    reason: str


def _safe_id(text: str) -> str:
    """A file-name-safe id: letters, marks and digits of any script, ``_``, ``.`` and ``-`` are
    kept (NFC); every run of anything else becomes one ``_`` ("air drumming" -> "air_drumming")."""
    kept = (
        c if c in "._-" or unicodedata.category(c)[0] in "LMN" else "\0"
        for c in unicodedata.normalize("NFC", text)
    )
    return re.sub("\0+", "_", "".join(kept)).strip("_")


def _ucf_group(class_name: str, stem: str) -> str:
    m = re.search(r"_g(\d+)_c\d+", stem)
    return f"{class_name}/g{int(m.group(1))}" if m else f"{class_name}/{stem}"


def _skipped(name: str) -> bool:
    """Hidden files and folders (``.DS_Store``, macOS's ``._clip.mp4`` resource forks, ``.git``)
    and the ``__MACOSX`` folders of zip archives: never videos, never classes."""
    return name.startswith(".") or name == "__MACOSX"


def _tree(root: Path, unreadable: list[OSError] | None = None) -> Iterator[Path]:
    """Every file under ``root``, symbolic links followed (once: no cycles), :func:`_skipped`
    names left out. A broken link is listed too: it is a file someone meant to be there.
    Folders that cannot be read are appended to ``unreadable``."""
    seen = set()
    report = unreadable.append if unreadable is not None else None
    for folder, dirs, files in os.walk(root, followlinks=True, onerror=report):
        real = os.path.realpath(folder)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = sorted(d for d in dirs if not _skipped(d))
        for name in sorted(files):
            if not _skipped(name):
                yield Path(folder) / name


class _Disk:
    """Files under the root, looked up exactly or, failing that, ignoring case."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._lower = {str(p.relative_to(root)).lower(): p for p in _tree(root)}

    def find(self, rel: str) -> Path | None:
        exact = self.root / rel
        if exact.is_file() or exact.is_symlink():  # a broken link: the probe says so
            return exact
        return self._lower.get(rel.lower())


def _read_lines(path: Path, hint: str) -> list[str]:
    """The non-blank lines of a split list, stripped (UTF-8; a byte-order mark is skipped)."""
    if not path.is_file():
        raise IngestError(f"split list {path} not found; {hint}")
    return [line.strip() for line in path.read_text("utf-8-sig").splitlines() if line.strip()]


def _name_and_number(line: str) -> tuple[str, str]:
    """``"air drumming/clip 1.avi 3"`` -> ``("air drumming/clip 1.avi", "3")``: a trailing
    number is split off; what comes before it, spaces and all, is the path. No number: ``""``."""
    m = re.fullmatch(r"(.*?\S)\s+(\d+)", line)
    return (m.group(1), m.group(2)) if m else (line, "")


def _ucf101_listed(lists: Path, split: int) -> tuple[list[str], list[tuple[str, str, str, int]]]:
    """UCF101's lists in ``lists``: the classes (``classInd.txt``) and each video of
    ``trainlist0N.txt`` / ``testlist0N.txt`` as ``(split, list file, path as listed (``/``
    separators), label)``, the label -1 when its class folder is not in ``classInd.txt``."""
    hint = "set data.lists to the folder holding classInd.txt and the train/test lists"
    # "1 ApplyEyeMakeup": the number first, then the name (which may hold spaces)
    classes = [line.split(maxsplit=1)[-1] for line in _read_lines(lists / "classInd.txt", hint)]
    label_of = {name.lower(): i for i, name in enumerate(classes)}
    listed = []
    for which, name in (("train", "trainlist"), ("test", "testlist")):
        list_file = f"{name}{split:02d}.txt"
        for line in _read_lines(lists / list_file, hint):
            rel = _name_and_number(line)[0].replace("\\", "/")
            listed.append((which, list_file, rel, label_of.get(rel.split("/")[0].lower(), -1)))
    return classes, listed


def list_ucf101(p: DataParams) -> tuple[list[str], list[Candidate], list[Rejection]]:
    """Classes, listed videos found on disk, and listed videos missing from it (UCF101)."""
    root = Path(p.root)
    classes, listed = _ucf101_listed(Path(p.lists), p.split)
    disk = _Disk(root)
    found, missing = [], []
    for split, list_file, rel, label in listed:
        class_dir, stem = rel.split("/")[0], Path(rel).stem
        if label < 0:
            missing.append(
                Rejection(
                    root / rel, class_dir, split, f"class {class_dir!r} is not in classInd.txt"
                )
            )
            continue
        path = disk.find(rel)
        if path is None:
            missing.append(
                Rejection(
                    root / rel,
                    classes[label],
                    split,
                    f"listed in {list_file} but not found on disk",
                )
            )
            continue
        found.append(
            Candidate(
                path,
                classes[label],
                label,
                split,
                _ucf_group(classes[label], stem),
                _safe_id(stem),
            )
        )
    return classes, found, missing


def _hmdb51_listed(lists: Path, split: int) -> tuple[list[str], list[tuple[str, str, str, int]]]:
    """HMDB51's ``<class>_test_splitN.txt`` lists in ``lists``: the classes (from the list
    names) and each video of split N as ``(split, list file, file as listed, label)``
    (1 = train, 2 = test; 0, unused by the split, is left out)."""
    suffix = f"_test_split{split}.txt"
    files = sorted(lists.glob(f"*{suffix}"))
    if not files:
        raise IngestError(
            f"no HMDB51 split lists (*{suffix}) in {lists}; set data.lists to "
            "the folder of testTrainMulti_7030_splits"
        )
    classes = [f.name[: -len(suffix)] for f in files]
    listed = []
    for label, list_file in enumerate(files):
        for line in _read_lines(list_file, ""):
            file, number = _name_and_number(line)
            if number in ("1", "2"):  # 0 = not used by this split
                listed.append(("train" if number == "1" else "test", list_file.name, file, label))
    return classes, listed


def list_hmdb51(p: DataParams) -> tuple[list[str], list[Candidate], list[Rejection]]:
    """Classes, listed videos found on disk, and listed videos missing from it (HMDB51)."""
    root = Path(p.root)
    classes, listed = _hmdb51_listed(Path(p.lists), p.split)
    disk = _Disk(root)
    found, missing = [], []
    for split, list_file, file, label in listed:
        name = classes[label]
        path = disk.find(f"{name}/{file}")
        if path is None:
            missing.append(
                Rejection(
                    root / name / file,
                    name,
                    split,
                    f"listed in {list_file} but not found on disk",
                )
            )
            continue
        stem = Path(file).stem
        found.append(Candidate(path, name, label, split, f"{name}/{stem}", _safe_id(stem)))
    return classes, found, missing


def _split_groups(items: list[Candidate], fraction: float, rng: random.Random) -> set[str]:
    """A share ``fraction`` of the items' groups (at least one, never all, when there are two)."""
    groups = sorted({c.group for c in items})
    rng.shuffle(groups)
    n = round(fraction * len(groups))
    if fraction > 0 and len(groups) >= 2:
        n = min(max(n, 1), len(groups) - 1)
    return set(groups[:n])


def list_folder(p: DataParams) -> tuple[list[str], list[Candidate], list[Rejection]]:
    """Classes and videos of a ``<root>/<Class>/<video>`` tree, test drawn by ``data.seed``."""
    root = Path(p.root)
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not _skipped(d.name))
    found, rejected = [], []
    videos: dict[str, list[Path]] = {}
    for name in classes:
        unreadable: list[OSError] = []
        videos[name] = [
            f for f in _tree(root / name, unreadable) if f.suffix.lower() in VIDEO_EXTENSIONS
        ]
        rejected += [
            Rejection(
                Path(e.filename), name, "train", f"a folder that cannot be read ({e.strerror})"
            )
            for e in unreadable
        ]
    # two names for one file (a link): one video, the file itself rather than a link to it,
    # or the same clip could land in train and test
    real = {f: os.path.realpath(f) for fs in videos.values() for f in fs}
    keep = {}
    for f in sorted(real, key=lambda f: f.is_symlink()):
        keep.setdefault(real[f], f)
    for label, name in enumerate(classes):
        items = []
        for f in videos[name]:
            original = keep[real[f]]
            if original != f:
                rejected.append(Rejection(f, name, "train", f"the same file as {original}"))
                continue
            group, video_id = _ucf_group(name, f.stem), _safe_id(f"{name}__{f.stem}")
            items.append(Candidate(f, name, label, "train", group, video_id))
        test = _split_groups(items, p.test_fraction, random.Random(f"test/{p.seed}/{name}"))
        found += [replace(c, split="test") if c.group in test else c for c in items]
    return classes, found, rejected


def _rawframes_classes(lists: Path, rows: dict[str, list[tuple[str, int, int]]]) -> list[str]:
    """Class names for the labels of mmaction2 lists: ``classes.txt`` (one per line, as our
    exports write it) or UCF101's ``classInd.txt`` beside the lists; else the first folder of
    the frame dirs, where each label has one; else ``class_<label>``."""
    labels = {label for lines in rows.values() for _, _, label in lines}
    count = max(labels) + 1
    if (lists / "classes.txt").is_file():
        names = contracts.read_classes(lists / "classes.txt")
    elif (lists / "classInd.txt").is_file():
        names = [line.split(maxsplit=1)[-1] for line in _read_lines(lists / "classInd.txt", "")]
    else:
        folders: dict[int, set[str]] = {}
        for lines in rows.values():
            for frame_dir, _, label in lines:
                path = Path(frame_dir)  # under the root: its first folder; else its parent's
                parts = path.parts if not path.is_absolute() else (path.parent.name, path.name)
                folders.setdefault(label, set()).add(parts[0] if len(parts) > 1 else "")
        names = [
            next(iter(folders[i])) if len(folders.get(i, ())) == 1 and "" not in folders[i]
            else f"class_{i}"
            for i in range(count)
        ]  # fmt: skip
        if len(set(names)) < len(names):
            names = [f"class_{i}" for i in range(count)]
    if len(names) < count:
        raise IngestError(
            f"the lists in {lists} use labels up to {count - 1}, but its class names file "
            f"holds {len(names)} names; add the missing ones"
        )
    return names


def _frame_dir(frame_dir: str, root: Path) -> str:
    """A list's frame dir with ``/`` separators, relative to ``root`` when it lies under it."""
    path = Path(frame_dir.replace("\\", "/"))
    if path.is_absolute():
        with contextlib.suppress(ValueError):
            return path.relative_to(root.resolve()).as_posix()
        with contextlib.suppress(ValueError):
            return path.relative_to(root.absolute()).as_posix()
    return path.as_posix()


def list_rawframes(p: DataParams) -> tuple[list[str], list[Candidate], list[Rejection]]:
    """Frame folders (``pipeline.rawframes``) listed by mmaction2 lists in ``data.lists``, or,
    with none there, the ``<root>/<Class>/<video>/`` folders, test drawn by ``data.seed``; the
    authors' ``jpegs_256``/``tvl1_flow`` tree when the root is one (:func:`list_tsfusion`)."""
    root, lists = Path(p.root), Path(p.lists)
    if (tree := tsfusion_tree(root)) is not None:
        return list_tsfusion(p, tree)
    try:
        files = rawframes.find_lists(lists, p.split) if lists.is_dir() else {}
    except PipelineError as exc:
        raise IngestError(str(exc)) from exc
    if not files:
        if lists.resolve() != root.resolve():
            raise IngestError(
                f"no mmaction2 list files in data.lists = {p.lists!r} (*.txt with train and "
                "test or val in their names); point data.lists at them, or set it to data.root "
                "to split the <root>/<Class>/<video>/ folders by groups"
            )
        return _rawframes_tree(p, root)
    if "train" not in files or "test" not in files:
        raise IngestError(
            f"{lists} holds a {' and a '.join(files)} list but no "
            f"{'train' if 'train' not in files else 'test (or val)'} list; the lists of a "
            "rawframes tree come in pairs (mmaction2: *_train_split_1_rawframes.txt, "
            "*_val_split_1_rawframes.txt)"
        )
    try:
        rows = {split: rawframes.read_list(path) for split, path in files.items()}
    except PipelineError as exc:
        raise IngestError(str(exc)) from exc
    rows = {
        split: [(_frame_dir(d, root), n, label) for d, n, label in lines]
        for split, lines in rows.items()
    }
    classes = _rawframes_classes(lists, rows)
    found, missing = [], []
    for split, lines in rows.items():
        for frame_dir, total, label in lines:
            rel = frame_dir
            folder, name = (Path(rel) if Path(rel).is_absolute() else root / rel), classes[label]
            if not folder.is_dir():
                why = f"listed in {files[split].name} but no such folder"
                missing.append(Rejection(folder, name, split, why))
                continue
            stem = Path(rel).name
            group, video_id = _ucf_group(name, stem), _safe_id(stem)
            found.append(Candidate(folder, name, label, split, group, video_id, total))
    return classes, found, missing


def _rawframes_tree(
    p: DataParams, root: Path
) -> tuple[list[str], list[Candidate], list[Rejection]]:
    """The ``<root>/<Class>/<video>/`` frame folders, split as the ``folder`` layout is."""
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not _skipped(d.name))
    found = []
    for label, name in enumerate(classes):
        folders = sorted(d for d in (root / name).iterdir() if d.is_dir() and not _skipped(d.name))
        items = [
            Candidate(d, name, label, "train", _ucf_group(name, d.name),
                      _safe_id(f"{name}__{d.name}"))
            for d in folders
        ]  # fmt: skip
        test = _split_groups(items, p.test_fraction, random.Random(f"test/{p.seed}/{name}"))
        found += [replace(c, split="test") if c.group in test else c for c in items]
    return classes, found, []


# ---- the authors' UCF101/HMDB51 frames and flow (feichtenhofer/twostreamfusion) -----------

UCF_NAME = re.compile(r"v_(.+)_g(\d+)_c(\d+)")
"""A UCF101 video's name, ``v_<Class>_g<XX>_c<XX>``, the class and group read off it."""

_ZIPS = {rawframes.RGB_TREE: "ucf101_jpegs_256.zip (hmdb51_jpegs_256.zip)",
         rawframes.FLOW_TREE: "ucf101_tvl1_flow.zip (hmdb51_tvl1_flow.zip)"}  # fmt: skip


def _holds_frames(folder: Path) -> bool:
    """Whether the first sub-folder of ``folder`` holds ``frame%06d.jpg`` images."""
    with contextlib.suppress(OSError, StopIteration):
        first = next(d for d in sorted(os.scandir(folder), key=lambda d: d.name) if d.is_dir())
        return any(rawframes.FRAME.fullmatch(n) for n in os.listdir(first.path))
    return False


def tsfusion_tree(root: Path) -> Path | None:
    """The folder holding the authors' ``jpegs_256/`` and ``tvl1_flow/`` (twostreamfusion's
    README, "Data"; ``cnn_setup_environment.m`` l.8-9) when ``data.root`` is it, or its
    ``tvl1_flow/`` (``u/`` and ``v/`` inside), or its ``jpegs_256/``; None for other trees.

    Raises:
        IngestError: half of the tree: one of the two zips' folders, or ``u/``/``v/``, missing.
    """
    rgb, flow = rawframes.RGB_TREE, rawframes.FLOW_TREE
    name = root.name if root.name not in ("", "..") else root.resolve().name
    up = root.parent if root.name not in ("", "..") else root.resolve().parent
    if (root / rgb).is_dir() or (root / flow).is_dir():
        tree = root
    elif (root / "u").is_dir() and (root / "v").is_dir():
        if name != flow:
            raise IngestError(
                f"data.root = {str(root)!r} holds u/ and v/ flow folders (the authors' layout?) "
                f"but is not called {flow}/; the RGB frames are found at ../{rgb}/ beside a "
                f"{flow}/: rename or link it, and point data.root at the folder holding both"
            )
        tree = up
    elif name == rgb and ((up / flow).is_dir() or _holds_frames(root)):
        tree = up
    else:
        return None
    for needed in (rgb, flow):
        if not (tree / needed).is_dir():
            have = flow if needed == rgb else rgb
            raise IngestError(
                f"{tree} holds {have}/ but no {needed}/: the authors' layout needs both, "
                f"{rgb}/<video>/frame%06d.jpg and {flow}/u|v/<video>/frame%06d.jpg; unzip "
                f"{_ZIPS[needed]} into {tree}"
            )
    for c in ("u", "v"):
        if not (tree / flow / c).is_dir():
            raise IngestError(
                f"{tree / flow} has no {c}/ folder: the authors' flow is {flow}/u/<video>/ and "
                f"{flow}/v/<video>/ (unzip all of {_ZIPS[flow]})"
            )
    return tree


def list_tsfusion(p: DataParams, tree: Path) -> tuple[list[str], list[Candidate], list[Rejection]]:
    """The videos of the authors' tree, one per ``jpegs_256/<video>/`` folder (its flows in
    ``tvl1_flow/u|v/<video>/``, checked by the probe), split by UCF101's lists
    (``classInd.txt``, ``trainlist0N.txt``, ``testlist0N.txt``) or HMDB51's
    (``*_test_splitN.txt``) in ``data.lists``, a listed ``<Class>/<video>.avi`` found by its
    stem ignoring case (the zip's ``v_HandstandPushups_*`` for the lists' ``HandStand``);
    with ``data.lists`` = ``data.root`` and no lists there, classes and groups from the names
    ``v_<Class>_g<XX>_c<XX>``, test drawn by ``data.seed`` as for ``folder``.

    ``video_id`` is the listed stem (as the ``ucf101`` and ``hmdb51`` layouts have it) or,
    without lists, the folder's name.
    """
    root, lists = tree / rawframes.RGB_TREE, Path(p.lists)
    folders = {d.name: Path(d.path) for d in sorted(os.scandir(root), key=lambda d: d.name)
               if d.is_dir() and not _skipped(d.name)}  # fmt: skip
    lower = {name.lower(): path for name, path in reversed(folders.items())}
    if (lists / "classInd.txt").is_file():
        classes, listed = _ucf101_listed(lists, p.split)
    elif lists.is_dir() and any(lists.glob(f"*_test_split{p.split}.txt")):
        classes, listed = _hmdb51_listed(lists, p.split)
    elif lists.resolve() == Path(p.root).resolve():
        return _tsfusion_by_names(p, folders)
    else:
        raise IngestError(
            f"no UCF101 lists (classInd.txt, trainlist{p.split:02d}.txt, "
            f"testlist{p.split:02d}.txt) or HMDB51 lists (*_test_split{p.split}.txt) in "
            f"data.lists = {p.lists!r}; point data.lists at them, or set it to data.root to "
            "split the videos by the groups of their names (v_<Class>_gXX_cXX)"
        )
    found, missing = [], []
    for split, list_file, rel, label in listed:
        stem = Path(rel).stem
        if label < 0:
            class_dir = rel.split("/")[0]
            why = f"class {class_dir!r} is not in classInd.txt"
            missing.append(Rejection(root / stem, class_dir, split, why))
            continue
        name = classes[label]
        folder = folders.get(stem) or lower.get(stem.lower())
        if folder is None:
            why = f"listed in {list_file} but no folder {rawframes.RGB_TREE}/{stem}/ in {tree}"
            missing.append(Rejection(root / stem, name, split, why))
            continue
        group = _ucf_group(name, stem) if UCF_NAME.fullmatch(stem) else f"{name}/{stem}"
        found.append(Candidate(folder, name, label, split, group, _safe_id(stem)))
    return classes, found, missing


def _tsfusion_by_names(
    p: DataParams, folders: dict[str, Path]
) -> tuple[list[str], list[Candidate], list[Rejection]]:
    """Without lists: the class and group of each folder from its UCF101 name."""
    by_class: dict[str, list[tuple[str, Path]]] = {}
    rejected = []
    for name, folder in folders.items():
        if m := UCF_NAME.fullmatch(name):
            by_class.setdefault(m.group(1), []).append((name, folder))
        else:
            why = (
                "not a UCF101 video name (v_<Class>_gXX_cXX): without lists the class comes from "
                "the name; point data.lists at the dataset's split lists"
            )
            rejected.append(Rejection(folder, "", "train", why))
    classes = sorted(by_class)
    found = []
    for label, cls in enumerate(classes):
        items = [Candidate(folder, cls, label, "train", _ucf_group(cls, name), _safe_id(name))
                 for name, folder in by_class[cls]]  # fmt: skip
        test = _split_groups(items, p.test_fraction, random.Random(f"test/{p.seed}/{cls}"))
        found += [replace(c, split="test") if c.group in test else c for c in items]
    return classes, found, rejected


LISTERS: dict[str, Callable[[DataParams], tuple[list[str], list[Candidate], list[Rejection]]]]
LISTERS = {
    "ucf101": list_ucf101,
    "hmdb51": list_hmdb51,
    "folder": list_folder,
    "rawframes": list_rawframes,
}


def probe_video(path: str) -> Probe:
    """Decode every frame of ``path`` and report what it holds (``pipeline.video.probe``).

    Raises:
        VideoError: when the file cannot be read as a video; the message says why.
    """
    return video.probe(path)


def probe_all(
    paths: Iterable[Path],
    workers: int,
    timeout_s: float,
    probe: Callable[[str], Probe] = probe_video,
    executor: pools.Executor | None = None,
) -> dict[Path, Probe | str]:
    """Probe videos with ``executor`` (default: ``workers`` local processes, 0: one per core);
    a failure of any kind becomes a reason string.

    A worker that dies (segfault, abort) or overruns ``timeout_s`` costs only its video:
    pebble replaces the worker (Ray retries the task elsewhere, then gives up) and the other
    videos go on.
    """
    paths = list(paths)
    results: dict[Path, Probe | str] = {}
    executor = executor or pools.LocalExecutor(workers)
    done = executor.each(probe, [(str(p),) for p in paths], timeout=timeout_s)
    with contextlib.closing(done):  # stops the workers at once on an error or Ctrl-C
        for i, result in tqdm(done, total=len(paths), desc="ingest: probe", unit="video"):
            results[paths[i]] = _reason(result, timeout_s)
    return results


def _reason(result: object, timeout_s: float) -> Probe | str:
    """A probe, or why the probe failed."""
    if isinstance(result, concurrent.futures.TimeoutError):
        return f"decoding took longer than data.probe_timeout_s = {timeout_s} s"
    if isinstance(result, ProcessExpired):
        return f"the decoder crashed ({result}; exit code {result.exitcode})"
    if isinstance(result, pools.WorkerDied):
        return f"the decoder crashed ({result})"
    if isinstance(result, Exception):  # the probe's own error, e.g. not a video
        return str(result) or type(result).__name__
    return result


def judge(probe: Probe | str, min_frames: int) -> str | None:
    """The reason to reject a probed video, or None when it is usable."""
    if isinstance(probe, str):
        return probe
    if probe.frames == 0:
        return "no decodable frames"
    if why := probe.truncated():
        return why
    if probe.frames < min_frames:
        frames = f"{probe.frames} decodable frame" + ("s" if probe.frames != 1 else "")
        return f"only {frames}; data.min_frames is {min_frames}"
    return None


def carve_val(rows: list[dict], fraction: float, seed: int) -> list[dict]:
    """Move a share of each class's training groups to ``val`` (groups are never split)."""
    by_class: dict[str, list[dict]] = {}
    for row in rows:
        if row["split"] == "train":
            by_class.setdefault(row["class_name"], []).append(row)
    val_groups: set[str] = set()
    for name, items in sorted(by_class.items()):
        rng = random.Random(f"val/{seed}/{name}")
        val_groups |= _split_groups([r["_candidate"] for r in items], fraction, rng)
    for row in rows:
        if row["split"] == "train" and row["_candidate"].group in val_groups:
            row["split"] = "val"
    return rows


def _summarise(rejected: list[Rejection], limit: int = 8) -> str:
    counts = Counter(re.sub(r"\d+", "N", r.reason) for r in rejected)
    lines = [f"    {n} x {reason}" for reason, n in counts.most_common()]
    lines += [f"    e.g. {r.path}: {r.reason}" for r in rejected[:limit]]
    return "\n".join(lines)


def ingest(
    p: DataParams,
    probe: Callable[[str], Probe] = probe_video,
    executor: pools.Executor | None = None,
) -> tuple[list[str], list[dict], list[Rejection]]:
    """Classes, manifest rows and rejections for ``data.*``, the videos probed by ``executor``
    (default: ``data.workers`` local processes); raises :class:`IngestError`."""
    root = Path(p.root)
    if not root.is_dir():
        raise IngestError(
            f"data.root = {p.root!r} is not a folder; point it at the videos "
            "(or keep the default to use the synthetic dataset)"
        )
    classes, candidates, rejected = LISTERS[p.layout](p)
    unwritable = [f"{n!r} ({why})" for n in classes if (why := contracts.check_class_name(n))]
    if unwritable:
        raise IngestError(
            f"class names that {contracts.CLASSES} cannot hold, one name per line: "
            f"{', '.join(unwritable)}; rename those classes (data.root = {p.root!r})"
        )
    total = len(candidates) + len(rejected)  # every video the lists (or the tree) ask for
    if not candidates and not rejected:
        raise IngestError(
            f"no videos found under data.root = {p.root!r} "
            f"(layout {p.layout!r}); check data.root, data.lists and data.layout"
        )
    seen: dict[str, Path] = {}
    unique = []
    for c in candidates:
        if c.video_id in seen:
            rejected.append(
                Rejection(
                    c.path,
                    c.class_name,
                    c.split,
                    f"duplicate video_id {c.video_id!r} (also {seen[c.video_id]})",
                )
            )
        else:
            seen[c.video_id] = c.path
            unique.append(c)
    if p.layout == "rawframes" and probe is probe_video:
        probe = rawframes.probe
    probes = probe_all([c.path for c in unique], p.workers, p.probe_timeout_s, probe, executor)
    rows = []
    for c in unique:
        result = probes[c.path]
        reason = judge(result, p.min_frames)
        if reason is None and c.listed_frames not in (None, result.frames):
            reason = (
                f"the list counts {c.listed_frames} frames, the folder holds {result.frames} "
                "RGB frames"
            )
        if reason is not None:
            rejected.append(Rejection(c.path, c.class_name, c.split, reason))
            continue
        rows.append(
            {
                "video_id": c.video_id,
                "path": str(c.path),
                "label": c.label,
                "class_name": c.class_name,
                "split": c.split,
                "frames": result.frames,
                "claimed_frames": result.claimed,
                "duration_s": round(result.duration, 3),
                "fps": round(result.fps, 3),
                "width": result.width,
                "height": result.height,
                "codec": result.codec,
                "_candidate": c,
            }
        )
    if not any(c.split == "val" for c in unique):  # a rawframes val list is kept as it is
        rows = carve_val(rows, p.val_fraction, p.seed)

    if rejected and len(rejected) / total > p.max_rejected_fraction:
        raise IngestError(
            f"{len(rejected)} of {total} videos rejected ({len(rejected) / total:.1%}), more than "
            f"data.max_rejected_fraction = {p.max_rejected_fraction}:\n{_summarise(rejected)}\n"
            "fix or remove those files, or raise data.max_rejected_fraction"
        )
    problems = []
    usable = {r["label"] for r in rows}  # one pass: a pass a class was O(classes x videos)
    trainable = {r["label"] for r in rows if r["split"] == "train"}
    for label, name in enumerate(classes):
        if label not in usable:
            problems.append(f"class {name!r} has no usable videos")
        elif label not in trainable:
            problems.append(f"class {name!r} has no usable training videos")
    for split in ("train", "test"):
        if not any(r["split"] == split for r in rows):
            problems.append(f"the {split} split has no usable videos")
    if problems:
        detail = f"\n  rejected:\n{_summarise(rejected)}" if rejected else ""
        raise IngestError("; ".join(problems) + f" (data.root = {p.root!r}){detail}")
    rows.sort(key=lambda r: (r["label"], r["video_id"]))
    return classes, rows, rejected


def write_outputs(
    out_dir: Path, classes: list[str], rows: list[dict], rejected: list[Rejection]
) -> None:
    """The manifest, the class names and the rejected list: all three written, then all
    three moved into place (a killed run leaves the previous three)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = (contracts.MANIFEST, contracts.CLASSES, contracts.REJECTED)
    with contracts.atomic_paths(*(out_dir / f.name for f in files)) as (manifest, names, why):
        contracts.write_manifest(manifest, rows)
        contracts.write_classes(names, classes)
        contracts.write_rejected(
            why, ((str(r.path), r.class_name, r.split, r.reason) for r in rejected)
        )


def decoder_versions() -> dict[str, str]:
    """What decides a probe's frame count, where this runs (compared across a cluster)."""
    return {"decoder": video.decoder_version()}


def ingest_on(p: DataParams, c: ClusterParams) -> tuple[list[str], list[dict], list[Rejection]]:
    """:func:`ingest` on the executor of ``cluster.executor``."""
    if c.executor == "local":
        return ingest(p)
    from pipeline import cluster

    with cluster.connect(c):
        cluster.check_versions(
            decoder_versions(), cluster.on_every_node(decoder_versions), "ingest's probes"
        )
        return ingest(p, executor=cluster.RayExecutor(c))


def main() -> None:
    try:
        params = load_params()
        with contracts.stage_lock("ingest"), contracts.disk_full_guard(contracts.DATA_DIR):
            classes, rows, rejected = ingest_on(params.data, params.cluster)
            write_outputs(contracts.DATA_DIR, classes, rows, rejected)
    except PipelineError as exc:
        sys.exit(f"ingest: {exc}")
    counts = Counter(r["split"] for r in rows)
    print(
        f"ingest: {len(rows)} videos in {len(classes)} classes "
        f"({', '.join(f'{s} {counts[s]}' for s in SPLITS)}), {len(rejected)} rejected"
        + (f" (see {contracts.REJECTED})" if rejected else "")
    )


if __name__ == "__main__":
    main()
