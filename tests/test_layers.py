"""layers/ against independent NumPy references, on whichever Keras backend is selected.

`make test` runs this file twice: under JAX (tests/test_on_jax.py) and, with the rest of the suite,
under TensorFlow. Tolerances: elementwise layers exact; convolution, bilinear and LRN within
1e-5 relative (float32 sums in a different order).
"""

import doctest
import importlib
import itertools

import keras
import numpy as np
import pytest
from keras import ops

import layers
from layers import (
    BilinearFusion,
    ConcatFusion,
    ConvFusion,
    LocalResponseNormalization,
    MaxFusion,
    SumFusion,
)

BACKEND = keras.backend.backend()
SHAPES = {4: (2, 5, 6, 4), 5: (2, 3, 5, 6, 4)}  # (B, H, W, D), (B, T, H, W, D)
RTOL = 1e-5


def _pair(rank, seed=0, shape=None):
    rng = np.random.default_rng(seed)
    shape = shape or SHAPES[rank]
    return [rng.standard_normal(shape).astype("float32") for _ in range(2)]


def _np(x):
    return np.asarray(ops.convert_to_numpy(x), dtype=np.float64)


# ---- NumPy references, written without looking at the layers -------------------------------


def ref_concat(a, b):
    y = np.empty((*a.shape[:-1], 2 * a.shape[-1]), np.float64)
    for d in range(a.shape[-1]):
        y[..., 2 * d] = a[..., d]
        y[..., 2 * d + 1] = b[..., d]
    return y


