"""TV-L1 optical flow written in ``keras.ops``: OpenCV's DualTVL1 (5.0), batched, on any backend.

``tvl1(i0, i1, t)`` takes a batch of grey frame pairs ``(B, H, W)`` on the 0–255 scale and the
``flow.tvl1`` parameters and returns the flow ``(B, H, W, 2)`` in pixels with OpenCV's sign
convention (``i0(x) ≈ i1(x + flow(x))``: positive x rightward, positive y downward). It does
what ``cv2.optflow.DualTVL1OpticalFlow.calc`` does (Zach, Pock & Bischof 2007, as in Sánchez,
Meinhardt-Llopis & Facciolo, IPOL 2013), step for step (``../shared/TVL1.md``):

- a pyramid of ``nscales`` levels, each made from the one above by bilinear resizing with
  1.25 source pixels per output pixel (``cv::resize`` with ``fx = scale_step``), level sizes
  rounded, stopping when a side would fall below 16 px; the flow goes to the next finer level
  resized to its exact size and multiplied by ``1 / scale_step``;
- centred gradients of the *unwarped* second frame once per level, warped with it;
- warping by bicubic interpolation (a = −0.75, OpenCV's ``INTER_CUBIC``) with zero outside;
- dual variables reset at every level and carried across its warps;
- a 5×5 median filter (replicated border) on each flow component at the start of every outer
  iteration;
- OpenCV's stopping rule: a warp's iterations stop once the sum of squared flow updates is at
  most ``epsilon² × area``. Every pair of a batch has its own mask, so a pair stops exactly
  when OpenCV would; the loop runs until the slowest pair of the batch is done.

All numeric code is ``keras.ops``; resizing is a fixed interpolation matrix (NumPy, built once
per shape) applied with two matmuls, warping a 16-tap gather, the median 25 shifted slices and
a sort. :func:`tvl1` compiles the whole computation once per (shape, parameters): with XLA on
TensorFlow (``tf.function(jit_compile=True)``) and JAX (``jax.jit``); other backends run it
eagerly. The loops are ``keras.ops.while_loop``: no Python loop runs per iteration.
"""

from __future__ import annotations

import functools

import keras
import numpy as np
from keras import ops

from pipeline.params import TVL1Params

MIN_SIDE = 16
"""OpenCV stops the pyramid before a level whose width or height is below this."""

CUBIC_A = -0.75
FLT_EPSILON = float(np.finfo(np.float32).eps)


# ---- fixed matrices (NumPy, once per shape) -----------------------------------------------


def resize_matrix(n_src: int, n_dst: int, scale: float) -> np.ndarray:
    """``(n_dst, n_src)`` weights of ``cv::resize`` INTER_LINEAR along one axis.

    ``scale`` is source pixels per output pixel: ``1 / fx`` when OpenCV is given a factor,
    ``n_src / n_dst`` when it is given the output size. Positions past either end are clamped.
    """
    m = np.zeros((n_dst, n_src), np.float64)
    for d in range(n_dst):
        f = np.float32((d + 0.5) * scale - 0.5)
        s = int(np.floor(f))
        f = float(f - s)
        if s < 0:
            s, f = 0, 0.0
        if s >= n_src - 1:
            s, f = n_src - 1, 0.0
        m[d, s] += 1.0 - f
        if f:
            m[d, s + 1] += f
    return m.astype(np.float32)


def pyramid_sizes(height: int, width: int, t: TVL1Params) -> list[tuple[int, int]]:
    """``(H, W)`` of each level OpenCV uses, finest first."""
    sizes = [(height, width)]
    for _ in range(1, t.nscales):
        h, w = sizes[-1]
        h, w = int(np.rint(h * t.scale_step)), int(np.rint(w * t.scale_step))
        if h < MIN_SIDE or w < MIN_SIDE:
            break
        sizes.append((h, w))
    return sizes


# ---- image operators (keras.ops; tensors are (B, H, W)) ------------------------------------


def _resize(x: object, ry: np.ndarray, rx: np.ndarray) -> object:
    """``ry @ x @ rx.T`` per image."""
    y = ops.einsum("yh,bhw->byw", ops.convert_to_tensor(ry), x)
    return ops.einsum("byw,xw->byx", y, ops.convert_to_tensor(rx))


