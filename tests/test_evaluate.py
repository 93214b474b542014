import csv
import json

import numpy as np
import pytest

from pipeline import evaluate as ev
from pipeline import scoring


def _batches(scores, labels, ids, size):
    for i in range(0, len(labels), size):
        yield scores[i : i + size], labels[i : i + size], ids[i : i + size]


def test_metrics_by_hand():
    # 4 videos, 6 classes; scores chosen so the ranks are known
    labels = np.array([0, 1, 2, 2])
    scores = np.array(
        [
            [0.50, 0.20, 0.10, 0.10, 0.05, 0.05],  # right
            [0.30, 0.25, 0.20, 0.15, 0.06, 0.04],  # label 1 is second: top-5 only
            [0.01, 0.02, 0.03, 0.04, 0.05, 0.85],  # label 2 is 5th-ranked: top-5 (k = 5)
            [0.01, 0.02, 0.00, 0.04, 0.05, 0.88],  # label 2 is last: wrong both ways
        ]
    )
    m = ev.metrics(labels, scores)
    assert m["top1"] == 0.25
    assert m["top5"] == 0.75 and m["top5_k"] == 5
    # per class: class 0 -> 1/1, class 1 -> 0/1, class 2 -> 0/2; absent classes are skipped
    assert m["mean_class_accuracy"] == pytest.approx(1 / 3)
    assert m["confusion"][2, 5] == 2 and m["confusion"].sum() == 4
    three = ev.metrics(np.array([0, 1]), np.array([[0.2, 0.5, 0.3], [0.6, 0.1, 0.3]]))
    assert three["top5_k"] == 3 and three["top5"] == 1.0 and three["top1"] == 0.0


def test_accumulate_averages_clips_per_video_whatever_the_chunking():
    rng = np.random.default_rng(0)
    ids = np.array([f"v{i // 4}".encode() for i in range(20)])  # 5 videos x 4 clips
    labels = np.array([i // 4 % 3 for i in range(20)])
    scores = rng.dirichlet(np.ones(3), 20)
    results = [scoring.accumulate(_batches(scores, labels, ids, size), 3) for size in (1, 3, 20)]
    vids, lab, mean, count = results[0]
    assert vids == ["v0", "v1", "v2", "v3", "v4"] and count.tolist() == [4] * 5
    np.testing.assert_allclose(mean[1], scores[4:8].mean(0))
    for other in results[1:]:
        assert other[0] == vids and np.array_equal(other[1], lab)
        np.testing.assert_allclose(other[2], mean, rtol=1e-12)


def test_outputs_confusion_rows_and_png(tmp_path):
    names = ["a", "b", "c"]
    labels = np.array([0, 0, 1, 2, 2, 2])
    scores = np.eye(3)[[0, 1, 1, 2, 0, 2]] * 0.9 + 0.03
    summary = ev.write_outputs(
        "fusion",
        [f"v{i}" for i in range(6)],
        labels,
        scores,
        20,
        {"model": "small"},
        names,
        tmp_path / "scores",
        tmp_path / "metrics",
    )
    assert summary["top1"] == pytest.approx(4 / 6) and summary["videos"] == 6
    saved = json.loads((tmp_path / "metrics/fusion.json").read_text())
    assert saved["clips_per_video"] == 20 and saved["params"] == {"model": "small"}
    npz = np.load(tmp_path / "scores/fusion.npz")
    assert list(npz["video_ids"]) == [f"v{i}" for i in range(6)] and npz["scores"].shape == (6, 3)
    with open(tmp_path / "metrics/fusion_per_class.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["accuracy"] for r in rows] == ["0.5000", "1.0000", "0.6667"]
    assert [(r["most_confused_with"], r["confused_share"]) for r in rows] == [
        ("b", "0.5000"),
        ("", ""),
        ("a", "0.3333"),
    ]
    with open(tmp_path / "metrics/fusion_confusion.csv") as f:
        pairs = [(r["actual"], r["predicted"]) for r in csv.DictReader(f)]
    assert pairs[1] == ("a", "b") and len(pairs) == 6
    confusion = ev.metrics(labels, scores)["confusion"]
    norm = confusion / confusion.sum(1, keepdims=True)
    np.testing.assert_allclose(norm.sum(1), 1.0)
    png = (tmp_path / "metrics/fusion_confusion.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_many_classes_confusion_figure_and_pairs(tmp_path):
    """At UCF101's 101 classes the figure sorts classes by accuracy and lists the most
    confused pairs (a 101×101 grid of labels is unreadable); the pairs are counted right."""
    n = 101
    names = [f"class_{i:03d}_with_a_long_name" for i in range(n)]
    labels = np.repeat(np.arange(n), 4)
    predicted = labels.copy()
    predicted[[0, 1, 2]] = 7  # class 0: 3 of 4 to class 7
    predicted[4] = 9  # class 1: 1 of 4 to class 9
    scores = np.eye(n)[predicted]
    ev.write_outputs("rgb", [f"v{i}" for i in range(labels.size)], labels, scores, 1, {},
                     names, tmp_path / "s", tmp_path / "m")  # fmt: skip
    confusion = ev.metrics(labels, scores)["confusion"]
    assert ev.confused_pairs(confusion, 5) == [(0, 7, 3, 0.75), (1, 9, 1, 0.25)]
    mistaken = ev.most_confused_with(confusion)
    assert mistaken[0] == (7, 0.75) and mistaken[1] == (9, 0.25) and mistaken[2][1] == 0.0
    png = (tmp_path / "m/rgb_confusion.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20000


def test_forced_model_through_the_real_reader(tiny_project, monkeypatch, tmp_path):
    """A stand-in model that always answers class 1: metrics follow by hand."""
    import keras

    from pipeline.params import load_params

    params = load_params(tiny_project / "params.yaml")

    class Forced:
        output = {"prediction": keras.KerasTensor((None, 4))}

        def __call__(self, x, training=False):
            n = keras.ops.shape(x["rgb"])[0]
            return {"prediction": keras.ops.one_hot(keras.ops.ones((n,), "int32"), 4)}

    monkeypatch.chdir(tiny_project)
    monkeypatch.setattr(ev, "SCORES_DIR", tmp_path / "scores")
    monkeypatch.setattr(ev, "METRICS_DIR", tmp_path / "metrics")
    monkeypatch.setattr(ev, "MODELS_DIR", tmp_path)
    (tmp_path / "fusion.keras").write_text("stand-in")
    monkeypatch.setattr("pipeline.model.count_params", lambda model: 0)
    summary = ev.evaluate("fusion", params, load=lambda path: Forced())
    labels = np.load(tmp_path / "scores/fusion.npz")["labels"]
    assert summary["videos"] == 16 and summary["clips_per_video"] == 2 * 2  # clips x flip
    assert summary["top1"] == pytest.approx((labels == 1).mean())
    assert summary["mean_class_accuracy"] == pytest.approx(0.25)
    with pytest.raises(ev.EvaluateError, match="run evaluate_rgb first"):
        ev.evaluate("late", params)


def test_class_names_that_do_not_match_the_scores_are_refused(tmp_path):
    scores = np.eye(4)[[0, 1, 2]]
    with pytest.raises(ev.EvaluateError, match="names 3 classes, the scores have 4"):
        ev.write_outputs("rgb", ["a", "b", "c"], np.array([0, 1, 2]), scores, 1, {},
                         ["x", "y", "z"], tmp_path / "s", tmp_path / "m")  # fmt: skip
    assert not (tmp_path / "m").exists()
