"""Fine-tune stage: train the (pruned) model on ``--data``.

Early stopping watches a seeded monitor split carved from the *training* data, never the
held-out set that every reported accuracy comes from (choosing epochs on it would flatter the
reported figure). Seeded, with TensorFlow's op determinism on: same inputs, same weights.
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgeprune import _tf, progress
from edgeprune.data import Inputs, fit_split
from edgeprune.recipe import Recipe
from edgeprune.stages.prune import Pruned

log = logging.getLogger(__name__)

PATIENCE = 3


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


def run(pruned: Pruned, inputs: Inputs, recipe: Recipe, log_dir: Path | None) -> Any:
    """The fine-tuned model (still wrapped if TF-MOT wrapped it); unchanged when not trained."""
    if recipe.epochs == 0 or inputs.train is None:  # pruners that need training refuse this
        return pruned.model
    if pruned.skip_finetune:  # nothing was pruned: training the input model only perturbs it
        log.info("fine-tuning skipped: %s", pruned.skip_finetune)
        return pruned.model
    keras = _tf.keras()
    seed_everything(recipe.seed)
    model = pruned.model
    compile_for_training(model, recipe.learning_rate)
    callbacks = list(pruned.callbacks)
    train, monitor = fit_split(inputs.train, recipe.seed)
    validation = None
    if monitor is not None:
        validation = (monitor.x, monitor.y)
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor="val_accuracy",
                patience=PATIENCE,
                restore_best_weights=True,
                start_from_epoch=pruned.min_epochs,
            )
        )
    if log_dir is not None:
        from edgeprune.pruning import tfmot

        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(log_dir), write_graph=False))
        callbacks = tfmot.with_summaries(callbacks, log_dir)
    callbacks.append(progress.keras_callback(recipe.epochs,
                                             math.ceil(len(train) / recipe.batch_size)))
    with deferred_interrupt(model):
        history = model.fit(
            train.x,
            train.y,
            batch_size=recipe.batch_size,
            epochs=recipe.epochs,
            validation_data=validation,
            callbacks=callbacks,
            shuffle=True,
            verbose=0,
        )
    epochs_run = len(history.history.get("loss", []))
    log.info("fine-tuned %d epoch(s); monitor-split accuracy %s", epochs_run,
             history.history.get("val_accuracy", ["n/a"])[-1])
    if pruned.recalibrate_bn:
        from edgeprune.pruning.batchnorm import bn_sample, recalibrate_bn

        recalibrate_bn(model, bn_sample(train.x, recipe.seed))
    return model
