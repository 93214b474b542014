"""Frame folders that other tools made, and that ours make for them: the "rawframes" of
denseflow and mmaction2, and the authors' own UCF101/HMDB51 frames and TV-L1 flow (docs/frames.md).

A video is a folder of JPEGs: ``img_<n>.jpg`` (RGB) and one flow image per component, named
``flow_x_<n>.jpg`` / ``flow_y_<n>.jpg`` (denseflow) or ``x_<n>.jpg`` / ``y_<n>.jpg`` (the
older tools' zip mode, mmaction2's flow configs). The conventions differ in three ways, all
read off the names and counts (:func:`scan`), never asked of the user:

- the number of the first image: 0 (denseflow since late 2019) or 1 (the older dense_flow
  tools, mmaction2's ``start_index=1``);
- the flow names: ``flow_x_`` or ``x_``;
- the RGB frames: N, one per frame, with N - 1 flows, flow i from frame i to i + 1
  (denseflow); or N - 1, the second frame of each pair, with N - 1 flows (the older tools,
  which are numbered from 1). Such a video's record holds frames 2..N and flows 2..N - 1:
  the first flow has no first frame to go with.

The authors' layout (``tsfusion``: feichtenhofer/gpu_flow, whose output the twostreamfusion
README links as ``ucf101_jpegs_256.zip`` and ``ucf101_tvl1_flow.zip``) keeps a video's images
in three folders: ``<tree>/jpegs_256/<video>/frame%06d.jpg`` (RGB, 1..N) and
``<tree>/tvl1_flow/u/<video>/frame%06d.jpg``, ``.../v/<video>/...`` (flows 1..N - 1, flow k
from frame k to k + 1). Its video is the RGB folder; the flow folders are found from it
(:func:`flow_dirs`), and the names of :class:`Frames` are then paths relative to ``<tree>``
(``tvl1_flow/u/v_X/frame000001.jpg``), so every reader and every message works as for a
one-folder video. gpu_flow quantises ``cvRound(255·(v + 20)/40)`` after clipping to ±20
(compute_flow.cpp at 8a794fe, l.84 and 341-342): the ``round`` levels below at B = 20.

Flow images are grey JPEGs quantised ``round(255·(v + B)/(2B))`` (``floor`` in mmaction2's
``tools/misc/flow_extraction.py``) after clipping to ±B (``data.rawframes_bound``, which the
files do not say): level ``q`` holds the flows ``v·127.5/B`` in ``[q - 128, q - 127)``
(``floor``: ``[q - 127.5, q - 126.5)``), half a level off our levels (``round(128 +
v·127.5/B)``: ``[q - 128.5, q - 127.5)``). :func:`dequantize` reads a level back as its
middle, ``(q - z)·B/127.5`` with ``z`` = 127.5 (``floor``: 127), and our quantiser takes it
from there. At the same bound and rounding that middle falls exactly between two of our
levels; the tie goes to the tree's own level, so those flow JPEGs are copied byte for byte
(and an export of ours imports to the same bytes).

Also here: the list files of mmaction2 (``frame_dir total_frames label``, :func:`read_list`,
:func:`write_list`, :func:`find_lists`), a folder's content hash for the flow stage's cache,
and :func:`probe`, which ingest runs in its worker processes on every folder.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from pipeline.params import PipelineError
from pipeline.video import Probe

NAME = re.compile(r"(img|flow_x|flow_y|x|y)_(\d+)\.(?:jpe?g|JPE?G)")
"""The images of a frame folder; any other file in it (denseflow's ``.done``) is ignored."""

FRAME = re.compile(r"frame(\d+)\.(?:jpe?g|JPE?G)")
"""The images of the authors' layout (``tsfusion``): gpu_flow's ``sprintf(cad,
"/frame%06d.jpg", ...)`` (compute_flow.cpp at 8a794fe, l.355 and 368), RGB and flow alike."""

RGB_TREE, FLOW_TREE = "jpegs_256", "tvl1_flow"
"""The folders of the authors' data (twostreamfusion's ``cnn_setup_environment.m`` l.8-9,
gpu_flow's compute_flow.cpp l.48-51), and what their zips unpack to."""

JPEG_START, JPEG_END = b"\xff\xd8", b"\xff\xd9"


class RawframesError(PipelineError):
    """A frame folder that cannot be read as a video; the message says why."""


@dataclass(frozen=True)
class Convention:
    """How a tree names and counts its images."""

    base: int  # the number of the first image: 0 or 1
    flow_prefix: str  # "flow_" (flow_x_00000.jpg) or "" (x_00001.jpg)
    every_frame: bool  # N RGB frames for N - 1 flows; False: N - 1, the second of each pair
    digits: int = 5  # of the names this code writes (any width is read)
    tsfusion: bool = False  # the authors' layout: frame%06d.jpg in jpegs_256/, tvl1_flow/u|v/

    @property
    def name(self) -> str:
        if self.tsfusion:
            return "tsfusion"
        if not self.every_frame:
            return "dense_flow"  # yjxiong's and wanglimin's tools (TSN)
        if self.base == 0 and self.flow_prefix == "flow_":
            return "denseflow"
        if self.base == 1 and not self.flow_prefix:
            return "mmaction2"
        return f"img_/{self.flow_prefix}x_ from {self.base}"

    def describe(self) -> str:
        if self.tsfusion:
            return (
                "tsfusion: the authors' gpu_flow layout (feichtenhofer/twostreamfusion): "
                f"{RGB_TREE}/ and {FLOW_TREE}/{{u,v}}/ trees, frame%06d.jpg numbered from 1, "
                "N RGB frames and N - 1 flows"
            )
        rgb = "N RGB frames" if self.every_frame else "N - 1 RGB frames (the second of each pair)"
        return (
            f"{self.name}: img_, {self.flow_prefix}x_ and {self.flow_prefix}y_ numbered from "
            f"{self.base}, {rgb} and N - 1 flows"
        )

    def rgb_name(self, i: int) -> str:
        """The file of the ``i``-th RGB frame (from 0) of a video, as this code writes it."""
        if self.tsfusion:
            return f"frame{self.base + i:0{self.digits}d}.jpg"
        return f"img_{self.base + i:0{self.digits}d}.jpg"

    def flow_names(self, i: int) -> tuple[str, str]:
        """The files of flow ``i`` (from 0: frame i to i + 1), as this code writes them
        (``tsfusion``: the same name in ``u/<video>/`` and ``v/<video>/``)."""
        if self.tsfusion:
            return (self.rgb_name(i),) * 2
        return tuple(
            f"{self.flow_prefix}{c}_{self.base + i:0{self.digits}d}.jpg" for c in ("x", "y")
        )

    def mmaction2(self) -> dict:
        """What an mmaction2 config sets to read a tree of this convention: the
        ``filename_tmpl`` and ``start_index`` of its dataset, per modality."""
        d = self.digits
        return {
            "RGB": {"filename_tmpl": f"img_{{:0{d}d}}.jpg", "start_index": self.base},
            "Flow": {"filename_tmpl": f"{self.flow_prefix}{{}}_{{:0{d}d}}.jpg",
                     "start_index": self.base},
        }  # fmt: skip


TSFUSION = Convention(base=1, flow_prefix="", every_frame=True, digits=6, tsfusion=True)
"""The authors' layout: gpu_flow (compute_flow.cpp at 8a794fe) numbers from 1 with six digits,
RGB ``nframes + 1`` (l.368) and flow ``nframes`` (l.355), flow k from frame k to k + 1 (l.306)."""

CONVENTIONS = {
    "denseflow": Convention(base=0, flow_prefix="flow_", every_frame=True),
    "mmaction2": Convention(base=1, flow_prefix="", every_frame=True),
}
"""What ``python -m pipeline.export rawframes --convention`` writes: denseflow's own output,
and what mmaction2's default ``filename_tmpl`` and ``start_index`` read unedited."""


@dataclass(frozen=True)
class Frames:
    """A frame folder as a video: the images its record is made of, in order, as paths
    relative to ``folder`` (the video's own folder: file names; ``tsfusion``: the tree holding
    ``jpegs_256/`` and ``tvl1_flow/``, and names such as ``tvl1_flow/u/v_X/frame000001.jpg``)."""

    folder: str
    convention: Convention
    rgb: list[str]  # N file names, one per frame of the record
    flow_x: list[str]  # N - 1: flow i from rgb[i] to rgb[i + 1]
    flow_y: list[str]

    def path(self, name: str) -> str:
        """Where the image ``name`` (one of :attr:`rgb`, :attr:`flow_x`, :attr:`flow_y`) is."""
        return os.path.join(self.folder, name)


def flow_dirs(folder: str | Path) -> tuple[Path, str, str, str]:
    """The authors' layout around the RGB folder ``<tree>/jpegs_256/<video>``: ``<tree>``, and
    the RGB, u and v folders relative to it (``jpegs_256/<video>``, ``tvl1_flow/u/<video>``,
    ``tvl1_flow/v/<video>``; gpu_flow's compute_flow.cpp at 8a794fe, l.198, 213 and 216)."""
    folder = Path(folder)
    tree, video = folder.parent.parent, folder.name
    return (tree, f"{folder.parent.name}/{video}",
            f"{FLOW_TREE}/u/{video}", f"{FLOW_TREE}/v/{video}")  # fmt: skip


def _gap(names: dict[int, str], kind: str, base: int, count: int) -> str | None:
    missing = sorted(set(range(base, base + count)) - set(names))
    if not missing:
        return None
    width = len(re.search(r"\d+", next(iter(names.values()))).group()) if names else 5
    first = f"{kind}_{missing[0]:0{width}d}.jpg"
    more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
    return f"{first}{more} missing ({kind}_ images numbered {base}..{base + count - 1})"


def scan(folder: str | Path) -> Frames:
    """The convention and the images of a frame folder, from its file names alone (a folder
    of ``frame%06d.jpg``: the authors' RGB folder, with its flow folders, :func:`flow_dirs`).

    Raises:
        RawframesError: a folder that cannot be read, holds no images, only RGB or only flow
            (the authors' layout: its u or v folder missing), two kinds of flow names, gaps in
            the numbering, or counts no tool writes.
    """
    try:
        listing = os.listdir(folder)
    except OSError as exc:
        raise RawframesError(f"the folder cannot be read ({exc.strerror})") from exc
    if any(FRAME.fullmatch(name) for name in listing):
        if any(NAME.fullmatch(name) for name in listing):
            raise RawframesError(
                "both frame%06d.jpg images (the authors' jpegs_256 layout) and img_/flow_ "
                "images: two conventions in one folder"
            )
        return _scan_tsfusion(folder, listing)
    found: dict[str, dict[int, str]] = {k: {} for k in ("img", "flow_x", "flow_y", "x", "y")}
    for name in sorted(listing):
        if m := NAME.fullmatch(name):
            kind, number = m.group(1), int(m.group(2))
            if (other := found[kind].setdefault(number, name)) != name:
                raise RawframesError(f"two images numbered {number}: {other} and {name}")
    if not any(found.values()):
        raise RawframesError(
            "no frame images in the folder (img_*.jpg with flow_x_*.jpg or x_*.jpg)"
        )
    if (found["flow_x"] or found["flow_y"]) and (found["x"] or found["y"]):
        raise RawframesError("both flow_x_/flow_y_ and x_/y_ images: two flows in one folder")
    prefix = "flow_" if found["flow_x"] or found["flow_y"] else ""
    rgb, fx, fy = found["img"], found[f"{prefix}x"], found[f"{prefix}y"]
    if not rgb:
        raise RawframesError(
            "flow images but no RGB frames (img_*.jpg): write those too (denseflow: a run "
            "with -s 0; mmaction2's flow_extraction.py: --save-rgb)"
        )
    if not fx and not fy:
        raise RawframesError(
            "RGB frames but no flow images (flow_x_*.jpg or x_*.jpg): compute them with "
            "denseflow, or use the videos (data.layout ucf101, hmdb51 or folder)"
        )
    base = min(min(d) for d in (rgb, fx, fy) if d)
    if base not in (0, 1):
        raise RawframesError(
            f"the images are numbered from {base}; the tools number from 0 (denseflow) or 1"
        )
    flows = max(len(fx), len(fy), max(fx, default=-1) - base + 1, max(fy, default=-1) - base + 1)
    for names, kind, count in (
        (rgb, "img", max(rgb) - base + 1),
        (fx, f"{prefix}x", flows),
        (fy, f"{prefix}y", flows),
    ):
        if why := _gap(names, kind, base, count):
            raise RawframesError(why)
    n = len(rgb)
    if n == flows + 1:
        every_frame = True
    elif n == flows and base == 1:
        every_frame = False
    else:
        tools = "denseflow writes N frames and N - 1 flows, the older tools (from 1) N - 1 of each"
        raise RawframesError(f"{n} RGB frames and {flows} flows numbered from {base}: {tools}")
    order = sorted(rgb)
    convention = Convention(base, prefix, every_frame)
    skip = 0 if every_frame else 1  # the older tools' first flow has no frame before it
    return Frames(
        str(folder),
        convention,
        [rgb[i] for i in order],
        [fx[i] for i in sorted(fx)][skip:],
        [fy[i] for i in sorted(fy)][skip:],
    )


def _numbered(names: Iterable[str], where: str) -> dict[int, str]:
    """``{number: path}`` of the ``frame<n>.jpg`` among ``names``, paths ``where/<name>``."""
    found: dict[int, str] = {}
    for name in sorted(names):
        if m := FRAME.fullmatch(name):
            path = f"{where}/{name}"
            if (other := found.setdefault(int(m.group(1)), path)) != path:
                raise RawframesError(f"two images numbered {m.group(1)}: {other} and {path}")
    return found


def _scan_tsfusion(folder: str | Path, listing: list[str]) -> Frames:
    """:func:`scan` of an RGB folder of the authors' layout, with its u and v flow folders.

    gpu_flow (compute_flow.cpp at 8a794fe) writes RGB ``frame%06d.jpg`` for ``nframes + 1``
    (l.368-372) and the flows for ``nframes`` >= 1 (l.293, 355-358): RGB 1..N, flows 1..N - 1,
    flow k from video frame k to k + 1 (``alg_tvl1(frame0GPU, frame1GPU, ...)``, l.306).
    """
    tree, rgb_rel, u_rel, v_rel = flow_dirs(folder)
    rgb = _numbered(listing, rgb_rel)
    flows = []
    for rel in (u_rel, v_rel):
        try:
            names = os.listdir(tree / rel)
        except FileNotFoundError:
            raise RawframesError(
                f"no flow folder {rel}/ for {rgb_rel}/ in {tree} (the authors' layout: "
                f"{RGB_TREE}/<video>/ beside {FLOW_TREE}/u/<video>/ and {FLOW_TREE}/v/<video>/; "
                "unzip ucf101_tvl1_flow.zip beside jpegs_256)"
            ) from None
        except OSError as exc:
            raise RawframesError(f"the flow folder {rel}/ cannot be read ({exc.strerror})") from exc
        flows.append(_numbered(names, rel))
    u, v = flows
    if not u and not v:
        raise RawframesError(f"no flow images (frame%06d.jpg) in {u_rel}/ and {v_rel}/")
    base = min(min(d) for d in (rgb, u, v) if d)
    if base != 1:
        raise RawframesError(
            f"the images are numbered from {base}; gpu_flow numbers frame%06d.jpg from 1"
        )
    count = max(len(u), len(v), max(u, default=0), max(v, default=0))
    for names, rel, n in ((rgb, rgb_rel, max(rgb)), (u, u_rel, count), (v, v_rel, count)):
        missing = sorted(set(range(1, n + 1)) - set(names))
        if missing:
            more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
            raise RawframesError(
                f"{rel}/frame{missing[0]:06d}.jpg{more} missing (images numbered 1..{n})"
            )
    if len(rgb) != count + 1:
        raise RawframesError(
            f"{len(rgb)} RGB frames in {rgb_rel}/ and {count} flows in {u_rel}/ and {v_rel}/: "
            "gpu_flow writes N frames and N - 1 flows"
        )
    return Frames(str(tree), TSFUSION, [rgb[i] for i in sorted(rgb)],
                  [u[i] for i in sorted(u)], [v[i] for i in sorted(v)])  # fmt: skip


def _read(folder: str, name: str) -> bytes:
    with open(os.path.join(folder, name), "rb") as f:
        return f.read()


def check_jpeg(name: str, data: bytes) -> None:
    """Raise :class:`RawframesError` unless ``data`` is a whole JPEG (start and end markers)."""
    if not data:
        raise RawframesError(f"{name} is empty")
    if not data.startswith(JPEG_START):
        raise RawframesError(f"{name} is not a JPEG (it starts {data[:8]!r})")
    if not data.rstrip(b"\0").endswith(JPEG_END):
        raise RawframesError(f"{name} is cut short (the JPEG has no end marker)")


def decode(name: str, data: bytes, flags: int = cv2.IMREAD_UNCHANGED) -> np.ndarray:
    """One image of a frame folder, checked: a JPEG that is whole and decodes."""
    check_jpeg(name, data)
    image = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    if image is None:
        raise RawframesError(f"{name} cannot be decoded as an image")
    return image


def jpeg_size(name: str, data: bytes) -> tuple[int, int, int]:
    """``(width, height, components)`` from a JPEG's frame header (its SOF marker).

    Raises:
        RawframesError: no frame header before the image data.
    """
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            break
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height = int.from_bytes(data[i + 5 : i + 7], "big")
            width = int.from_bytes(data[i + 7 : i + 9], "big")
            return width, height, data[i + 9]
        if marker == 0xDA:  # the image data starts: no frame header came before it
            break
        i += 2 + length
    raise RawframesError(f"{name} is not a readable JPEG (no frame header)")


def probe(folder: str) -> Probe:
    """Read a frame folder as ingest probes a video: its convention (:func:`scan`), then every
    image checked to be a whole JPEG whose header gives the frames' size (RGB: three
    components, or one; flow: one, grey) and decoded (at an eighth of the size, which reads
    all of the JPEG's data).

    Raises:
        RawframesError: the reason the folder is not a usable video.
    """
    frames = scan(folder)
    size = None
    for kind, names, flags in (
        ("frame", frames.rgb, cv2.IMREAD_REDUCED_COLOR_8),
        ("flow", frames.flow_x + frames.flow_y, cv2.IMREAD_REDUCED_GRAYSCALE_8),
    ):
        for name in names:
            data = _read(frames.folder, name)
            check_jpeg(name, data)
            width, height, components = jpeg_size(name, data)
            if kind == "flow" and components != 1:
                raise RawframesError(
                    f"{name} has {components} colour components; flow images are grey (one)"
                )
            if kind == "frame" and components not in (1, 3):
                raise RawframesError(f"{name} has {components} colour components (CMYK?)")
            if size is None:
                size = (width, height)
            elif (width, height) != size:
                first = frames.rgb[0]
                raise RawframesError(
                    f"{name} is {width}x{height}, {first} {size[0]}x{size[1]}: a folder's "
                    "frames and flows are all one size"
                )
            decode(name, data, flags)
    n = len(frames.rgb)
    codec = f"rawframes {frames.convention.name}"
    return Probe(n, n, 0.0, size[0], size[1], 0.0, 0.0, codec, 0)


def dequantize(q: np.ndarray, bound: float, rounding: str = "round") -> np.ndarray:
    """A tree's flow levels -> pixels, each level read as its middle: ``(q - z)·bound/127.5``
    with ``z`` = 127.5 for ``round`` and 127 for ``floor`` (see the module docstring).

    >>> dequantize(np.array([128, 255, 0], np.uint8), 20.0).astype(float).round(3).tolist()
    [0.078, 20.0, -20.0]
    """
    zero = 127.5 if rounding == "round" else 127.0
    return (q.astype(np.float32) - zero) * np.float32(bound / 127.5)


# ---- the content hash of a folder (the flow stage's cache key) -----------------------------


def _images(folder: str) -> tuple[str, list[str]]:
    """The folder the names are relative to, and the video's images: the folder's own, and
    for the authors' layout (``frame%06d.jpg`` images) those of its u and v flow folders.

    Raises:
        OSError: a folder that cannot be listed (a flow folder gone, too).
    """
    listing = os.listdir(folder)
    names = [name for name in listing if NAME.fullmatch(name)]
    if not any(FRAME.fullmatch(name) for name in listing):
        return folder, sorted(names)
    tree, rgb_rel, u_rel, v_rel = flow_dirs(folder)
    names = [f"{rgb_rel}/{name}" for name in names]  # a folder of two conventions (refused)
    for rel, files in ((rgb_rel, listing), (u_rel, None), (v_rel, None)):
        files = os.listdir(tree / rel) if files is None else files
        names += [f"{rel}/{name}" for name in files if FRAME.fullmatch(name)]
    return str(tree), sorted(names)


def folder_stat(folder: str) -> dict:
    """What changes when a folder's images do (the authors' layout: with its flow folders'):
    their count, total size, latest mtime."""
    base, names = _images(folder)
    stats = [os.stat(os.path.join(base, name)) for name in names]
    return {
        "size": sum(s.st_size for s in stats),
        "mtime_ns": max((s.st_mtime_ns for s in stats), default=0),
        "files": len(stats),
    }


def folder_sha256(folder: str) -> str:
    """SHA-256 of the folder's images (the authors' layout: with its u and v flow images, named
    by their paths in the tree): each name and its bytes, in name order."""
    h = hashlib.sha256()
    base, names = _images(folder)
    for name in names:
        path = os.path.join(base, name)
        h.update(f"{name}\0{os.path.getsize(path)}\0".encode())
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


# ---- mmaction2's list files ----------------------------------------------------------------

LIST_SPLIT = re.compile(r"(?:split|list)_?0*(\d+)(?:_|$)")


def _tokens(name: str) -> list[str]:
    """``ucf101_train_split_1_rawframes.txt`` -> ``[ucf101, train, split, 1, rawframes]``;
    ``trainlist01.txt`` -> ``[trainlist01]``."""
    stem = name.lower().rsplit(".", 1)[0]
    return [t for t in re.split(r"[^a-z0-9]+", stem) if t]


def read_list(path: Path) -> list[tuple[str, int, int]]:
    """``(frame_dir, total_frames, label)`` of each line of an mmaction2 rawframes list
    (``frame_dir total_frames label``; the frame dir may hold spaces)."""
    rows = []
    for number, line in enumerate(path.read_text("utf-8-sig").splitlines(), 1):
        if not line.strip():
            continue
        m = re.fullmatch(r"\s*(.*?\S)\s+(\d+)\s+(\d+)\s*", line)
        if m is None:
            raise PipelineError(
                f"{path}:{number}: {line!r} is not an mmaction2 rawframes line "
                "(frame_dir total_frames label)"
            )
        rows.append((m.group(1), int(m.group(2)), int(m.group(3))))
    return rows


def write_list(path: str | Path, rows: list[tuple[str, int, int]]) -> None:
    """An mmaction2 rawframes list, written atomically."""
    from pipeline import contracts

    contracts.write_text(path, "".join(f"{d} {n} {label}\n" for d, n, label in rows))


def find_lists(folder: Path, split: int) -> dict[str, Path]:
    """The mmaction2 list files in ``folder``, by our split: names with the word ``train``,
    ``test`` or ``val`` (mmaction2 calls UCF101's test split ``val``: it is ours when there is
    no ``test`` list). Where names carry a split (``split_1``, ``split1``, ``list01``) only
    ``data.split``'s count; where one split has a ``rawframes`` list and others (mmaction2's
    ``*_videos.txt``), the ``rawframes`` one; lists of flow counts (the word ``flow``, which our
    exports write beside the RGB ones) and of videos are skipped.

    Raises:
        PipelineError: two lists for one split.
    """
    found: dict[str, list[Path]] = {"train": [], "val": [], "test": []}
    for path in sorted(folder.glob("*.txt")):
        words = _tokens(path.name)
        if "flow" in words or "videos" in words:
            continue
        number = LIST_SPLIT.search("_".join(words))
        if number and int(number.group(1)) != split:
            continue
        for kind in found:
            if kind in words:
                found[kind].append(path)
    for kind, paths in found.items():
        raw = [p for p in paths if "rawframes" in _tokens(p.name)]
        if len(paths) > 1 and raw:
            found[kind] = raw
    twice = {k: v for k, v in found.items() if len(v) > 1}
    if twice:
        k, v = next(iter(twice.items()))
        raise PipelineError(
            f"{len(v)} {k} lists in {folder} ({', '.join(p.name for p in v)}); keep one"
        )
    lists = {k: v[0] for k, v in found.items() if v}
    if "test" not in lists and "val" in lists:
        lists["test"] = lists.pop("val")
    return lists
