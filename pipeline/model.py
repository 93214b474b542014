"""Two-stream networks: backbones with named taps, and every fusion of the paper.

Models take the reader's uint8 clips, ``rgb (B, T, H, W, 3)`` and ``flow (B, T, H, W, 2L)``,
and return a dict of class probabilities whose ``"prediction"`` is the model's answer. Every
2D layer is wrapped in ``TimeDistributed``, so the T snippets of a clip go through the towers
as frames of one tensor and temporal fusion (3D pooling, 3D convolution) sees ``(B, T, H, W, D)``.

Each tower is a list of stages ending at the taps ``relu1`` … ``relu5``, ``pool5``, ``fc6``,
``fc7``, ``fc8`` (class probabilities averaged over T). Its layers are named ``rgb_<layer>`` or
``flow_<layer>``. As in the paper, the motion tower is fused *into* the appearance tower: after
the fusion point the fused tower continues with the appearance tower's layers (same names, so
:func:`init_from_streams` copies a trained RGB stream into it); with ``fusion.also_late`` the
motion tower is kept whole, each tower has its own output and the two are averaged.

Run ``python -m pipeline.model [-S key=value ...]`` for the summary of the configuration in
``params.yaml`` (``-S`` overrides as in ``dvc exp run -S``); its last line is ``params: N``.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
import yaml

from layers import (
    BilinearFusion,
    ConcatFusion,
    ConvFusion,
    FlowNormalization,
    LocalResponseNormalization,
    MaxFusion,
    RGBNormalization,
    SumFusion,
)
from pipeline import contracts
from pipeline.params import PARAMS_FILE, Params, PipelineError, parse_params

STAGES = ("relu1", "relu2", "relu3", "relu4", "relu5", "pool5", "fc6", "fc7", "fc8")
VGG16_MEAN = (123.68, 116.779, 103.939)
"""RGB: ``keras.applications.vgg16.preprocess_input``'s (Caffe's) BGR mean, reversed."""
FIRST_CONV = {"vgg16": "block1_conv1", "vgg_m_2048": "conv1"}
FUSIONS = {"sum": SumFusion, "max": MaxFusion, "concat": ConcatFusion}

Stage = tuple[str, Callable[[keras.KerasTensor], keras.KerasTensor]]


class ModelError(PipelineError):
    """A configuration that cannot be built; the message says why."""


def _td(layer: keras.layers.Layer, name: str) -> keras.layers.TimeDistributed:
    return keras.layers.TimeDistributed(layer, name=name)


def _ceil_pool(x: keras.KerasTensor, size: int, stride: int, name: str) -> keras.KerasTensor:
    """Max pooling that rounds its output size up, as Caffe and MatConvNet do.

    Keras rounds down; padding the bottom and right with zeros first gives Caffe's size. The
    inputs are ReLU (or LRN of ReLU) outputs, never negative, so zeros never win the max.
    """
    pads = _ceil_pads(x.shape[-3:-1], size, stride)
    if any(pads):
        x = _td(keras.layers.ZeroPadding2D(((0, pads[0]), (0, pads[1]))), f"{name}_pad")(x)
    return _td(keras.layers.MaxPooling2D(size, stride), name)(x)


def _ceil_pads(hw: tuple[int, int], size: int, stride: int) -> list[int]:
    """The bottom and right padding after which Keras' round-down pooling gives the round-up
    output size of Caffe and MatConvNet (``ceil((n - size) / stride) + 1``)."""
    return [(-(-(n - size) // stride)) * stride + size - n for n in hw]


def _pool5_3d(
    x: keras.KerasTensor, name: str, size: int = 2, ceil: bool = False
) -> keras.KerasTensor:
    """The paper's 3D pooling: the backbone's 2D pool5 window over all T frames, stride 2 (T
    collapses to 1), as cnn_ucf101_fusion.m makes it from the 2D pool5 (``poolSize =
    [pool5.poolSize nFrames]``, ``stride = [pool5.stride 2]``): VGG-16 2×2 rounding down as
    Keras' pools, VGG-M 3×3 rounding up (``ceil``) as its 2D pools (:func:`_ceil_pool`)."""
    t = x.shape[1]
    pads = _ceil_pads(x.shape[2:4], size, 2) if ceil else [0, 0]
    if any(pads):
        x = keras.layers.ZeroPadding3D(((0, 0), (0, pads[0]), (0, pads[1])), name=f"{name}_pad")(x)
    return keras.layers.MaxPooling3D((t, size, size), strides=(2, 2, 2), name=name)(x)


