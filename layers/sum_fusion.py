from __future__ import annotations

import keras
from keras import ops

from layers.base import Fusion


@keras.saving.register_keras_serializable(package="twostream")
class SumFusion(Fusion):
    """Sum fusion (paper eq. 1): ``y[i, j, d] = x_a[i, j, d] + x_b[i, j, d]``.

    Output: the inputs' shape, ``(B, H, W, D)`` or ``(B, T, H, W, D)``. Which channel of one
    tower meets which of the other is arbitrary; the layers after it learn the correspondence.

    Example:

    >>> import numpy as np
    >>> from layers import SumFusion
    >>> a, b = np.ones((2, 4, 4, 3), "float32"), np.full((2, 4, 4, 3), 2.0, "float32")
    >>> y = SumFusion()([a, b])
    >>> tuple(y.shape), float(y[0, 0, 0, 0])
    ((2, 4, 4, 3), 3.0)
    """

    def _fuse(self, x_a: object, x_b: object) -> object:
        return ops.add(x_a, x_b)
