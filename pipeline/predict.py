"""Try a trained model on one video: its top-5 classes with their scores.

The video goes through the pipeline's own code with the ``params.yaml`` the model was trained
with: decoding, resizing and TV-L1 flow as in stage ``flow`` (the same ``flow.engine``; no
flow for an RGB model, which never reads it), one record as the flow stage writes it, the
evaluation clips of the reader
(``eval.clips`` spaced over the video, and their mirror images when ``eval.flip``) and the
softmax averaged over them, as in stage ``evaluate``.

Run: ``python -m pipeline.predict VIDEO [--model models/fusion.keras] [--top 5]``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from pipeline import contracts
from pipeline.params import Params, PipelineError, load_params

DEFAULT_MODEL = contracts.model_path("fusion")


class PredictError(PipelineError):
    """The video or the model cannot be used; the message says why."""


def model_mode(model: object) -> str:
    """``both``, ``rgb`` or ``flow``: which clips the model takes."""
    names = {t.name.split(":")[0] for t in model.inputs}
    if {"rgb", "flow"} <= names:
        return "both"
    if names in ({"rgb"}, {"flow"}):
        return names.pop()
    raise PredictError(f"the model's inputs are {sorted(names)}; expected rgb and/or flow")


def check_inputs(model: object, params: Params) -> None:
    """The model's input shapes must be the clips that ``clip.*`` makes."""
    c = params.clip
    want = {
        "rgb": (c.frames, c.crop, c.crop, 3),
        "flow": (c.frames, c.crop, c.crop, 2 * c.flow_stack),
    }
    for t in model.inputs:
        name = t.name.split(":")[0]
        if tuple(t.shape[1:]) != want[name]:
            raise PredictError(
                f"the model takes {name} clips of shape {tuple(t.shape[1:])}, but params.yaml "
                f"makes {want[name]} (clip.frames, clip.crop, clip.flow_stack): use the "
                "params.yaml the model was trained with"
            )


def class_names(classes: int, path: Path = contracts.CLASSES) -> list[str]:
    """Names from ``data/classes.txt`` when it matches the model, else ``class <n>``."""
    if path.exists():
        names = contracts.read_classes(path)
        if len(names) == classes:
            return names
    return [f"class {i}" for i in range(classes)]


def _frames_only(video: Path, params: Params) -> object:
    """The frames of ``video`` as the flow stage encodes them, and no flow: an RGB model's
    clips never read it (``pipeline.dataset`` decodes flow for ``flow`` and ``both`` only), so
    its lists hold empty strings instead of TV-L1's work (seconds a frame pair on a CPU)."""
    from pipeline import flow_compute

    decoded = flow_compute.decode_video(str(video), 2, params.flow)
    height, width = decoded.grey.shape[1:]
    none = [b""] * (len(decoded.rgb) - 1)
    return flow_compute.VideoFlow(decoded.rgb, none, none, width, height, 0.0)


def predict(video: Path, model_path: Path, params: Params) -> list[tuple[str, float]]:
    """All classes with their averaged softmax scores, best first."""
    import layers  # noqa: F401  (registers the custom layers)
    from pipeline import flow_compute, scoring

    if not video.is_file():
        raise PredictError(f"{video}: no such file")
    if not model_path.is_file():
        raise PredictError(f"{model_path}: no such model; train one first (make repro)")
    model = contracts.load_model(model_path, f"train_{model_path.stem}", compile=False)
    check_inputs(model, params)
    mode = model_mode(model)
    engine = flow_compute.resolve_engine(params.flow.engine)
    compute = flow_compute.flow_video_keras if engine == "keras" else flow_compute.flow_video
    try:
        result = (
            _frames_only(video, params) if mode == "rgb" else compute(str(video), 2, params.flow)
        )
    except ValueError as exc:
        raise PredictError(f"{video}: {exc}") from exc
    settings = flow_compute.record_settings(params.flow, engine)
    with tempfile.TemporaryDirectory() as tmp:
        record = contracts.record_path("video", tmp)
        contracts.write_record(
            record,
            flow_compute.video_record(video.stem, 0, result, params.flow, settings, "predict"),
        )
        _, _, scores, _ = scoring.score_model(model, params, mode, "", files=[record])
    names = class_names(scores.shape[1])
    order = np.argsort(-scores[0], kind="stable")
    return [(names[i], float(scores[0, i])) for i in order]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Top classes of one video.")
    parser.add_argument("video", type=Path)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--top", type=int, default=5)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        ranked = predict(args.video, args.model, load_params())
    except PipelineError as exc:
        sys.exit(f"predict: {exc}")
    print(f"{args.video} ({args.model}, {time.perf_counter() - start:.1f} s):")
    for rank, (name, score) in enumerate(ranked[: args.top], 1):
        print(f"{rank}. {name:<24} {score:.3f}")


if __name__ == "__main__":
    main()
