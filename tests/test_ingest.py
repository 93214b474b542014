import csv
import os
import time
import unicodedata
from pathlib import Path

import cv2
import pytest
import yaml

from pipeline import contracts
from pipeline import ingest as ing
from pipeline.params import parse_params


def _params(raw_params, root, **data):
    """Point raw_params (edited in place, so tests can write it out) at ``root``."""
    defaults = dict(
        root=str(root), lists=str(root), min_frames=10, workers=2, max_rejected_fraction=0.5
    )
    raw_params["data"].update({**defaults, **data})
    return parse_params(raw_params).data


def _ucf101_tree(root, make_video, classes=("Ape", "Bat"), groups=4, clips=2):
    train, test = [], []
    for k, name in enumerate(classes):
        for g in range(1, groups + 1):
            for c in range(1, clips + 1):
                rel = f"{name}/v_{name}_g{g:02d}_c{c:02d}.avi"
                make_video(root / rel, seed=k * 100 + g * 10 + c)
                (test if g == 1 else train).append(rel)
    (root / "classInd.txt").write_text("".join(f"{i + 1} {n}\n" for i, n in enumerate(classes)))
    (root / "trainlist01.txt").write_text("".join(f"{r} 1\n" for r in train))
    (root / "testlist01.txt").write_text("".join(f"{r}\n" for r in test))
    return train, test


def test_ucf101_layout_with_val_carved_by_group(tmp_path, raw_params, make_video):
    root = tmp_path / "ucf"
    _ucf101_tree(root, make_video, groups=6)
    p = _params(raw_params, root, val_fraction=0.2)
    classes, rows, rejected = ing.ingest(p)
    assert classes == ["Ape", "Bat"] and rejected == []
    assert len(rows) == 24
    by_id = {r["video_id"]: r for r in rows}
    row = by_id["v_Bat_g03_c02"]
    assert (row["label"], row["class_name"], row["frames"], row["width"], row["height"]) == (
        1,
        "Bat",
        20,
        32,
        32,
    )
    assert row["fps"] == 25.0 and row["path"] == str(root / "Bat/v_Bat_g03_c02.avi")
    assert {r["split"] for r in rows if "_g01_" in r["video_id"]} == {"test"}
    # val: one of five training groups per class, both clips of a group on the same side
    for name in classes:
        val = {r["video_id"][:-4] for r in rows if r["class_name"] == name and r["split"] == "val"}
        assert len(val) == 1
    for r in rows:
        twin = by_id[r["video_id"][:-1] + ("2" if r["video_id"].endswith("1") else "1")]
        assert twin["split"] == r["split"]
    # same seed: same split; another seed: (here) another val group
    assert ing.ingest(p)[1] == rows
    other = ing.ingest(_params(raw_params, root, val_fraction=0.2, seed=5))[1]
    assert [r["split"] for r in other] != [r["split"] for r in rows]


def test_ucf101_list_path_case_differs_from_disk(tmp_path, raw_params, make_video):
    root = tmp_path / "ucf"
    _ucf101_tree(root, make_video, groups=2, clips=1)
    # UCF101 itself lists HandstandPushups/v_HandStandPushups_... for a v_HandstandPushups file
    os.rename(root / "Ape/v_Ape_g02_c01.avi", root / "Ape/v_APE_g02_c01.avi")
    classes, rows, rejected = ing.ingest(_params(raw_params, root, val_fraction=0.0))
    assert rejected == [] and len(rows) == 4
    assert any(r["path"].endswith("v_APE_g02_c01.avi") for r in rows)


def test_hmdb51_layout(tmp_path, raw_params, make_video):
    root, lists = tmp_path / "hmdb", tmp_path / "splits"
    lists.mkdir()
    for name in ("wave", "run"):
        lines = []
        for i, sid in enumerate([1, 1, 1, 2, 0]):
            make_video(root / name / f"{name}_clip_{i}.avi", seed=i)
            lines.append(f"{name}_clip_{i}.avi {sid} \n")
        (lists / f"{name}_test_split2.txt").write_text("".join(lines))
        (lists / f"{name}_test_split1.txt").write_text("")
    p = _params(raw_params, root, layout="hmdb51", lists=str(lists), split=2, val_fraction=0.34)
    classes, rows, rejected = ing.ingest(p)
    assert classes == ["run", "wave"] and rejected == []
    assert len(rows) == 8  # id 0 = unused
    splits = sorted(r["split"] for r in rows if r["class_name"] == "wave")
    assert splits == ["test", "train", "train", "val"]
    assert all(r["label"] == (r["class_name"] == "wave") for r in rows)


