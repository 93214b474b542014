"""The keras.ops TV-L1 against OpenCV's, on the backend under test (make test runs it twice:
TensorFlow and JAX)."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline import tvl1
from pipeline.flow_compute import create_tvl1
from pipeline.params import parse_params

from .conftest import run_folder

H, W = 48, 64  # not square: catches a swapped axis
SHIFT = (0.7, -1.3)  # (x, y) px: frame 1 is frame 0 moved by this


def _texture(shift: tuple[float, float], seed: int = 0) -> np.ndarray:
    """A smooth random texture sampled exactly at (x − dx, y − dy): a known sub-pixel shift."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:H, 0:W].astype(np.float64)
    x, y = x - shift[0], y - shift[1]
    img = np.zeros((H, W))
    for _ in range(12):
        fx, fy = rng.uniform(-0.35, 0.35, 2)
        img += rng.uniform(5, 15) * np.cos(fx * x + fy * y + rng.uniform(0, 2 * np.pi))
    return np.clip(128 + img, 0, 255).astype(np.uint8)


def _disc(t: int) -> np.ndarray:
    """A bright disc moving (1.5, 0.5) px per frame over a static background (a grey ramp)."""
    y, x = np.mgrid[0:H, 0:W]
    background = 40 + 0.8 * x + 0.4 * y
    canvas = np.zeros((4 * H, 4 * W), np.uint8)
    centre = (int(4 * (24 + 1.5 * t)), int(4 * (20 + 0.5 * t)))
    cv2.circle(canvas, centre, 4 * 9, 255, -1, lineType=cv2.LINE_AA)
    disc = cv2.resize(canvas, (W, H), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    return np.round(background * (1 - disc) + 200 * disc).astype(np.uint8)


def _real_looking() -> tuple[np.ndarray, np.ndarray]:
    """A photograph (matplotlib's sample Grace Hopper portrait) and the same seen by a camera
    that panned by (1.2, 0.4) px: a real-looking frame pair."""
    import matplotlib.cbook

    path = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    photo = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2GRAY).astype(np.float32)
    photo = cv2.resize(photo, None, fx=0.15, fy=0.15, interpolation=cv2.INTER_AREA)
    y0, x0 = (photo.shape[0] - H) // 2, (photo.shape[1] - W) // 2
    camera = np.array([[1.0, 0.0, 1.2], [0.0, 1.0, 0.4]])
    moved = cv2.warpAffine(photo, camera, photo.shape[::-1], flags=cv2.INTER_CUBIC)
    crop = (slice(y0, y0 + H), slice(x0, x0 + W))
    return tuple(np.clip(np.round(f[crop]), 0, 255).astype(np.uint8) for f in (photo, moved))


def parse_params_raw() -> dict:
    import yaml

    from .conftest import ROOT

    return yaml.safe_load((ROOT / "params.yaml").read_text())


@pytest.fixture(scope="module")
def pairs() -> tuple[np.ndarray, np.ndarray]:
    first = [_texture((0, 0)), _disc(0), _real_looking()[0]]
    second = [_texture(SHIFT), _disc(1), _real_looking()[1]]
    return np.stack(first), np.stack(second)


@pytest.fixture(scope="module")
def defaults():
    return parse_params(parse_params_raw()).flow.tvl1


def _opencv(i0: np.ndarray, i1: np.ndarray, t) -> np.ndarray:
    return np.stack([create_tvl1(t).calc(a, b, None) for a, b in zip(i0, i1, strict=True)])


OPENCV_FLOWS = "TEST_OPENCV_FLOWS"
"""The environment variable that names the folder of :func:`opencv`'s flows: the JAX run
(tests/test_on_jax.py) is given the folder of the run that started it (:func:`flows_folder`)."""


def flows_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder of :func:`opencv`'s flows in this pytest run."""
    return run_folder(tmp_path_factory) / "opencv_flows"


