"""Real-world videos through ingest and flow: what cameras, phones and encoders produce is
accepted with the frames that decode, or rejected for its true reason (tests/video_cases.py)."""

import dataclasses
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from pipeline import contracts, flow_compute, video
from pipeline import ingest as ing
from pipeline.params import parse_params

from .conftest import ROOT
from .video_cases import CASES, VFR_PTS, encode, scene

MIN_FRAMES = 2


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    root = tmp_path_factory.mktemp("cases")
    made = {}
    for i, (name, (build, _)) in enumerate(CASES.items()):
        (root / f"{i:02d}").mkdir()
        made[name] = build(root / f"{i:02d}")
    return made


@pytest.fixture(scope="module")
def outcomes(made):
    """What ingest's probe (in worker processes) and judge make of every case."""
    probes = ing.probe_all(list(made.values()), workers=2, timeout_s=120)
    return {name: probes[path] for name, path in made.items()}


@pytest.mark.parametrize("name", list(CASES))
def test_every_case_is_accepted_or_rejected_for_its_true_reason(outcomes, name):
    expected = CASES[name][1]
    result = outcomes[name]
    reason = ing.judge(result, MIN_FRAMES)
    if expected[0] == "accepted":
        assert reason is None, reason
        assert (result.frames, (result.width, result.height)) == expected[1:]
    else:
        assert reason is not None and expected[1] in reason, reason


def test_truncation_is_judged_by_where_the_decodable_stream_ends(outcomes):
    dropped = outcomes["AVI with dropped-frame chunks (20 frames, 58 counted)"]
    assert (dropped.frames, dropped.claimed) == (20, 58)  # the container counts the gaps
    assert dropped.end == pytest.approx(dropped.duration) == pytest.approx(58 / 25)
    for name in ("AVI cut to its first 40 %", "MP4 (index first) cut to its first 40 %"):
        why = ing.judge(outcomes[name], MIN_FRAMES)
        end, frames = re.search(r"ends at ([\d.]+) s of the 2.00 s the container claims "
                                r"\((\d+) of 50 frames decode\)", why).groups()  # fmt: skip
        assert 0 < float(end) < 1.0 and 0 < int(frames) < 25, why
    no_times = video.Probe(10, 30, 25.0, 64, 48, 0.0, 0.0, "rawvideo", 0)
    assert "claims 30 frames but only 10 decode" in no_times.truncated()  # the count fallback


def test_the_manifest_says_what_decodes_and_what_the_container_claimed(tmp_path, raw_params):
    root = tmp_path / "tree"
    for name in ("a", "b"):
        for i in range(3):
            encode(root / name / f"clip{i}.avi", "mpeg4", n=20, pts=[3 * k for k in range(20)])
    raw_params["data"].update(
        layout="folder", root=str(root), lists=str(root), min_frames=8, workers=2
    )
    classes, rows, rejected = ing.ingest(parse_params(raw_params).data)
    assert rejected == [] and len(rows) == 6
    row = rows[0]
    assert (row["frames"], row["claimed_frames"], row["duration_s"], row["codec"]) == (
        20,
        58,
        2.32,
        "mpeg4",
    )
    assert row["fps"] == pytest.approx(19 / (57 / 25), abs=1e-3)  # the decoded frames' average
    ing.write_outputs(tmp_path / "out", classes, rows, rejected)
    back = contracts.read_manifest(tmp_path / "out/manifest.csv")[0]
    assert back["claimed_frames"] == "58" and back["codec"] == "mpeg4"


def test_codecs_decode_to_the_frames_that_were_encoded(made):
    source = scene(12, 64, 48)
    for name in ("FFV1 in MKV", "H.264 in MP4, with B-frames", "VP9 in WebM", "AV1 in MKV"):
        decoded = list(video.frames(made[name]))
        assert len(decoded) == 12 and decoded[0].dtype == np.uint8
        error = np.mean(
            [np.abs(a.astype(int) - b).mean() for a, b in zip(decoded, source, strict=True)]
        )
        assert error < (0.5 if name.startswith("FFV1") else 25), (name, error)  # in order


def test_timing_geometry_and_pixel_formats(outcomes, made):
    vfr = outcomes["variable frame rate (H.264 in MKV, 12 frames over 0.76 s)"]
    assert vfr.fps == pytest.approx(11 / (VFR_PTS[-1] / 25), rel=1e-3)  # the average
    grey = next(video.frames(made["greyscale (FFV1 gray)"]))
    assert grey.shape == (48, 64, 3) and (grey[..., 0] == grey[..., 1]).all()
    frame = next(video.frames(made["yuv444p (H.264 High 4:4:4)"]))
    assert frame.dtype == np.uint8 and frame.shape == (48, 64, 3)
    assert np.abs(frame.astype(int) - scene(1, 64, 48)[0]).mean() < 25


def _error(path, source):
    decoded = list(video.frames(path))
    return np.mean([np.abs(a.astype(int) - b).mean() for a, b in zip(decoded, source, strict=True)])


