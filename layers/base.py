"""The base of every fusion layer: input validation and shape inference in one place.

A fusion layer is called on ``[x_a, x_b]``: the appearance (RGB) and motion (flow) feature
maps at the same network depth, both ``(B, H, W, D)`` or both ``(B, T, H, W, D)``. Subclasses
implement ``_fuse(x_a, x_b)`` and, when the output shape differs from the inputs',
``_output_shape(shape)``.
"""

from __future__ import annotations

import keras
from keras import ops


def _describe(input_shape: object) -> str:
    if isinstance(input_shape, list | tuple) and all(
        isinstance(s, list | tuple) for s in input_shape
    ):
        return f"{len(input_shape)} tensors of shapes " + ", ".join(
            str(tuple(s)) for s in input_shape
        )
    return (
        f"one tensor of shape {tuple(input_shape)}"
        if isinstance(input_shape, list | tuple)
        else repr(input_shape)
    )


def check_rank(layer: str, shape: tuple, what: str = "input") -> None:
    """Raise unless ``shape`` is rank 4 ``(B, H, W, D)`` or 5 ``(B, T, H, W, D)`` with known D."""
    if len(shape) not in (4, 5):
        raise ValueError(
            f"{layer} expects rank-4 (B, H, W, D) or rank-5 (B, T, H, W, D) {what}s; "
            f"got shape {shape} (rank {len(shape)})"
        )
    if shape[-1] is None:
        raise ValueError(f"{layer} needs a known channel dimension D; got shape {shape}")


def interleave(x_a: object, x_b: object) -> object:
    """Channels interleaved: ``y[..., 2d] = x_a[..., d]``, ``y[..., 2d + 1] = x_b[..., d]``."""
    d = x_a.shape[-1]
    stacked = ops.stack([x_a, x_b], axis=-1)  # (..., D, 2): a_d, b_d next to each other
    return ops.reshape(stacked, (*ops.shape(x_a)[:-1], 2 * d))


class Fusion(keras.layers.Layer):
    """Fuses two feature maps of equal shape, ``[x_a, x_b]`` (appearance, motion).

    Raises ``ValueError`` naming the shapes it got when called on anything but two tensors of
    equal rank-4 or rank-5 shape.
    """

    def _check(self, input_shape: object) -> tuple:
        name = type(self).__name__
        pair = isinstance(input_shape, list | tuple) and len(input_shape) == 2
        if not pair or not all(isinstance(s, list | tuple) for s in input_shape):
            raise ValueError(
                f"{name} must be called on a list of two tensors [x_a, x_b] (appearance, "
                f"motion); got {_describe(input_shape)}"
            )
        a, b = (tuple(s) for s in input_shape)
        check_rank(name, a)
        mismatch = len(a) != len(b) or any(
            i is not None and j is not None and i != j for i, j in zip(a, b, strict=False)
        )
        if mismatch:
            raise ValueError(
                f"{name} needs x_a and x_b of the same shape; got {a} and {b}"
                + (" (different channel counts D)" if len(a) == len(b) and a[-1] != b[-1] else "")
            )
        return a

    def build(self, input_shape: object) -> None:
        self._check(input_shape)

    def compute_output_shape(self, input_shape: object) -> tuple:
        return self._output_shape(self._check(input_shape))

    def _output_shape(self, shape: tuple) -> tuple:
        return shape

    def call(self, inputs: list) -> object:
        x_a, x_b = inputs
        return self._fuse(x_a, x_b)

    def _fuse(self, x_a: object, x_b: object) -> object:
        raise NotImplementedError
