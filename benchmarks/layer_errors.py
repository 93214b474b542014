"""Max error of every layer in layers/ against the NumPy references of tests/test_layers.py.

    KERAS_BACKEND=tensorflow python benchmarks/layer_errors.py
    KERAS_BACKEND=jax python benchmarks/layer_errors.py

Prints one line per layer and input rank: max |layer - reference| and max relative error, on
float32 inputs drawn from N(0, 1) (LRN: ×3, bilinear: the same inputs as the tests).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from layers import (  # noqa: E402
    BilinearFusion,
    ConcatFusion,
    ConvFusion,
    LocalResponseNormalization,
    MaxFusion,
    SumFusion,
)
from tests.test_layers import (  # noqa: E402
    SHAPES,
    _np,
    _pair,
    ref_bilinear,
    ref_concat,
    ref_conv_same,
    ref_lrn,
)


def _report(name: str, rank: int, got: np.ndarray, want: np.ndarray) -> None:
    err = np.abs(got - want)
    rel = err / np.maximum(np.abs(want), 1e-6)
    print(f"{name:<46} rank {rank}  max abs {err.max():.2e}  max rel {rel.max():.2e}")


def main() -> None:
    print(f"backend: {keras.backend.backend()}, keras {keras.__version__}")
    for rank in (4, 5):
        a, b = _pair(rank, seed=1)
        _report("SumFusion", rank, _np(SumFusion()([a, b])), a.astype(np.float64) + b)
        _report("MaxFusion", rank, _np(MaxFusion()([a, b])), np.maximum(a, b).astype(np.float64))
        _report("ConcatFusion", rank, _np(ConcatFusion()([a, b])), ref_concat(a, b))
        ks = 3 if rank == 4 else (3, 3, 3)
        conv = ConvFusion(kernel_size=ks, kernel_init="random")
        y = _np(conv([a, b]))
        kernel, bias = _np(conv.kernel), _np(conv.bias)
        _report(f"ConvFusion(kernel_size={ks}, random)", rank, y,
                ref_conv_same(ref_concat(a, b), kernel, bias))  # fmt: skip
        _report(f"ConvFusion(kernel_size={ks}, sum) vs a+b", rank,
                _np(ConvFusion(kernel_size=ks)([a, b])), a.astype(np.float64) + b)  # fmt: skip
        for sq, l2 in ((False, False), (True, True)):
            y = _np(BilinearFusion(signed_sqrt=sq, l2_normalize=l2)([a, b]))
            _report(
                f"BilinearFusion(signed_sqrt={sq}, l2={l2})", rank, y, ref_bilinear(a, b, sq, l2)
            )
        x = _pair(rank, seed=4, shape=(*SHAPES[rank][:-1], 96))[0] * 3
        lrn = LocalResponseNormalization.from_caffe(5, 1e-4, 0.75, 2.0)
        _report(
            "LocalResponseNormalization (VGG-M)", rank, _np(lrn(x)), ref_lrn(x, 2, 2.0, 2e-5, 0.75)
        )


if __name__ == "__main__":
    main()