def _pool5(pool3d: bool, name: str) -> Callable[[keras.KerasTensor], keras.KerasTensor]:
    """pool5 of VGG-16 and ``small``: 2×2 max pooling per frame, or the paper's 3D pooling."""
    if pool3d:
        return lambda x: _pool5_3d(x, name)
    return lambda x: _td(keras.layers.MaxPooling2D(2, 2), name)(x)


def _global_pool5(pool3d: bool, name: str) -> Callable[[keras.KerasTensor], keras.KerasTensor]:
    """pool5 of ``small``: max over the whole map of each frame, or over the whole clip (3D)."""

    def run(x: keras.KerasTensor) -> keras.KerasTensor:
        if pool3d:
            return keras.layers.MaxPooling3D(x.shape[1:4], name=name)(x)
        return _td(keras.layers.GlobalMaxPooling2D(keepdims=True), name)(x)

    return run


def _head(p: str, classes: int, dropout: float, fc: tuple[int, int]) -> list[Stage]:
    """fc6, fc7 (ReLU + dropout) and fc8 (softmax, averaged over the T snippets)."""

    def fc6(x: keras.KerasTensor) -> keras.KerasTensor:
        x = _td(keras.layers.Flatten(), f"{p}flatten")(x)
        x = _td(keras.layers.Dense(fc[0], activation="relu"), f"{p}fc6")(x)
        return keras.layers.Dropout(dropout, name=f"{p}drop6")(x)

    def fc7(x: keras.KerasTensor) -> keras.KerasTensor:
        x = _td(keras.layers.Dense(fc[1], activation="relu"), f"{p}fc7")(x)
        return keras.layers.Dropout(dropout, name=f"{p}drop7")(x)

    return [("fc6", fc6), ("fc7", fc7), ("fc8", lambda x: _classify(x, classes, f"{p}fc8"))]


def _classify(x: keras.KerasTensor, classes: int, name: str) -> keras.KerasTensor:
    """Class scores per snippet, softmax, then averaged over T: ``(B, classes)``."""
    x = _td(keras.layers.Dense(classes), name)(x)
    x = keras.layers.Softmax(name=f"{name}_softmax", dtype="float32")(x)
    return keras.layers.GlobalAveragePooling1D(name=f"{name}_average")(x)


def vgg_m_2048(p: str, classes: int, dropout: float, pool3d: bool, flow: bool) -> list[Stage]:
    """VGG-M-2048 (Chatfield et al. 2014), the paper's ablation backbone.

    conv1 96×7×7/2, LRN, pool 3×3/2; conv2 256×5×5/2 pad 1, LRN, pool 3×3/2; conv3-5 512×3×3
    pad 1; pool5 3×3/2; fc6 4096; fc7 2048. Pools round up (ReLU5 is 13×13 at 224²). LRN as
    the Caffe prototxt has it (local_size 5, alpha 0.0005, beta 0.75, k 2: per element α 1e-4,
    MatConvNet's ``[5 2 1e-4 0.75]``; docs/models.md, Backbone constants). The temporal net drops
    norm2, as in the paper.
    """

    def lrn(name: str) -> LocalResponseNormalization:
        return LocalResponseNormalization.from_caffe(5, 5e-4, 0.75, 2.0, name=f"{p}{name}")

    def conv(x: keras.KerasTensor, filters: int, k: int, stride: int, pad: int, name: str):  # noqa: ANN202
        if pad:
            x = _td(keras.layers.ZeroPadding2D(pad), f"{p}{name}_pad")(x)
        layer = keras.layers.Conv2D(filters, k, strides=stride, activation="relu")
        return _td(layer, f"{p}{name}")(x)

    def relu3(x: keras.KerasTensor) -> keras.KerasTensor:
        if not flow:
            x = lrn("norm2")(x)
        return conv(_ceil_pool(x, 3, 2, f"{p}pool2"), 512, 3, 1, 1, "conv3")

    return [
        ("relu1", lambda x: conv(x, 96, 7, 2, 0, "conv1")),
        (
            "relu2",
            lambda x: conv(_ceil_pool(lrn("norm1")(x), 3, 2, f"{p}pool1"), 256, 5, 2, 1, "conv2"),
        ),
        ("relu3", relu3),
        ("relu4", lambda x: conv(x, 512, 3, 1, 1, "conv4")),
        ("relu5", lambda x: conv(x, 512, 3, 1, 1, "conv5")),
        (
            "pool5",
            lambda x: (
                _pool5_3d(x, f"{p}pool5", 3, ceil=True)
                if pool3d
                else _ceil_pool(x, 3, 2, f"{p}pool5")
            ),
        ),
        *_head(p, classes, dropout, (4096, 2048)),
    ]


