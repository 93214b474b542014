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
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

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


def _valid(x: object, valid: tuple | None) -> tuple[object, object]:
    """The frame's own height and width inside a padded ``(B, H, W)`` tensor (all of it when
    ``valid`` is None)."""
    return valid if valid is not None else (x.shape[1], x.shape[2])


def _edge_pad(x: object, n: int, valid: tuple | None = None) -> object:
    """Replicate the frame's border ``n`` pixels out: the frame is ``x[:, :h, :w]`` with
    ``(h, w) = valid`` (traced values allowed), the rest padding; returns ``(B, H+2n, W+2n)``
    whose ``[:h+2n, :w+2n]`` is the frame edge-padded. A gather of clamped indices
    (``ops.pad(mode="edge")`` is missing on TF, and the edge is not the tensor's)."""
    h, w = _valid(x, valid)
    rows = ops.clip(ops.arange(-n, x.shape[1] + n, dtype="int32"), 0, h - 1)
    cols = ops.clip(ops.arange(-n, x.shape[2] + n, dtype="int32"), 0, w - 1)
    return ops.take(ops.take(x, rows, axis=1), cols, axis=2)


def centered_gradient(x: object, valid: tuple | None = None) -> tuple[object, object]:
    """OpenCV's centredGradient: ``(x[i+1] − x[i−1]) / 2``, one-sided (still halved) at edges."""
    p = _edge_pad(x, 1, valid)
    dx = 0.5 * (p[:, 1:-1, 2:] - p[:, 1:-1, :-2])
    dy = 0.5 * (p[:, 2:, 1:-1] - p[:, :-2, 1:-1])
    return dx, dy


def forward_gradient(u: object, valid: tuple | None = None) -> tuple[object, object]:
    """Forward differences, zero in the frame's last column (x) and last row (y) and in the
    padding beyond them (so the dual variables stay zero there)."""
    h, w = _valid(u, valid)
    dx = ops.concatenate([u[:, :, 1:] - u[:, :, :-1], ops.zeros_like(u[:, :, :1])], axis=2)
    dy = ops.concatenate([u[:, 1:] - u[:, :-1], ops.zeros_like(u[:, :1])], axis=1)
    in_x = ops.arange(u.shape[2], dtype="int32")[None, None, :] < w - 1
    in_y = ops.arange(u.shape[1], dtype="int32")[None, :, None] < h - 1
    return ops.where(in_x, dx, 0.0), ops.where(in_y, dy, 0.0)


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


def median5(u: object, valid: tuple | None = None) -> object:
    """5×5 median with replicated border (``cv2.medianBlur(u, 5)`` on float32) of the frame
    ``u[:, :h, :w]``, ``(h, w) = valid``.

    A sorting network of min/max (keys past the 25th are +inf, so comparators that involve
    them are resolved while tracing): elementwise ops that compile into one fused loop, where
    a generic sort over the 25 shifted maps is about ten times slower on a CPU.
    """
    h, w = u.shape[1], u.shape[2]
    p = _edge_pad(u, 2, valid)
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


def warp(images: object, u1: object, u2: object, valid: tuple | None = None) -> object:
    """Bicubic ``images(x + u1, y + u2)`` with zeros outside the frame (``cv2.remap``,
    INTER_CUBIC, BORDER_CONSTANT). ``images`` is ``(B, H, W, C)``, the frame its
    ``[:, :h, :w]`` with ``(h, w) = valid``; returns ``(B, H, W, C)``."""
    b, hp, wp, c = images.shape
    h, w = _valid(images, valid)
    xs = ops.cast(ops.arange(wp), "float32")[None, None, :] + u1
    ys = ops.cast(ops.arange(hp), "float32")[None, :, None] + u2
    x0, y0 = ops.floor(xs), ops.floor(ys)
    wx, wy = _cubic_weights(xs - x0), _cubic_weights(ys - y0)
    x0, y0 = ops.cast(x0, "int32"), ops.cast(y0, "int32")
    flat = ops.reshape(images, (b * hp * wp, c))
    base = (ops.arange(b, dtype="int32") * (hp * wp))[:, None, None]
    out = ops.zeros_like(images)
    for i in range(4):
        yi = y0 + (i - 1)
        y_ok = ops.logical_and(yi >= 0, yi < h)
        yc = ops.clip(yi, 0, h - 1)
        row = ops.zeros_like(images)
        for j in range(4):
            xj = x0 + (j - 1)
            ok = ops.logical_and(y_ok, ops.logical_and(xj >= 0, xj < w))
            idx = base + yc * wp + ops.clip(xj, 0, w - 1)
            vals = ops.take(flat, ops.reshape(idx, (-1,)), axis=0)
            vals = ops.reshape(vals, (b, hp, wp, c))
            row = row + ops.where(ok[..., None], vals, 0.0) * wx[j][..., None]
        out = out + row * wy[i][..., None]
    return out


