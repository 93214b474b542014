from __future__ import annotations

import itertools

import keras
import numpy as np
from keras import ops

from layers.base import Fusion, interleave

KERNEL_INITS = ("sum", "sum_gaussian", "random")


def fusion_kernel(
    kernel_size: tuple[int, ...],
    channels: int,
    filters: int,
    kernel_init: str,
    init_weights: tuple[float, float],
    sigma: float = 1.0,
) -> np.ndarray:
    """The initial kernel ``(*kernel_size, 2D, filters)`` for interleaved inputs (NumPy).

    ``"sum"``: ``[w_a·I; w_b·I]`` at the centre tap, zero elsewhere. ``"sum_gaussian"``: the same
    identities spread over all taps by a Gaussian of ``sigma`` taps, normalised to sum to one.
    """
    if filters != channels:
        raise ValueError(
            f"ConvFusion(kernel_init={kernel_init!r}) starts as a weighted sum of the two towers, "
            f"which needs filters == D; got filters={filters}, D={channels}. Use "
            "kernel_init='random' for another number of filters"
        )
    centre = np.array([k // 2 for k in kernel_size])
    taps = np.zeros(kernel_size, np.float64)
    if kernel_init == "sum":
        taps[tuple(centre)] = 1.0
    else:
        for idx in itertools.product(*(range(k) for k in kernel_size)):
            taps[idx] = np.exp(-np.sum((np.array(idx) - centre) ** 2) / (2 * sigma**2))
        taps /= taps.sum()
    kernel = np.zeros((*kernel_size, 2 * channels, filters), np.float64)
    d = np.arange(channels)
    kernel[..., 2 * d, d] = init_weights[0] * taps[..., None]
    kernel[..., 2 * d + 1, d] = init_weights[1] * taps[..., None]
    return kernel


@keras.saving.register_keras_serializable(package="twostream")
class ConvFusion(Fusion):
    """Convolutional fusion (paper eq. 4): interleaved concatenation, then a convolution.

    ``y = y_cat * f + b`` with ``y_cat`` as in :class:`ConcatFusion`, ``f`` of shape
    ``(kh, kw, 2D, D')`` (rank-4 inputs, a 2D convolution) or ``(kt, kh, kw, 2D, D')``
    (rank-5 inputs: the paper's 3D conv fusion is ``kernel_size=(3, 3, 3)``), stride 1,
    ``"same"`` padding, and a bias ``b`` of ``D'`` = ``filters`` (default D) values.

    Initialisers (``kernel_init``; the bias starts at zero):

    - ``"sum"``: ``f = [w_a·I; w_b·I]`` at the centre tap, so before training
      ``y = w_a·x_a + w_b·x_b``: sum fusion with the default ``init_weights=(1, 1)``. The
      released code's default is ``init_weights=(0.25, 0.75)`` (appearance, motion).
    - ``"sum_gaussian"``: those identities spread over the taps by a normalised Gaussian of
      σ = 1 (the paper's 3D conv fusion init). With a 1×1 kernel it equals ``"sum"``.
    - ``"random"``: Glorot uniform (any ``filters``).

    Parameters: ``prod(kernel_size)·2D·D' + D'``; ``2·512·512 + 512`` for a 1×1 fusion of two
    512-channel maps, ``27·1024·512 + 512`` for the paper's 3×3×3.

    Output: ``(B, H, W, D')`` or ``(B, T, H, W, D')``.

    Example:

    >>> import numpy as np
    >>> from layers import ConvFusion
    >>> a, b = np.ones((1, 5, 4, 4, 8), "float32"), np.full((1, 5, 4, 4, 8), 3.0, "float32")
    >>> fusion = ConvFusion(kernel_size=(3, 3, 3), kernel_init="sum", init_weights=(0.25, 0.75))
    >>> y = fusion([a, b])
    >>> tuple(y.shape), round(float(y[0, 2, 2, 2, 0]), 5), fusion.count_params()
    ((1, 5, 4, 4, 8), 2.5, 3464)
    """

    def __init__(
        self,
        filters: int | None = None,
        kernel_size: int | tuple[int, ...] = 1,
        kernel_init: str = "sum",
        init_weights: tuple[float, float] = (1.0, 1.0),
        **kwargs: object,
    ) -> None:
        super().__init__(**kwargs)
        if kernel_init not in KERNEL_INITS:
            raise ValueError(
                f"ConvFusion kernel_init must be one of {KERNEL_INITS}; got {kernel_init!r}"
            )
        if filters is not None and (not isinstance(filters, int) or filters < 1):
            raise ValueError(
                f"ConvFusion filters must be a positive integer or None; got {filters!r}"
            )
        if len(tuple(init_weights)) != 2:
            raise ValueError(f"ConvFusion init_weights must be (w_a, w_b); got {init_weights!r}")
        self.filters = filters
        self.kernel_size = kernel_size
        self.kernel_init = kernel_init
        self.init_weights = tuple(float(w) for w in init_weights)

    def _kernel_size(self, rank: int) -> tuple[int, ...]:
        n = rank - 2  # spatial (and temporal) dims
        ks = (
            (self.kernel_size,) * n
            if isinstance(self.kernel_size, int)
            else tuple(self.kernel_size)
        )
        if len(ks) != n or any(not isinstance(k, int) or k < 1 or k % 2 == 0 for k in ks):
            dims = "(kh, kw)" if n == 2 else "(kt, kh, kw)"
            raise ValueError(
                f"ConvFusion on rank-{rank} inputs needs kernel_size as one odd int or {dims} of "
                f"odd ints (odd, so that there is a centre tap); got {self.kernel_size!r}"
            )
        return ks

    def build(self, input_shape: object) -> None:
        shape = self._check(input_shape)
        ks, d = self._kernel_size(len(shape)), shape[-1]
        filters = self.filters or d
        if self.kernel_init == "random":
            init = keras.initializers.GlorotUniform()
        else:
            value = fusion_kernel(ks, d, filters, self.kernel_init, self.init_weights)
            init = keras.initializers.Constant(value)
        self.kernel = self.add_weight(shape=(*ks, 2 * d, filters), initializer=init, name="kernel")
        self.bias = self.add_weight(shape=(filters,), initializer="zeros", name="bias")

    def _output_shape(self, shape: tuple) -> tuple:
        return (*shape[:-1], self.filters or shape[-1])

    def _fuse(self, x_a: object, x_b: object) -> object:
        y = ops.conv(interleave(x_a, x_b), self.kernel, strides=1, padding="same")
        return ops.add(y, self.bias)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "kernel_init": self.kernel_init,
            "init_weights": self.init_weights,
        }
