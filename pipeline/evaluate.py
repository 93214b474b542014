"""Stages ``evaluate_rgb``, ``evaluate_flow``, ``evaluate_fusion``, ``evaluate_late``.

The paper's test protocol: ``eval.clips`` clips spaced over each test video (the reader's
evaluation mode), and their mirror images too when ``eval.flip``; the softmax scores of all of
them are averaged into one prediction per video. Inference runs batch by batch and only the
per-video sums are kept, so memory stays bounded for any number of clips. ``late`` averages
the rgb and flow streams' saved scores: the classic two-stream late fusion, the baseline.

Outputs per model: ``scores/<name>.npz`` (video ids, labels, class scores),
``metrics/<name>.json`` (top1, top5, mean_class_accuracy, videos, clips_per_video, params),
``metrics/<name>_per_class.csv``, the confusion matrix as ``metrics/<name>_confusion.png``
(rows normalised) and as DVC plot data ``metrics/<name>_confusion.csv``.

Run: ``python -m pipeline.evaluate --stream rgb|flow|fusion|late``.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from pipeline.ingest import CLASSES_FILE
from pipeline.params import Params, PipelineError, load_params

NAMES = ("rgb", "flow", "fusion", "late")
MODELS_DIR = Path("models")
SCORES_DIR = Path("scores")
METRICS_DIR = Path("metrics")


class EvaluateError(PipelineError):
    """The evaluation cannot run; the message says why."""


def accumulate(
    batches: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]], classes: int
) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """Sum clip scores per video from ``(scores (B, C), labels (B,), video_ids (B,))`` batches.

    Returns video ids (first-seen order), labels, mean scores (V, C) and clips per video.
    """
    index: dict[str, int] = {}
    sums: list[np.ndarray] = []
    labels: list[int] = []
    counts: list[int] = []
    for scores, batch_labels, ids in batches:
        for s, y, vid in zip(scores, batch_labels, ids, strict=True):
            vid = vid.decode() if isinstance(vid, bytes) else str(vid)
            if vid not in index:
                index[vid] = len(sums)
                sums.append(np.zeros(classes, np.float64))
                labels.append(int(y))
                counts.append(0)
            i = index[vid]
            sums[i] += s
            counts[i] += 1
    count = np.array(counts)
    return list(index), np.array(labels), np.stack(sums) / count[:, None], count


def metrics(labels: np.ndarray, scores: np.ndarray) -> dict:
    """top1, topk (k = min(5, classes)), mean class accuracy and the confusion matrix."""
    classes = scores.shape[1]
    k = min(5, classes)
    order = np.argsort(-scores, axis=1, kind="stable")
    predicted = order[:, 0]
    topk = np.any(order[:, :k] == labels[:, None], axis=1)
    confusion = np.zeros((classes, classes), np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    per_class = np.array(
        [
            (predicted[labels == c] == c).mean() if (labels == c).any() else np.nan
            for c in range(classes)
        ]
    )
    return {
        "top1": float((predicted == labels).mean()),
        "top5": float(topk.mean()),
        "top5_k": k,
        "mean_class_accuracy": float(np.nanmean(per_class)),
        "per_class": per_class,
        "confusion": confusion,
        "predicted": predicted,
    }


def score_model(
    model: object, params: Params, mode: str, shards_dir: str, files: list[str] | None = None
) -> tuple:
    """Per-video mean softmax of ``model`` over the test clips (and their mirrors); ``files``
    replaces the test shards with other record files."""
    import keras
    import tensorflow as tf

    from pipeline.dataset import clip_dataset, flip_clip

    ds = clip_dataset(
        "test",
        params,
        mode,
        training=False,
        batch_size=params.eval.batch_size,
        shards_dir=shards_dir,
        files=files,
    )

    def batches() -> Iterable[tuple]:
        for inputs, labels, ids in ds:
            views = [inputs]
            if params.eval.flip:
                clip = inputs if isinstance(inputs, dict) else {mode: inputs}
                flipped = flip_clip(clip)
                views.append(flipped if isinstance(inputs, dict) else flipped[mode])
            for view in views:
                out = model(view, training=False)["prediction"]
                yield (
                    keras.ops.convert_to_numpy(tf.cast(out, tf.float32)),
                    labels.numpy(),
                    ids.numpy(),
                )

    classes = int(model.output["prediction"].shape[-1])
    return accumulate(batches(), classes)


def write_outputs(
    name: str,
    ids: list[str],
    labels: np.ndarray,
    scores: np.ndarray,
    clips: int,
    extra: dict,
    class_names: list[str],
    scores_dir: Path | None = None,
    metrics_dir: Path | None = None,
) -> dict:
    """Scores, metrics JSON, per-class CSV, confusion matrix PNG and plot data."""
    scores_dir, metrics_dir = scores_dir or SCORES_DIR, metrics_dir or METRICS_DIR
    m = metrics(labels, scores)
    scores_dir.mkdir(parents=True, exist_ok=True)
    metrics_dir.mkdir(parents=True, exist_ok=True)
    np.savez(scores_dir / f"{name}.npz", video_ids=np.array(ids), labels=labels, scores=scores)
    summary = {
        "top1": m["top1"],
        "top5": m["top5"],
        "top5_k": m["top5_k"],
        "mean_class_accuracy": m["mean_class_accuracy"],
        "videos": len(ids),
        "clips_per_video": clips,
        "params": extra,
    }
    (metrics_dir / f"{name}.json").write_text(json.dumps(summary, indent=1) + "\n")
    with open(metrics_dir / f"{name}_per_class.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["label", "class_name", "videos", "accuracy"])
        for c, cname in enumerate(class_names):
            acc = m["per_class"][c]
            w.writerow([c, cname, int((labels == c).sum()), "" if np.isnan(acc) else f"{acc:.4f}"])
    with open(metrics_dir / f"{name}_confusion.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["actual", "predicted"])
        w.writerows(
            (class_names[a], class_names[p]) for a, p in zip(labels, m["predicted"], strict=True)
        )
    confusion_png(
        m["confusion"],
        class_names,
        f"{name}: top-1 {m['top1']:.3f}",
        metrics_dir / f"{name}_confusion.png",
    )
    return summary


def confusion_png(confusion: np.ndarray, class_names: list[str], title: str, path: Path) -> None:
    """Row-normalised confusion matrix with readable class labels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = confusion.sum(1, keepdims=True)
    norm = np.divide(confusion, rows, out=np.zeros(confusion.shape), where=rows > 0)
    n = len(class_names)
    size = max(4.0, 0.45 * n + 2)
    fig, ax = plt.subplots(figsize=(size, size * 0.9))
    im = ax.imshow(norm, vmin=0, vmax=1, cmap="Blues")
    ax.set_xticks(range(n), class_names, rotation=90, fontsize=8 if n <= 30 else 5)
    ax.set_yticks(range(n), class_names, fontsize=8 if n <= 30 else 5)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    ax.set_title(title)
    if n <= 20:
        for i in range(n):
            for j in range(n):
                if norm[i, j] > 0:
                    ax.text(
                        j,
                        i,
                        f"{norm[i, j]:.2f}",
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if norm[i, j] > 0.5 else "black",
                    )
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def evaluate(
    name: str,
    params: Params,
    shards_dir: str = "data/shards",
    load: Callable[[Path], object] | None = None,
) -> dict:
    """Run one evaluation stage; returns the metrics summary."""
    if name not in NAMES:
        raise EvaluateError(f"--stream must be one of {NAMES}; got {name!r}")
    if not CLASSES_FILE.exists():
        raise EvaluateError(f"{CLASSES_FILE} not found: run the ingest stage first")
    class_names = CLASSES_FILE.read_text().split()
    flips = 2 if params.eval.flip else 1
    if name == "late":
        parts = []
        for stream in ("rgb", "flow"):
            path = SCORES_DIR / f"{stream}.npz"
            if not path.exists():
                raise EvaluateError(f"{path} not found: run evaluate_{stream} first")
            parts.append(np.load(path))
        if list(parts[0]["video_ids"]) != list(parts[1]["video_ids"]):
            raise EvaluateError("the rgb and flow scores cover different videos: re-run both")
        ids, labels = list(parts[0]["video_ids"]), parts[0]["labels"]
        scores = (parts[0]["scores"] + parts[1]["scores"]) / 2
        extra = {"fusion": "late (average of the rgb and flow softmax scores)"}
        return write_outputs(
            name, ids, labels, scores, params.eval.clips * flips, extra, class_names
        )
    path = MODELS_DIR / f"{name}.keras"
    if not path.exists():
        raise EvaluateError(f"{path} not found: run train_{name} first")
    if load is None:
        import keras

        import layers  # noqa: F401  (registers the custom layers)

        load = keras.saving.load_model
    model = load(path)
    mode = "both" if name == "fusion" else name
    ids, labels, scores, counts = score_model(model, params, mode, shards_dir)
    from pipeline.model import count_params

    extra = {"model": getattr(model, "name", name), "parameters": count_params(model)}
    if name == "fusion":  # for the report's table (and `dvc exp show`)
        f = params.fusion
        extra.update(method=f.method, layer=f.layer, temporal=f.temporal, also_late=f.also_late)
    return write_outputs(name, ids, labels, scores, int(counts.max()), extra, class_names)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Video-level evaluation of one model.")
    parser.add_argument("--stream", required=True, choices=NAMES)
    args = parser.parse_args(argv)
    try:
        summary = evaluate(args.stream, load_params())
    except PipelineError as exc:
        sys.exit(f"evaluate {args.stream}: {exc}")
    print(
        f"evaluate {args.stream}: top-1 {summary['top1']:.4f}, top-{summary['top5_k']} "
        f"{summary['top5']:.4f}, mean class accuracy {summary['mean_class_accuracy']:.4f} over "
        f"{summary['videos']} videos x {summary['clips_per_video']} clips"
    )


if __name__ == "__main__":
    main()