# ---- the solver ----------------------------------------------------------------------------


def _warp_iterations(
    warped: tuple,
    i0: object,
    u1: object,
    u2: object,
    p: tuple,
    valid: tuple,
    eps2: object,
    t: TVL1Params,
) -> tuple:
    """One warp: OpenCV's outer × inner iterations, each pair stopping on its own once a step
    moves its flow by at most ``eps2`` (ε², an input of the compiled solver) per pixel. Only
    the frame ``[:h, :w]`` (``valid``) counts towards the stopping rule."""
    b, hp, wp = i0.shape
    h, w = valid
    l_t, taut, theta = t.lambda_ * t.theta, t.tau / t.theta, t.theta
    scaled_eps = eps2 * ops.cast(h * w, "float32")
    inside = ops.logical_and(
        ops.arange(hp, dtype="int32")[:, None] < h, ops.arange(wp, dtype="int32")[None, :] < w
    )[None]
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
                lambda: (
                    ops.where(live, median5(u1, valid), u1),
                    ops.where(live, median5(u2, valid), u2),
                ),
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
        step = ops.where(inside, (n1 - u1) ** 2 + (n2 - u2) ** 2, 0.0)
        error = ops.sum(step, axis=(1, 2))
        u1x, u1y = forward_gradient(n1, valid)
        u2x, u2y = forward_gradient(n2, valid)
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


def _one_level(
    i0: object, i1: object, u1: object, u2: object, valid: tuple, eps2: object, t: TVL1Params
) -> tuple:
    """OpenCV's procOneScale for a batch: ``warps`` warps, dual variables carried across. The
    warps are a loop of the graph, not unrolled while tracing: one copy of a warp's ops per
    level (a fifth of the ops at the default 5 warps, and of the time to trace and compile)."""
    i1x, i1y = centered_gradient(i1, valid)
    images = ops.stack([i1, i1x, i1y], axis=-1)

    def one_warp(_: object, state: tuple) -> tuple:
        u1, u2, *p = state
        warped = warp(images, u1, u2, valid)
        warped = (warped[..., 0], warped[..., 1], warped[..., 2])
        u1, u2, p = _warp_iterations(warped, i0, u1, u2, tuple(p), valid, eps2, t)
        return (u1, u2, *p)

    zeros = ops.zeros_like(i0)
    u1, u2, *_ = ops.fori_loop(0, t.warps, one_warp, (u1, u2, zeros, zeros, zeros, zeros))
    return u1, u2


def _padded(m: np.ndarray, rows: int, cols: int) -> np.ndarray:
    out = np.zeros((rows, cols), np.float32)
    out[: m.shape[0], : m.shape[1]] = m
    return out


@functools.lru_cache(maxsize=64)
def plan(
    height: int, width: int, bucket: tuple[int, int], t: TVL1Params
) -> tuple[np.ndarray, tuple]:
    """What :func:`_tvl1` needs besides the frames for an ``height`` × ``width`` frame solved
    in a ``bucket`` ``(H, W)`` tensor: each level's frame size ``(L, 2)`` and the resizing
    matrices between levels (down, then up: ``(ry, rx)`` each), zero outside the frame so the
    padding never reaches it. ``L`` is the bucket's level count: where the frame's own pyramid
    stops sooner (a side below 16 px), its missing levels are 1×1 frames of zeros whose flow
    is zero and reaches the finer level as zero, as OpenCV starts its coarsest level. The
    shapes depend on the bucket only: one compiled solver serves every frame size in it.
    Cached: every batch of a video needs the same (built in Python loops; not to be mutated)."""
    if bucket[0] < height or bucket[1] < width:
        raise ValueError(f"a {width}x{height} frame does not fit a {bucket[1]}x{bucket[0]} bucket")
    shapes = pyramid_sizes(*bucket, t)
    own = pyramid_sizes(height, width, t)  # never more levels than the bucket's
    sizes = own + [(1, 1)] * (len(shapes) - len(own))

    def matrix(a: int, b: int, axis: int, scale: float | None) -> np.ndarray:
        rows, cols = shapes[b][axis], shapes[a][axis]
        if a >= len(own) or b >= len(own):  # to or from a level the frame does not have
            return np.zeros((rows, cols), np.float32)
        n_src, n_dst = own[a][axis], own[b][axis]
        return _padded(resize_matrix(n_src, n_dst, scale or n_src / n_dst), rows, cols)

    mats = []
    for a in range(len(shapes) - 1):  # down: 1.25 source pixels per output pixel
        mats += [matrix(a, a + 1, axis, 1 / t.scale_step) for axis in (0, 1)]
    for a in range(len(shapes) - 1, 0, -1):  # up, coarsest first: to the exact finer size
        mats += [matrix(a, a - 1, axis, None) for axis in (0, 1)]
    return np.asarray(sizes, np.int32), tuple(mats)


