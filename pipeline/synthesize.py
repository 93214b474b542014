"""Stage ``synthesize``: the embedded "which object moves" dataset.

Each video shows one object of *every* colour (all of the same grey level) at random places on
a random darker texture; exactly one object moves. The class is (colour of the mover, motion).
One RGB frame cannot tell which object moves, and optical flow (computed on grey levels) cannot
tell its colour: only a network that puts appearance and motion together at the same pixel can
classify these videos. That is the paper's point, shown in minutes on a CPU (DESIGN.md).

Videos are written losslessly (FFV1 in ``.avi``) so that the mover is the only thing that
changes between frames, in UCF101's layout: ``<out>/<Class>/v_<Class>_gNN_c01.avi`` plus
``classInd.txt``, ``trainlist01.txt`` and ``testlist01.txt``. Each video is its own group
(``gNN``); groups ``1 .. n_test`` form the test list, as in UCF101's split 1. A contact sheet,
``preview.png``, shows one video of each class.

Run: ``python -m pipeline.synthesize`` (reads ``synthetic.*`` from ``params.yaml``).
"""

from __future__ import annotations

import dataclasses
import errno
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from pipeline import contracts
from pipeline.params import (
    MAX_COLORS,
    MOTIONS,
    ORDER_MOTIONS,
    UCF101_CLASSES,
    UCF101_LIKE_MIN,
    PipelineError,
    SyntheticParams,
    load_params,
)
from pipeline.pools import run_each, worker_count

GREY = 150
"""Grey level (OpenCV's BGR->GRAY) of every object colour."""

PALETTE_NAMES = ("red", "green", "blue", "yellow", "cyan", "magenta")
_PURE = {
    "red": (255, 0, 0),
    "green": (0, 255, 0),
    "blue": (0, 0, 255),
    "yellow": (255, 255, 0),
    "cyan": (0, 255, 255),
    "magenta": (255, 0, 255),
}
assert len(PALETTE_NAMES) == MAX_COLORS

SUPERSAMPLE = 4
"""Objects are drawn at this many times the frame size, then area-averaged down: sub-pixel
motion stays smooth and edges are anti-aliased identically in every frame."""

FPS = 25.0


def _equal_grey_palette(grey: float = GREY) -> dict[str, np.ndarray]:
    """RGB colours of the named hues, all with luma ``grey`` (BT.601, as cv2.COLOR_BGR2GRAY).

    Each colour is ``Y = grey`` plus a chroma vector (Cb, Cr) in the direction of the pure hue;
    all share the largest chroma that keeps every colour inside [0, 255]. Rounding to uint8
    moves the luma by less than one grey level.
    """
    ycc_to_rgb = np.array([[0.0, 1.402], [-0.344136, -0.714136], [1.772, 0.0]])  # (Cb, Cr)

    def direction(rgb: tuple[int, int, int]) -> np.ndarray:
        r, g, b = rgb
        y = 0.299 * r + 0.587 * g + 0.114 * b
        v = np.array([(b - y) / 1.772, (r - y) / 1.402])
        return v / np.linalg.norm(v)

    dirs = {name: direction(rgb) for name, rgb in _PURE.items()}
    limit = np.inf
    for d in dirs.values():
        for c in ycc_to_rgb @ d:  # each RGB channel moves by c per unit of chroma
            if c > 0:
                limit = min(limit, (255 - grey) / c)
            elif c < 0:
                limit = min(limit, grey / -c)
    return {
        name: np.clip(np.round(grey + ycc_to_rgb @ (limit * d)), 0, 255).astype(np.uint8)
        for name, d in dirs.items()
    }


PALETTE = _equal_grey_palette()


MOTION_NAMES = {"updown": "UpDown", "downup": "DownUp"}
"""How a motion is spelled in a class name (otherwise: capitalised)."""


def class_names(p: SyntheticParams) -> list[str]:
    """Class names in label order, colour-major: ``RedUp, RedDown, ..., GreenUp, ...``."""
    return [
        f"{c.capitalize()}{MOTION_NAMES.get(m, m.capitalize())}"
        for c in PALETTE_NAMES[: p.colors]
        for m in p.motion_names()
    ]


