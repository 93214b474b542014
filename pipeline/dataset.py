"""The clip reader: ``tf.data`` pipelines over the shards (DESIGN.md, Clips).

:func:`clip_dataset` is the one entry point. An example is ``T = clip.frames`` snippets
``tau = clip.stride`` frames apart; snippet ``t`` centred on frame ``i`` is RGB frame ``i`` and
the ``L = clip.flow_stack`` flows ``i - L/2 .. i + L/2 - 1`` (flow ``j`` goes from frame ``j`` to
``j + 1``), stacked as channels ``x1, y1, ..., xL, yL``. Shapes: rgb ``(B, T, H, W, 3)``, flow
``(B, T, H, W, 2L)``, both uint8 as stored (flow 128 = zero); labels int32. Mode ``both`` yields
``{"rgb": ..., "flow": ...}``. The model normalises; the reader stays cheap.

- **Training** (``training=True``): a random start per video and epoch; one multi-scale corner
  crop (sides drawn from ``clip.scales`` × the shorter frame side, neighbouring scales for
  height and width, at a corner or the centre) resized to ``clip.crop``, and a random
  horizontal flip, identical for every frame of both modalities; yields ``(inputs, label)``.
- **Evaluation**: ``eval.clips`` clips uniformly spaced over each video, centre crop,
  deterministic; yields ``(inputs, label, video_id)``.
- **Short videos** (policy: *clamp*): where a clip would reach past either end of a video,
  frame and flow indices are clamped to the first or last frame (flow), so every video of at
  least two frames gives clips of the full shape; nothing raises mid-epoch.
- A horizontal flip mirrors both modalities and maps flow x to ``256 - u`` (clipped to 255),
  so zero (128) stays zero: :func:`flip_clip`, also for the evaluation's mirrored clips.

Speed: shards are read with a parallel interleave, records parsed in parallel without touching
the JPEGs, and only the JPEGs a clip needs are decoded, each once however many stacks share it,
cropped while decoding (``decode_and_crop_jpeg``); a flow's x and y travel as one uint16 through
mirroring and stacking; each op runs on one thread (the parallel map fills the cores); batches
are prefetched (``python -m pipeline.bench reader``; docs/shards.md).
File-level auto-sharding makes each ``tf.distribute`` worker read its own shards.

The functions the pipeline maps are traced as they are written (:data:`plain`), not rewritten
by AutoGraph first: their Python branches test Python values (the mode, the seed), and every
branch on a tensor is a ``tf.cond``, so AutoGraph would make the same graph, in about 1.5 s
more per process here (Keras does the same for its own steps: ``do_not_convert`` in
``keras/src/backend/tensorflow/trainer.py``).
"""

from __future__ import annotations

import sys

import tensorflow as tf

from pipeline.contracts import SHARDS_DIR, parse_record, shard_files
from pipeline.params import Params

MODES = ("rgb", "flow", "both")
AUTOTUNE = tf.data.AUTOTUNE

plain = tf.autograph.experimental.do_not_convert
"""A function to trace as written, without AutoGraph's rewriting (the module docstring)."""