def _tvl1(
    i0: object, i1: object, sizes: object, mats: tuple, eps2: object, t: TVL1Params
) -> object:
    """The flow of frames ``i0``, ``i1`` ``(B, H, W)``, each the frame ``sizes[0]`` padded, with
    :func:`plan`'s ``sizes`` and ``mats`` and the stopping threshold ``eps2`` (ε²: ``t.epsilon``
    is not read, so runs that differ in ε alone share a compiled solver); ``(B, H, W, 2)``, the
    flow in ``[:, :h, :w]``."""
    b, hp, wp = i0.shape
    levels = sizes.shape[0]
    valid = [(sizes[s, 0], sizes[s, 1]) for s in range(levels)]
    down, up = mats[: 2 * (levels - 1)], mats[2 * (levels - 1) :]
    i0s, i1s = [ops.cast(i0, "float32")], [ops.cast(i1, "float32")]
    for s in range(levels - 1):
        ry, rx = down[2 * s], down[2 * s + 1]
        i0s.append(_resize(i0s[-1], ry, rx))
        i1s.append(_resize(i1s[-1], ry, rx))
    u1 = u2 = ops.zeros(i0s[-1].shape, "float32")
    for k, s in enumerate(range(levels - 1, -1, -1)):
        u1, u2 = _one_level(i0s[s], i1s[s], u1, u2, valid[s], eps2, t)
        if s:
            ry, rx = up[2 * k], up[2 * k + 1]
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


@dataclass
class CompileStats:
    """The solver's compiles in this process: how many, their seconds and shapes. Under JAX a
    compile is timed alone (``lower().compile()``; a hit in the persistent cache is counted as
    ``cached``); under TensorFlow the first call of a shape is timed (XLA compiles inside it)."""

    compiles: int = 0
    cached: int = 0
    seconds: float = 0.0
    shapes: list = field(default_factory=list)

    def line(self) -> str:
        kinds = ", ".join(f"{b} pairs of {w}x{h}" for b, h, w in self.shapes) or "none"
        hits = f", {self.cached} loaded from the compilation cache" if self.cached else ""
        return f"{self.compiles} compiles{hits} in {self.seconds:.1f} s: {kinds}"


STATS = CompileStats()

COMPILATION_CACHE = Path(".cache/xla")
"""Where the flow stage keeps JAX's compiled solvers (relative to the project)."""