def vgg16(p: str, classes: int, dropout: float, pool3d: bool, flow: bool) -> list[Stage]:
    """VGG-16 as ``keras.applications.VGG16`` builds it (layer names ``block<b>_conv<c>``),
    ReLU<b> being the output of block b's last convolution; fc6 and fc7 have 4096 units."""
    blocks = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))

    def block(b: int) -> Callable:
        def run(x: keras.KerasTensor) -> keras.KerasTensor:
            if b > 1:
                x = _td(keras.layers.MaxPooling2D(2, 2), f"{p}block{b - 1}_pool")(x)
            filters, convs = blocks[b - 1]
            for c in range(1, convs + 1):
                layer = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")
                x = _td(layer, f"{p}block{b}_conv{c}")(x)
            return x

        return run

    return [
        *((f"relu{b}", block(b)) for b in range(1, 6)),
        ("pool5", _pool5(pool3d, f"{p}block5_pool")),
        *_head(p, classes, dropout, (4096, 4096)),
    ]


def _replicated() -> bool:
    """Built under a tf.distribute strategy of several replicas (or workers)?

    BatchNorm then synchronises its batch statistics, so that every replica and worker keeps
    the same moving averages. (TensorFlow only; elsewhere, and on one device, plain BatchNorm.)
    """
    if keras.backend.backend() != "tensorflow":
        return False
    import tensorflow as tf

    return tf.distribute.has_strategy() and tf.distribute.get_strategy().num_replicas_in_sync > 1


def small(p: str, classes: int, dropout: float, pool3d: bool, flow: bool) -> list[Stage]:
    """A small, fast backbone for CPU and the synthetic dataset: five 3×3 conv + BatchNorm +
    ReLU blocks (32, 64, 128, 128, 128 filters; 2×2 pooling before blocks 2, 3 and 5), pool5 a
    global max over the map, fc6 and fc7 of 128 units.

    The global max makes the fused net's answer independent of where things are: after conv
    fusion, a channel that adds "this colour" to "this motion" peaks only where both are at
    the same place, and the max keeps that peak. With VGG's 2×2 pool5 and a flattened map the
    head has to learn that conjunction for every position separately: on the synthetic data it
    stayed at the flow stream's accuracy (0.24 after 30 epochs, against 0.64 with the global
    max; measured on the same data)."""

    def conv(filters: int, name: str, pool: str | None = None) -> Callable:
        def run(x: keras.KerasTensor) -> keras.KerasTensor:
            if pool:
                x = _td(keras.layers.MaxPooling2D(2, 2), f"{p}{pool}")(x)
            layer = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False)
            x = _td(layer, f"{p}{name}")(x)
            norm = keras.layers.BatchNormalization
            x = norm(momentum=0.9, synchronized=_replicated(), name=f"{p}{name}_bn")(x)
            return keras.layers.ReLU(name=f"{p}{name}_relu")(x)

        return run

    return [
        ("relu1", conv(32, "conv1")),
        ("relu2", conv(64, "conv2", "pool1")),
        ("relu3", conv(128, "conv3", "pool2")),
        ("relu4", conv(128, "conv4")),
        ("relu5", conv(128, "conv5", "pool4")),
        ("pool5", _global_pool5(pool3d, f"{p}pool5")),
        *_head(p, classes, dropout, (128, 128)),
    ]


BACKBONES = {"small": small, "vgg_m_2048": vgg_m_2048, "vgg16": vgg16}


def num_classes(params: Params, classes_file: Path = contracts.CLASSES) -> int:
    """``model.num_classes``, or the number of class names in ``data/classes.txt`` when it is
    null."""
    if params.model.num_classes is not None:
        return params.model.num_classes
    if not classes_file.exists():
        raise ModelError(
            f"model.num_classes is null and {classes_file} does not exist: run the "
            "ingest stage first, or set model.num_classes"
        )
    return len(contracts.read_classes(classes_file))


def _inputs(params: Params) -> dict[str, keras.KerasTensor]:
    c = params.clip
    shape = (c.frames, c.crop, c.crop)
    return {
        "rgb": keras.Input((*shape, 3), dtype="uint8", name="rgb"),
        "flow": keras.Input((*shape, 2 * c.flow_stack), dtype="uint8", name="flow"),
    }


def _backbone(stream: str, params: Params) -> str:
    if stream == "flow":
        return params.model.flow_backbone or params.model.backbone
    return params.model.backbone


def _tower(stream: str, params: Params, classes: int, pool3d: bool) -> list[Stage]:
    build = BACKBONES[_backbone(stream, params)]
    return build(f"{stream}_", classes, params.model.dropout, pool3d, stream == "flow")


