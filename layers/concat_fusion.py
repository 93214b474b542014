from __future__ import annotations

import keras

from layers.base import Fusion, interleave


@keras.saving.register_keras_serializable(package="twostream")
class ConcatFusion(Fusion):
    """Concatenation fusion (paper eq. 3), channels interleaved.

    ``y[i, j, 2d] = x_a[i, j, d]`` and ``y[i, j, 2d + 1] = x_b[i, j, d]`` (0-based; the paper's
    1-based ``2d - 1`` / ``2d``), so channel ``d`` of both towers sit side by side.

    Output: ``(B, H, W, 2D)`` or ``(B, T, H, W, 2D)``.

    Example:

    >>> import numpy as np
    >>> from layers import ConcatFusion
    >>> a = np.array([1.0, 2.0], "float32").reshape(1, 1, 1, 2)
    >>> b = np.array([10.0, 20.0], "float32").reshape(1, 1, 1, 2)
    >>> [float(v) for v in ConcatFusion()([a, b])[0, 0, 0]]
    [1.0, 10.0, 2.0, 20.0]
    """

    def _output_shape(self, shape: tuple) -> tuple:
        return (*shape[:-1], 2 * shape[-1])

    def _fuse(self, x_a: object, x_b: object) -> object:
        return interleave(x_a, x_b)
