"""Fine-tune stage: train the (pruned) model on ``--data``.

Early stopping watches a seeded monitor split carved from the *training* data, never the
held-out set that every reported accuracy comes from (choosing epochs on it would flatter the
reported figure). It stops when the loss of the model that ships has not improved for
``PATIENCE`` epochs, and keeps the last epoch's weights. When channels were cut, that model's
batch-norm statistics are re-estimated after training, so each epoch is scored the same way:
Keras' own ``val_accuracy`` reads the moving statistics, which lag the weights at momentum
0.99 (on mnist it read 76-99 % between epochs while the re-estimated model held 98.4-99.5 %;
bench/finetune_monitor.md). The last weights, not the best-scoring epoch's: on a monitor split
of a few hundred to 1,500 samples "best" is mostly noise, and of the policies
bench/early_stopping.md compares this one scored highest over both examples (98.84 % against
98.70 % for the former val_accuracy with best weights restored, 98.82 % for no early
stopping).
Seeded, with TensorFlow's op determinism on: same inputs, same weights.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from edgeprune import _tf, progress
from edgeprune.data import Inputs, Labelled, fit_split
from edgeprune.recipe import Recipe
from edgeprune.stages.prune import Pruned
from edgeprune.training import (
    accuracy_and_loss,
    compile_for_training,
    deferred_interrupt,
    seed_everything,
)

log = logging.getLogger(__name__)

PATIENCE = 3
READS = ("epochs", "batch_size", "learning_rate", "seed")  # for the stage's cache key


def key_parts(recipe: Recipe, target: Any) -> dict[str, Any]:
    return {"recipe": recipe.pick(READS)}


def shipped_monitor(monitor: Labelled, bn_x: np.ndarray) -> Any:
    """A Keras callback adding ``val_shipped_loss``/``val_shipped_accuracy`` to each epoch's
    logs: the monitor split scored with batch-norm statistics re-estimated on ``bn_x``, as the
    shipped model's will be. Callbacks after it in the list (EarlyStopping) see them."""
    from edgeprune.pruning.batchnorm import recalibrated

    class _Shipped(_tf.keras().callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
            with recalibrated(self.model, bn_x):
                accuracy, loss = accuracy_and_loss(self.model, monitor.x, monitor.y)
            if logs is not None:
                logs.update(val_shipped_accuracy=accuracy, val_shipped_loss=loss)

    return _Shipped()






def run(pruned: Pruned, inputs: Inputs, recipe: Recipe,
        log_dir: Path | None) -> tuple[Any, dict[str, Any]]:
    """The fine-tuned model (still wrapped if TF-MOT wrapped it; unchanged when not trained)
    and what the training did, for the report: epochs run, why it stopped, the monitor's
    figures for the weights kept."""
    if recipe.epochs == 0 or inputs.train is None:  # pruners that need training refuse this
        why = "epochs = 0" if recipe.epochs == 0 else "no training data (--data)"
        return pruned.model, {"epochs": recipe.epochs, "epochs_run": 0, "skipped": why}
    if pruned.skip_finetune:  # nothing was pruned: training the input model only perturbs it
        log.info("fine-tuning skipped: %s", pruned.skip_finetune)
        return pruned.model, {"epochs": recipe.epochs, "epochs_run": 0,
                              "skipped": pruned.skip_finetune}
    keras = _tf.keras()
    seed_everything(recipe.seed)
    model = pruned.model
    compile_for_training(model, recipe.learning_rate)
    callbacks = list(pruned.callbacks)
    train, monitor = fit_split(inputs.train, recipe.seed)
    validation = None
    watched = "val_loss"  # without re-estimated statistics the shipped model is the trained one
    bn_x = None
    if pruned.recalibrate_bn:
        from edgeprune.pruning.batchnorm import bn_sample

        bn_x = bn_sample(train.x, recipe.seed)
    if monitor is not None:
        validation = (monitor.x, monitor.y)
        if bn_x is not None:
            callbacks.append(shipped_monitor(monitor, bn_x))
            watched = "val_shipped_loss"
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor=watched,
                mode="min",
                patience=PATIENCE,
                restore_best_weights=False,  # see the module docstring
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
    summary = _summary(history.history, recipe.epochs, watched if validation else None,
                       pruned.min_epochs)
    if bn_x is not None:
        from edgeprune.pruning.batchnorm import recalibrate_bn

        recalibrate_bn(model, bn_x)
    return model, summary


def _summary(history: dict[str, list[float]], epochs: int, watched: str | None,
             start: int) -> dict[str, Any]:
    """Logged, and returned for report.json's ``finetune``."""
    ran = len(history["loss"])
    summary: dict[str, Any] = {"epochs": epochs, "epochs_run": ran,
                               "train_loss": float(history["loss"][-1])}
    if watched is None or ran <= start:
        summary["stopped"] = ("after every epoch (no monitor split)" if watched is None else
                              f"after every epoch (early stopping starts after epoch {start})")
        log.info("fine-tuned %d epoch(s)", ran)
        return summary
    best = start + int(np.argmin(history[watched][start:]))
    summary.update(
        stopped=(f"early: {watched} not lower for {PATIENCE} epochs" if ran < epochs
                 else "after every epoch"),
        weights="the last epoch's", monitor=watched,
        monitor_loss=float(history[watched][-1]),
        monitor_accuracy=float(history[watched.replace("loss", "accuracy")][-1]),
        lowest_loss_epoch=best + 1)
    log.info("fine-tuned %d epoch(s), last weights kept (monitor-split %s %.4f, accuracy %.4f; "
             "lowest at epoch %d)", ran, watched, summary["monitor_loss"],
             summary["monitor_accuracy"], best + 1)
    return summary