def _normalise(
    stream: str,
    x: keras.KerasTensor,
    params: Params,
    rgb: tuple | None = None,
    flow: tuple | None = None,
) -> keras.KerasTensor:
    """The tower's first layer. RGB: ``rgb`` = (mean, scale) when given (the pretrained
    weights' or the trained RGB stream's), else ±1 for ``small`` and the VGG mean otherwise.
    Flow: ``flow`` = (mean, centre) of :class:`layers.FlowNormalization` when given (a released
    stream's, or the trained flow stream's), else minus 128 and each field's mean."""
    if stream == "flow":
        mean, centre = flow if flow is not None else (128.0, True)
        return FlowNormalization(mean, centre, name="flow_norm")(x)
    if rgb is None:
        rgb = (127.5, 1 / 127.5) if params.model.backbone == "small" else (VGG16_MEAN, 1.0)
    return RGBNormalization(*rgb, name="rgb_norm")(x)


def rgb_normalisation(model: keras.Model) -> tuple:
    """(mean, scale) of a model's ``rgb_norm`` layer: what a fused net built from this RGB
    stream must subtract."""
    layer = model.get_layer("rgb_norm")
    return layer.mean, layer.scale


def flow_normalisation(model: keras.Model) -> tuple:
    """(mean, centre) of a model's ``flow_norm`` layer: what a fused net built from this flow
    stream must do to its input."""
    layer = model.get_layer("flow_norm")
    return layer.mean, layer.centre


def _run(stages: list[Stage], x: keras.KerasTensor) -> keras.KerasTensor:
    for _, stage in stages:
        x = stage(x)
    return x


def build_stream(stream: str, params: Params, classes: int | None = None) -> keras.Model:
    """One tower alone (``rgb`` or ``flow``): what ``train_rgb`` / ``train_flow`` train."""
    if stream not in ("rgb", "flow"):
        raise ModelError(f"stream must be 'rgb' or 'flow'; got {stream!r}")
    classes = classes or num_classes(params)
    x = _inputs(params)[stream]
    source = pretrained_source(stream, params)
    rgb = (source["mean"], 1.0) if source else None
    flow = (source["mean"], False) if source and source.get("released") else None
    # 2D pooling: a stream never depends on fusion.* (pooling layers have no weights, so the
    # fused net can still pool in 3D with the stream's weights)
    x_norm = _normalise(stream, x, params, rgb, flow)
    probs = _run(_tower(stream, params, classes, pool3d=False), x_norm)
    model = keras.Model(x, {"prediction": probs}, name=f"{stream}_stream")
    model.init_report = load_pretrained(model, stream, params, source) if source else []
    return model


def check_fusion(params: Params) -> None:
    """Raise :class:`ModelError` for a combination the paper's design does not allow."""
    f = params.fusion
    why = None
    if f.layer == "softmax" and f.method != "sum":
        why = (
            f"fusion.layer 'softmax' is late fusion (the two streams' class scores are "
            f"averaged), which has no fusion method: set fusion.method: sum (got {f.method!r})"
        )
    elif f.layer == "softmax" and f.also_late:
        why = (
            "fusion.also_late keeps the motion tower after an in-network fusion point; with "
            "fusion.layer 'softmax' both towers are already whole: set also_late: false"
        )
    elif f.temporal == "conv3d_pool3d" and (f.method != "conv" or f.layer != "relu5"):
        why = (
            "fusion.temporal 'conv3d_pool3d' is the paper's 3D conv fusion at ReLU5 followed "
            f"by 3D pooling: it needs method conv and layer relu5 (got {f.method!r} at "
            f"{f.layer!r}); for other methods use temporal pool3d"
        )
    elif f.method == "bilinear" and f.temporal != "avg2d":
        why = (
            f"bilinear fusion sums over all locations, leaving no spatial map for "
            f"{f.temporal!r} to pool: use temporal avg2d"
        )
    if why:
        raise ModelError(why)


def _match_sizes(a: keras.KerasTensor, m: keras.KerasTensor, layer: str) -> tuple:
    """Zero-pad the smaller map (bottom, right) when the towers differ in H or W, as the paper
    does for VGG-M's 13×13 against VGG-16's 14×14 at ReLU5."""
    if a.shape[-1] != m.shape[-1]:
        raise ModelError(
            f"the towers have {a.shape[-1]} and {m.shape[-1]} channels at {layer}: "
            "fusion needs the same number; fuse at another layer"
        )
    h, w = max(a.shape[2], m.shape[2]), max(a.shape[3], m.shape[3])
    out = []
    for x, name in ((a, "rgb"), (m, "flow")):
        if x.shape[2:4] != (h, w):
            pad = ((0, h - x.shape[2]), (0, w - x.shape[3]))
            x = _td(keras.layers.ZeroPadding2D(pad), f"{name}_fusion_pad")(x)
        out.append(x)
    return tuple(out)