def test_ten_bit_frames_are_converted_as_opencv_converts_them(made):
    """Every frame of a 10-bit H.265 file comes out in 8-bit BGR, equal to what OpenCV's own
    reader makes of it (bicubic chroma), and close to what was encoded."""
    import av
    import cv2

    ten_bit = made["10-bit (H.265 yuv420p10le)"]
    with av.open(str(ten_bit)) as c:
        assert next(c.decode(video=0)).format.name == "yuv420p10le"
    ours, cap = list(video.frames(ten_bit)), cv2.VideoCapture(str(ten_bit))
    theirs = [cap.read()[1] for _ in ours]
    assert len(ours) == 12 and all(np.array_equal(a, b) for a, b in zip(ours, theirs, strict=True))
    assert _error(ten_bit, scene(12, 64, 48)) < 30


def _raw(path):
    """The first frame as coded, its display matrix ignored."""
    import av

    with av.open(str(path)) as c:
        return next(c.decode(video=0)).to_ndarray(format="bgr24", interpolation="BICUBIC")


ORIENTATIONS = {  # what a player shows, from the frame as coded
    "portrait phone clip (64x48 coded, displayed turned 90°)": lambda a: np.rot90(a, 1),
    "phone clip displayed turned -90°": lambda a: np.rot90(a, -1),
    "phone clip displayed upside down (180°)": lambda a: np.rot90(a, 2),
    "selfie clip displayed mirrored": lambda a: a[:, ::-1],
}


@pytest.mark.parametrize("name", list(ORIENTATIONS))
def test_frames_come_out_as_displayed(made, name):
    """Turned (counter-clockwise) and mirrored as the display matrix says, as ffmpeg does;
    for the turns, exactly what OpenCV's own autorotation gives too."""
    import cv2

    shown = next(video.frames(made[name]))
    np.testing.assert_array_equal(shown, ORIENTATIONS[name](_raw(made[name])))
    if "mirrored" not in name:  # OpenCV turns, it does not mirror
        ok, theirs = cv2.VideoCapture(str(made[name])).read()
        np.testing.assert_array_equal(shown, theirs)


def test_the_b_frame_case_has_b_frames(made):
    import av

    with av.open(str(made["H.264 in MP4, with B-frames"])) as c:
        kinds = {f.pict_type for f in c.decode(video=0)}
    assert av.video.frame.PictureType.B in kinds, kinds


def test_large_videos_are_resized_before_flow(made, raw_params):
    p = dataclasses.replace(parse_params(raw_params).flow, size=64)
    result = flow_compute.flow_video(str(made["3840x2160 (H.264)"]), 4, p)
    assert (result.width, result.height) == (114, 64) and len(result.flow_x) == 3
    portrait = made["portrait phone clip (64x48 coded, displayed turned 90°)"]
    result = flow_compute.flow_video(str(portrait), 12, dataclasses.replace(p, size=None))
    assert (result.width, result.height) == (48, 64)


PEAK = """
import dataclasses, re, sys
from pathlib import Path
from pipeline.flow_compute import flow_video
from pipeline.params import load_params
p = dataclasses.replace(load_params().flow, size=32)
flow_video(sys.argv[1], int(sys.argv[2]), p)
# VmHWM: this process's peak (ru_maxrss would count the parent that forked it)
print(re.search(r"VmHWM:\\s+(\\d+) kB", Path("/proc/self/status").read_text()).group(1))
"""