def clip_indices(
    num_frames: tf.Tensor, start: tf.Tensor, frames: int, stride: int, flow_stack: int
) -> tuple[tf.Tensor, tf.Tensor]:
    """RGB indices ``(T,)`` and flow indices ``(T, L)`` for a clip whose first centre is
    ``start``; clamped into the video (the short-video policy)."""
    n = tf.cast(num_frames, tf.int32)
    centres = start + stride * tf.range(frames, dtype=tf.int32)
    rgb = tf.clip_by_value(centres, 0, n - 1)
    offsets = tf.range(-(flow_stack // 2), flow_stack - flow_stack // 2, dtype=tf.int32)
    flow = tf.clip_by_value(rgb[:, None] + offsets[None, :], 0, tf.maximum(n - 2, 0))
    return rgb, flow


def start_range(num_frames: tf.Tensor, frames: int, stride: int, flow_stack: int) -> tuple:
    """(lo, hi): first centres whose whole clip, flow stacks included, lies in the video.

    When the video is too short for that, ``hi < lo`` and the clip starts at ``lo`` (clamped).
    """
    n = tf.cast(num_frames, tf.int32)
    lo = tf.minimum(flow_stack // 2, n - 1)
    # the last flow of the last snippet, centre + (L - L//2 - 1), must be at most n - 2
    hi = n - 1 - (flow_stack - flow_stack // 2) - (frames - 1) * stride
    return lo, tf.maximum(hi, lo)


def _decode(jpegs: tf.Tensor, window: tf.Tensor, channels: int) -> tf.Tensor:
    """Decode a 1-D batch of JPEGs, each cropped to ``window`` (y, x, h, w) while decoding."""
    return tf.map_fn(
        lambda s: tf.io.decode_and_crop_jpeg(s, window, channels=channels),
        jpegs,
        fn_output_signature=tf.TensorSpec([None, None, channels], tf.uint8),
        parallel_iterations=16,
    )


def _resize(images: tf.Tensor, size: int, dtype: tf.DType = tf.uint8) -> tf.Tensor:
    """uint8 ``(N, h, w, c)`` -> ``(N, size, size, c)``, bilinear (``tf.image.resize``'s
    half-pixel centres), rounded to integers, as ``dtype`` (uint8, or float32 holding the
    same integers); a no-op when it fits. The kernel reads the uint8 input itself."""
    shape = tf.shape(images)

    def resize() -> tf.Tensor:
        out = tf.raw_ops.ResizeBilinear(images=images, size=[size, size], half_pixel_centers=True)
        return tf.cast(tf.round(out), dtype)  # a blend of 0..255 values stays in 0..255

    same = tf.logical_and(tf.equal(shape[-3], size), tf.equal(shape[-2], size))
    return tf.cond(same, lambda: tf.cast(images, dtype), resize)


def _clip(
    rec: dict,
    rgb_idx: tf.Tensor,
    flow_idx: tf.Tensor,
    window: tf.Tensor,
    crop: int,
    mode: str,
    flip: tf.Tensor | None = None,
) -> dict[str, tf.Tensor]:
    """Decode, crop and resize the frames and flows of one clip, mirrored where ``flip``.

    Each distinct frame or flow is decoded, resized and mirrored once: a flow shared by
    neighbouring stacks (``clip.stride < clip.flow_stack``), or a frame repeated at a clamped
    end, is gathered again, not decoded again. The result is the same as doing it per stack.
    """
    out = {}
    if mode in ("rgb", "both"):
        unique, pos = tf.unique(rgb_idx)
        frames = _resize(_decode(tf.gather(rec["rgb"], unique), window, 3), crop)
        if flip is not None:
            frames = tf.cond(flip, lambda: tf.reverse(frames, axis=[-2]), lambda: frames)
        frames = tf.gather(frames, pos)  # (T, crop, crop, 3)
        out["rgb"] = tf.ensure_shape(frames, [rgb_idx.shape[0], crop, crop, 3])
    if mode in ("flow", "both"):
        t, l = flow_idx.shape  # noqa: E741
        unique, pos = tf.unique(tf.reshape(flow_idx, [-1]))
        u = tf.shape(unique)[0]
        # x1, y1, x2, y2, ...: each flow's x and y planes side by side
        jpegs = tf.reshape(
            tf.stack([tf.gather(rec["flow_x"], unique), tf.gather(rec["flow_y"], unique)], 1), [-1]
        )
        # the 2U planes as the channels of one image: TensorFlow's bilinear resize is about 5x
        # faster over many channels than over many 1-channel images, with the same values
        planes = tf.transpose(_decode(jpegs, window, 1)[..., 0], [1, 2, 0])[None]
        planes = _resize(planes, crop)[0]  # (crop, crop, 2U) uint8
        # a flow's x and y as one uint16, so that mirroring, and interleaving the L flows into
        # channels, move 2-byte elements (Eigen is slow on 1-byte ones)
        pairs = tf.bitcast(tf.reshape(planes, [crop, crop, u, 2]), tf.uint16)
        if flip is not None:  # mirrored: width reversed, and flow x -> min(256 - x, 255)
            pairs = tf.cond(flip, lambda: _mirror_pairs(pairs), lambda: pairs)
        pairs = tf.transpose(pairs, [2, 0, 1])  # (U, crop, crop)
        stacks = tf.transpose(tf.reshape(tf.gather(pairs, pos), [t, l, crop, crop]), [0, 2, 3, 1])
        # (T, crop, crop, L) uint16 -> (T, crop, crop, L, 2) uint8: channels x1, y1, ..., xL, yL
        out["flow"] = tf.reshape(tf.bitcast(stacks, tf.uint8), [t, crop, crop, 2 * l])
    return out


def _mirror_pairs(pairs: tf.Tensor) -> tf.Tensor:
    """Mirror ``(h, w, n)`` flows whose x and y bytes are one uint16 (a bitcast of ``(x, y)``):
    width reversed, x -> ``min(256 - x, 255)``, y kept."""
    pairs = tf.reverse(pairs, axis=[1])
    shift = 0 if sys.byteorder == "little" else 8  # where the bitcast put x's byte
    x = tf.bitwise.right_shift(pairs, shift) & 255
    return pairs + tf.bitwise.left_shift(_mirror_x(x) - x, shift)  # modulo 2**16: exact


def _mirror_x(u: tf.Tensor) -> tf.Tensor:
    """Flow x values (0..255, any unsigned dtype) of a mirrored image: ``min(256 - u, 255)``."""
    return (tf.constant(255, u.dtype) - u) + tf.cast(u > 0, u.dtype)


def flip_clip(clip: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    """Mirror a clip (any leading dims): width reversed, flow x -> min(256 - u, 255)."""
    out = {}
    if "rgb" in clip:
        out["rgb"] = tf.reverse(clip["rgb"], axis=[-2])
    if "flow" in clip:
        flow = tf.reverse(clip["flow"], axis=[-2])
        channels = flow.shape[-1]
        is_x = tf.range(channels) % 2 == 0  # x1, y1, x2, y2, ...
        out["flow"] = tf.where(is_x, _mirror_x(flow), flow)
    return out


def _pick(u: tf.Tensor, n: tf.Tensor | int) -> tf.Tensor:
    """An int in [0, n) from a uniform u in [0, 1)."""
    n = tf.cast(n, tf.int32)
    return tf.minimum(tf.cast(u * tf.cast(n, tf.float32), tf.int32), n - 1)


def _train_window(
    height: tf.Tensor, width: tf.Tensor, scales: list[float], u: tf.Tensor
) -> tf.Tensor:
    """A multi-scale corner crop (y, x, h, w): neighbouring scales for h and w, at one of the
    four corners or the centre; ``u`` holds three uniforms in [0, 1)."""
    h, w = tf.cast(height, tf.int32), tf.cast(width, tf.int32)
    base = tf.cast(tf.minimum(h, w), tf.float32)
    sizes = tf.maximum(tf.cast(base * tf.constant(scales, tf.float32), tf.int32), 1)
    i = _pick(u[0], len(scales))
    j = tf.clip_by_value(i + _pick(u[1], 3) - 1, 0, len(scales) - 1)
    ch, cw = tf.minimum(sizes[i], h), tf.minimum(sizes[j], w)
    corner = _pick(u[2], 5)  # TL, TR, BL, BR, centre
    ys = tf.stack([0, 0, h - ch, h - ch, (h - ch) // 2])
    xs = tf.stack([0, w - cw, 0, w - cw, (w - cw) // 2])
    return tf.stack([ys[corner], xs[corner], ch, cw])


def _centre_window(height: tf.Tensor, width: tf.Tensor, crop: int) -> tf.Tensor:
    """The centre ``crop × crop`` window (the whole side where the frame is smaller)."""
    h, w = tf.cast(height, tf.int32), tf.cast(width, tf.int32)
    ch, cw = tf.minimum(crop, h), tf.minimum(crop, w)
    return tf.stack([(h - ch) // 2, (w - cw) // 2, ch, cw])


def _inputs(clip: dict[str, tf.Tensor], mode: str) -> dict[str, tf.Tensor] | tf.Tensor:
    return clip if mode == "both" else clip[mode]


def clip_dataset(
    split: str,
    params: Params,
    mode: str,
    *,
    training: bool,
    batch_size: int,
    shards_dir: str = SHARDS_DIR,
    seed: int | None = None,
    files: list[str] | None = None,
) -> tf.data.Dataset:
    """Batched clips of ``split`` read from the shards (see the module docstring).

    Args:
        split: ``train``, ``val`` or ``test``.
        params: the validated params (``clip.*``, and ``eval.clips`` when not training).
        mode: ``rgb``, ``flow`` or ``both``.
        training: random clips with augmentation, shuffled, ``(inputs, label)``; otherwise the
            deterministic evaluation clips, ``(inputs, label, video_id)``.
        batch_size: the global batch size (training drops the last partial batch).
        seed: training only: with a seed, the order of the videos and every random choice
            (start, crop, flip) are fixed by it and the pipeline runs deterministically (the
            training stage passes one seed per epoch); without, it runs as fast as it can.
        files: read these record files instead of the split's shards (``pipeline.predict``
            passes the one record it made of a user's video).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}; got {mode!r}")
    c = params.clip
    files = list(files) if files is not None else shard_files(split, shards_dir)
    deterministic = not training or seed is not None
    ds = tf.data.Dataset.from_tensor_slices(files)
    if training:
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    ds = ds.interleave(
        tf.data.TFRecordDataset,
        cycle_length=min(len(files), 8),
        num_parallel_calls=AUTOTUNE,
        deterministic=deterministic,
    )
    if training:
        ds = ds.shuffle(c.shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    ds = ds.map(plain(parse_record), num_parallel_calls=AUTOTUNE, deterministic=deterministic)

    if training:
        # Every random choice of a clip comes from stateless ops keyed by (seed, video id): the
        # same seed gives the same clips whatever the parallelism, and the pipeline still
        # starts from the shard files (file-level auto-sharding). Each epoch gets its own seed.

        @plain
        def train_clip(rec: dict) -> tuple:
            if seed is None:
                base = tf.random.uniform([], maxval=2**62, dtype=tf.int64)
            else:
                base = tf.constant(seed, tf.int64)
            video = tf.strings.to_hash_bucket_fast(rec["video_id"], 2**62)
            u = tf.random.stateless_uniform([5], seed=tf.stack([base, video]))
            lo, hi = start_range(rec["num_frames"], c.frames, c.stride, c.flow_stack)
            start = lo + _pick(u[0], hi - lo + 1)
            rgb_idx, flow_idx = clip_indices(
                rec["num_frames"], start, c.frames, c.stride, c.flow_stack
            )
            window = _train_window(rec["height"], rec["width"], c.scales, u[1:4])
            clip = _clip(rec, rgb_idx, flow_idx, window, c.crop, mode, flip=u[4] < 0.5)
            return _inputs(clip, mode), tf.cast(rec["label"], tf.int32)

        ds = ds.map(train_clip, num_parallel_calls=AUTOTUNE, deterministic=deterministic)
        ds = ds.batch(batch_size, drop_remainder=True)
    else:
        clips = params.eval.clips

        @plain
        def eval_clips(rec: dict) -> tf.data.Dataset:
            lo, hi = start_range(rec["num_frames"], c.frames, c.stride, c.flow_stack)
            starts = tf.cast(
                tf.round(tf.linspace(tf.cast(lo, tf.float32), tf.cast(hi, tf.float32), clips)),
                tf.int32,
            )
            if clips == 1:
                starts = tf.reshape((lo + hi) // 2, [1])
            window = _centre_window(rec["height"], rec["width"], c.crop)

            @plain
            def one(start: tf.Tensor) -> tuple:
                rgb_idx, flow_idx = clip_indices(
                    rec["num_frames"], start, c.frames, c.stride, c.flow_stack
                )
                clip = _clip(rec, rgb_idx, flow_idx, window, c.crop, mode)
                return _inputs(clip, mode), tf.cast(rec["label"], tf.int32), rec["video_id"]

            return tf.data.Dataset.from_tensor_slices(starts).map(one)

        # four videos decoded in parallel; a video's clips stay together, in a fixed order
        ds = ds.interleave(
            eval_clips,
            cycle_length=4,
            block_length=clips,
            num_parallel_calls=AUTOTUNE,
            deterministic=True,
        )
        ds = ds.batch(batch_size)
    options = tf.data.Options()
    # one thread per op: the parallel map already keeps every core busy with clips, and ops
    # that split themselves over threads (resizing) only added contention (+10 % clips/s)
    options.threading.max_intra_op_parallelism = 1
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.FILE
    options.deterministic = deterministic
    return ds.with_options(options).prefetch(AUTOTUNE)
