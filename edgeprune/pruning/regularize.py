"""L1 sparsity training before channel selection ("network slimming").

Liu et al., *Learning Efficient Convolutional Networks through Network Slimming* (ICCV 2017):
train with λ·Σ|γ| over every batch norm's scale added to the loss, so channels the network can
do without drift to γ ≈ 0; channel selection by |γ| (``--criterion bn``) then removes exactly
those. ``on="kernel"`` penalises conv/dense kernels instead (for models without batch norm; the
filter-norm criteria ``l1``/``l2`` then see the shrunken filters).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from edgeprune import _tf, distribute
from edgeprune.errors import BadInputError

log = logging.getLogger(__name__)

L1_TARGETS = ("bn", "kernel")
KERNELS = ("kernel", "depthwise_kernel", "pointwise_kernel")
NEAR_ZERO = 1e-2  # |value| below this counts as switched off in the logs and notes


def penalised(model: Any, on: str) -> list[Any]:
    """The variables the L1 term covers: every BN γ, or every conv/dense kernel."""
    keras = _tf.keras()
    found: dict[int, Any] = {}
    for layer in [model, *model.submodules]:
        if on == "bn" and isinstance(layer, keras.layers.BatchNormalization):
            names: tuple[str, ...] = ("gamma",)
        elif on == "kernel" and isinstance(layer, keras.layers.Layer):
            names = KERNELS
        else:
            continue
        for name in names:
            var = getattr(layer, name, None)
            if var is not None and getattr(var, "trainable", False):
                found.setdefault(id(var), var)
    return list(found.values())


def near_zero_fraction(model: Any, on: str = "bn", tol: float = NEAR_ZERO) -> float:
    """Fraction of the penalised values with |value| < ``tol``."""
    values = [np.abs(v.numpy()).ravel() for v in penalised(model, on)]
    flat = np.concatenate(values) if values else np.zeros(0)
    return float(np.mean(flat < tol)) if len(flat) else 0.0


def sparsify(
    model: Any,
    x: Any,
    y: np.ndarray,
    *,
    l1: float,
    on: str = "bn",
    epochs: int,
    batch_size: int = 32,
    learning_rate: float = 1e-3,
    seed: int = 0,
    from_logits: bool = False,
) -> Any:
    """A copy of ``model`` trained for ``epochs`` on (x, y) with λ·Σ|w| added to the loss.

    ``model`` is not modified. The loss is sparse categorical cross-entropy, as in fine-tuning.
    """
    _check(model, l1, on, epochs)
    keras = _tf.keras()
    keras.utils.set_random_seed(seed)
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    with distribute.training_copy(copy) as twin:  # under --strategy: on every replica
        _train(twin, x, np.asarray(y), l1=l1, on=on, epochs=epochs, batch_size=batch_size,
               learning_rate=learning_rate, seed=seed, from_logits=from_logits)
    return copy


def _check(model: Any, l1: float, on: str, epochs: int) -> None:
    if on not in L1_TARGETS:
        raise BadInputError(
            f"--l1-on {on}", "unknown target", f"use one of: {', '.join(L1_TARGETS)}"
        )
    if not (l1 >= 0 and np.isfinite(l1)):  # 0 is plain training (a control run)
        raise BadInputError(f"--l1 {l1}", "must be a number ≥ 0", "use e.g. 1e-4")
    if epochs < 1:
        raise BadInputError(
            f"--l1-epochs {epochs}",
            "the L1 sparsity phase needs at least one epoch",
            "pass --l1-epochs N (or --epochs N, its default)",
        )
    if on == "bn" and not penalised(model, "bn"):
        raise BadInputError(
            "--l1-on bn",
            f"model '{model.name}' has no BatchNormalization layer with a trainable scale (γ)",
            "use --l1-on kernel to penalise the conv/dense kernels instead",
        )


def _train(model: Any, x: Any, y: np.ndarray, *, l1: float, on: str, epochs: int,
           batch_size: int, learning_rate: float, seed: int, from_logits: bool) -> None:
    """``sparsify``'s loop on ``model`` in place, each batch split over the replicas."""
    keras, tf = _tf.keras(), _tf.tf()
    weights = penalised(model, on)
    trainable = model.trainable_variables
    loss_fn = keras.losses.SparseCategoricalCrossentropy(
        from_logits=from_logits, reduction=keras.losses.Reduction.NONE)
    optimizer = keras.optimizers.Adam(learning_rate)
    lam = tf.constant(l1, tf.float32)
    replicas = distribute.current().replicas

    @tf.function
    def step(xb: Any, yb: Any, n: Any) -> Any:
        """One replica's share of the batch; the loss is the global batch's mean."""
        with tf.GradientTape() as tape:
            task = tf.reduce_sum(loss_fn(yb, model(xb, training=True))) / n
            penalty = tf.add_n([tf.reduce_sum(tf.abs(w)) for w in weights])
            loss = task + lam * penalty / replicas
        grads = tape.gradient(loss, trainable)
        optimizer.apply_gradients(
            [(g, v) for g, v in zip(grads, trainable, strict=True) if g is not None]
        )
        return task

    rng = np.random.default_rng(seed)  # x may be Rows: each batch is read when its step runs
    for epoch in range(epochs):
        order = rng.permutation(len(y))
        losses = [
            float(distribute.per_replica_step(step, np.asarray(x[idx]), y[idx]))
            for idx in (order[i : i + batch_size] for i in range(0, len(y), batch_size))
        ]
        log.info(
            "L1 phase epoch %d/%d: loss %.4f, %.0f%% of |%s| < %g",
            epoch + 1, epochs, float(np.mean(losses)),
            100 * near_zero_fraction(model, on), "γ" if on == "bn" else "w", NEAR_ZERO,
        )  # fmt: skip