def test_worker_memory_does_not_grow_with_a_4k_videos_length(tmp_path):
    """A 4K frame lives only until it is resized: 24 frames cost what 3 do."""
    peaks = {}
    for n in (3, 24):
        path = encode(
            tmp_path / f"uhd{n}.mp4", n=n, size=(3840, 2160), options={"preset": "ultrafast"}
        )
        out = subprocess.run(
            [sys.executable, "-c", PEAK, str(path), str(n)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        peaks[n] = int(out.stdout.split()[-1]) / 1024  # MiB
    assert peaks[24] - peaks[3] < 40, peaks  # 21 more 4K frames would be 520 MiB


def test_files_that_are_not_videos_never_crash_or_hang(outcomes):
    reasons = {n: ing.judge(outcomes[n], MIN_FRAMES) for n in outcomes}
    assert reasons["audio-only MP4"] == "no video stream (the file holds audio only)"
    assert reasons["zero bytes"] == "an empty file (0 bytes)"
    assert reasons["random bytes"].startswith("not a readable video: FFmpeg cannot open it (")
    zeroed = outcomes["AVI with a zeroed stretch in the middle"]
    assert isinstance(zeroed, video.Probe) and 0 < zeroed.frames < 50  # decoded, then judged
    for name in ("H.264 + AAC in MP4, the sound three times as long as the picture",
                 "H.264 + AAC in MKV, the sound three times as long as the picture"):  # fmt: skip
        assert outcomes[name].duration == pytest.approx(12 / 25), name  # the picture's own
    trimmed = outcomes["MP4 trimmed by an edit list (12 frames coded, the first 6 cut)"]
    assert (trimmed.frames, trimmed.duration) == (6, pytest.approx(6 / 25))
    late = outcomes["MKV whose video starts at 1 s"]
    assert late.end == pytest.approx(late.duration) == pytest.approx(12 / 25)


def test_names_and_trees(tmp_path, raw_params):
    """Spaces, non-ASCII and upper-case extensions are taken; symbolic links are followed and
    a broken one is rejected for being one; hidden files and macOS's leftovers are skipped."""
    root, elsewhere = tmp_path / "tree", tmp_path / "elsewhere"
    for name in ("Clap Hands", "café"):
        for i in range(3):
            encode(root / name / f"take {i}.MP4" if i else root / name / f"Ü {i}.AVI", n=6)
    encode(elsewhere / "linked.mp4", n=6)
    encode(elsewhere / "more" / "deep.mp4", n=6)
    (root / "café" / "linked.mp4").symlink_to(elsewhere / "linked.mp4")
    (root / "café" / "more").symlink_to(elsewhere / "more", target_is_directory=True)
    (root / "café" / "gone.mp4").symlink_to(tmp_path / "deleted.mp4")
    (root / "Clap Hands" / "again.mp4").symlink_to(root / "café" / "take 1.MP4")
    (root / "café" / ".DS_Store").write_bytes(b"\0Bud1")
    (root / "café" / "._take 1.MP4").write_bytes(b"\0\5\26\7 AppleDouble")
    (root / "__MACOSX" / "café").mkdir(parents=True)
    (root / "__MACOSX" / "café" / "._take 1.MP4").write_bytes(b"\0\5\26\7")
    raw_params["data"].update(
        layout="folder", root=str(root), lists=str(root), min_frames=4, workers=2,
        test_fraction=0.3, val_fraction=0.0, max_rejected_fraction=0.5,
    )  # fmt: skip
    classes, rows, rejected = ing.ingest(parse_params(raw_params).data)
    assert classes == ["Clap Hands", "café"]
    assert sorted(r["video_id"] for r in rows) == [
        "Clap_Hands__take_1",
        "Clap_Hands__take_2",
        "Clap_Hands__Ü_0",
        "café__deep",
        "café__linked",
        "café__take_1",
        "café__take_2",
        "café__Ü_0",
    ]
    assert sorted((r.path.name, r.reason) for r in rejected) == [
        ("again.mp4", f"the same file as {root / 'café' / 'take 1.MP4'}"),
        ("gone.mp4", f"a symbolic link that leads nowhere (to {tmp_path / 'deleted.mp4'}: "
                     "missing, or a loop)"),
    ]  # fmt: skip


def test_a_mixed_aspect_dataset_trains(tmp_path, raw_params, monkeypatch):
    """4:3, 16:9 and 9:16 videos of different sizes: flow, shards, the reader's clips at the
    configured shape, and one training epoch."""
    from pipeline import flow, shard, train
    from pipeline.dataset import clip_dataset

    root = tmp_path / "data/raw"
    shapes = {"four_three": (64, 48), "wide": (96, 54), "tall": (54, 96)}
    for name, size in shapes.items():
        for i in range(4):
            encode(root / name / f"v{i}.mp4", n=10, size=size, pix_fmt="yuv444p")
    raw_params["data"].update(
        layout="folder", root=str(root), lists=str(root), min_frames=8, workers=2,
        test_fraction=0.25, val_fraction=0.0,
    )  # fmt: skip
    raw_params["flow"].update(size=32, workers=2)
    raw_params["shard"].update(min_shards=1)
    raw_params["clip"].update(frames=1, flow_stack=4, crop=24, shuffle_buffer=8)
    raw_params["eval"].update(clips=2, batch_size=4)
    raw_params["train"].update(epochs=1, batch_size=4, run_eagerly=True)  # tracing > 3 steps
    params = parse_params(raw_params)
    monkeypatch.chdir(tmp_path)
    classes, rows, rejected = ing.ingest(params.data)
    ing.write_outputs(contracts.DATA_DIR, classes, rows, rejected)
    assert rejected == [] and {(r["width"], r["height"]) for r in rows} == set(shapes.values())
    rows = contracts.read_manifest()
    flow.run_flow(params.flow, rows)
    sizes = {
        (rec["width"], rec["height"])
        for rec in (
            contracts.decode_record(
                next(contracts.read_records(contracts.record_path(r["video_id"])))
            )
            for r in rows
        )
    }
    assert sizes == {(43, 32), (57, 32), (32, 57)}  # the shorter side at flow.size
    shard.write_shards(rows, params.shard)
    x, y = next(iter(clip_dataset("train", params, "both", training=True, batch_size=4)))
    assert x["rgb"].shape == (4, 1, 24, 24, 3) and x["flow"].shape == (4, 1, 24, 24, 8)
    model = train.train("rgb", params, live_dir=None, checkpoints_dir=tmp_path / "ck")
    assert (tmp_path / "models/rgb.keras").exists() and model.output["prediction"].shape[-1] == 3