def _edge_pad(x: object, n: int) -> object:
    """Replicate the border ``n`` pixels out (``ops.pad(mode="edge")`` is missing on TF)."""
    top, bottom = x[:, :1], x[:, -1:]
    x = ops.concatenate([top] * n + [x] + [bottom] * n, axis=1)
    left, right = x[:, :, :1], x[:, :, -1:]
    return ops.concatenate([left] * n + [x] + [right] * n, axis=2)


def centered_gradient(x: object) -> tuple[object, object]:
    """OpenCV's centredGradient: ``(x[i+1] − x[i−1]) / 2``, one-sided (still halved) at edges."""
    p = _edge_pad(x, 1)
    dx = 0.5 * (p[:, 1:-1, 2:] - p[:, 1:-1, :-2])
    dy = 0.5 * (p[:, 2:, 1:-1] - p[:, :-2, 1:-1])
    return dx, dy


def forward_gradient(u: object) -> tuple[object, object]:
    """Forward differences, zero in the last column (x) and last row (y)."""
    dx = ops.concatenate([u[:, :, 1:] - u[:, :, :-1], ops.zeros_like(u[:, :, :1])], axis=2)
    dy = ops.concatenate([u[:, 1:] - u[:, :-1], ops.zeros_like(u[:, :1])], axis=1)
    return dx, dy


def divergence(v1: object, v2: object) -> object:
    """Backward differences with zeros before the first column and row (OpenCV's divergence)."""
    dx = v1 - ops.concatenate([ops.zeros_like(v1[:, :, :1]), v1[:, :, :-1]], axis=2)
    dy = v2 - ops.concatenate([ops.zeros_like(v2[:, :1]), v2[:, :-1]], axis=1)
    return dx + dy


def _odd_even_merge_sort(n: int) -> list[tuple[int, int]]:
    """Batcher's odd–even merge sort network for ``n`` (a power of two) keys: compare–exchange
    pairs ``(i, j)``, ``i < j``, that leave the smaller key at ``i``."""
    pairs = []
    p = 1
    while p < n:
        k = p
        while k >= 1:
            for j in range(k % p, n - k, 2 * k):
                for i in range(min(k, n - j - k)):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p):
                        pairs.append((i + j, i + j + k))
            k //= 2
        p *= 2
    return pairs