def ref_conv_same(x, kernel, bias):
    """Stride-1 'same' correlation over all axes between batch and channels, by explicit taps."""
    ks = kernel.shape[:-2]
    pads = [(0, 0)] + [((k - 1) // 2, k // 2) for k in ks] + [(0, 0)]
    xp = np.pad(x.astype(np.float64), pads)
    out = np.zeros((*x.shape[:-1], kernel.shape[-1]))
    for tap in itertools.product(*(range(k) for k in ks)):
        window = xp[
            (slice(None),) + tuple(slice(t, t + n) for t, n in zip(tap, x.shape[1:-1], strict=True))
        ]
        out += window @ kernel[tap].astype(np.float64)
    return out + bias


def ref_bilinear(a, b, signed_sqrt, l2):
    a, b = a.astype(np.float64), b.astype(np.float64)
    lead = a.shape[:-3]
    y = np.zeros((*lead, a.shape[-1] ** 2))
    for idx in np.ndindex(*lead):
        fa, fb = a[idx].reshape(-1, a.shape[-1]), b[idx].reshape(-1, b.shape[-1])
        y[idx] = sum(np.outer(u, v) for u, v in zip(fa, fb, strict=True)).ravel()
    if signed_sqrt:
        y = np.sign(y) * np.sqrt(np.abs(y) + 1e-12)
    if l2:
        y = y / np.maximum(np.linalg.norm(y, axis=-1, keepdims=True), 1e-6)
    return y


def ref_lrn(x, r, bias, alpha, beta):
    x = x.astype(np.float64)
    d = x.shape[-1]
    y = np.empty_like(x)
    for c in range(d):
        s = (x[..., max(0, c - r) : min(d, c + r + 1)] ** 2).sum(-1)
        y[..., c] = x[..., c] / (bias + alpha * s) ** beta
    return y


# ---- forward passes against the references -------------------------------------------------


@pytest.mark.parametrize("rank", [4, 5])
def test_elementwise_fusions_are_exact(rank):
    a, b = _pair(rank)
    np.testing.assert_array_equal(_np(SumFusion()([a, b])), (a + b).astype(np.float64))
    np.testing.assert_array_equal(_np(MaxFusion()([a, b])), np.maximum(a, b))
    y = _np(ConcatFusion()([a, b]))
    np.testing.assert_array_equal(y, ref_concat(a, b))
    assert y[..., 0].tolist() == a[..., 0].tolist() and y[..., 1].tolist() == b[..., 0].tolist()


@pytest.mark.parametrize(
    ("rank", "kernel_size", "filters"),
    [
        (4, 1, None),
        (4, 3, 7),
        (4, (1, 3), None),
        (5, 1, None),
        (5, (3, 3, 3), 5),
        (5, (1, 3, 3), None),
    ],
)
def test_conv_fusion_matches_reference(rank, kernel_size, filters):
    a, b = _pair(rank, seed=1)
    layer = ConvFusion(filters=filters, kernel_size=kernel_size, kernel_init="random")
    layer.build([a.shape, b.shape])
    kernel = _np(layer.kernel)
    bias = np.random.default_rng(2).standard_normal(kernel.shape[-1])
    layer.bias.assign(bias.astype("float32"))
    y = _np(layer([a, b]))
    assert y.shape == (*a.shape[:-1], filters or a.shape[-1])
    np.testing.assert_allclose(
        y, ref_conv_same(ref_concat(a, b), kernel, bias), rtol=RTOL, atol=1e-5
    )


@pytest.mark.parametrize("rank", [4, 5])
@pytest.mark.parametrize(("signed_sqrt", "l2"), [(False, False), (True, False), (True, True)])
def test_bilinear_fusion_matches_reference(rank, signed_sqrt, l2):
    a, b = _pair(rank, seed=3)
    y = _np(BilinearFusion(signed_sqrt=signed_sqrt, l2_normalize=l2)([a, b]))
    d = a.shape[-1]
    assert y.shape == (*a.shape[:-3], d * d)
    np.testing.assert_allclose(y, ref_bilinear(a, b, signed_sqrt, l2), rtol=RTOL, atol=1e-6)


@pytest.mark.parametrize("rank", [4, 5])
@pytest.mark.parametrize(
    ("r", "bias", "alpha", "beta"), [(2, 2.0, 2e-5, 0.75), (1, 1.0, 0.3, 0.5), (5, 1.0, 1.0, 0.5)]
)
def test_lrn_matches_reference(rank, r, bias, alpha, beta):
    x = _pair(rank, seed=4, shape=(*SHAPES[rank][:-1], 9))[0] * 3
    y = _np(LocalResponseNormalization(r, bias=bias, alpha=alpha, beta=beta)(x))
    np.testing.assert_allclose(y, ref_lrn(x, r, bias, alpha, beta), rtol=RTOL, atol=1e-6)


@pytest.mark.skipif(
    BACKEND != "tensorflow", reason="tf.nn.lrn exists only on the TensorFlow backend"
)
def test_lrn_matches_tensorflow():
    import tensorflow as tf

    x = _pair(4, seed=5, shape=(2, 7, 7, 96))[0] * 20
    layer = LocalResponseNormalization.from_caffe(size=5, alpha=1e-4, beta=0.75, k=2.0)
    expected = tf.nn.local_response_normalization(
        x, depth_radius=2, bias=2.0, alpha=2e-5, beta=0.75
    )
    np.testing.assert_allclose(_np(layer(x)), expected.numpy(), rtol=RTOL)


# ---- ConvFusion initialisers and sizes -----------------------------------------------------


@pytest.mark.parametrize(("rank", "kernel_size"), [(4, 1), (4, 3), (5, 1), (5, (3, 3, 3))])
def test_conv_fusion_sum_init_equals_sum_fusion(rank, kernel_size):
    a, b = _pair(rank, seed=6)
    y = _np(ConvFusion(kernel_size=kernel_size)([a, b]))
    # Only the centre tap is non-zero: the other taps add exact zeros.
    np.testing.assert_array_equal(y, _np(SumFusion()([a, b])))
    y = _np(ConvFusion(kernel_size=kernel_size, init_weights=(0.25, 0.75))([a, b]))
    np.testing.assert_allclose(y, 0.25 * a + 0.75 * b, rtol=1e-6, atol=1e-6)


def test_conv_fusion_sum_gaussian_init():
    layer = ConvFusion(kernel_size=(3, 3, 3), kernel_init="sum_gaussian", init_weights=(0.25, 0.75))
    a = np.ones((1, 5, 5, 5, 3), "float32")
    y = _np(layer([a, 2 * a]))
    kernel = _np(layer.kernel)
    taps = kernel[..., 0, 0] / 0.25  # the Gaussian itself
    g = np.exp(
        -np.array(
            [
                [[(t - 1) ** 2 + (i - 1) ** 2 + (j - 1) ** 2 for j in range(3)] for i in range(3)]
                for t in range(3)
            ]
        )
        / 2
    )
    np.testing.assert_allclose(taps, g / g.sum(), rtol=1e-6)
    np.testing.assert_allclose(kernel[..., 1, 0], 0.75 * g / g.sum(), rtol=1e-6)
    assert np.count_nonzero(kernel[..., 0, 1]) == 0  # channel 0 of x_a feeds only output 0
    # on a constant input the interior equals 0.25·a + 0.75·b: the taps sum to one
    np.testing.assert_allclose(y[0, 1:-1, 1:-1, 1:-1], 1.75, rtol=1e-6)
    # 1×1: the same as "sum"
    one = ConvFusion(kernel_init="sum_gaussian")
    one.build([(None, 4, 4, 3)] * 2)
    np.testing.assert_array_equal(_np(one.kernel)[0, 0], np.kron(np.eye(3), [[1.0], [1.0]]))


def test_conv_fusion_parameter_counts_for_d512():
    one = ConvFusion()
    one.build([(None, 14, 14, 512)] * 2)
    assert one.count_params() == 2 * 512 * 512 + 512
    three = ConvFusion(kernel_size=(3, 3, 3), kernel_init="sum_gaussian")
    three.build([(None, 5, 14, 14, 512)] * 2)
    assert three.count_params() == 27 * 1024 * 512 + 512
    assert tuple(three.kernel.shape) == (3, 3, 3, 1024, 512)


def test_conv_fusion_sum_init_needs_filters_equal_to_d():
    a, b = _pair(4)
    with pytest.raises(ValueError, match="needs filters == D; got filters=3, D=4"):
        ConvFusion(filters=3)([a, b])
    with pytest.raises(ValueError, match=r"kernel_size as one odd int or \(kt, kh, kw\)"):
        ConvFusion(kernel_size=(3, 3))(_pair(5))
    with pytest.raises(ValueError, match="odd"):
        ConvFusion(kernel_size=2)([a, b])
    with pytest.raises(ValueError, match="kernel_init must be one of"):
        ConvFusion(kernel_init="identity")


# ---- gradients, serialisation, errors, mixed precision -------------------------------------


def _all_layers(rank):
    return [
        SumFusion(),
        MaxFusion(),
        ConcatFusion(),
        ConvFusion(kernel_size=3),
        ConvFusion(kernel_init="random", filters=6),
        BilinearFusion(),
        BilinearFusion(signed_sqrt=False, l2_normalize=False),
    ]


def _gradients(layer, inputs):
    """d sum(layer(inputs)·w) / d (inputs, trainable weights), w a fixed random projection."""
    out_shape = layer.compute_output_shape([x.shape for x in inputs])
    w = np.random.default_rng(9).standard_normal(out_shape).astype("float32")
    if BACKEND == "tensorflow":
        import tensorflow as tf

        xs = [tf.constant(x) for x in inputs]
        with tf.GradientTape() as tape:
            tape.watch(xs)
            loss = tf.reduce_sum(layer(xs) * w)
        grads = tape.gradient(loss, [*xs, *layer.trainable_variables])
    elif BACKEND == "jax":
        import jax

        tv = [v.value for v in layer.trainable_variables]
        ntv = [v.value for v in layer.non_trainable_variables]

        def loss(xs, tv):
            y, _ = layer.stateless_call(tv, ntv, xs)
            return (y * w).sum()

        gx, gw = jax.grad(loss, argnums=(0, 1))(list(inputs), tv)
        grads = [*gx, *gw]
    else:
        pytest.skip(f"no gradient helper for backend {BACKEND}")
    return [_np(g) for g in grads]


@pytest.mark.parametrize("rank", [4, 5])
@pytest.mark.parametrize("index", range(7))
def test_gradients_reach_both_inputs_and_every_weight(rank, index):
    layer = _all_layers(rank)[index]
    inputs = _pair(rank, seed=10)
    inputs = [np.abs(x) + 0.1 for x in inputs] if isinstance(layer, BilinearFusion) else inputs
    layer([x[:1] for x in inputs])  # build
    grads = _gradients(layer, inputs)
    assert len(grads) == 2 + len(layer.trainable_variables)
    for g in grads:
        assert np.all(np.isfinite(g)) and np.any(g != 0)


def test_lrn_gradient():
    layer = LocalResponseNormalization(2, bias=2.0, alpha=2e-5, beta=0.75)
    x = _pair(4, seed=11)[0]
    layer(x)  # build
    if BACKEND == "tensorflow":
        import tensorflow as tf

        xs = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(xs)
            loss = tf.reduce_sum(layer(xs) ** 2)
        g = tape.gradient(loss, xs).numpy()
    else:
        import jax

        g = np.asarray(jax.grad(lambda v: (layer.stateless_call([], [], v)[0] ** 2).sum())(x))
    assert np.all(np.isfinite(g)) and np.any(g != 0)


def test_save_load_round_trip_needs_no_custom_objects(tmp_path):
    for rank in (4, 5):
        xa = keras.Input(SHAPES[rank][1:])
        xb = keras.Input(SHAPES[rank][1:])
        outs = [layer([xa, xb]) for layer in _all_layers(rank)]
        outs.append(LocalResponseNormalization.from_caffe(5, 1e-4, 0.75, 2.0, name="lrn")(xa))
        outs.append(
            ConvFusion(kernel_size=3, kernel_init="sum_gaussian", init_weights=(0.25, 0.75))(
                [xa, xb]
            )
        )
        model = keras.Model([xa, xb], outs)
        path = tmp_path / f"fusion{rank}.keras"
        model.save(path)
        loaded = keras.saving.load_model(path)
        inputs = _pair(rank, seed=12)
        for y0, y1 in zip(model(inputs), loaded(inputs), strict=True):
            np.testing.assert_array_equal(_np(y0), _np(y1))
        conv = [layer for layer in loaded.layers if isinstance(layer, ConvFusion)][-1]
        assert conv.get_config()["init_weights"] == (0.25, 0.75) or conv.get_config()[
            "init_weights"
        ] == [0.25, 0.75]
        assert conv.kernel_init == "sum_gaussian"


@pytest.mark.parametrize("cls", [SumFusion, MaxFusion, ConcatFusion, ConvFusion, BilinearFusion])
def test_bad_calls_raise_a_clear_error(cls):
    a, b = _pair(4)
    c = np.zeros((2, 5, 6, 8), "float32")
    with pytest.raises(
        ValueError, match=r"list of two tensors .*got one tensor of shape \(2, 5, 6, 4\)"
    ):
        cls()(a)
    with pytest.raises(ValueError, match=r"list of two tensors .*got 3 tensors of shapes"):
        cls()([a, b, a])
    with pytest.raises(
        ValueError,
        match=r"same shape; got \(2, 5, 6, 4\) and \(2, 5, 6, 8\) \(different channel counts D\)",
    ):
        cls()([a, c])
    with pytest.raises(ValueError, match=r"rank-4 .* or rank-5 .*got shape \(2, 6, 4\) \(rank 3\)"):
        cls()([a[:, 0], b[:, 0]])
    with pytest.raises(ValueError, match="same shape"):
        cls()([a, _pair(5)[0]])


def test_lrn_bad_rank():
    with pytest.raises(ValueError, match=r"got shape \(2, 6, 4\) \(rank 3\)"):
        LocalResponseNormalization()(np.zeros((2, 6, 4), "float32"))


def test_symbolic_shapes_with_unknown_batch():
    xa, xb = keras.Input((None, None, 8)), keras.Input((None, None, 8))
    assert ConcatFusion()([xa, xb]).shape == (None, None, None, 16)
    assert ConvFusion(filters=4, kernel_init="random")([xa, xb]).shape == (None, None, None, 4)
    assert BilinearFusion()([xa, xb]).shape == (None, 64)
    ta, tb = keras.Input((3, 5, 5, 8)), keras.Input((3, 5, 5, 8))
    assert BilinearFusion()([ta, tb]).shape == (None, 3, 64)


@pytest.mark.parametrize("rank", [4, 5])
def test_mixed_bfloat16(rank):
    a, b = _pair(rank, seed=13)
    reference = [_np(layer([a, b])) for layer in _all_layers(rank)]
    lrn_ref = _np(LocalResponseNormalization(2, 2.0, 2e-5, 0.75)(a))
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        for layer, ref in zip(_all_layers(rank), reference, strict=True):
            if isinstance(layer, ConvFusion) and layer.kernel_init == "random":
                continue  # another random kernel; its dtype is still checked below
            y = layer([a, b])
            expected = "float32" if isinstance(layer, BilinearFusion) else "bfloat16"
            assert keras.backend.standardize_dtype(y.dtype) == expected, type(layer).__name__
            np.testing.assert_allclose(_np(y), ref, rtol=0.05, atol=0.05)
        random = ConvFusion(kernel_init="random", filters=6)
        assert keras.backend.standardize_dtype(random([a, b]).dtype) == "bfloat16"
        assert random.kernel.dtype == "float32"  # variables stay float32 under mixed precision
        y = LocalResponseNormalization(2, 2.0, 2e-5, 0.75)(a)
        assert keras.backend.standardize_dtype(y.dtype) == "bfloat16"
        np.testing.assert_allclose(_np(y), lrn_ref, rtol=0.02, atol=0.02)
    finally:
        keras.config.set_dtype_policy("float32")


@pytest.mark.parametrize(
    "name", ["sum_fusion", "max_fusion", "concat_fusion", "conv_fusion", "bilinear_fusion", "lrn"]
)
def test_docstring_examples_run(name):
    module = importlib.import_module(f"layers.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_layers_import_only_keras_and_numpy():
    import ast
    from pathlib import Path

    for path in Path(layers.__file__).parent.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module]
            for n in names:
                assert n.split(".")[0] in {"keras", "numpy", "layers", "__future__", "itertools"}, (
                    path.name,
                    n,
                )