@pytest.fixture(scope="module")
def opencv(tmp_path_factory) -> Callable[[np.ndarray, np.ndarray, object], np.ndarray]:
    """:func:`_opencv`, each flow computed once for the whole run: kept in a folder by a hash
    of the frames' bytes and the params, which the TensorFlow run and the JAX run share (the
    second reads what the first computed: OpenCV's flow of the same bytes is the same flow).
    A file lock per flow: the two runs may ask for one at the same time."""
    from filelock import FileLock

    folder = Path(os.environ.get(OPENCV_FLOWS) or flows_folder(tmp_path_factory))
    folder.mkdir(exist_ok=True)

    def flow(i0: np.ndarray, i1: np.ndarray, t) -> np.ndarray:
        key = hashlib.sha256(repr((i0.dtype, i0.shape, t)).encode())
        key.update(i0.tobytes())
        key.update(i1.tobytes())
        path = folder / f"{key.hexdigest()[:24]}.npy"
        with FileLock(str(path.with_suffix(".lock"))):
            if not path.is_file():
                np.save(path.with_suffix(".tmp.npy"), _opencv(i0, i1, t))
                os.replace(path.with_suffix(".tmp.npy"), path)
            return np.load(path)

    return flow


def _epe(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sqrt(((a - b) ** 2).sum(-1))


def test_matrices_and_operators_match_opencv():
    rng = np.random.default_rng(0)
    img = rng.uniform(0, 255, (37, 53)).astype(np.float32)
    for fx in (0.8, 0.5):  # a pyramid step: 1/fx source pixels per output pixel
        want = cv2.resize(img, None, fx=fx, fy=fx, interpolation=cv2.INTER_LINEAR)
        h, w = want.shape
        got = tvl1.resize_matrix(37, h, 1 / fx) @ img @ tvl1.resize_matrix(53, w, 1 / fx).T
        np.testing.assert_allclose(got, want, atol=2e-3)
    want = cv2.resize(img, (70, 45), interpolation=cv2.INTER_LINEAR)  # to an exact size
    got = tvl1.resize_matrix(37, 45, 37 / 45) @ img @ tvl1.resize_matrix(53, 70, 53 / 70).T
    np.testing.assert_allclose(got, want, atol=2e-3)
    med = tvl1.median5(img[None])
    np.testing.assert_array_equal(np.asarray(med)[0], cv2.medianBlur(img, 5))
    u = rng.normal(0, 2, (2, 37, 53)).astype(np.float32)
    warped = np.asarray(tvl1.warp(img[None, ..., None].repeat(2, 0), u, -u))[..., 0]
    y, x = np.mgrid[0:37, 0:53].astype(np.float32)
    for k in range(2):
        want = cv2.remap(img, x + u[k], y - u[k], cv2.INTER_CUBIC, borderMode=cv2.BORDER_CONSTANT)
        np.testing.assert_allclose(warped[k], want, atol=2e-3)


def test_pyramid_stops_like_opencv(defaults):
    assert tvl1.pyramid_sizes(48, 64, defaults) == [
        (48, 64),
        (38, 51),
        (30, 41),
        (24, 33),
        (19, 26),
    ]
    assert tvl1.pyramid_sizes(24, 30, defaults) == [(24, 30), (19, 24)]  # 15 < 16: stop


def _itself(
    i0: np.ndarray, i1: np.ndarray, t, theirs: np.ndarray, opencv: Callable, seeds: int = 10
) -> np.ndarray:
    """How far OpenCV is from itself, per pair: the largest mean end-point difference between
    its flow and its flow of the same frames moved by 1e-6 of the grey range (``seeds``
    draws). TV-L1 amplifies a rounding difference: up to 1e-3 px at ε = 0 and 0.02 px with its
    stopping rule on these fixtures (docs/flow.md, Agreement); two implementations that round
    differently can differ by as much."""
    worst = np.zeros(len(i0))
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        noisy = [moved(x, rng) for x in (i0, i1)]
        worst = np.maximum(worst, _epe(opencv(*noisy, t), theirs).mean(axis=(1, 2)))
    return worst


def moved(frames: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """uint8 ``frames`` as OpenCV's float input (0–1) moved by a rounding: noise of 1e-6 of
    the grey range (benchmarks/tvl1_agreement.py's "OpenCV vs itself" too)."""
    return (frames / 255 + rng.normal(0, 1e-6, frames.shape)).astype(np.float32)


def test_equal_to_opencv_without_the_stopping_rule(pairs, defaults, opencv):
    """Run to the end, as close to OpenCV as OpenCV is to itself (within 1.25 times that)."""
    t = dataclasses.replace(defaults, epsilon=0.0)
    theirs = opencv(*pairs, t)
    diff = _epe(tvl1.tvl1(*pairs, t, (64, 96)), theirs).mean(axis=(1, 2))
    itself = _itself(*pairs, t, theirs, opencv, seeds=3)  # each OpenCV run goes to the end
    assert (diff <= 1.25 * itself).all(), (diff, itself)


def test_close_to_opencv_with_its_defaults(pairs, defaults, opencv):
    """With the stopping rule, as close to OpenCV as OpenCV is to itself (a rounding moves
    the stop by an iteration), solved padded into a larger bucket (as the flow stage does),
    at two frame sizes that share one compiled solver: the padding never reaches the flow.
    (ε is an input of the solver: the test above, at ε = 0, may have compiled it.)"""
    before = tvl1.STATS.compiles
    ours, theirs = tvl1.tvl1(*pairs, defaults, (64, 96)), opencv(*pairs, defaults)
    compiled = tvl1.STATS.compiles
    assert compiled <= before + 1
    diff = _epe(ours, theirs)
    itself = _itself(*pairs, defaults, theirs, opencv)
    assert (diff.mean(axis=(1, 2)) <= 1.25 * itself).all(), (diff.mean(axis=(1, 2)), itself)
    assert np.percentile(diff, 95, axis=(1, 2)).max() <= 0.08
    small = tuple(np.ascontiguousarray(f[:, 5:45, 3:61]) for f in pairs)  # 58x40
    small_theirs = opencv(*small, defaults)
    small_diff = _epe(tvl1.tvl1(*small, defaults, (64, 96)), small_theirs).mean(axis=(1, 2))
    small_itself = _itself(*small, defaults, small_theirs, opencv)
    assert (small_diff <= 1.25 * small_itself).all(), (small_diff, small_itself)
    tvl1.tvl1(*small, dataclasses.replace(defaults, epsilon=0.0), (64, 96))  # another ε
    assert tvl1.STATS.compiles == compiled, tvl1.STATS.line()  # no compile for either
    # against the known shift (inside a margin the shift moves texture across)
    truth = np.array(SHIFT, np.float32)
    inner = (slice(4, -4), slice(4, -4))
    ours_err = _epe(ours[0][inner], truth).mean()
    theirs_err = _epe(theirs[0][inner], truth).mean()
    assert abs(ours_err - theirs_err) <= 0.02, (ours_err, theirs_err)
    assert theirs_err < 0.1  # the fixture is one TV-L1 can solve


def test_a_bucket_pads_the_frame_and_its_pyramid(defaults):
    assert tvl1.bucket_of(48, 64, 32) == (64, 64) and tvl1.bucket_of(40, 58, 1) == (40, 58)
    sizes, mats = tvl1.plan(24, 30, (48, 64), defaults)  # 2 levels of its own, 5 of the bucket
    assert sizes.tolist() == [[24, 30], [19, 24], [1, 1], [1, 1], [1, 1]]
    shapes = tvl1.pyramid_sizes(48, 64, defaults)
    down, up = mats[:8], mats[8:]
    assert [m.shape for m in down[:2]] == [(38, 48), (51, 64)]
    np.testing.assert_array_equal(down[0][:19, :24], tvl1.resize_matrix(24, 19, 1.25))
    assert not down[0][19:].any() and not down[0][:, 24:].any()  # padding never mixed in
    assert all(not m.any() for m in down[2:] + up[:6])  # levels the frame does not have
    assert [m.shape for m in up[6:]] == [(shapes[0][0], shapes[1][0]), (shapes[0][1], shapes[1][1])]
    np.testing.assert_array_equal(up[6][:24, :19], tvl1.resize_matrix(19, 24, 19 / 24))
    with pytest.raises(ValueError, match="does not fit a 64x48 bucket"):
        tvl1.plan(50, 64, (48, 64), defaults)


def test_bad_inputs_are_named():
    t = parse_params(parse_params_raw()).flow.tvl1
    with pytest.raises(ValueError, match=r"\(B, H, W\)"):
        tvl1.tvl1(np.zeros((4, 4)), np.zeros((4, 4)), t)
    with pytest.raises(ValueError, match="gamma 0"):
        tvl1.tvl1(np.zeros((1, 20, 20)), np.zeros((1, 20, 20)), dataclasses.replace(t, gamma=0.1))
