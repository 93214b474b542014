"""The keras engine's TV-L1 against OpenCV's on the fixtures of tests/test_tvl1.py.

    KERAS_BACKEND=tensorflow python benchmarks/tvl1_agreement.py
    KERAS_BACKEND=jax python benchmarks/tvl1_agreement.py

Prints, per fixture, the end-point difference to OpenCV (mean / 95th percentile, px) with the
stopping rule off on both sides (epsilon 0) and with OpenCV's defaults, then OpenCV against
itself when its input moves by 1e-6 of the grey range (how sensitive the algorithm is), and
the error of both against the known shift of the texture.
"""

import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from pipeline import tvl1  # noqa: E402
from pipeline.params import parse_params  # noqa: E402
from tests.test_tvl1 import (  # noqa: E402
    SHIFT,
    _disc,
    _epe,
    _opencv,
    _real_looking,
    _texture,
    moved,
    parse_params_raw,
)

NAMES = ("texture shifted (0.7, -1.3)", "disc on a static ramp", "photo, camera pan")


def main() -> None:
    t = parse_params(parse_params_raw()).flow.tvl1
    i0 = np.stack([_texture((0, 0)), _disc(0), _real_looking()[0]])
    i1 = np.stack([_texture(SHIFT), _disc(1), _real_looking()[1]])
    print(f"keras {keras.__version__} on {keras.backend.backend()}, frames {i0.shape[1:]}")
    rng = np.random.default_rng(0)
    results = {}
    for label, eps in (("epsilon 0", 0.0), ("defaults", t.epsilon)):
        q = dataclasses.replace(t, epsilon=eps)
        ours, theirs = tvl1.tvl1(i0, i1, q), _opencv(i0, i1, q)
        noisy = [moved(x, rng) for x in (i0, i1)]
        again = _opencv(*noisy, q)
        results[label] = (_epe(ours, theirs), _epe(again, theirs), ours, theirs)
    print(
        "| fixture | eps 0: keras vs OpenCV | eps 0: OpenCV vs itself | defaults: keras vs "
        "OpenCV | defaults: OpenCV vs itself |"
    )
    print("|---|---|---|---|---|")
    for k, name in enumerate(NAMES):
        cells = []
        for label in ("epsilon 0", "defaults"):
            for d in results[label][:2]:
                cells.append(f"{d[k].mean():.1e} / {np.percentile(d[k], 95):.1e}")
        print(f"| {name} | " + " | ".join(cells) + " |")
    ours, theirs = results["defaults"][2:]
    truth = np.array(SHIFT, np.float32)
    inner = (slice(4, -4), slice(4, -4))
    print(
        f"error against the known shift (defaults): keras {_epe(ours[0][inner], truth).mean():.4f}"
        f" px, OpenCV {_epe(theirs[0][inner], truth).mean():.4f} px"
    )


if __name__ == "__main__":
    main()