def test_folder_layout_splits_whole_groups_by_seed(tmp_path, raw_params, make_video):
    root = tmp_path / "tree"
    for name in ("a", "b"):
        for g in range(1, 6):
            for c in (1, 2):
                make_video(
                    root / name / f"x_g{g}_c{c}.mp4"
                    if c == 1
                    else root / name / f"x_g{g}_c{c}.avi",
                    seed=g,
                )
    (root / "a" / "notes.txt").write_text("not a candidate: not a video extension")
    p = _params(raw_params, root, layout="folder", test_fraction=0.4, val_fraction=0.34)
    classes, rows, rejected = ing.ingest(p)
    assert classes == ["a", "b"] and rejected == [] and len(rows) == 20
    assert rows[0]["video_id"].startswith("a__x_g")
    for name in classes:
        split_of = {}
        for r in rows:
            if r["class_name"] == name:
                group = r["video_id"].split("_g")[1][0]
                assert split_of.setdefault(group, r["split"]) == r["split"]
        assert sorted(split_of.values()) == ["test", "test", "train", "train", "val"]
    assert ing.ingest(p)[1] == rows


def _not_a_video(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("this is not a video")


def _truncated(path, make_video):
    make_video(path, frames=60)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _zero_frames(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FFV1"), 25, (32, 32)).release()


def crashing_probe(path: str) -> ing.Probe:
    """Stands in for a decoder that segfaults on a hostile file."""
    if "g03" in path and "Bat" in path:
        os.abort()
    if "g04" in path and "Bat" in path:
        time.sleep(30)
    return ing.probe_video(path)


@pytest.mark.alone  # a probe over 3 s is rejected: on a loaded machine so is a normal one
def test_bad_videos_are_rejected_with_reasons_and_the_stage_goes_on(
    tmp_path, raw_params, make_video
):
    root = tmp_path / "ucf"
    _ucf101_tree(root, make_video, groups=6, clips=2)
    _not_a_video(root / "Ape/v_Ape_g02_c01.avi")
    _truncated(root / "Ape/v_Ape_g03_c01.avi", make_video)
    _zero_frames(root / "Ape/v_Ape_g04_c01.avi")
    make_video(root / "Ape/v_Ape_g05_c01.avi", frames=5)
    (root / "Bat/v_Bat_g02_c01.avi").unlink()
    p = _params(raw_params, root, val_fraction=0.0, probe_timeout_s=3)
    classes, rows, rejected = ing.ingest(p, probe=crashing_probe)
    reasons = {r.path.name: r.reason for r in rejected}
    assert reasons == {
        "v_Ape_g02_c01.avi": "not a readable video: FFmpeg cannot open it (Invalid data found "
        "when processing input)",
        "v_Ape_g03_c01.avi": "truncated: the decodable stream ends at 1.16 s of the 2.40 s the "
        "container claims (29 of 60 frames decode)",
        "v_Ape_g04_c01.avi": "no decodable frames",
        "v_Ape_g05_c01.avi": "only 5 decodable frames; data.min_frames is 10",
        "v_Bat_g02_c01.avi": "listed in trainlist01.txt but not found on disk",
        "v_Bat_g03_c01.avi": reasons["v_Bat_g03_c01.avi"],
        "v_Bat_g03_c02.avi": reasons["v_Bat_g03_c02.avi"],
        "v_Bat_g04_c01.avi": "decoding took longer than data.probe_timeout_s = 3.0 s",
        "v_Bat_g04_c02.avi": "decoding took longer than data.probe_timeout_s = 3.0 s",
    }
    assert reasons["v_Bat_g03_c01.avi"].startswith("the decoder crashed")
    assert "exit code -6" in reasons["v_Bat_g03_c01.avi"]  # SIGABRT
    assert len(rows) == 24 - 9
    ing.write_outputs(tmp_path / "out", classes, rows, rejected)
    with open(tmp_path / "out/rejected.csv") as f:
        table = list(csv.DictReader(f))
    assert len(table) == 9 and set(table[0]) == {"path", "class_name", "split", "reason"}
    with open(tmp_path / "out/manifest.csv") as f:
        manifest = list(csv.DictReader(f))
    assert list(manifest[0]) == list(contracts.MANIFEST_COLUMNS) and len(manifest) == 15
    assert (tmp_path / "out/classes.txt").read_text() == "Ape\nBat\n"


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("missing_root", "is not a folder"),
        ("empty_root", "no videos found under data.root"),
        ("dead_class", "class 'Bat' has no usable videos"),
        ("too_many_rejected", "3 of 8 videos rejected (37.5%), more than data.max_rejected"),
        ("no_lists", "split list"),
    ],
)
def test_stage_stops_with_a_clear_message_and_no_outputs(
    tmp_path, raw_params, make_video, monkeypatch, setup, message
):
    root = tmp_path / "ucf"
    if setup != "missing_root":
        root.mkdir()
    if setup in ("dead_class", "too_many_rejected", "no_lists"):
        _ucf101_tree(root, make_video, groups=2, clips=2)
    if setup == "empty_root":
        (root / "classInd.txt").write_text("1 Ape\n")
        (root / "trainlist01.txt").write_text("")
        (root / "testlist01.txt").write_text("")
    if setup == "dead_class":
        for f in (root / "Bat").iterdir():
            _not_a_video(f)
    if setup == "too_many_rejected":
        for f in sorted((root / "Ape").iterdir())[:3]:
            _not_a_video(f)
    if setup == "no_lists":
        (root / "testlist01.txt").unlink()
    p = _params(
        raw_params,
        root,
        val_fraction=0.0,
        max_rejected_fraction=0.25 if setup == "too_many_rejected" else 0.9,
    )
    with pytest.raises(ing.IngestError) as err:
        ing.ingest(p)
    assert message in str(err.value)

    # The stage itself: exits with the message and writes nothing.
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw_params))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        ing.main()
    assert message in str(exit_.value.code)
    assert not Path("data").exists()


