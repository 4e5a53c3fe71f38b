"""Training helpers shared by the fine-tune stage and the pruning search: seeding, compiling
(optimizer, learning-rate schedule, cross-entropy or distillation loss), scoring and a Ctrl-C
that stops between batches."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeprune import _tf

_EPSILON = 1e-7  # Keras' clip for probabilities taken to log space


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
    out = outputs(model, x)
    if not outputs_probabilities(model):
        out = np.exp(out - out.max(axis=1, keepdims=True))
        out /= out.sum(axis=1, keepdims=True)
    p = np.clip(out[np.arange(len(y)), y], _EPSILON, 1.0)
    return float(np.mean(out.argmax(axis=1) == y)), float(-np.mean(np.log(p)))


@dataclass(frozen=True)
class Distillation:
    """Knowledge distillation (Hinton et al. 2015, arXiv:1503.02531): the loss is
    ``alpha·CE(y, s) + (1 - alpha)·T²·KL(softmax(t/T) ‖ softmax(s/T))`` for student outputs
    ``s`` and teacher logits ``t``. The T² keeps the soft term's gradients at the scale of the
    hard term's as T changes."""

    temperature: float
    alpha: float  # 0: the teacher only (no labels needed)


def outputs(model: Any, x: np.ndarray) -> np.ndarray:
    """``model`` on ``x`` in inference mode, in batches of 256, one row per sample."""
    out = np.concatenate([np.asarray(model(x[i:i + 256], training=False))
                          for i in range(0, len(x), 256)])
    return out.reshape(len(out), -1)


def compile_for_training(model: Any, learning_rate: float, *, optimizer: str = "adam",
                         lr_schedule: str = "constant", total_steps: int = 0,
                         warmup_steps: int = 0, distill: Distillation | None = None) -> None:
    """Compile for ``fit``. With ``distill``, ``fit``'s y is ``teacher_targets``' packing.
    The defaults (Adam at a constant rate, cross-entropy) are the fine-tune's since its start."""
    keras = _tf.keras()
    probabilities = outputs_probabilities(model)
    rate = learning_rate_schedule(learning_rate, lr_schedule, total_steps, warmup_steps)
    if distill is None:
        loss: Any = keras.losses.SparseCategoricalCrossentropy(from_logits=not probabilities)
        metrics: list[Any] = ["accuracy"]
    else:
        loss = distillation_loss(distill, probabilities)
        accuracy = keras.metrics.sparse_categorical_accuracy

        def packed_accuracy(packed: Any, out: Any) -> Any:  # the labels: column 0
            return accuracy(packed[:, :1], out)

        metrics = [] if distill.alpha == 0 else [  # alpha 0: the labels are placeholders
            keras.metrics.MeanMetricWrapper(packed_accuracy, name="accuracy")]
    model.compile(optimizer=make_optimizer(optimizer, rate), loss=loss, metrics=metrics)


def make_optimizer(name: str, learning_rate: Any) -> Any:
    """``adam``; ``sgd`` with momentum 0.9; ``adamw`` (decoupled weight decay 0.004, Keras'
    default)."""
    keras = _tf.keras()
    if name == "adam":
        return keras.optimizers.Adam(learning_rate)
    if name == "sgd":
        return keras.optimizers.SGD(learning_rate, momentum=0.9)
    if name == "adamw":
        return keras.optimizers.AdamW(learning_rate)
    raise ValueError(f"unknown optimizer {name!r}")


def learning_rate_schedule(learning_rate: float, schedule: str, total_steps: int,
                           warmup_steps: int) -> Any:
    """``constant``: the float itself. ``cosine``: linear warm-up from 0 to ``learning_rate``
    over ``warmup_steps``, then cosine decay to 0 at ``total_steps``."""
    if schedule == "constant":
        return learning_rate
    if schedule != "cosine":
        raise ValueError(f"unknown learning-rate schedule {schedule!r}")
    decay = _tf.keras().optimizers.schedules.CosineDecay
    if warmup_steps <= 0:
        return decay(learning_rate, decay_steps=max(1, total_steps))
    return decay(0.0, decay_steps=max(1, total_steps - warmup_steps),
                 warmup_target=learning_rate, warmup_steps=warmup_steps)


def model_logits(model: Any, x: np.ndarray) -> np.ndarray:
    """``model``'s logits on ``x`` in inference mode (its weights untouched); for a model
    ending in a softmax, log-probabilities, which are its logits up to a per-sample constant
    that the tempered softmax cancels."""
    out = outputs(model, x)
    if outputs_probabilities(model):
        out = np.log(np.clip(out, _EPSILON, 1.0))
    return out.astype(np.float32)


def teacher_targets(teacher: Any, labelled: bool) -> Any:
    """A tf.data map from a batch (x, y) to (x, packed): the label (0 when there is none),
    then the teacher's logits on x, computed on the fly (augmented inputs get their own)."""
    tf = _tf.tf()
    probabilities = outputs_probabilities(teacher)

    def pack(x: Any, y: Any) -> Any:
        out = teacher(x, training=False)
        out = tf.reshape(out, [tf.shape(out)[0], -1])
        if probabilities:  # log-probabilities: logits up to a per-sample constant
            out = tf.math.log(tf.clip_by_value(out, _EPSILON, 1.0))
        labels = tf.cast(tf.reshape(y, [-1, 1]), tf.float32)
        if not labelled:
            labels = tf.zeros_like(labels)
        return x, tf.concat([labels, tf.cast(out, tf.float32)], axis=1)

    return pack


def distillation_loss(distill: Distillation, student_probabilities: bool) -> Any:
    """The per-sample loss of ``Distillation`` on packed targets (``teacher_targets``)."""
    tf = _tf.tf()  # here, not in the traced function
    t, alpha = distill.temperature, distill.alpha

    def loss(packed: Any, out: Any) -> Any:
        s = tf.reshape(out, [tf.shape(out)[0], -1])
        if student_probabilities:  # log-probabilities: logits up to a per-sample constant
            s = tf.math.log(tf.clip_by_value(s, _EPSILON, 1.0))
        total = 0.0
        if alpha > 0:
            labels = tf.cast(packed[:, 0], tf.int32)
            total += alpha * tf.nn.sparse_softmax_cross_entropy_with_logits(labels, s)
        if alpha < 1:
            teacher = tf.nn.log_softmax(packed[:, 1:] / t)
            student = tf.nn.log_softmax(s / t)
            kl = tf.reduce_sum(tf.exp(teacher) * (teacher - student), axis=-1)
            total += (1 - alpha) * t * t * kl
        return total

    return loss


def distillation_scores(model: Any, x: np.ndarray, logits: np.ndarray,
                        temperature: float) -> tuple[float, float]:
    """(top-1 agreement with the teacher, teacher-only distillation loss T²·KL) of ``model``
    on ``x`` in inference mode, against the teacher's ``logits`` on the same samples."""
    s = model_logits(model, x)
    t_log, s_log = _log_softmax(logits / temperature), _log_softmax(s / temperature)
    kl = np.sum(np.exp(t_log) * (t_log - s_log), axis=1)
    agreement = np.mean(s.argmax(axis=1) == logits.argmax(axis=1))
    return float(agreement), float(temperature**2 * np.mean(kl))


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


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
