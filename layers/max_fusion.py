from __future__ import annotations

import keras
from keras import ops

from layers.base import Fusion


@keras.saving.register_keras_serializable(package="twostream")
class MaxFusion(Fusion):
    """Max fusion (paper eq. 2): ``y[i, j, d] = max(x_a[i, j, d], x_b[i, j, d])``.

    Output: the inputs' shape, ``(B, H, W, D)`` or ``(B, T, H, W, D)``.

    Example:

    >>> import numpy as np
    >>> from layers import MaxFusion
    >>> a = np.array([1.0, -2.0, 3.0], "float32").reshape(1, 1, 1, 3)
    >>> b = np.array([0.0, 5.0, -1.0], "float32").reshape(1, 1, 1, 3)
    >>> [float(v) for v in MaxFusion()([a, b])[0, 0, 0]]
    [1.0, 5.0, 3.0]
    """

    def _fuse(self, x_a: object, x_b: object) -> object:
        return ops.maximum(x_a, x_b)