@dataclass(frozen=True)
class _Object:
    color: np.ndarray  # RGB uint8
    polygon: np.ndarray  # (N, 2) unit outline, already rotated and stretched
    center: np.ndarray  # (x, y) in output pixels at t = 0
    radius: float  # output pixels at t = 0
    motion: str | None  # None: static
    speed: float  # output pixels per frame (edge speed for grow/shrink)
    turn: int = 0  # updown: the frame where it turns (half the video)

    def pose(self, t: int) -> tuple[np.ndarray, float]:
        """Centre and radius at frame ``t``."""
        c, r, v = self.center.copy(), self.radius, self.speed
        if self.motion == "up":
            c[1] -= v * t
        elif self.motion == "down":
            c[1] += v * t
        elif self.motion == "updown":  # up to the turn, then down (back to the start)
            c[1] -= v * (t if t <= self.turn else 2 * self.turn - t)
        elif self.motion == "shake":  # triangle wave at speed v: 3 frames right, 6 left, 3 back
            ph = (t % 12) / 12.0
            c[0] += 3 * v * (4 * ph if ph < 0.25 else 2 - 4 * ph if ph < 0.75 else 4 * ph - 4)
        elif self.motion == "grow":
            r += v * t
        elif self.motion == "shrink":
            r -= v * t
        return c, r

    def box(self, frames: int) -> np.ndarray:
        """Bounding box (x0, y0, x1, y1) swept over all frames."""
        boxes = []
        for t in range(frames if self.motion else 1):
            c, r = self.pose(t)
            boxes.append((*(c - r), *(c + r)))
        b = np.array(boxes)
        return np.array([*b[:, :2].min(0), *b[:, 2:].max(0)])


SHAPE_NAMES = {"Disc": 0, "Box": 1, "Triangle": 2}
"""The mover's outline in a class of the UCF101-shaped set: :func:`_shape`'s kind (its kinds 1
and 3, a rectangle and a diamond, are the same four-sided outline once rotated at random)."""


def _shape(rng: np.random.Generator, kind: int | None = None) -> np.ndarray:
    """A unit outline, stretched and rotated at random: ellipse, rectangle, triangle or diamond
    (``kind`` 0..3; None: drawn at random, and the draw is made either way)."""
    drawn = rng.integers(4)
    kind = drawn if kind is None else kind
    if kind == 0:
        a = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        pts = np.stack([np.cos(a), np.sin(a)], 1)
    else:
        n = (4, 3, 4)[kind - 1]
        a = np.arange(n) * 2 * np.pi / n + (np.pi / 4 if kind == 1 else np.pi / 2)
        pts = np.stack([np.cos(a), np.sin(a)], 1)
    pts = pts * np.array([1.0, rng.uniform(0.7, 1.0)])
    theta = rng.uniform(0, np.pi)
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    return pts @ rot.T


