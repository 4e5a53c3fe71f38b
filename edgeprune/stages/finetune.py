"""Fine-tune stage: train the (pruned) model on ``--data`` (or, distilling, on ``--calib``).

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

With ``distill`` the loss is knowledge distillation from the input model (training.py
``Distillation``; docs/pruning.md). The teacher's logits are computed batch by batch in the
input pipeline, in inference mode (on the augmented batch when augmentation is on), and reach
the loss packed beside the labels in Keras' y, so the student stays the model ``fit`` trains
and every callback (TF-MOT's, early stopping) works unchanged. Early stopping still watches
the shipped model's cross-entropy on the labelled monitor split; without ``--data`` the
fine-tune trains on the calibration samples with the teacher-only loss and watches that loss
on a monitor split of them.
Training data streams (data/stream.py): batches are read from their source as needed, in a
seeded order. Seeded, with TensorFlow's op determinism on: same inputs, same weights.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any

import numpy as np

from edgeprune import _tf, distribute, progress
from edgeprune.data import Inputs, Labelled, fit_split
from edgeprune.data.stream import training_dataset
from edgeprune.recipe import CHANNEL_CUTTERS, Recipe
from edgeprune.stages.prune import Pruned
from edgeprune.training import (
    Distillation,
    accuracy_and_loss,
    compile_for_training,
    deferred_interrupt,
    distillation_scores,
    model_logits,
    seed_everything,
    teacher_targets,
)

log = logging.getLogger(__name__)

PATIENCE = 3
# For the stage's cache key; QAT's fine-tune reads the same (stages/qat.py).
READS = ("epochs", "batch_size", "learning_rate", "optimizer", "lr_schedule", "warmup_epochs",
         "distill", "temperature", "alpha", "seed", "data")


def key_parts(recipe: Recipe, target: Any) -> dict[str, Any]:
    return {"recipe": recipe.pick(READS)}


def shipped_monitor(monitor: Labelled, bn_x: np.ndarray | None) -> Any:
    """A Keras callback adding ``val_shipped_loss``/``val_shipped_accuracy`` to each epoch's
    logs: the monitor split scored (cross-entropy on its labels) with batch-norm statistics
    re-estimated on ``bn_x``, as the shipped model's will be (as trained when ``bn_x`` is
    None). Callbacks after it in the list (EarlyStopping) see them."""
    return _monitor("shipped", lambda m: accuracy_and_loss(m, monitor.x, monitor.y), bn_x)


def _monitor(name: str, score: Any, bn_x: np.ndarray | None) -> Any:
    """``val_{name}_loss``/``val_{name}_accuracy`` from ``score(model)``."""
    from edgeprune.pruning.batchnorm import recalibrated

    class _Monitor(_tf.keras().callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
            with (contextlib.nullcontext() if bn_x is None else recalibrated(self.model, bn_x)):
                accuracy, loss = score(self.model)
            if logs is not None:
                logs.update({f"val_{name}_accuracy": accuracy, f"val_{name}_loss": loss})

    return _Monitor()


def training_samples(recipe: Recipe, inputs: Inputs) -> tuple[Labelled | None, bool]:
    """What the fine-tune trains on, and whether it has labels: ``--data``; else, when
    distilling, the calibration samples (the teacher's outputs are the only targets)."""
    if inputs.train is not None:
        return inputs.train, True
    if recipe.distill and inputs.calib is not None:
        return Labelled(inputs.calib, np.zeros(len(inputs.calib), np.int64),
                        "calibration samples (unlabelled)"), False
    return None, False


def untrained_cut_notes(recipe: Recipe, inputs: Inputs) -> list[str]:
    """Decided right after loading: channels will be cut and nothing will fine-tune them, which
    loses accuracy (the host profile's defaults, structured 50 %, took the bundled example from
    99 % to 66 %). Logged as a warning; returned for report.json's notes."""
    if recipe.prune not in CHANNEL_CUTTERS:
        return []
    samples, _ = training_samples(recipe, inputs)
    if recipe.epochs > 0 and samples is not None:
        return []
    why = "epochs = 0" if recipe.epochs == 0 else "no training data (--data)"
    if recipe.prune == "auto" and inputs.train is not None:
        why += "; the search's short fine-tunes train each cut only briefly"
    note = (f"--prune {recipe.prune} cuts channels and the fine-tune stage will not train the "
            f"cut model ({why}): expect a large accuracy drop. Pass --epochs N (e.g. 10) with "
            "--data TRAIN.npz (or, without labels, --distill with --calib)")
    log.warning("warning: %s", note)
    return [note]


def run(pruned: Pruned, inputs: Inputs, recipe: Recipe, log_dir: Path | None,
        teacher: Any = None) -> tuple[Any, dict[str, Any]]:
    """The fine-tuned model (still wrapped if TF-MOT wrapped it; unchanged when not trained)
    and what the training did, for the report: epochs run, why it stopped, the monitor's
    figures for the weights kept. ``teacher`` (the input model) is needed with
    ``recipe.distill``."""
    samples, labelled = training_samples(recipe, inputs)
    if recipe.epochs == 0 or samples is None:  # pruners that need training refuse this
        why = "epochs = 0" if recipe.epochs == 0 else "no training data (--data)"
        return pruned.model, {"epochs": recipe.epochs, "epochs_run": 0, "skipped": why}
    if pruned.skip_finetune:  # nothing was pruned: training the input model only perturbs it
        log.info("fine-tuning skipped: %s", pruned.skip_finetune)
        return pruned.model, {"epochs": recipe.epochs, "epochs_run": 0,
                              "skipped": pruned.skip_finetune}
    if recipe.distill and teacher is None:
        raise ValueError("distillation needs the teacher (the input model)")
    keras = _tf.keras()
    seed_everything(recipe.seed)
    model = pruned.model
    train, monitor = fit_split(samples, recipe.seed)
    distill = None if not recipe.distill else Distillation(
        recipe.temperature, recipe.alpha if labelled else 0.0)
    dataset, steps = training_dataset(
        train.x, train.y, recipe.batch_size, seed=recipe.seed, epochs=recipe.epochs,
        augment=recipe.data, targets=None if distill is None else teacher_targets(
            teacher, labelled))
    callbacks = list(pruned.callbacks)
    validation = None
    watched = "val_loss"  # without re-estimated statistics the shipped model is the trained one
    bn_x = None
    if pruned.recalibrate_bn:
        from edgeprune.pruning.batchnorm import bn_sample

        bn_x = bn_sample(train.x, recipe.seed)
    if distill is not None:  # Keras' val_loss would be the distillation loss: score apart
        if monitor is not None and labelled:
            callbacks.append(shipped_monitor(monitor, bn_x))
            watched = "val_shipped_loss"
        elif monitor is not None:
            logits = model_logits(teacher, monitor.x)
            callbacks.append(_monitor("distill", lambda m: distillation_scores(
                m, monitor.x, logits, recipe.temperature), bn_x))
            watched = "val_distill_loss"
    elif monitor is not None:
        validation = training_dataset(monitor.x, monitor.y, recipe.batch_size, seed=0,
                                      epochs=1, order=np.arange(len(monitor)))[0]
        if bn_x is not None:
            callbacks.append(shipped_monitor(monitor, bn_x))
            watched = "val_shipped_loss"
    if monitor is not None:
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
    callbacks.append(progress.keras_callback(recipe.epochs, steps))
    with distribute.training_copy(model) as twin, deferred_interrupt(twin):
        compile_for_training(twin, recipe.learning_rate, optimizer=recipe.optimizer,
                             lr_schedule=recipe.lr_schedule, total_steps=recipe.epochs * steps,
                             warmup_steps=recipe.warmup_epochs * steps, distill=distill)
        history = twin.fit(dataset, epochs=recipe.epochs, steps_per_epoch=steps,
                           validation_data=validation, callbacks=callbacks, verbose=0)
    summary = _summary(history.history, recipe.epochs, watched if monitor else None,
                       pruned.min_epochs)
    if distill is not None:
        summary["distill"] = {
            "teacher": "input model", "temperature": distill.temperature,
            "alpha": distill.alpha,
            "labels": "data" if labelled else "none (teacher only)", "samples": len(train)}
        log.info("distilled from the input model (T = %g, alpha = %g, %s)", distill.temperature,
                 distill.alpha, "with labels" if labelled else
                 f"teacher only: {len(train)} unlabelled calibration samples")
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
    # without labels the monitor's "accuracy" is the top-1 agreement with the teacher
    accuracy = "monitor_teacher_agreement" if watched == "val_distill_loss" else (
        "monitor_accuracy")
    summary.update({
        "stopped": (f"early: {watched} not lower for {PATIENCE} epochs" if ran < epochs
                    else "after every epoch"),
        "weights": "the last epoch's", "monitor": watched,
        "monitor_loss": float(history[watched][-1]),
        accuracy: float(history[watched.replace("loss", "accuracy")][-1]),
        "lowest_loss_epoch": best + 1})
    log.info("fine-tuned %d epoch(s), last weights kept (monitor-split %s %.4f, %s %.4f; "
             "lowest at epoch %d)", ran, watched, summary["monitor_loss"],
             accuracy.removeprefix("monitor_").replace("_", " "), summary[accuracy], best + 1)
    return summary
