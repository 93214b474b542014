"""Keras layers of the two-stream fusion paper, written with ``keras.ops`` only.

They run on any Keras 3 backend (TensorFlow, JAX, PyTorch) and are registered for
serialisation, so a ``.keras`` file that uses them loads without ``custom_objects`` once this
package is imported. Fusion layers are called on ``[x_a, x_b]`` (appearance, motion) of equal
shape ``(B, H, W, D)`` or ``(B, T, H, W, D)``.
"""

from layers.base import Fusion
from layers.bilinear_fusion import BilinearFusion
from layers.concat_fusion import ConcatFusion
from layers.conv_fusion import ConvFusion
from layers.lrn import LocalResponseNormalization
from layers.max_fusion import MaxFusion
from layers.normalization import FlowNormalization, RGBNormalization
from layers.sum_fusion import SumFusion

__all__ = [
    "BilinearFusion",
    "ConcatFusion",
    "ConvFusion",
    "FlowNormalization",
    "Fusion",
    "LocalResponseNormalization",
    "MaxFusion",
    "RGBNormalization",
    "SumFusion",
]
