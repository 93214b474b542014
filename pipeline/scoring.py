"""Video-level scores of a model: the paper's test protocol, shared by ``pipeline.evaluate``
(the test split) and ``pipeline.predict`` (one video of the user's).

``eval.clips`` clips spaced over each video (the reader's evaluation mode), and their mirror
images too when ``eval.flip``; the softmax scores of all of them are averaged into one
prediction per video. Inference runs batch by batch and only the per-video sums are kept, so
memory stays bounded for any number of clips.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from pipeline.params import Params


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


def score_model(
    model: object, params: Params, mode: str, shards_dir: str, files: list[str] | None = None
) -> tuple:
    """Per-video mean softmax of ``model`` over the test clips (and their mirrors), as
    :func:`accumulate` returns it; ``files`` replaces the test shards with other record files."""
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
