"""The GPU check: the keras TV-L1, the paper's models and a training step, measured in one go
on a machine with Keras and JAX (docs/gpu-check.md).

    KERAS_BACKEND=jax python benchmarks/gpu_check.py [--json PATH] [--smoke] [--only PART]

Prints one line per measurement and writes them all to ``--json PATH``:

- ``tvl1``: the keras engine (``pipeline.tvl1``) with OpenCV's defaults at 340×256 and
  320×240, batches 16, 64 and 128: compile seconds (first call less a steady one), pairs/s
  after compiling, peak device memory; then its agreement with OpenCV's DualTVL1 on the fixture
  pairs of ``benchmarks/fixtures/tvl1_opencv.npz`` (computed on a CPU machine by
  ``--make-fixtures``): mean end-point difference, which must stay at most 0.05 px.
- ``train``: training steps of the paper's final model (VGG-16 towers, conv fusion at ReLU5
  with 3D conv and 3D pooling, T = 5, L = 10, 224², also_late), batch 32, ``mixed_bfloat16``,
  random uint8 clips held on the device: clips/s after the first steps, peak memory; then
  VGG-M-2048 with conv fusion at ReLU5, T = 1, batch 64.
- ``eval``: forward passes of the final model (inference): clips/s.

``--smoke`` runs every part at tiny sizes (the ``small`` backbone, 32² crops, batches of 3
pairs of 64×48) on a CPU in under a minute: that is what ``tests/test_gpu_check.py`` runs,
with TensorFlow and OpenCV (so ``cv2.optflow``) blocked from import, since the GPU machine has
neither TensorFlow nor opencv-contrib. The check needs only NumPy, PyYAML, Keras and JAX (and
this repository).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import yaml  # noqa: E402

from pipeline import tvl1  # noqa: E402
from pipeline.params import parse_params  # noqa: E402

FIXTURES = ROOT / "benchmarks" / "fixtures" / "tvl1_opencv.npz"
MAX_EPE = 0.05  # px: the keras engine against OpenCV on the fixtures, mean end-point difference

FINAL = {  # the paper's final model (PAPER.md, Table 4): VGG-16 towers, 3D conv fusion at ReLU5
    "model.backbone": "vgg16",
    "fusion.method": "conv",
    "fusion.layer": "relu5",
    "fusion.temporal": "conv3d_pool3d",
    "fusion.also_late": True,
    "clip.frames": 5,
    "clip.flow_stack": 10,
    "clip.crop": 224,
}
VGG_M = {**FINAL, "model.backbone": "vgg_m_2048", "fusion.temporal": "avg2d"}
VGG_M.update({"fusion.also_late": False, "clip.frames": 1})
SMOKE = {"model.backbone": "small", "clip.crop": 32, "clip.frames": 2, "clip.flow_stack": 4}


def _device() -> str:
    import jax

    d = jax.devices()[0]
    kind = getattr(d, "device_kind", d.platform)
    return d.platform if kind == d.platform else f"{d.platform} ({kind})"


def _peak_gib() -> float | None:
    """Peak memory of the first device since the check started (GiB, the process's peak: a
    row never shows less than the rows before it); None where the backend does not say."""
    import jax

    stats = jax.devices()[0].memory_stats() or {}
    peak = stats.get("peak_bytes_in_use")
    return None if peak is None else round(peak / 2**30, 2)


def _params(overrides: dict) -> object:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    for key, value in overrides.items():
        section, name = key.split(".")
        raw[section][name] = value
    return parse_params(raw)


def _scene(pairs: int, width: int, height: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``pairs`` grey frame pairs (0-255): a blocky random texture moving one pixel a frame."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, (height // 8 + 2, width // 8 + 2))
    texture = np.kron(coarse, np.ones((8, 8)))[: height + 8, : width + 8]
    frames = [np.roll(texture, k, axis=1)[4 : 4 + height, 4 : 4 + width] for k in range(pairs + 1)]
    frames = np.stack(frames).astype(np.uint8)
    return frames[:-1], frames[1:]


JSON: Path | None = None  # --json: rewritten after every row, so a run cut short keeps its rows


def _line(out: list[dict], **row: object) -> None:
    out.append(row)
    print("  ".join(f"{k} {v}" for k, v in row.items()), flush=True)
    if JSON is not None:
        JSON.write_text(json.dumps({"device": _device(), "rows": out}, indent=1) + "\n")


def check_tvl1(out: list[dict], smoke: bool) -> None:
    t = _params({}).flow.tvl1
    sizes = [(64, 48)] if smoke else [(340, 256), (320, 240)]
    batches = [3] if smoke else [16, 64, 128]  # smoke: the fixtures' shape, one compile
    for w, h in sizes:
        for b in batches:
            i0, i1 = _scene(b, w, h)
            start = time.perf_counter()
            tvl1.tvl1(i0, i1, t)  # compiles, then runs once
            first = time.perf_counter() - start
            reps = 2 if smoke else 5
            start = time.perf_counter()
            for _ in range(reps):
                tvl1.tvl1(i0, i1, t)
            steady = (time.perf_counter() - start) / reps
            _line(
                out,
                check="tvl1",
                size=f"{w}x{h}",
                batch=b,
                compile_s=round(first - steady, 1),
                pairs_per_s=round(b / steady, 1),
                peak_gib=_peak_gib(),
            )
    ref = np.load(FIXTURES)
    ours = tvl1.tvl1(ref["i0"], ref["i1"], t)
    epe = np.sqrt(((ours - ref["flow"]) ** 2).sum(-1)).mean(axis=(1, 2))
    for name, e in zip(ref["names"], epe, strict=True):
        _line(
            out,
            check="tvl1_agreement",
            fixture=str(name),
            mean_epe_px=float(f"{e:.2e}"),
            ok=bool(e <= MAX_EPE),
        )


def _clips(params: object, batch: int) -> tuple[dict, dict]:
    c = params.clip
    rng = np.random.default_rng(0)
    x = {
        "rgb": rng.integers(0, 256, (batch, c.frames, c.crop, c.crop, 3), dtype=np.uint8),
        "flow": rng.integers(
            0, 256, (batch, c.frames, c.crop, c.crop, 2 * c.flow_stack), dtype=np.uint8
        ),
    }
    return x, rng


def check_train(out: list[dict], smoke: bool, policy: str) -> None:
    import jax

    from pipeline.model import build_fused, count_params

    keras.mixed_precision.set_global_policy(policy)
    runs = [("final", FINAL, 32), ("vgg_m_2048", VGG_M, 64)]
    for name, overrides, batch in runs:
        params = _params({**overrides, **(SMOKE if smoke else {})})
        batch = 2 if smoke else batch
        model = build_fused(params, 101)
        outputs = list(model.output.keys())
        # what the fusion stage trains (pipeline/train.py, loss_weights): with also_late each
        # tower's own output, else the prediction; layers below the fusion point are frozen
        weights = {
            k: float(k in ("fused", "motion") if "fused" in outputs else k == "prediction")
            for k in outputs
        }
        model.compile(
            optimizer=keras.optimizers.SGD(1e-3, momentum=0.9),
            loss={k: "sparse_categorical_crossentropy" for k in outputs},
            loss_weights=weights,
        )
        x, rng = _clips(params, batch)
        y = {k: rng.integers(0, 101, batch) for k in outputs}
        x, y = jax.device_put(x), jax.device_put(y)  # the clips stay on the device
        start = time.perf_counter()
        for _ in range(2):
            model.train_on_batch(x, y)  # compile, warm up
        warm = time.perf_counter() - start
        steps = 2 if smoke else 20
        start = time.perf_counter()
        for _ in range(steps):
            model.train_on_batch(x, y)
        rate = steps * batch / (time.perf_counter() - start)
        _line(
            out,
            check="train",
            model=name,
            parameters=count_params(model),
            batch=batch,
            policy=policy,
            first_steps_s=round(warm, 1),
            clips_per_s=round(rate, 1),
            peak_gib=_peak_gib(),
        )
        if name == "final":
            model.predict_on_batch(x)  # compile
            start = time.perf_counter()
            for _ in range(steps):
                model.predict_on_batch(x)
            rate = steps * batch / (time.perf_counter() - start)
            _line(
                out,
                check="eval",
                model=name,
                batch=batch,
                policy=policy,
                clips_per_s=round(rate, 1),
                peak_gib=_peak_gib(),
            )
        del model
        keras.backend.clear_session()


def make_fixtures() -> None:
    """Write FIXTURES: OpenCV's DualTVL1 flow (OpenCV's defaults) of the test_tvl1 fixtures."""
    import cv2

    sys.path.insert(0, str(ROOT))
    from pipeline.flow_compute import create_tvl1
    from tests.test_tvl1 import SHIFT, _disc, _real_looking, _texture

    t = _params({}).flow.tvl1
    cv2.setNumThreads(1)
    i0 = np.stack([_texture((0, 0)), _disc(0), _real_looking()[0]])
    i1 = np.stack([_texture(SHIFT), _disc(1), _real_looking()[1]])
    flow = np.stack([create_tvl1(t).calc(a, b, None) for a, b in zip(i0, i1, strict=True)])
    names = np.array(["texture shifted (0.7, -1.3)", "disc on a static ramp", "photo, camera pan"])
    FIXTURES.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        FIXTURES, i0=i0, i1=i1, flow=flow, names=names, opencv=np.array(cv2.__version__)
    )
    print(f"wrote {FIXTURES} ({FIXTURES.stat().st_size} bytes, OpenCV {cv2.__version__})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="write every measurement to this file")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, on a CPU, < 1 minute")
    parser.add_argument("--only", choices=("tvl1", "train"), help="one part (train: with eval)")
    parser.add_argument("--policy", default="mixed_bfloat16", help="Keras dtype policy to train")
    parser.add_argument("--make-fixtures", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.make_fixtures:
        make_fixtures()
        return 0
    global JSON
    JSON = args.json
    if args.smoke:  # on the CPU, whatever else is there
        import jax

        jax.config.update("jax_platforms", "cpu")
    start = time.perf_counter()
    out: list[dict] = []
    print(
        f"gpu check: keras {keras.__version__} ({keras.backend.backend()}), device {_device()}"
        + (", smoke" if args.smoke else ""),
        flush=True,
    )
    if args.only in (None, "tvl1"):
        check_tvl1(out, args.smoke)
    if args.only in (None, "train"):
        check_train(out, args.smoke, args.policy)
    seconds = round(time.perf_counter() - start, 1)
    bad = [r for r in out if r.get("ok") is False]
    _line(out, check="done", seconds=seconds, agreement="ok" if not bad else "FAILED")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