def build_fused(
    params: Params,
    classes: int | None = None,
    rgb_norm: tuple | None = None,
    flow_norm: tuple | None = None,
) -> keras.Model:
    """The two-stream network that ``fusion.*`` describes (see the module docstring).

    ``rgb_norm`` and ``flow_norm`` are the normalisations of the trained streams it will be
    filled from (:func:`rgb_normalisation`, :func:`flow_normalisation`): the streams' weights
    only make sense after their own normalisation, which :func:`init_from_streams` checks."""
    check_fusion(params)
    f = params.fusion
    classes = classes or num_classes(params)
    inputs = _inputs(params)
    pool3d = f.temporal in ("pool3d", "conv3d_pool3d")
    a_stages = _tower("rgb", params, classes, pool3d)
    m_stages = _tower("flow", params, classes, pool3d)
    a = _normalise("rgb", inputs["rgb"], params, rgb_norm)
    m = _normalise("flow", inputs["flow"], params, flow=flow_norm)
    if f.layer == "softmax":  # late fusion: two whole towers, scores averaged
        pa, pm = _run(a_stages, a), _run(m_stages, m)
        prediction = keras.layers.Average(name="late_average")([pa, pm])
        outputs = {"prediction": prediction, "appearance": pa, "motion": pm}
        model = keras.Model(inputs, outputs, name="late_fusion")
        model.appearance_above = []  # both towers are whole: every layer comes from a stream
        return model

    k = STAGES.index(f.layer) + 1
    model_so_far = keras.Model(inputs, [_run(a_stages[:k], a), _run(m_stages[:k], m)])
    below = {layer.name for layer in model_so_far.layers}
    a, m = _match_sizes(*model_so_far.outputs, f.layer)
    if f.method == "bilinear":  # FC layers removed: a linear classifier on the pooled products
        y = BilinearFusion(name="fusion")([a, m])
        fused = _classify(y, classes, "fusion_fc8")
    else:
        if f.method == "conv":
            size = (3, 3, 3) if f.temporal == "conv3d_pool3d" else 1
            y = ConvFusion(
                kernel_size=size,
                kernel_init=f.conv_init,
                init_weights=tuple(f.conv_init_weights),
                name="fusion",
            )([a, m])
            if f.temporal == "conv3d_pool3d":
                y = keras.layers.ReLU(name="fusion_relu")(y)
        else:
            y = FUSIONS[f.method](name="fusion")([a, m])
        fused = _run(a_stages[k:], y)
    outputs = {"prediction": fused}
    if f.also_late:  # the motion tower goes on alone; both predictions are averaged
        motion = _run(m_stages[k:], m)
        average = keras.layers.Average(name="late_average")([fused, motion])
        outputs = {"prediction": average, "fused": fused, "motion": motion}
    model = keras.Model(inputs, outputs, name=f"fusion_{f.method}_{f.layer}_{f.temporal}")
    # the fused tower above the fusion point: what fusion.head_init may leave to its own init
    model.appearance_above = [
        layer.name
        for layer in model.layers
        if layer.name.startswith("rgb_") and layer.name not in below
    ]
    if not f.train_below:
        for layer in model.layers:
            if layer.name in below:
                layer.trainable = False
    return model


def _transfer(
    target: keras.Model, sources: list[keras.Model], skip: tuple[str, ...] = ()
) -> list[str]:
    """Copy weights into ``target`` by layer name; return what could not be filled, and why."""
    by_name = {layer.name: layer for src in sources for layer in src.layers}
    unfilled = []
    for layer in target.layers:
        if not layer.weights or layer.name in skip:
            continue
        src = by_name.get(layer.name)
        if src is None:
            unfilled.append(f"{layer.name}: not in the stream models (new in the fused net)")
            continue
        shapes = [tuple(w.shape) for w in layer.weights]
        if shapes != [tuple(w.shape) for w in src.weights]:
            unfilled.append(
                f"{layer.name}: shapes {shapes} differ from the stream's "
                f"{[tuple(w.shape) for w in src.weights]}"
            )
            continue
        layer.set_weights(src.get_weights())
    return unfilled