def _median_network(keys: int) -> list[tuple[int, int]]:
    """The comparators of a sorting network that the middle key depends on (the rest pruned)."""
    size = 1 << (keys - 1).bit_length()
    network, needed, kept = _odd_even_merge_sort(size), {keys // 2}, []
    for i, j in reversed(network):
        if i in needed or j in needed:
            kept.append((i, j))
            needed |= {i, j}
    return kept[::-1]


MEDIAN25 = _median_network(25)


def median5(u: object) -> object:
    """5×5 median with replicated border (``cv2.medianBlur(u, 5)`` on float32).

    A sorting network of min/max (keys past the 25th are +inf, so comparators that involve
    them are resolved while tracing): elementwise ops that compile into one fused loop, where
    a generic sort over the 25 shifted maps is about ten times slower on a CPU.
    """
    h, w = u.shape[1], u.shape[2]
    p = _edge_pad(u, 2)
    keys: list = [p[:, i : i + h, j : j + w] for i in range(5) for j in range(5)]
    keys += [None] * (32 - len(keys))  # None: +inf padding up to 32 keys
    for i, j in MEDIAN25:
        a, b = keys[i], keys[j]
        if b is None:  # a ≤ +inf: already in order
            continue
        if a is None:  # +inf moves up
            keys[i], keys[j] = b, None
            continue
        keys[i], keys[j] = ops.minimum(a, b), ops.maximum(a, b)
    return keys[12]


def _cubic_weights(f: object) -> list[object]:
    a = CUBIC_A
    x0, x1, x2 = f + 1.0, f, 1.0 - f
    w0 = ((a * x0 - 5 * a) * x0 + 8 * a) * x0 - 4 * a
    w1 = ((a + 2) * x1 - (a + 3)) * x1 * x1 + 1
    w2 = ((a + 2) * x2 - (a + 3)) * x2 * x2 + 1
    return [w0, w1, w2, 1.0 - w0 - w1 - w2]


def warp(images: object, u1: object, u2: object) -> object:
    """Bicubic ``images(x + u1, y + u2)`` with zeros outside (``cv2.remap``, INTER_CUBIC,
    BORDER_CONSTANT). ``images`` is ``(B, H, W, C)``; returns ``(B, H, W, C)``."""
    b, h, w, c = images.shape
    xs = ops.cast(ops.arange(w), "float32")[None, None, :] + u1
    ys = ops.cast(ops.arange(h), "float32")[None, :, None] + u2
    x0, y0 = ops.floor(xs), ops.floor(ys)
    wx, wy = _cubic_weights(xs - x0), _cubic_weights(ys - y0)
    x0, y0 = ops.cast(x0, "int32"), ops.cast(y0, "int32")
    flat = ops.reshape(images, (b * h * w, c))
    base = (ops.arange(b, dtype="int32") * (h * w))[:, None, None]
    out = ops.zeros_like(images)
    for i in range(4):
        yi = y0 + (i - 1)
        y_ok = ops.logical_and(yi >= 0, yi < h)
        yc = ops.clip(yi, 0, h - 1)
        row = ops.zeros_like(images)
        for j in range(4):
            xj = x0 + (j - 1)
            ok = ops.logical_and(y_ok, ops.logical_and(xj >= 0, xj < w))
            idx = base + yc * w + ops.clip(xj, 0, w - 1)
            vals = ops.take(flat, ops.reshape(idx, (-1,)), axis=0)
            vals = ops.reshape(vals, (b, h, w, c))
            row = row + ops.where(ok[..., None], vals, 0.0) * wx[j][..., None]
        out = out + row * wy[i][..., None]
    return out


# ---- the solver ----------------------------------------------------------------------------


def _warp_iterations(
    warped: tuple, i0: object, u1: object, u2: object, p: tuple, t: TVL1Params
) -> tuple:
    """One warp: OpenCV's outer × inner iterations, each pair stopping on its own."""
    b, h, w = i0.shape
    l_t, taut, theta = t.lambda_ * t.theta, t.tau / t.theta, t.theta
    scaled_eps = np.float32(t.epsilon * t.epsilon * h * w)
    total = t.outer_iterations * t.inner_iterations
    median = t.median_filtering > 1
    i1w, i1wx, i1wy = warped
    grad = i1wx * i1wx + i1wy * i1wy
    rho_c = i1w - i1wx * u1 - i1wy * u2 - i0
    has_grad = grad > FLT_EPSILON
    safe_grad = ops.where(has_grad, grad, 1.0)

    def cond(n: object, active: object, *_: object) -> object:
        return ops.logical_and(n < total, ops.any(active))

    def body(n: object, active: object, *state: object) -> tuple:
        u1, u2, p11, p12, p21, p22 = state
        live = active[:, None, None]
        if median:  # at the start of every outer iteration
            u1, u2 = ops.cond(
                n % t.inner_iterations == 0,
                lambda: (ops.where(live, median5(u1), u1), ops.where(live, median5(u2), u2)),
                lambda: (u1, u2),
            )
        rho = rho_c + i1wx * u1 + i1wy * u2
        bound = l_t * grad
        fi = ops.where(
            rho < -bound,
            l_t,
            ops.where(rho > bound, -l_t, ops.where(has_grad, -rho / safe_grad, 0.0)),
        )
        v1, v2 = u1 + fi * i1wx, u2 + fi * i1wy
        n1 = v1 + theta * divergence(p11, p12)
        n2 = v2 + theta * divergence(p21, p22)
        error = ops.sum((n1 - u1) ** 2 + (n2 - u2) ** 2, axis=(1, 2))
        u1x, u1y = forward_gradient(n1)
        u2x, u2y = forward_gradient(n2)
        g1 = 1.0 + taut * ops.sqrt(u1x * u1x + u1y * u1y)
        g2 = 1.0 + taut * ops.sqrt(u2x * u2x + u2y * u2y)
        new = (
            n1,
            n2,
            (p11 + taut * u1x) / g1,
            (p12 + taut * u1y) / g1,
            (p21 + taut * u2x) / g2,
            (p22 + taut * u2y) / g2,
        )
        old = (u1, u2, p11, p12, p21, p22)
        kept = [ops.where(live, a, b) for a, b in zip(new, old, strict=True)]
        return (n + 1, ops.logical_and(active, error > scaled_eps), *kept)

    state = (ops.convert_to_tensor(0, "int32"), ops.ones((b,), "bool"), u1, u2, *p)
    state = ops.while_loop(cond, body, state)
    return state[2], state[3], tuple(state[4:])


def _one_level(i0: object, i1: object, u1: object, u2: object, t: TVL1Params) -> tuple:
    """OpenCV's procOneScale for a batch: ``warps`` warps, dual variables carried across."""
    i1x, i1y = centered_gradient(i1)
    zeros = ops.zeros_like(i0)
    p = (zeros, zeros, zeros, zeros)
    for _ in range(t.warps):
        warped = warp(ops.stack([i1, i1x, i1y], axis=-1), u1, u2)
        warped = (warped[..., 0], warped[..., 1], warped[..., 2])
        u1, u2, p = _warp_iterations(warped, i0, u1, u2, p, t)
    return u1, u2


def _tvl1(i0: object, i1: object, t: TVL1Params) -> object:
    b, h, w = i0.shape
    sizes = pyramid_sizes(h, w, t)
    i0s, i1s = [ops.cast(i0, "float32")], [ops.cast(i1, "float32")]
    for (sh, sw), (dh, dw) in zip(sizes, sizes[1:], strict=False):
        ry = resize_matrix(sh, dh, 1 / t.scale_step)
        rx = resize_matrix(sw, dw, 1 / t.scale_step)
        i0s.append(_resize(i0s[-1], ry, rx))
        i1s.append(_resize(i1s[-1], ry, rx))
    u1 = u2 = ops.zeros((b, *sizes[-1]), "float32")
    for s in range(len(sizes) - 1, -1, -1):
        u1, u2 = _one_level(i0s[s], i1s[s], u1, u2, t)
        if s:
            (sh, sw), (dh, dw) = sizes[s], sizes[s - 1]
            ry, rx = resize_matrix(sh, dh, sh / dh), resize_matrix(sw, dw, sw / dw)
            u1 = _resize(u1, ry, rx) * (1 / t.scale_step)
            u2 = _resize(u2, ry, rx) * (1 / t.scale_step)
    return ops.stack([u1, u2], axis=-1)


def gpu_visible() -> bool:
    """Whether the Keras backend sees a GPU."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return bool(tf.config.list_physical_devices("GPU"))
    if backend == "jax":
        import jax

        return any(d.platform == "gpu" for d in jax.devices())
    if backend == "torch":
        import torch

        return torch.cuda.is_available()
    return False


def engine_parts(device: bool = True) -> dict[str, str]:
    """Keras's version, its backend's and (unless ``device`` is false: asking can take a GPU's
    memory) the device: what the keras engine's flow depends on."""
    import importlib

    backend = keras.backend.backend()
    module = importlib.import_module({"tensorflow": "tensorflow"}.get(backend, backend))
    parts = {"keras": keras.__version__, "backend": f"{backend} {module.__version__}"}
    if device:
        parts["device"] = "gpu" if gpu_visible() else "cpu"
    return parts


@functools.lru_cache(maxsize=16)
def compiled(t: TVL1Params) -> object:
    """The solver for ``t``, compiled by the backend (XLA on TensorFlow and JAX)."""
    if t.gamma != 0:
        raise ValueError("the keras engine implements gamma 0 only (OpenCV's default)")
    if t.median_filtering > 1 and t.median_filtering != 5:
        raise ValueError("the keras engine implements median_filtering 1 (off) or 5 (OpenCV's)")
    fn = functools.partial(_tvl1, t=t)
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        jitted = jax.jit(fn)

        def run(i0: object, i1: object) -> object:
            # full float32 matrix products: on GPUs JAX would otherwise use TF32 for the
            # resizing matmuls, an error OpenCV's resize does not make
            with jax.default_matmul_precision("highest"):
                return jitted(i0, i1)

        return run
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(fn, jit_compile=True, reduce_retracing=False)
    return fn


def tvl1(i0: np.ndarray, i1: np.ndarray, t: TVL1Params) -> np.ndarray:
    """Flow ``(B, H, W, 2)`` float32 from grey frames ``i0``, ``i1`` ``(B, H, W)`` (0–255)."""
    i0, i1 = np.asarray(i0), np.asarray(i1)
    if i0.shape != i1.shape or i0.ndim != 3:
        raise ValueError(
            f"expected two (B, H, W) batches of grey frames; got {i0.shape}, {i1.shape}"
        )
    if min(i0.shape[1:]) < 3:
        raise ValueError(f"frames of {i0.shape[2]}x{i0.shape[1]} are too small for TV-L1")
    fn = compiled(t)
    out = fn(ops.convert_to_tensor(i0, "float32"), ops.convert_to_tensor(i1, "float32"))
    return np.asarray(ops.convert_to_numpy(out), np.float32)
