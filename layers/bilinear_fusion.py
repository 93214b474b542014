from __future__ import annotations

import keras
from keras import ops

from layers.base import Fusion

EPSILON = 1e-12


@keras.saving.register_keras_serializable(package="twostream")
class BilinearFusion(Fusion):
    """Bilinear fusion (paper eq. 5): outer products summed over all locations.

    ``y = Σ_i Σ_j x_a[i, j] ⊗ x_b[i, j]``, flattened so that ``y[p·D + q] = Σ_ij x_a[i, j, p]
    x_b[i, j, q]``. The spatial layout is gone: output ``(B, D·D)``, or ``(B, T, D·D)`` for
    rank-5 inputs (each of the T frames pooled on its own). Optional normalisation, as the
    paper uses it before a linear classifier: ``signed_sqrt`` gives ``sign(y)·sqrt(|y| + ε)``,
    then ``l2_normalize`` gives ``y / max(||y||₂, sqrt(ε))`` with ε = 1e-12; both off is the
    plain sum. Computed in float32 whatever the dtype policy: the sums over locations overflow
    float16.

    Example:

    >>> import numpy as np
    >>> from layers import BilinearFusion
    >>> a = np.ones((2, 3, 3, 4), "float32")
    >>> y = BilinearFusion(signed_sqrt=False, l2_normalize=False)([a, 2 * a])
    >>> tuple(y.shape), float(y[0, 5])
    ((2, 16), 18.0)
    """

    def __init__(
        self, signed_sqrt: bool = True, l2_normalize: bool = True, **kwargs: object
    ) -> None:
        super().__init__(**kwargs)
        self.signed_sqrt = bool(signed_sqrt)
        self.l2_normalize = bool(l2_normalize)

    def _output_shape(self, shape: tuple) -> tuple:
        return (*shape[:-3], shape[-1] ** 2)

    def _fuse(self, x_a: object, x_b: object) -> object:
        d = x_a.shape[-1]
        lead = ops.shape(x_a)[:-3]  # (B,) or (B, T)
        a = ops.reshape(ops.cast(x_a, "float32"), (*lead, -1, d))  # (..., H·W, D)
        b = ops.reshape(ops.cast(x_b, "float32"), (*lead, -1, d))
        y = ops.reshape(ops.einsum("...np,...nq->...pq", a, b), (*lead, d * d))
        if self.signed_sqrt:
            y = ops.sign(y) * ops.sqrt(ops.abs(y) + EPSILON)
        if self.l2_normalize:
            y = y / ops.sqrt(ops.maximum(ops.sum(ops.square(y), axis=-1, keepdims=True), EPSILON))
        return y

    def compute_output_spec(self, inputs: list) -> keras.KerasTensor:
        shape = self.compute_output_shape([tuple(x.shape) for x in inputs])
        return keras.KerasTensor(shape, dtype="float32")

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "signed_sqrt": self.signed_sqrt,
            "l2_normalize": self.l2_normalize,
        }
