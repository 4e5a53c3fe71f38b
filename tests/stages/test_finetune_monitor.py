"""Early stopping watches the model that ships: after a channel cut, the monitor split is scored
with batch-norm statistics re-estimated (as the shipped model's are), not with the moving
statistics Keras' own val metrics read; the moving statistics training uses are left alone."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from tiny_models import blobs, tiny_classifier

from edgeprune import _tf, training
from edgeprune.data import Inputs, Labelled, fit_split
from edgeprune.pruning.batchnorm import bn_sample, recalibrate_bn, recalibrated
from edgeprune.recipe import Recipe
from edgeprune.stages import finetune
from edgeprune.stages.prune import Pruned

keras = _tf.keras()


def _moving(model) -> list[np.ndarray]:
    bn = model.get_layer("bn")
    return [bn.moving_mean.numpy().copy(), bn.moving_variance.numpy().copy()]


@pytest.fixture(scope="module")
def data():
    x, y = blobs(200)
    return Labelled(x, y, "blobs")


def test_recalibrated_scores_as_shipped_and_restores_the_moving_statistics(data):
    model = tiny_classifier()
    training.compile_for_training(model, 1e-2)
    model.fit(data.x, data.y, epochs=2, batch_size=16, verbose=0)
    bn = model.get_layer("bn")
    bn.moving_mean.assign(bn.moving_mean + 3.0)  # stale, as after a cut at momentum 0.99
    stale = _moving(model)
    shipped = keras.models.clone_model(model)
    shipped.set_weights(model.get_weights())
    recalibrate_bn(shipped, data.x)
    with recalibrated(model, data.x):
        inside = training.accuracy_and_loss(model, data.x, data.y)
    assert inside == pytest.approx(training.accuracy_and_loss(shipped, data.x, data.y))
    assert inside != pytest.approx(training.accuracy_and_loss(model, data.x, data.y))
    assert all(np.array_equal(a, b) for a, b in zip(stale, _moving(model), strict=True))


def test_the_shipped_monitor_is_what_early_stopping_reads(data):
    model = tiny_classifier()
    training.compile_for_training(model, 1e-2)
    fit, monitor = fit_split(data, 0)
    bn_x = bn_sample(fit.x, 0)
    stopper = keras.callbacks.EarlyStopping(monitor="val_shipped_loss", mode="min",
                                            patience=100)
    history = model.fit(fit.x, fit.y, epochs=3, batch_size=16, verbose=0,
                        validation_data=(monitor.x, monitor.y),
                        callbacks=[finetune.shipped_monitor(monitor, bn_x), stopper])
    assert len(history.history["val_shipped_loss"]) == 3
    assert stopper.best == min(history.history["val_shipped_loss"])
    with recalibrated(model, bn_x):  # the last epoch's figure is the recalibrated model's
        accuracy, loss = training.accuracy_and_loss(model, monitor.x, monitor.y)
    assert history.history["val_shipped_loss"][-1] == pytest.approx(loss, rel=1e-5)
    assert history.history["val_shipped_accuracy"][-1] == pytest.approx(accuracy)


@pytest.mark.parametrize(("recalibrate", "watched"), [(True, "val_shipped_loss"),
                                                      (False, "val_loss")])
def test_the_stage_watches_the_shipped_models_loss(data, caplog, recalibrate, watched):
    pruned = Pruned(model=tiny_classifier(), recalibrate_bn=recalibrate)
    inputs = Inputs(train=data, val=None, calib=None)
    with caplog.at_level(logging.INFO, logger="edgeprune.stages.finetune"):
        _, trained = finetune.run(pruned, inputs, Recipe(epochs=2, learning_rate=1e-2), None)
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("fine-tuned"))
    assert f"monitor-split {watched}" in line
    assert trained["monitor"] == watched and f"{trained['monitor_loss']:.4f}" in line
    assert trained["epochs_run"] == 2 and trained["stopped"] == "after every epoch"


def test_the_summary_says_when_the_fine_tune_stopped_early(data):
    # A frozen model's weights, and so the re-estimated model's monitor loss, never change:
    # early stopping ends the run after PATIENCE epochs without improvement.
    model = tiny_classifier()
    model.trainable = False
    inputs = Inputs(train=data, val=None, calib=None)
    _, trained = finetune.run(Pruned(model=model, recalibrate_bn=True), inputs,
                              Recipe(epochs=20), None)
    assert trained["epochs_run"] == 1 + finetune.PATIENCE < trained["epochs"] == 20
    assert trained["stopped"].startswith("early: val_shipped_loss not lower")
    assert trained["lowest_loss_epoch"] == 1 and trained["weights"] == "the last epoch's"
