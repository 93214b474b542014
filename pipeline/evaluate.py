"""Stages ``evaluate_rgb``, ``evaluate_flow``, ``evaluate_fusion``, ``evaluate_late``.

The paper's test protocol (``pipeline.scoring``): ``eval.clips`` clips spaced over each test
video, and their mirror images too when ``eval.flip``, their softmax scores averaged into one
prediction per video. ``late`` averages the rgb and flow streams' saved scores: the classic
two-stream late fusion, the baseline.

Outputs per model: ``scores/<name>.npz`` (video ids, labels, class scores),
``metrics/<name>.json`` (top1, top5, mean_class_accuracy, videos, clips_per_video, params),
``metrics/<name>_per_class.csv``, the confusion matrix as ``metrics/<name>_confusion.png``
(rows normalised) and as DVC plot data ``metrics/<name>_confusion.csv``.

Run: ``python -m pipeline.evaluate --stream rgb|flow|fusion|late``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from pipeline import contracts
from pipeline.contracts import METRICS_DIR, MODELS_DIR, SCORES_DIR
from pipeline.params import Params, PipelineError, load_params
from pipeline.scoring import score_model

NAMES = ("rgb", "flow", "fusion", "late")


class EvaluateError(PipelineError):
    """The evaluation cannot run; the message says why."""


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
    if scores.shape[1] != len(class_names):
        raise EvaluateError(
            f"{contracts.CLASSES} names {len(class_names)} classes, the scores have "
            f"{scores.shape[1]}: set model.num_classes to null (or {len(class_names)}) and "
            "train on this data (dvc repro)"
        )
    scores_dir, metrics_dir = scores_dir or SCORES_DIR, metrics_dir or METRICS_DIR
    m = metrics(labels, scores)
    scores_dir.mkdir(parents=True, exist_ok=True)
    metrics_dir.mkdir(parents=True, exist_ok=True)
    contracts.write_scores(contracts.scores_path(name, scores_dir), ids, labels, scores)
    summary = {
        "top1": m["top1"],
        "top5": m["top5"],
        "top5_k": m["top5_k"],
        "mean_class_accuracy": m["mean_class_accuracy"],
        "videos": len(ids),
        "clips_per_video": clips,
        "params": extra,
    }
    contracts.write_json(contracts.metrics_path(name, metrics_dir), summary)
    worst = most_confused_with(m["confusion"])
    contracts.write_csv(
        contracts.per_class_path(name, metrics_dir),
        ["label", "class_name", "videos", "accuracy", "most_confused_with", "confused_share"],
        (
            [
                c,
                cname,
                int((labels == c).sum()),
                "" if np.isnan(acc) else f"{acc:.4f}",
                class_names[worst[c][0]] if worst[c][1] > 0 else "",
                f"{worst[c][1]:.4f}" if worst[c][1] > 0 else "",
            ]
            for c, (cname, acc) in enumerate(zip(class_names, m["per_class"], strict=True))
        ),
    )
    png, plot_data = contracts.confusion_paths(name, metrics_dir)
    contracts.write_csv(
        plot_data,
        ["actual", "predicted"],
        ((class_names[a], class_names[p]) for a, p in zip(labels, m["predicted"], strict=True)),
    )
    confusion_png(m["confusion"], class_names, f"{name}: top-1 {m['top1']:.3f}", png)
    return summary


def _row_normalised(confusion: np.ndarray) -> np.ndarray:
    rows = confusion.sum(1, keepdims=True)
    return np.divide(confusion, rows, out=np.zeros(confusion.shape), where=rows > 0)


def most_confused_with(confusion: np.ndarray) -> list[tuple[int, float]]:
    """For each actual class: the other class its videos are most often given, and the share
    of its videos that went there (0.0 when none went astray)."""
    norm = _row_normalised(confusion)
    np.fill_diagonal(norm, -1.0)
    best = norm.argmax(1)
    return [(int(j), max(float(norm[i, j]), 0.0)) for i, j in enumerate(best)]


def confused_pairs(confusion: np.ndarray, k: int = 20) -> list[tuple[int, int, int, float]]:
    """The ``k`` most confused (actual, predicted) pairs, off the diagonal, by video count:
    ``(actual, predicted, videos, share of the actual class's videos)``."""
    norm = _row_normalised(confusion)
    off = confusion.astype(np.int64).copy()
    np.fill_diagonal(off, 0)
    order = np.argsort(-off, axis=None, kind="stable")[:k]
    pairs = [np.unravel_index(i, off.shape) for i in order]
    return [(int(a), int(p), int(off[a, p]), float(norm[a, p])) for a, p in pairs if off[a, p]]


def confusion_png(confusion: np.ndarray, class_names: list[str], title: str, path: Path) -> None:
    """Row-normalised confusion matrix with readable class labels; above 30 classes (UCF101's
    101, Kinetics' 400) the classes are sorted by accuracy, only every few are labelled, and
    the most confused pairs and the worst classes are listed beside the matrix."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(class_names)
    if n > 30:
        _many_classes_png(confusion, class_names, title, path, plt)
        return
    norm = _row_normalised(confusion)
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
    contracts.save_figure(fig, path)
    plt.close(fig)


def _many_classes_png(
    confusion: np.ndarray, class_names: list[str], title: str, path: Path, plt: object
) -> None:
    """:func:`confusion_png` for many classes: the matrix in accuracy order (worst first), a
    tick label on every k-th class so that labels never overlap, and two lists: the most
    confused pairs and the 15 least accurate classes."""
    norm = _row_normalised(confusion)
    n = len(class_names)
    videos = confusion.sum(1)
    accuracy = np.where(videos > 0, np.diag(norm), np.nan)
    order = np.argsort(np.nan_to_num(accuracy, nan=2.0), kind="stable")  # worst first
    fig = plt.figure(figsize=(19, 11))
    ax = fig.add_axes([0.07, 0.12, 0.5, 0.8])
    im = ax.imshow(norm[np.ix_(order, order)], vmin=0, vmax=1, cmap="Blues", aspect="equal")
    step = max(1, -(-n // 50))  # at most 50 labels a side
    ticks = list(range(0, n, step))
    labels = [class_names[order[i]] for i in ticks]
    ax.set_xticks(ticks, labels, rotation=90, fontsize=6)
    ax.set_yticks(ticks, labels, fontsize=6)
    every = "" if step == 1 else f" (one class in {step} labelled)"
    ax.set_xlabel(f"predicted, in the order of the rows{every}")
    ax.set_ylabel(f"actual, least accurate first{every}")
    ax.set_title(f"{title}: {n} classes")
    fig.colorbar(im, ax=ax, fraction=0.035, pad=0.01)

    def listing(x: float, head: str, lines: list[str]) -> None:
        fig.text(x, 0.92, head, fontsize=10, fontweight="bold", va="top")
        fig.text(x, 0.89, "\n".join(lines), fontsize=7.5, va="top", family="monospace")

    def short(name: str, width: int = 22) -> str:
        return name if len(name) <= width else name[: width - 1] + "…"

    pairs = confused_pairs(confusion, 30)
    listing(
        0.62,
        "most confused: actual → predicted",
        [f"{short(class_names[a])} → {short(class_names[p])} {v:>3} ({s:.0%})"
         for a, p, v, s in pairs] or ["none"],
    )  # fmt: skip
    worst = [i for i in order if videos[i] > 0][:15]
    mistaken = most_confused_with(confusion)
    listing(
        0.84,
        "least accurate classes",
        [f"{short(class_names[i], 18)} {accuracy[i]:.0%}"
         + (f" (→ {short(class_names[mistaken[i][0]], 14)})" if mistaken[i][1] > 0 else "")
         for i in worst],
    )  # fmt: skip
    contracts.save_figure(fig, path)
    plt.close(fig)


def evaluate(
    name: str,
    params: Params,
    shards_dir: str = contracts.SHARDS_DIR,
    load: Callable[[Path], object] | None = None,
) -> dict:
    """Run one evaluation stage; returns the metrics summary."""
    if name not in NAMES:
        raise EvaluateError(f"--stream must be one of {NAMES}; got {name!r}")
    class_names = contracts.read_classes()
    flips = 2 if params.eval.flip else 1
    if name == "late":
        parts = []
        for stream in ("rgb", "flow"):
            path = contracts.scores_path(stream, SCORES_DIR)
            if not path.exists():
                raise EvaluateError(f"{path} not found: run evaluate_{stream} first")
            parts.append(contracts.read_scores(path, f"evaluate_{stream}"))
        if list(parts[0]["video_ids"]) != list(parts[1]["video_ids"]):
            raise EvaluateError("the rgb and flow scores cover different videos: re-run both")
        ids, labels = list(parts[0]["video_ids"]), parts[0]["labels"]
        scores = (parts[0]["scores"] + parts[1]["scores"]) / 2
        extra = {"fusion": "late (average of the rgb and flow softmax scores)"}
        return write_outputs(
            name, ids, labels, scores, params.eval.clips * flips, extra, class_names
        )
    path = contracts.model_path(name, MODELS_DIR)
    if not path.exists():
        raise EvaluateError(f"{path} not found: run train_{name} first")
    if load is None:
        import layers  # noqa: F401  (registers the custom layers)

        def load(path: Path) -> object:
            return contracts.load_model(path, f"train_{name}")

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
        lock = contracts.stage_lock(f"evaluate_{args.stream}")
        with lock, contracts.disk_full_guard(contracts.METRICS_DIR):
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
