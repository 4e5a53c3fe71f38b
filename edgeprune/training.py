"""Training helpers shared by the fine-tune stage and the pruning search: seeding, compiling,
scoring and a Ctrl-C that stops between batches."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np

from edgeprune import _tf


def seed_everything(seed: int) -> None:
    keras = _tf.keras()
    keras.utils.set_random_seed(seed)
    _tf.tf().config.experimental.enable_op_determinism()


def outputs_probabilities(model: Any) -> bool:
    """True when the model ends in a softmax (then the loss takes probabilities, not logits)."""
    last = model.layers[-1]
    layer = getattr(last, "layer", last)  # TF-MOT's prune/QAT wrappers hold the layer
    if type(layer).__name__ == "Softmax":
        return True
    activation = getattr(layer, "activation", None)
    # QAT replaces the activation with a QuantizeAwareActivation that holds the original
    activation = getattr(activation, "activation", activation)
    return getattr(activation, "__name__", "") == "softmax"


def accuracy_and_loss(model: Any, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(top-1 accuracy, cross-entropy) of ``model`` on (x, y), in inference mode."""
    out = np.concatenate([np.asarray(model(x[i:i + 256], training=False))
                          for i in range(0, len(x), 256)])
    out = out.reshape(len(out), -1)
    if not outputs_probabilities(model):
        out = np.exp(out - out.max(axis=1, keepdims=True))
        out /= out.sum(axis=1, keepdims=True)
    p = np.clip(out[np.arange(len(y)), y], 1e-7, 1.0)
    return float(np.mean(out.argmax(axis=1) == y)), float(-np.mean(np.log(p)))


def compile_for_training(model: Any, learning_rate: float) -> None:
    keras = _tf.keras()
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(
            from_logits=not outputs_probabilities(model)
        ),
        metrics=["accuracy"],
    )


@contextlib.contextmanager
def deferred_interrupt(model: Any) -> Iterator[None]:
    """Ctrl-C stops training at the next batch boundary, then raises KeyboardInterrupt.

    A KeyboardInterrupt raised inside TensorFlow's C++/tracing code surfaces as an unrelated
    error ("Concurrent access?"); stopping between batches keeps it a clean interrupt.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    hit = threading.Event()

    def on_sigint(signum: int, frame: Any) -> None:
        hit.set()
        model.stop_training = True

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if hit.is_set():
        raise KeyboardInterrupt