def test_main_writes_outputs(tmp_path, raw_params, make_video, monkeypatch):
    root = tmp_path / "videos"
    _ucf101_tree(root, make_video, groups=3, clips=1)
    _params(raw_params, root)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw_params))
    monkeypatch.chdir(tmp_path)
    ing.main()
    assert sorted(os.listdir("data")) == ["classes.txt", "manifest.csv", "rejected.csv"]


def test_folder_class_names_with_spaces_and_any_script(tmp_path, raw_params, make_video):
    root = tmp_path / "tree"
    decomposed = unicodedata.normalize("NFD", "café crème")  # as some archives store it
    for name in ("air drumming", decomposed, "прыжки"):
        for i in range(3):
            make_video(root / name / f"clip {i}.avi", seed=i)
    p = _params(raw_params, root, layout="folder", test_fraction=0.34, val_fraction=0.0)
    classes, rows, rejected = ing.ingest(p)
    assert classes == ["air drumming", decomposed, "прыжки"] and rejected == []
    ids = {r["video_id"] for r in rows}
    assert {"air_drumming__clip_0", "café_crème__clip_0", "прыжки__clip_2"} <= ids
    ing.write_outputs(tmp_path / "out", classes, rows, rejected)
    assert contracts.read_classes(tmp_path / "out/classes.txt") == classes
    assert {r["class_name"] for r in contracts.read_manifest(tmp_path / "out/manifest.csv")} == {
        *classes
    }
    make_video(root / "two\nlines" / "clip 0.avi")
    with pytest.raises(ing.IngestError, match=r"'two\\nlines' \(it holds a line break\)"):
        ing.ingest(p)


def test_split_lists_with_spaces_in_names_and_paths(tmp_path, raw_params, make_video):
    root = tmp_path / "ucf"
    _ucf101_tree(root, make_video, classes=("Ape", "air drumming"), groups=3, clips=1)
    (root / "classInd.txt").write_text("\ufeff1 Ape\r\n2 air drumming\r\n", encoding="utf-8")
    classes, rows, rejected = ing.ingest(_params(raw_params, root, val_fraction=0.0))
    assert classes == ["Ape", "air drumming"] and rejected == [] and len(rows) == 6
    assert {r["video_id"] for r in rows if r["label"] == 1} == {
        f"v_air_drumming_g0{g}_c01" for g in (1, 2, 3)
    }
    hmdb, lists = tmp_path / "hmdb", tmp_path / "splits"
    lists.mkdir()
    for name in ("wave hello", "run"):
        make_video(hmdb / name / f"{name} one.avi")
        make_video(hmdb / name / f"{name} two.avi", seed=1)
        text = f"{name} one.avi 1 \n{name} two.avi 2\n"
        (lists / f"{name}_test_split1.txt").write_text(text, encoding="utf-8")
    p = _params(raw_params, hmdb, layout="hmdb51", lists=str(lists), val_fraction=0.0)
    classes, rows, rejected = ing.ingest(p)
    assert classes == ["run", "wave hello"] and rejected == []
    assert sorted((r["class_name"], r["split"]) for r in rows) == [
        ("run", "test"),
        ("run", "train"),
        ("wave hello", "test"),
        ("wave hello", "train"),
    ]


def test_video_ids_keep_every_script_and_nothing_unsafe():
    assert ing._safe_id("v_ApplyEyeMakeup_g08_c01") == "v_ApplyEyeMakeup_g08_c01"
    assert ing._safe_id("air drumming__a (1)!") == "air_drumming__a_1"
    assert ing._safe_id("हिंदी नृत्य") == "हिंदी_नृत्य"  # vowel signs are marks: kept
    assert ing._safe_id(unicodedata.normalize("NFD", "café")) == "café"
    assert ing._safe_id("../x/y\\z") == ".._x_y_z"