def init_from_streams(
    fused: keras.Model, rgb: keras.Model, flow: keras.Model, skip: tuple[str, ...] = ()
) -> list[str]:
    """Fill a fused net from trained single-stream models, by layer name.

    The fused tower above the fusion point takes the RGB stream's layers (same names), the
    motion tower's layers the flow stream's; layers named in ``skip`` keep their own
    initialisation. Returns one line per layer that was not filled (the fusion layer, a
    bilinear classifier, layers whose input size changed, e.g. after concatenation, and the
    skipped ones), which the caller should report.
    """
    if rgb_normalisation(fused) != rgb_normalisation(rgb):
        raise ModelError(
            f"the fused net normalises RGB with (mean, scale) {rgb_normalisation(fused)}, the "
            f"RGB stream it is filled from with {rgb_normalisation(rgb)}: build it with "
            "build_fused(..., rgb_norm=rgb_normalisation(rgb_stream))"
        )
    if flow_normalisation(fused) != flow_normalisation(flow):
        raise ModelError(
            f"the fused net normalises flow with (mean, centre) {flow_normalisation(fused)}, "
            f"the flow stream it is filled from with {flow_normalisation(flow)}: build it with "
            "build_fused(..., flow_norm=flow_normalisation(flow_stream))"
        )
    kept = [f"{name}: left at its initialisation (fusion.head_init: random)" for name in skip]
    return kept + _transfer(fused, [rgb, flow], skip)


def cross_modality_kernel(rgb_kernel: np.ndarray, channels: int) -> np.ndarray:
    """First-layer kernel for a flow tower from an RGB one: the mean over the colour channels,
    repeated for each of the ``channels`` (= 2L) flow channels (the paper's init)."""
    mean = rgb_kernel.mean(axis=-2, keepdims=True)
    return np.repeat(mean, channels, axis=-2)


def pretrained_source(stream: str, params: Params) -> dict | None:
    """What ``train.streams.<stream>`` (:func:`released_source`: a trained stream, taken as it
    is) or else ``train.weights`` gives the ``stream`` tower: None for ``none``, else a dict with
    ``backbone``, ``path`` (None: Keras downloads VGG-16), ``meta`` (of a ``pipeline.weights``
    file; None for Keras' VGG-16) and ``mean`` (RGB, what the weights were trained to see
    subtracted). Raises :class:`ModelError` naming the fix when the weights
    cannot be had or do not fit the tower.

    ``imagenet``: VGG-16 from ``keras.applications`` (downloaded on first use and cached in
    ``~/.keras/models``), VGG-M-2048 from ``models/imagenet/vgg_m_2048.h5`` (``python -m
    pipeline.weights import``). A path: a file written by ``pipeline.weights import``, or else a
    Keras Applications VGG-16 weights file."""
    released = getattr(params.train.streams, stream)
    if released is not None:
        return released_source(stream, params, Path(released).expanduser())
    weights = params.train.weights
    if weights == "none":
        return None
    backbone = _backbone(stream, params)
    if weights == "imagenet":
        if backbone == "vgg16":
            return {"backbone": backbone, "path": None, "meta": None, "mean": VGG16_MEAN}
        if backbone != "vgg_m_2048":
            raise ModelError(
                f"train.weights: imagenet: ImageNet weights exist for vgg16 and vgg_m_2048; "
                f"the {stream} tower is {backbone}: set train.weights: none"
            )
        path = contracts.imagenet_path(backbone)
        if not path.exists():
            raise ModelError(
                f"train.weights: imagenet needs {path} for the {stream} tower ({backbone}), "
                "which Keras cannot download: get imagenet-vgg-m-2048.mat from MatConvNet's "
                "pretrained models (https://www.vlfeat.org/matconvnet/models/"
                "imagenet-vgg-m-2048.mat) and run python -m pipeline.weights import "
                "imagenet-vgg-m-2048.mat"
            )
    else:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise ModelError(
                f"train.weights: {weights} is not a file (none, imagenet, or the path of a "
                "weights file: one from python -m pipeline.weights import, or Keras' VGG-16)"
            )
    meta = contracts.pretrained_meta(path)
    if meta and meta.get("kind", "imagenet") != "imagenet":
        raise ModelError(
            f"train.weights: {path} holds a trained {meta.get('channels')} stream "
            f"({meta.get('source')}), not ImageNet weights: use it as train.streams."
            f"{'rgb' if meta.get('channels') == 'RGB' else 'flow'}"
        )
    held = meta["backbone"] if meta else "vgg16"
    if held != backbone:
        what = "pipeline.weights import" if meta else "Keras (read as keras.applications.VGG16)"
        raise ModelError(
            f"train.weights: {path} holds {held} weights (written by {what}); the {stream} "
            f"tower is {backbone}"
            + (
                ": towers of two backbones take train.weights: imagenet"
                if params.model.flow_backbone not in (None, params.model.backbone)
                else ""
            )
        )
    mean = tuple(meta["mean"]) if meta else VGG16_MEAN
    return {"backbone": backbone, "path": path, "meta": meta, "mean": mean}


