from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="twostream")
class RGBNormalization(keras.layers.Layer):
    """The appearance tower's first layer: uint8 RGB to what the backbone expects.

    ``y = (x - mean) · scale`` per channel, computed in the layer's dtype; ``mean`` is one value
    or one per channel (RGB order). VGG nets (ImageNet): ``mean=(123.68, 116.78, 103.94)``,
    ``scale=1``.

    Example:

    >>> import numpy as np
    >>> from layers import RGBNormalization
    >>> x = np.full((1, 1, 1, 3), 128, "uint8")
    >>> [round(float(v), 2) for v in RGBNormalization((123.68, 116.78, 103.94))(x)[0, 0, 0]]
    [4.32, 11.22, 24.06]
    """

    def __init__(
        self, mean: float | tuple[float, ...] = 127.5, scale: float = 1.0, **kwargs: object
    ) -> None:
        super().__init__(**kwargs)
        self.mean = tuple(float(m) for m in mean) if isinstance(mean, list | tuple) else float(mean)
        self.scale = float(scale)

    def call(self, x: object) -> object:
        mean = ops.convert_to_tensor(self.mean, dtype=self.compute_dtype)
        return (ops.cast(x, self.compute_dtype) - mean) * self.scale

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return tuple(input_shape)

    def get_config(self) -> dict:
        return {**super().get_config(), "mean": self.mean, "scale": self.scale}


@keras.saving.register_keras_serializable(package="twostream")
class FlowNormalization(keras.layers.Layer):
    """The motion tower's first layer: uint8 flow (128 = zero) to centred displacements.

    ``y = x - mean`` (``mean`` 128: about 6.4× pixels at the default bound of 20 px, as the paper
    feeds it: never squeezed to ±1, where sub-pixel motion vanishes), then, with
    ``centre=True``, each channel's mean over the frame is subtracted: every flow field loses
    its mean displacement (global camera motion), as in Simonyan & Zisserman's mean flow
    subtraction. ``mean`` is one value or one per channel. The authors' released temporal
    streams subtract only ``averageImage = ones(1,1,20)*128`` (feichtenhofer/twostreamfusion
    ``cnn_ucf101_temporal.m``): ``FlowNormalization(128.0, centre=False)``. Works on
    ``(..., H, W, 2L)``.

    Example:

    >>> import numpy as np
    >>> from layers import FlowNormalization
    >>> x = np.array([[130, 126], [128, 128]], "uint8").reshape(1, 2, 2, 1)
    >>> [float(v) for v in np.ravel(FlowNormalization()(x))]
    [2.0, -2.0, 0.0, 0.0]
    >>> [float(v) for v in np.ravel(FlowNormalization(centre=False)(x + 2))]
    [4.0, 0.0, 2.0, 2.0]
    """

    def __init__(
        self, mean: float | tuple[float, ...] = 128.0, centre: bool = True, **kwargs: object
    ) -> None:
        super().__init__(**kwargs)
        self.mean = tuple(float(m) for m in mean) if isinstance(mean, list | tuple) else float(mean)
        self.centre = bool(centre)

    def call(self, x: object) -> object:
        mean = ops.convert_to_tensor(self.mean, dtype=self.compute_dtype)
        y = ops.cast(x, self.compute_dtype) - mean
        return y - ops.mean(y, axis=(-3, -2), keepdims=True) if self.centre else y

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return tuple(input_shape)

    def get_config(self) -> dict:
        return {**super().get_config(), "mean": self.mean, "centre": self.centre}
