from __future__ import annotations

import keras
from keras import ops

from layers.base import check_rank


@keras.saving.register_keras_serializable(package="twostream")
class LocalResponseNormalization(keras.layers.Layer):
    """Local response normalisation across channels (Krizhevsky et al.), as VGG-M uses it.

    ``y[..., d] = x[..., d] / (bias + alpha · Σ_{c = d - r}^{d + r} x[..., c]²) ** beta`` with
    ``r = depth_radius`` and channels outside ``[0, D)`` counting as zero. The parameters mean
    exactly what they mean in ``tf.nn.local_response_normalization`` (which this matches
    numerically): ``depth_radius`` is the half-width and ``alpha`` is *not* divided by the
    window size. Works on ``(B, H, W, D)`` and ``(B, T, H, W, D)``; computed in float32.

    Converting published values (the two conventions differ by the window size n):

    - Caffe ``LRN(local_size=n, alpha=α, beta=β, k=κ)`` computes ``κ + (α / n)·Σ x²``
      (BVLC/caffe ``src/caffe/layers/lrn_layer.cpp``, ``alpha_over_size``):
      ``depth_radius=(n - 1) // 2, alpha=α / n, beta=β, bias=κ``, i.e. :meth:`from_caffe`.
      VGG-M-2048's prototxt (VGG_CNN_M_2048, Chatfield et al. 2014) has ``local_size: 5
      alpha: 0.0005 beta: 0.75 k: 2``: ``depth_radius=2, alpha=1e-4, beta=0.75, bias=2``.
    - MatConvNet ``vl_nnnormalize`` with ``param = [N κ α β]`` does not divide α:
      ``depth_radius=(N - 1) // 2, alpha=α, beta=β, bias=κ``. Its importer writes Caffe's
      layer as ``[local_size, k, alpha / local_size, beta]`` (vlfeat/matconvnet
      ``utils/layers.py``, ``CaffeLRN``), so ``imagenet-vgg-m-2048.mat`` holds
      ``[5 2 1e-4 0.75]``: the same per-element α of 1e-4. py-MDNet, which runs MatConvNet's
      VGG-M weights, computes ``x / (2 + 1e-4·Σ x²)^0.75`` (hyeonseobnam/py-MDNet @a605a62
      ``modules/model.py`` l. 27-43, ``LRN``; later commits use ``nn.LocalResponseNorm``).

    Example:

    >>> import numpy as np
    >>> from layers import LocalResponseNormalization
    >>> lrn = LocalResponseNormalization.from_caffe(size=5, alpha=0.0005, beta=0.75, k=2.0)
    >>> lrn.depth_radius, lrn.bias, lrn.alpha, lrn.beta  # MatConvNet's [5 2 1e-4 0.75]
    (2, 2.0, 0.0001, 0.75)
    >>> x = np.full((1, 1, 1, 3), 10.0, "float32")  # middle channel: 10 / (1 + 0.01·300)
    >>> y = LocalResponseNormalization(1, bias=1.0, alpha=0.01, beta=1.0)(x)
    >>> round(float(y[0, 0, 0, 1]), 4)
    2.5
    """

    def __init__(
        self,
        depth_radius: int = 5,
        bias: float = 1.0,
        alpha: float = 1.0,
        beta: float = 0.5,
        **kwargs: object,
    ) -> None:
        super().__init__(**kwargs)
        if not isinstance(depth_radius, int) or depth_radius < 0:
            raise ValueError(f"depth_radius must be an int >= 0; got {depth_radius!r}")
        self.depth_radius = depth_radius
        self.bias = float(bias)
        self.alpha = float(alpha)
        self.beta = float(beta)

    @classmethod
    def from_caffe(
        cls, size: int, alpha: float, beta: float, k: float = 1.0, **kwargs: object
    ) -> LocalResponseNormalization:
        """The layer for Caffe's ``LRN(local_size=size, alpha, beta, k)`` (size odd)."""
        if size < 1 or size % 2 == 0:
            raise ValueError(f"Caffe's local_size must be odd and positive; got {size}")
        return cls(depth_radius=(size - 1) // 2, bias=k, alpha=alpha / size, beta=beta, **kwargs)

    def build(self, input_shape: tuple) -> None:
        check_rank(type(self).__name__, tuple(input_shape))

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return tuple(input_shape)

    def call(self, x: object) -> object:
        d, r = x.shape[-1], self.depth_radius
        x32 = ops.cast(x, "float32")
        squares = ops.pad(ops.square(x32), [(0, 0)] * (len(x.shape) - 1) + [(r, r)])
        window = squares[..., 0:d]
        for i in range(1, 2 * r + 1):
            window = window + squares[..., i : i + d]
        y = x32 * ops.power(self.bias + self.alpha * window, -self.beta)
        return ops.cast(y, self.compute_dtype)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "depth_radius": self.depth_radius,
            "bias": self.bias,
            "alpha": self.alpha,
            "beta": self.beta,
        }