def released_source(stream: str, params: Params, path: Path) -> dict:
    """The source for ``train.streams.<stream>``: a trained stream (one of the authors' released
    UCF101 models) that ``python -m pipeline.weights import`` wrote, checked against the tower
    it fills. Raises :class:`ModelError` naming what differs and the fix."""
    key = f"train.streams.{stream}"
    if not path.is_file():
        example = "img" if stream == "rgb" else "TVL1flow"
        raise ModelError(
            f"{key}: {path} is not a file: import the released model first (python -m "
            f"pipeline.weights import ucf101-{example}-vgg16-split1.mat), then give the .h5 "
            "path it printed"
        )
    meta = contracts.pretrained_meta(path)
    want = "RGB" if stream == "rgb" else "flow"
    if meta is None or meta.get("kind") != "stream":
        raise ModelError(
            f"{key}: {path} is not a trained stream written by python -m pipeline.weights "
            "import (ImageNet weights go to train.weights)"
        )
    if meta["channels"] != want:
        other = "rgb" if meta["channels"] == "RGB" else "flow"
        raise ModelError(
            f"{key}: {path} is a {meta['channels']} stream: give it to train.streams.{other}"
        )
    backbone = _backbone(stream, params)
    problems = []
    if meta["backbone"] != backbone:
        problems.append(
            f"it is {meta['backbone']}, the {stream} tower {backbone} (set model."
            f"{'backbone' if stream == 'rgb' else 'flow_backbone'}: {meta['backbone']})"
        )
    if stream == "flow" and meta["flow_stack"] != params.clip.flow_stack:
        problems.append(
            f"it stacks L = {meta['flow_stack']} flows, clip.flow_stack is {params.clip.flow_stack}"
        )
    if list(meta["input_size"]) != [params.clip.crop] * 2:
        size = "×".join(str(n) for n in meta["input_size"])
        problems.append(f"it was trained on {size} crops, clip.crop is {params.clip.crop}")
    names = meta.get("classes") or []
    if names and contracts.CLASSES.exists():
        ours = contracts.read_classes(contracts.CLASSES)
        if len(ours) == len(names) and ours != names:
            i = next(i for i, (a, b) in enumerate(zip(ours, names, strict=True)) if a != b)
            problems.append(
                f"its class {i} is {names[i]!r}, {contracts.CLASSES}'s {ours[i]!r}: fc8's "
                "outputs would answer the wrong classes"
            )
    if problems:
        raise ModelError(f"{key}: {path} does not fit this configuration: " + "; ".join(problems))
    mean = tuple(meta["mean"])  # RGB, or one per flow channel (the released flow stream's)
    return {"backbone": backbone, "path": path, "meta": meta, "mean": mean, "released": True}


def _vgg16_layers(path: Path | None) -> dict[str, list[np.ndarray]]:
    """Keras Applications' VGG-16 by our layer names, block1_conv1 turned to take RGB."""
    source = keras.applications.VGG16(
        include_top=True, weights="imagenet" if path is None else str(path)
    )
    ours = {"fc1": "fc6", "fc2": "fc7", "predictions": "fc8"}
    layers = {
        ours.get(layer.name, layer.name): layer.get_weights()
        for layer in source.layers
        if layer.weights
    }
    kernel, bias = layers["block1_conv1"]
    layers["block1_conv1"] = [kernel[:, :, ::-1, :], bias]  # Keras' VGG16 takes BGR
    return layers


def load_pretrained(model: keras.Model, stream: str, params: Params, source: dict) -> list[str]:
    """Fill the ``stream`` tower of ``model`` from ``source`` (:func:`pretrained_source`); the
    flow tower's first kernel is the cross-modality average (the RGB kernel's mean over
    colour, repeated over the 2L flow channels); fc8 keeps its own initialisation (ImageNet's
    classes are not ours). Returns the lines to report."""
    backbone, path, meta = source["backbone"], source["path"], source["meta"]
    if source.get("released"):
        return _load_released(model, stream, source)
    where = path or "keras.applications (cached in ~/.keras/models)"
    if meta:
        layers, _ = contracts.read_pretrained(path)
        size = "×".join(str(n) for n in meta["input_size"])
        where = f"{path} (from {meta['source']}, SHA-256 {meta['source_sha256'][:16]}…)"
    else:
        layers, size = _vgg16_layers(path), "224×224"
    filled = []
    for name, weights in layers.items():
        if name == "fc8":
            continue
        if name == FIRST_CONV[backbone] and stream == "flow":
            weights = [cross_modality_kernel(weights[0], 2 * params.clip.flow_stack), weights[1]]
        target = model.get_layer(f"{stream}_{name}")
        want = [tuple(w.shape) for w in target.weights]
        if want != [tuple(w.shape) for w in weights]:
            raise ModelError(
                f"train.weights: {name} of the ImageNet {backbone} weights has shapes "
                f"{[tuple(w.shape) for w in weights]}, the {stream} tower's {want}: the "
                f"weights were trained on {size} crops; set clip.crop to that"
            )
        target.set_weights(weights)
        filled.append(name)
    lines = [f"ImageNet {backbone} weights from {where}: {', '.join(filled)}"]
    if stream == "flow":
        lines.append(
            f"{FIRST_CONV[backbone]}: cross-modality init (the RGB kernel's mean over colour, "
            f"repeated over {2 * params.clip.flow_stack} flow channels)"
        )
    lines.append("fc8: left at its initialisation (ImageNet's classes are not these)")
    return lines


