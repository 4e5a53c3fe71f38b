"""tf.data pipelines over samples: training batches (seeded shuffle, optional augmentation,
prefetching) and ordered batches for scoring.

The shuffle permutes sample *indices* (8 bytes a sample), a fresh seeded permutation each
epoch; batches are read from their source in parallel and prefetched, so an epoch holds a few
batches in memory whatever the dataset's size. Augmentation uses stateless random ops keyed
by (seed, batch number): the same seed gives the same batches.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from edgeprune import _tf
from edgeprune.data.inputs import Samples
from edgeprune.dataspec import DataSpec

Targets = Callable[[Any, Any], Any]  # (x batch, y batch) tensors -> Keras y


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n)


def training_dataset(x: Samples, y: np.ndarray, batch_size: int, *, seed: int, epochs: int,
                     augment: DataSpec | None = None, targets: Targets | None = None,
                     order: np.ndarray | None = None) -> tuple[Any, int]:
    """(dataset of ``epochs`` × steps batches, steps per epoch), for ``fit`` with
    ``steps_per_epoch``. ``order`` fixes the sample order (one pass) instead of shuffling;
    ``targets`` turns (x, y) into what the loss takes (distillation)."""
    tf = _tf.tf()
    n = len(y) if order is None else len(order)
    steps = max(1, math.ceil(n / batch_size))
    orders: dict[int, np.ndarray] = {}

    def positions(k: int) -> np.ndarray:
        epoch, step = divmod(k, steps)
        if order is not None:
            return order[step * batch_size:(step + 1) * batch_size]
        if epoch not in orders:  # one epoch's permutation at a time
            orders.clear()
            orders[epoch] = epoch_order(len(y), seed, epoch)
        return orders[epoch][step * batch_size:(step + 1) * batch_size]

    def read(k: Any) -> tuple[np.ndarray, np.ndarray]:
        idx = positions(int(k))
        return np.asarray(x[idx], np.float32), y[idx]

    ds = tf.data.Dataset.range(steps * (1 if order is not None else epochs))
    # One reader: ``positions`` keeps one epoch's permutation; prefetching overlaps the reads.
    ds = ds.map(lambda k: tf.numpy_function(read, [k], (tf.float32, tf.as_dtype(y.dtype))),
                num_parallel_calls=1)
    shape = tuple(x.shape[1:])
    ds = ds.map(lambda a, b: (tf.ensure_shape(a, (None, *shape)), tf.ensure_shape(b, (None,))))
    if augment is not None and augment.augments:
        ds = ds.enumerate().map(lambda k, ab: (_augment(ab[0], augment, seed, k), ab[1]),
                                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if targets is not None:
        ds = ds.map(targets)
    return ds.prefetch(tf.data.AUTOTUNE), steps


def _augment(x: Any, spec: DataSpec, seed: int, k: Any) -> Any:
    """Random flips and shifts of a batch (NHWC), keyed by (seed, batch number)."""
    tf = _tf.tf()
    base = tf.stack([tf.constant(seed, tf.int64), k])
    height, width = x.shape[1], x.shape[2]

    def per_image(args: Any) -> Any:
        image, i = args
        key = tf.cast(base * 1_000_003 + tf.cast(i, tf.int64) * 7919, tf.int64)
        if spec.flip in ("horizontal", "both"):
            image = tf.image.stateless_random_flip_left_right(image, key)
        if spec.flip in ("vertical", "both"):
            image = tf.image.stateless_random_flip_up_down(image, key + 1)
        for pad, mode in ((round(spec.translate * max(height, width)), "REFLECT"),
                          (spec.crop_padding, "CONSTANT")):
            if pad > 0:
                padded = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]], mode=mode)
                image = tf.image.stateless_random_crop(padded, tf.shape(image), key + 2)
        return image

    index = tf.range(tf.shape(x)[0], dtype=tf.int64)
    return tf.map_fn(per_image, (x, index), fn_output_signature=x.dtype)