def _layout(
    rng: np.random.Generator,
    p: SyntheticParams,
    mover: int,
    motion: str,
    shape: int | None = None,
) -> list[_Object]:
    """Place one object of each colour, the mover first (its outline of kind ``shape`` if one
    is given), so that no two swept boxes touch."""
    size, frames = p.size, p.frames
    travel = 0.35 * size  # the mover never travels more than this in a video
    order = [mover] + [k for k in range(p.colors) if k != mover]
    for _ in range(100):
        placed: dict[int, tuple[_Object, np.ndarray]] = {}
        for k in order:
            moving = k == mover
            for _ in range(200):
                radius = rng.uniform(0.08, 0.12) * size
                speed = 0.0
                if moving and motion in ("grow", "shrink"):
                    speed = min(rng.uniform(0.25, 0.4), 0.12 * size / max(frames - 1, 1))
                    radius = rng.uniform(0.05, 0.07) * size
                    if motion == "shrink":
                        radius += speed * (frames - 1)
                elif moving and motion == "updown":
                    speed = min(rng.uniform(0.6, 1.0), travel / max(frames // 2, 1))
                elif moving:
                    speed = min(rng.uniform(0.6, 1.0), travel / max(frames - 1, 1))
                obj = _Object(
                    color=PALETTE[PALETTE_NAMES[k]],
                    polygon=_shape(rng, shape if moving else None),
                    center=rng.uniform(0, size, 2),
                    radius=radius,
                    motion=motion if moving else None,
                    speed=speed,
                    turn=frames // 2,
                )
                box = obj.box(frames) + np.array([-2, -2, 2, 2])  # 2 px of texture between
                inside = box[0] >= 0 and box[1] >= 0 and box[2] <= size and box[3] <= size
                if inside and all(
                    box[2] < b[0] or b[2] < box[0] or box[3] < b[1] or b[3] < box[1]
                    for _, b in placed.values()
                ):
                    placed[k] = (obj, box)
                    break
            else:
                break  # this object found no room: start the whole frame again
        if len(placed) == p.colors:
            return [placed[k][0] for k in range(p.colors)]
    raise PipelineError(
        f"could not place {p.colors} objects in a {p.size}x{p.size} frame over {p.frames} frames;"
        " lower synthetic.colors or synthetic.frames, or raise synthetic.size"
    )


def _texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """A smooth random grey texture in [40, 110], darker than every object (grey 150)."""
    coarse = rng.uniform(0, 1, (max(size // 8, 2),) * 2).astype(np.float32)
    smooth = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
    fine = rng.uniform(-0.08, 0.08, (size, size)).astype(np.float32)
    grey = np.clip(40 + 70 * (smooth + fine), 40, 110).astype(np.uint8)
    return np.repeat(grey[:, :, None], 3, axis=2)


def render_video(p: SyntheticParams, label: int, index: int) -> np.ndarray:
    """Frames (F, H, W, 3) of video ``index`` of class ``label``, RGB uint8; pure in its inputs."""
    names = p.motion_names()
    mover, motion = divmod(label, len(names))
    return render(p, mover, names[motion], [p.seed, label, index])


def render(
    p: SyntheticParams, mover: int, motion: str, seed: list[int], shape: int | None = None
) -> np.ndarray:
    """Frames (F, H, W, 3) of a video whose object of colour ``mover`` does ``motion`` (with an
    outline of kind ``shape``, or a random one), the scene drawn from ``seed``. ``downup`` is
    the ``updown`` video of the same seed with its frames rolled by half: down from the top,
    then up (``params.ORDER_MOTIONS``)."""
    if motion == "downup":
        return np.roll(render(p, mover, "updown", seed, shape), -(p.frames // 2), axis=0)
    rng = np.random.default_rng(seed)
    objects = _layout(rng, p, mover, motion, shape)
    s = SUPERSAMPLE
    background = cv2.resize(
        _texture(rng, p.size), (p.size * s, p.size * s), interpolation=cv2.INTER_NEAREST
    )
    frames = np.empty((p.frames, p.size, p.size, 3), np.uint8)
    for t in range(p.frames):
        canvas = background.copy()
        for obj in objects:
            c, r = obj.pose(t)
            pts = np.round((c + r * obj.polygon) * s * 16).astype(np.int32)  # 1/16 px at s×
            cv2.fillPoly(canvas, [pts], tuple(int(v) for v in obj.color), cv2.LINE_8, shift=4)
        frames[t] = cv2.resize(canvas, (p.size, p.size), interpolation=cv2.INTER_AREA)
    return frames


def write_video(path: Path, frames: np.ndarray, fps: float = FPS) -> None:
    """Write RGB frames losslessly (FFV1 in .avi)."""
    h, w = frames.shape[1:3]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FFV1"), fps, (w, h))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write FFV1 video {path}; is FFmpeg in this OpenCV?")
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    _check_written(path, len(frames))


def _check_written(path: Path, frames: int) -> None:
    """OpenCV's writer reports no failed write: on a full disk it leaves a video cut short
    whose header still counts every frame (seen on a full tmpfs). Where the disk is nearly
    full after a write, the video is read back, and one that is short raises ENOSPC."""
    if shutil.disk_usage(Path(path).parent).free > os.path.getsize(path) + (1 << 20):
        return
    capture, read = cv2.VideoCapture(str(path)), 0
    while capture.read()[0]:
        read += 1
    capture.release()
    if read != frames:
        raise OSError(errno.ENOSPC, f"No space left on device ({read} of {frames} frames)", path)


def _preview(samples: list[tuple[str, np.ndarray]], path: Path, zoom: int = 3) -> None:
    """Contact sheet: per class, first / middle / last frame and where anything ever changed."""
    rows = []
    for name, frames in samples:
        first, mid, last = frames[0], frames[len(frames) // 2], frames[-1]
        diff = np.clip(np.abs(frames.astype(int) - first.astype(int)).max((0, 3)) * 4, 0, 255)
        tiles = [first, mid, last, np.repeat(diff.astype(np.uint8)[:, :, None], 3, 2)]
        row = np.concatenate([np.pad(t, ((2, 2), (2, 2), (0, 0))) for t in tiles], 1)
        row = cv2.resize(row, None, fx=zoom, fy=zoom, interpolation=cv2.INTER_NEAREST)
        label = np.zeros((row.shape[0], 150, 3), np.uint8)
        cv2.putText(
            label,
            name,
            (4, row.shape[0] // 2),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.5,
            (255, 255, 255),
            1,
            cv2.LINE_AA,
        )
        rows.append(np.concatenate([label, row], 1))
    if not cv2.imwrite(str(path), cv2.cvtColor(np.concatenate(rows, 0), cv2.COLOR_RGB2BGR)):
        full = shutil.disk_usage(Path(path).parent).free < (1 << 20)
        raise OSError(errno.ENOSPC if full else errno.EIO, "OpenCV could not write it", path)


UCF101_GROUPS = 25
"""Groups a class in UCF101 (``gXX``: one actor and scene each); fewer below 10,100 videos."""

UCF101_TEST_GROUPS = 7
"""Test groups of one of UCF101's three splits at 25 groups: split N tests groups 7N-6 .. 7N."""


def ucf101_classes() -> list[tuple[str, int, str, int]]:
    """The classes of the UCF101-shaped set in label order, as ``(name, colour, motion,
    shape)``: the mover's colour varies fastest, then its motion (the five of ``MOTIONS``, then
    ``updown``, ``downup``), then its outline (:data:`SHAPE_NAMES`): ``RedUpDisc,
    GreenUpDisc, ..., MagentaDownUpDisc, RedUpBox, ...``; the first 101 of the 126.

    >>> [c[0] for c in ucf101_classes()[:2]], len(ucf101_classes())
    (['RedUpDisc', 'GreenUpDisc'], 101)
    """
    out = []
    for shape, kind in SHAPE_NAMES.items():
        for m in (*MOTIONS, *ORDER_MOTIONS):
            for c, colour in enumerate(PALETTE_NAMES):
                name = f"{colour.capitalize()}{MOTION_NAMES.get(m, m.capitalize())}{shape}"
                out.append((name, c, m, kind))
    return out[:UCF101_CLASSES]


def ucf101_plan(videos: int, seed: int) -> tuple[np.ndarray, int]:
    """Clips per (class, group) of a UCF101-shaped set of ``videos`` videos, an int array
    (101, G) that sums to ``videos``, and ``k``, the test groups of one split (split N tests
    groups ``(N-1)k+1 .. Nk``).

    G is UCF101's 25 from 10,100 videos up (4-7 clips a group, as UCF101's 13,320 have), and
    fewer below (``videos // 404``, at least 3), so that every group holds at least one clip;
    ``k`` is ``round(G * 7 / 25)``, UCF101's 7 at 25 groups. The clips are apportioned to the
    groups in proportion to a seeded draw (largest remainders), so the total is exact.
    """
    c = UCF101_CLASSES
    if videos < UCF101_LIKE_MIN:
        raise PipelineError(
            f"synthetic.ucf101_like: {videos} videos cannot give each of {c} classes three "
            f"groups; allowed: at least {UCF101_LIKE_MIN}"
        )
    groups = min(UCF101_GROUPS, max(3, videos // (4 * c)))
    rng = np.random.default_rng([seed, videos])
    weight = rng.integers(3, 7, (c, groups))  # a group of 4..7 clips: 1 + 3..6
    rest = videos - c * groups
    share = weight * (rest / weight.sum())
    extra = np.floor(share).astype(int)
    left = rest - int(extra.sum())
    extra.flat[np.argsort(-(share - extra).ravel(), kind="stable")[:left]] += 1
    return 1 + extra, max(1, round(groups * UCF101_TEST_GROUPS / UCF101_GROUPS))


@dataclass(frozen=True)
class _Video:
    rel: str  # <Class>/v_<Class>_gXX_cYY.avi
    label: int  # 0-based
    group: int  # 0-based
    colour: int
    motion: str
    shape: int | None
    seed: tuple[int, ...]


def _plan(p: SyntheticParams) -> tuple[list[str], list[_Video], dict[int, range]]:
    """The classes, the videos and each split's test groups of the dataset ``p`` asks for."""
    if p.ucf101_like is None:
        names, motions = class_names(p), p.motion_names()
        digits = max(2, len(str(p.videos_per_class)))
        videos = []
        for label, name in enumerate(names):
            mover, motion = divmod(label, len(motions))
            for i in range(p.videos_per_class):
                rel = f"{name}/v_{name}_g{i + 1:0{digits}d}_c01.avi"
                videos.append(
                    _Video(rel, label, i, mover, motions[motion], None, (p.seed, label, i))
                )
        return names, videos, {1: range(round(p.videos_per_class * p.test_fraction))}
    classes = ucf101_classes()
    counts, k = ucf101_plan(p.ucf101_like, p.seed)
    videos = [
        _Video(
            f"{name}/v_{name}_g{g + 1:02d}_c{clip + 1:02d}.avi",
            label,
            g,
            colour,
            motion,
            shape,
            (p.seed, label, g, clip),
        )
        for label, (name, colour, motion, shape) in enumerate(classes)
        for g in range(counts.shape[1])
        for clip in range(counts[label, g])
    ]
    return [c[0] for c in classes], videos, {s: range((s - 1) * k, s * k) for s in (1, 2, 3)}


def _frames(scene: SyntheticParams, v: _Video) -> np.ndarray:
    return render(scene, v.colour, v.motion, list(v.seed), v.shape)


def _write_one(scene: SyntheticParams, v: _Video, path: Path) -> None:
    """Render and write one video (in a worker process)."""
    write_video(path, _frames(scene, v))


def synthesize(p: SyntheticParams, out: Path) -> None:
    """Write the whole dataset to ``out`` (replaced atomically: a killed run leaves no half),
    the videos rendered in one worker process per core."""
    names, videos, splits = _plan(p)
    scene = p if p.ucf101_like is None else dataclasses.replace(p, colors=MAX_COLORS)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name in names:
        (tmp / name).mkdir()
    args = [(scene, v, tmp / v.rel) for v in videos]
    written = []  # bytes of each video written: what the whole set needs, on a full disk
    try:
        _write_set(scene, names, videos, splits, args, tmp, written)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)  # not resumable: written anew, so free it
        if isinstance(exc, Exception) and contracts.is_disk_full(exc):
            mean = sum(written) / max(len(written), 1)
            needs = (
                f"the set is written whole: {len(videos)} videos need about "
                f"{contracts.size_text(mean * len(videos))}, at the {contracts.size_text(mean)} "
                f"of the {len(written)} written"
                if written
                else "the set is written whole, and needs more than was free"
            )
            raise contracts.DiskFullError(out, needs) from exc
        raise
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)


def _write_set(
    scene: SyntheticParams,
    names: list[str],
    videos: list[_Video],
    splits: dict,
    args: list[tuple],
    tmp: Path,
    written: list[int],
) -> None:
    """The videos (in worker processes), the split lists and the preview, into ``tmp``."""
    with tqdm(total=len(videos), desc="synthesize", unit="video", mininterval=2.0) as bar:
        for i, result in run_each(_write_one, args, worker_count(0, len(args))):
            if isinstance(result, Exception):
                raise result
            written.append(os.path.getsize(args[i][2]))
            bar.update()
    lists = {"classInd.txt": [f"{i + 1} {n}" for i, n in enumerate(names)]}
    for s, test in splits.items():
        lists[f"trainlist{s:02d}.txt"] = [
            f"{v.rel} {v.label + 1}" for v in videos if v.group not in test
        ]
        lists[f"testlist{s:02d}.txt"] = [v.rel for v in videos if v.group in test]
    for name, lines in lists.items():
        (tmp / name).write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    first = {v.label: v for v in reversed(videos)}  # each class's first video
    samples = [(names[k], _frames(scene, first[k])) for k in sorted(first)]
    _preview(samples, tmp / "preview.png", zoom=3 if len(names) <= 30 else 1)


def main() -> None:
    try:
        p = load_params().synthetic
        with contracts.stage_lock("synthesize"):
            synthesize(p, Path(p.out))
    except PipelineError as exc:
        sys.exit(f"synthesize: {exc}")
    if p.ucf101_like is None:
        what = f"{p.colors} colours x {len(p.motion_names())} motions x {p.videos_per_class} videos"
    else:
        what = f"UCF101-shaped: {p.ucf101_like} videos of {UCF101_CLASSES} classes, 3 splits"
    print(f"synthesize: wrote {p.out} ({what}; look at {p.out}/preview.png)")


if __name__ == "__main__":
    main()