def _load_released(model: keras.Model, stream: str, source: dict) -> list[str]:
    """Fill every layer of a stream from a released trained stream, fc8 and conv1 included."""
    layers, _ = contracts.read_pretrained(source["path"])
    meta = source["meta"]
    for name, weights in layers.items():
        target = model.get_layer(f"{stream}_{name}")
        want = [tuple(w.shape) for w in target.weights]
        if want != [tuple(w.shape) for w in weights]:
            got = [tuple(w.shape) for w in weights]
            hint = (
                f": the released stream has {weights[0].shape[-1]} classes (set "
                "model.num_classes, or use the dataset it was trained on)"
                if name == "fc8"
                else ""
            )
            raise ModelError(
                f"train.streams.{stream}: {name} of {source['path']} has shapes {got}, the "
                f"{stream} tower's {want}{hint}"
            )
        target.set_weights(weights)
    norm = (
        f"RGB minus ({', '.join(f'{m:.2f}' for m in meta['mean'])})"
        if stream == "rgb"
        else f"flow minus its averageImage ({sorted(set(meta['mean']))}), no mean flow "
        "subtraction (as it was trained)"
    )
    lines = [
        f"the released {meta['channels']} stream {source['path']} (from {meta['source']}, "
        f"SHA-256 {meta['source_sha256'][:16]}…): every layer, {', '.join(layers)}; not trained",
        f"input: {norm}",
    ]
    if meta.get("fused_head"):
        lines.append(
            f"note: this tower comes from a fused net ({meta['source_layout']}); its layers "
            "above the fusion were trained on fused features"
        )
    return lines


def imagenet_network(
    backbone: str,
    size: tuple[int, int],
    classes: int,
    mean: tuple | list,
    channels: int = 3,
) -> keras.Model:
    """A single-image classifier with the ``rgb`` tower of ``backbone``: ``(B, H, W,
    channels)`` (RGB in 0–255, or ``channels`` = 2L flow channels, whose tower is the
    backbone's motion tower) to fc8's class scores before the softmax, minus ``mean`` (one per
    channel). Its layers are the stream's (``rgb_conv1`` …), so weights move between the two by
    name (``pipeline.weights``)."""
    images = keras.Input((*size, channels), name="image")
    x = keras.layers.Reshape((1, *size, channels), name="one_snippet")(images)
    x = RGBNormalization(tuple(mean), 1.0, name="rgb_norm")(x)
    stages = BACKBONES[backbone]("rgb_", classes, 0.0, False, channels != 3)
    full = keras.Model(images, _run(stages, x))
    logits = keras.layers.Reshape((classes,), name="logits")(full.get_layer("rgb_fc8").output)
    return keras.Model(images, logits, name=f"imagenet_{backbone}")


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """``["fusion.method=max", ...]`` applied to a params.yaml mapping (values read as YAML)."""
    raw = copy.deepcopy(raw)
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ModelError(f"-S takes key=value (e.g. -S fusion.method=max); got {item!r}")
        *path, last = key.split(".")
        node = raw
        for part in path:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ModelError(f"-S {item}: {part!r} is a value, not a section of params.yaml")
        node[last] = yaml.safe_load(value)
    return raw


def count_params(model: keras.Model) -> int:
    return int(sum(np.prod(w.shape) for w in model.weights if "seed_generator" not in w.path))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Print the model summary for params.yaml.")
    parser.add_argument(
        "-S",
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a params.yaml value, e.g. -S fusion.method=max",
    )
    parser.add_argument(
        "--stream", choices=("rgb", "flow"), help="one stream instead of the fused net"
    )
    args = parser.parse_args(argv)
    try:
        raw = yaml.safe_load(Path(PARAMS_FILE).read_text(encoding="utf-8"))
        source = PARAMS_FILE + (" with -S " + " -S ".join(args.set) if args.set else "")
        params = parse_params(apply_overrides(raw, args.set), source=source)
        model = build_stream(args.stream, params) if args.stream else build_fused(params)
    except PipelineError as exc:
        sys.exit(f"model: {exc}")
    os.environ.setdefault("COLUMNS", "120")  # rich cuts the table at 80 columns off a terminal
    model.summary(line_length=120, expand_nested=False)
    print(f"params: {count_params(model)}")


if __name__ == "__main__":
    main()