def bucket_of(height: int, width: int, step: int) -> tuple[int, int]:
    """The ``(H, W)`` a frame is padded to: each side rounded up to a multiple of ``step``
    (``step`` 1: the frame's own size). Fixed steps, not chosen from the run's videos: a
    video's flow then depends on its own size only, so a cached record stays valid when
    other videos come or go."""
    return -(-height // step) * step, -(-width // step) * step


def use_compilation_cache(folder: str | Path) -> bool:
    """Under JAX, keep compiled solvers in ``folder`` (JAX's persistent compilation cache), so
    a second run loads them instead of compiling; False where the backend has none."""
    if keras.backend.backend() != "jax":
        return False
    import jax

    Path(folder).mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return True


def _check(t: TVL1Params) -> None:
    if t.gamma != 0:
        raise ValueError("the keras engine implements gamma 0 only (OpenCV's default)")
    if t.median_filtering > 1 and t.median_filtering != 5:
        raise ValueError("the keras engine implements median_filtering 1 (off) or 5 (OpenCV's)")


def compiled(t: TVL1Params) -> object:
    """The solver for ``t`` as ``run(i0, i1, sizes, mats, eps2)`` (:func:`_tvl1`), compiled by
    the backend once per (batch, bucket, level count): XLA on TensorFlow and JAX; other
    backends run it eagerly. ε is an input, not part of the solver: one serves every ε.
    Compiles are counted in :data:`STATS`."""
    return _compiled(replace(t, epsilon=0.0))


@functools.lru_cache(maxsize=16)
def _compiled(t: TVL1Params) -> object:
    _check(t)
    fn = functools.partial(_tvl1, t=t)
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        jitted, executables = jax.jit(fn), {}

        def run(i0: object, i1: object, sizes: object, mats: tuple, eps2: object) -> object:
            # full float32 matrix products: on GPUs JAX would otherwise use TF32 for the
            # resizing matmuls, an error OpenCV's resize does not make
            with jax.default_matmul_precision("highest"):
                key = i0.shape
                if key not in executables:
                    start = time.perf_counter()
                    before = _jax_cache_hits()
                    executables[key] = jitted.lower(i0, i1, sizes, mats, eps2).compile()
                    _count(i0.shape, time.perf_counter() - start)
                    STATS.cached += _jax_cache_hits() - before
                return executables[key](i0, i1, sizes, mats, eps2)

        return run
    if backend == "tensorflow":
        import tensorflow as tf

        # autograph=False: the loops are the backend's own (ops.while_loop), the Python ones
        # run over static sizes; AutoGraph would rewrite the same graph in 1 to 2 s more
        traced = tf.function(fn, jit_compile=True, reduce_retracing=False, autograph=False)
        seen = set()

        def run_tf(i0: object, i1: object, sizes: object, mats: tuple, eps2: object) -> object:
            key = tuple(i0.shape)
            if key in seen:
                return traced(i0, i1, sizes, mats, eps2)
            start = time.perf_counter()
            out = traced(i0, i1, sizes, mats, eps2)
            _count(key, time.perf_counter() - start)
            seen.add(key)
            return out

        return run_tf
    return fn


def _count(shape: tuple, seconds: float) -> None:
    STATS.compiles += 1
    STATS.seconds += seconds
    STATS.shapes.append(tuple(int(v) for v in shape))


def _jax_cache_hits() -> int:
    """Persistent-cache hits so far (JAX's monitoring counter; 0 where it is not exposed)."""
    return _JAX_HITS[0]


_JAX_HITS = [0]


def _listen_for_cache_hits() -> None:
    try:
        from jax import monitoring
    except ImportError:  # pragma: no cover
        return

    def listener(event: str, **_: object) -> None:
        if event == "/jax/compilation_cache/cache_hits":
            _JAX_HITS[0] += 1

    monitoring.register_event_listener(listener)


if keras.backend.backend() == "jax":
    _listen_for_cache_hits()


def tvl1(
    i0: np.ndarray, i1: np.ndarray, t: TVL1Params, bucket: tuple[int, int] | None = None
) -> np.ndarray:
    """Flow ``(B, H, W, 2)`` float32 from grey frames ``i0``, ``i1`` ``(B, H, W)`` (0–255),
    solved padded to ``bucket`` ``(H, W)`` (default: the frames' own size)."""
    i0, i1 = np.asarray(i0), np.asarray(i1)
    if i0.shape != i1.shape or i0.ndim != 3:
        raise ValueError(
            f"expected two (B, H, W) batches of grey frames; got {i0.shape}, {i1.shape}"
        )
    b, h, w = i0.shape
    if min(h, w) < 3:
        raise ValueError(f"frames of {w}x{h} are too small for TV-L1")
    fn = compiled(t)
    bucket = bucket or (h, w)
    sizes, mats = plan(h, w, tuple(bucket), t)
    padded = np.zeros((2, b, *bucket), np.float32)
    padded[0, :, :h, :w], padded[1, :, :h, :w] = i0, i1
    out = fn(
        ops.convert_to_tensor(padded[0]),
        ops.convert_to_tensor(padded[1]),
        ops.convert_to_tensor(sizes),
        tuple(ops.convert_to_tensor(m) for m in mats),
        ops.convert_to_tensor(np.float32(t.epsilon * t.epsilon)),  # as the constant it was
    )
    return np.asarray(ops.convert_to_numpy(out), np.float32)[:, :h, :w]
