import dataclasses
import re

import cv2
import numpy as np
import pytest

from pipeline.params import MOTIONS, ParamsError, PipelineError, parse_params
from pipeline.synthesize import (
    PALETTE,
    PALETTE_NAMES,
    _shape,
    class_names,
    render,
    render_video,
    synthesize,
    ucf101_classes,
    ucf101_plan,
)


@pytest.fixture
def tiny(raw_params):
    raw_params["synthetic"].update(
        colors=3, motions=5, videos_per_class=2, frames=12, size=64, test_fraction=0.5
    )
    return parse_params(raw_params).synthetic


def _decode(path):
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            return np.stack(frames)
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))


def test_palette_has_equal_grey_and_distinct_colours():
    rgb = np.stack([PALETTE[n] for n in PALETTE_NAMES])
    grey = cv2.cvtColor(rgb[None, :, ::-1].copy(), cv2.COLOR_BGR2GRAY)[0].astype(int)
    assert grey.max() - grey.min() <= 2, grey
    dists = np.linalg.norm(rgb[:, None].astype(float) - rgb[None].astype(float), axis=-1)
    assert dists[~np.eye(len(rgb), dtype=bool)].min() > 40


def test_render_is_deterministic_and_seeded(tiny, raw_params):
    a, b = render_video(tiny, 4, 1), render_video(tiny, 4, 1)
    assert a.shape == (12, 64, 64, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    other = dataclasses.replace(tiny, seed=1)
    assert not np.array_equal(a, render_video(other, 4, 1))


def _colour_mask(frame, name):
    return np.all(frame == PALETTE[name], axis=-1)


@pytest.mark.parametrize("label", range(15))
def test_every_colour_shown_and_only_the_mover_moves(tiny, label):
    frames = render_video(tiny, label, 0)
    mover, motion = divmod(label, tiny.motions)
    changed = np.any(frames != frames[0], axis=(0, 3))
    assert changed.any(), "nothing moves"
    for k, name in enumerate(PALETTE_NAMES[: tiny.colors]):
        masks = np.stack([_colour_mask(f, name) for f in frames])
        assert masks[0].sum() >= 6, f"{name} missing from frame 0"
        if k != mover:  # static objects: identical pixels in every frame
            assert not (masks.any(0) & changed).any(), f"static {name} object changed"
    # The mover does what its class says (and what a horizontal mirror keeps).
    masks = np.stack([_colour_mask(f, PALETTE_NAMES[mover]) for f in frames])
    area = masks.sum((1, 2))
    ys, xs = [np.array([np.nonzero(m)[i].mean() for m in masks]) for i in (0, 1)]
    kind = MOTIONS[motion]
    if kind == "up":
        assert ys[-1] < ys[0] - 5 and abs(xs[-1] - xs[0]) < 1
    elif kind == "down":
        assert ys[-1] > ys[0] + 5 and abs(xs[-1] - xs[0]) < 1
    elif kind == "shake":
        assert np.ptp(xs) > 2 and np.ptp(ys) < 1 and np.ptp(area) <= 0.25 * area.mean()
    elif kind == "grow":
        assert area[-1] > 1.5 * area[0]
    else:
        assert area[-1] < area[0] / 1.5


def test_synthesize_writes_lossless_ucf101_layout(tiny, tmp_path):
    out = tmp_path / "syn"
    synthesize(tiny, out)
    names = class_names(tiny)
    assert names[:2] == ["RedUp", "RedDown"] and len(names) == 15
    assert (out / "classInd.txt").read_text().splitlines()[:2] == ["1 RedUp", "2 RedDown"]
    train = (out / "trainlist01.txt").read_text().splitlines()
    test = (out / "testlist01.txt").read_text().splitlines()
    assert len(train) == len(test) == 15
    assert train[0] == "RedUp/v_RedUp_g02_c01.avi 1" and test[0] == "RedUp/v_RedUp_g01_c01.avi"
    assert (out / "preview.png").stat().st_size > 0
    decoded = _decode(out / "GreenShake" / "v_GreenShake_g02_c01.avi")
    np.testing.assert_array_equal(decoded, render_video(tiny, names.index("GreenShake"), 1))


def test_same_seed_gives_same_decoded_frames(tiny, tmp_path):
    synthesize(tiny, tmp_path / "a")
    synthesize(tiny, tmp_path / "b")
    for rel in ("RedUp/v_RedUp_g01_c01.avi", "BlueShrink/v_BlueShrink_g02_c01.avi"):
        np.testing.assert_array_equal(_decode(tmp_path / "a" / rel), _decode(tmp_path / "b" / rel))


def test_impossible_layout_says_what_to_change(raw_params):
    raw_params["synthetic"].update(colors=6, motions=5, size=32, frames=40)
    p = parse_params(raw_params).synthetic
    with pytest.raises(RuntimeError, match="raise synthetic.size"):
        render_video(p, 0, 0)


def test_order_motions_differ_only_in_their_order(raw_params):
    """updown and downup (params.ORDER_MOTIONS): the same frames, rolled by half the video, so
    a single frame, or a single pair of frames (what one flow sees), is distributed alike in
    the two classes; only the order of the snippets tells them apart."""
    raw_params["synthetic"].update(
        colors=2, motions=["updown", "downup"], videos_per_class=4, frames=12, size=64
    )
    p = parse_params(raw_params).synthetic
    assert class_names(p) == ["RedUpDown", "RedDownUp", "GreenUpDown", "GreenDownUp"]
    for mover in range(2):
        up_down = render(p, mover, "updown", [0, 7])
        down_up = render(p, mover, "downup", [0, 7])
        np.testing.assert_array_equal(down_up, np.roll(up_down, -6, axis=0))
        pairs = [{(a.tobytes(), b.tobytes()) for a, b in zip(v[:-1], v[1:], strict=True)}
                 for v in (up_down, down_up)]  # fmt: skip
        assert len(pairs[0] ^ pairs[1]) == 2  # one pair each: where the roll cut
        for frames, first in ((up_down, "up"), (down_up, "down")):
            masks = np.stack([_colour_mask(f, PALETTE_NAMES[mover]) for f in frames])
            ys = np.array([np.nonzero(m)[0].mean() for m in masks])
            steps = np.sign(np.diff(ys).round(1))
            sign = -1 if first == "up" else 1
            assert (steps[:5] == sign).all() and (steps[6:] == -sign).all(), ys
    # labels: colour-major, the listed motions in order
    frames = render_video(p, 3, 0)  # GreenDownUp
    masks = np.stack([_colour_mask(f, "green") for f in frames])
    ys = np.array([np.nonzero(m)[0].mean() for m in masks])
    assert ys[5] > ys[0] + 3 and ys[-1] < ys[6] - 3


@pytest.mark.parametrize("motions", [["updown", "sideways"], [], ["up", "up"], 6, 0])
def test_bad_motions_are_refused(raw_params, motions):
    raw_params["synthetic"]["motions"] = motions
    with pytest.raises(ParamsError, match="synthetic.motions"):
        parse_params(raw_params)


def test_ucf101_plan_has_ucf101s_shape_at_its_size():
    counts, k = ucf101_plan(13320, 0)
    assert counts.shape == (101, 25) and counts.sum() == 13320 and k == 7
    assert counts.min() >= 4 and counts.max() <= 7  # UCF101's 4-7 clips a group
    for videos in (303, 1000, 4000, 20000):
        counts, k = ucf101_plan(videos, 1)
        assert counts.sum() == videos and counts.min() >= 1
        assert k >= 1 and 3 * k <= counts.shape[1]  # three disjoint test sets, training left
    np.testing.assert_array_equal(ucf101_plan(4000, 3)[0], ucf101_plan(4000, 3)[0])
    with pytest.raises(PipelineError, match="at least 303"):
        ucf101_plan(302, 0)


def test_ucf101_like_classes_are_colour_motion_and_shape():
    classes = ucf101_classes()
    assert len(classes) == 101 and len({c[0] for c in classes}) == 101
    assert classes[0] == ("RedUpDisc", 0, "up", 0) and classes[-1][0].endswith("Triangle")
    assert {c[2] for c in classes} == set(MOTIONS) | {"updown", "downup"}
    for kind, corners in ((0, 48), (1, 4), (2, 3)):
        rng = np.random.default_rng(0)
        assert len(_shape(rng, kind)) == corners


def test_ucf101_like_set_is_read_as_ucf101(raw_params, tmp_path):
    from pipeline.ingest import list_ucf101

    out = tmp_path / "ucf"
    raw_params["synthetic"].update(ucf101_like=404, frames=4, size=64, out=str(out))
    p = parse_params(raw_params)
    synthesize(p.synthetic, out)
    names = [c[0] for c in ucf101_classes()]
    assert (out / "classInd.txt").read_text().splitlines() == [
        f"{i + 1} {n}" for i, n in enumerate(names)
    ]
    videos = sorted(str(v.relative_to(out)) for v in out.glob("*/*.avi"))
    assert len(videos) == 404
    for rel in videos:
        folder, name = rel.split("/")
        assert re.fullmatch(rf"v_{folder}_g0[1-4]_c0[1-9]\.avi", name), rel
    k = 1  # round(4 groups * 7 / 25)
    for split in (1, 2, 3):
        train = [
            line.split() for line in (out / f"trainlist{split:02d}.txt").read_text().splitlines()
        ]
        test = (out / f"testlist{split:02d}.txt").read_text().splitlines()
        assert sorted([rel for rel, _ in train] + test) == videos
        assert {int(re.search(r"_g(\d+)_", t).group(1)) for t in test} == {split * k}
        assert all(names[int(label) - 1] == rel.split("/")[0] for rel, label in train)
        data = dataclasses.replace(p.data, root=str(out), lists=str(out), split=split)
        classes, found, missing = list_ucf101(data)
        assert classes == names and missing == [] and len(found) == 404
        assert {c.split for c in found if c.group.endswith(f"/g{split}")} == {"test"}
    label = names.index("GreenShakeBox")
    _, colour, motion, shape = ucf101_classes()[label]
    scene = dataclasses.replace(p.synthetic, colors=6)
    decoded = _decode(out / "GreenShakeBox" / "v_GreenShakeBox_g02_c01.avi")
    np.testing.assert_array_equal(decoded, render(scene, colour, motion, [0, label, 1, 0], shape))
    assert (out / "preview.png").stat().st_size > 0


def test_ucf101_like_below_its_smallest_size_is_refused(raw_params):
    raw_params["synthetic"]["ucf101_like"] = 300
    with pytest.raises(ParamsError, match=r"synthetic.ucf101_like: got 300; allowed: .*303"):
        parse_params(raw_params)
