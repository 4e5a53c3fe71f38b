"""Fine-tuning options of issue 20: knowledge distillation from the input model, the optimizer
and learning-rate schedule, and the defaults that must leave today's fine-tune unchanged."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from tiny_models import blobs, tiny_classifier

from edgeprune import _tf, training
from edgeprune.data import Inputs, Labelled, fit_split
from edgeprune.data.stream import training_dataset
from edgeprune.recipe import Recipe
from edgeprune.stages import finetune
from edgeprune.stages.prune import Pruned

keras = _tf.keras()


@pytest.fixture(scope="module")
def data() -> Labelled:
    x, y = blobs(240)
    return Labelled(x, y, "blobs")


@pytest.fixture(scope="module")
def teacher(data):
    """A tiny classifier trained on the blobs (its seed differs from the students')."""
    model = tiny_classifier(seed=5)
    training.compile_for_training(model, 1e-2)
    model.fit(data.x, data.y, epochs=15, batch_size=16, verbose=0)
    assert training.accuracy_and_loss(model, data.x, data.y)[0] > 0.95
    return model


def _agreement(model, teacher, x) -> float:
    return float(np.mean(np.argmax(model.predict(x, verbose=0), axis=1)
                         == np.argmax(teacher.predict(x, verbose=0), axis=1)))


@pytest.mark.parametrize(("alpha", "agrees"), [(0.0, True), (1.0, False)])
def test_the_teachers_logits_reach_the_loss(data, teacher, alpha, agrees):
    """Labels drawn at random: with alpha 0 the student follows the teacher regardless, with
    alpha 1 (labels only) it learns the noise and agrees with the teacher by chance."""
    noise = np.random.default_rng(3).integers(0, 3, len(data))
    inputs = Inputs(train=Labelled(data.x, noise, "random labels"), val=None, calib=None)
    recipe = Recipe(epochs=8, learning_rate=1e-2, distill=True, alpha=alpha, temperature=2.0)
    model, trained = finetune.run(Pruned(model=tiny_classifier(seed=1)), inputs, recipe, None,
                                  teacher)
    agreement = _agreement(model, teacher, data.x)
    assert (agreement > 0.9) if agrees else (agreement < 0.6), agreement
    assert trained["distill"] == {"teacher": "input model", "temperature": 2.0, "alpha": alpha,
                                  "labels": "data", "samples": len(fit_split(data, 0)[0])}
    assert trained["monitor"] == "val_shipped_loss"  # cross-entropy on the (noisy) labels


def test_a_frozen_features_student_learns_the_teachers_argmax_without_labels(data, teacher):
    """The teacher's features frozen, a fresh head; no --data, only calibration samples: the
    teacher-only loss (alpha forced to 0) teaches the head the teacher's decisions."""
    student = keras.models.clone_model(teacher)
    student.set_weights(teacher.get_weights())
    for layer in student.layers:
        layer.trainable = layer.name == "head"
    head = student.get_layer("head")
    keras.utils.set_random_seed(9)
    head.set_weights([keras.initializers.GlorotUniform()(w.shape).numpy() * 3
                      for w in head.get_weights()])
    before = _agreement(student, teacher, data.x)
    inputs = Inputs(train=None, val=None, calib=data.x)
    recipe = Recipe(epochs=30, learning_rate=3e-2, distill=True, alpha=0.9)
    model, trained = finetune.run(Pruned(model=student, recalibrate_bn=True), inputs, recipe,
                                  None, teacher)
    assert before < 0.8 and _agreement(model, teacher, data.x) > 0.95, before
    assert trained["distill"]["alpha"] == 0.0  # forced: there are no labels
    assert trained["distill"]["labels"] == "none (teacher only)"
    assert trained["monitor"] == "val_distill_loss" and "monitor_teacher_agreement" in trained


def test_the_distillation_loss_is_the_formula():
    """alpha·CE + (1 - alpha)·T²·KL, from logits or from a softmax's probabilities alike."""
    rng = np.random.default_rng(0)
    s, t = rng.normal(size=(5, 4)), rng.normal(size=(5, 4))
    y = rng.integers(0, 4, 5)
    temperature, alpha = 3.0, 0.25

    def log_softmax(z):
        z = z - z.max(axis=1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=1, keepdims=True))

    tl, sl = log_softmax(t / temperature), log_softmax(s / temperature)
    kl = (np.exp(tl) * (tl - sl)).sum(axis=1)
    ce = -log_softmax(s)[np.arange(5), y]
    want = alpha * ce + (1 - alpha) * temperature**2 * kl
    # the teacher: a linear layer with identity weights, so its logits on x = t are t
    inp = keras.Input((4,))
    teacher = keras.Model(inp, keras.layers.Dense(4, use_bias=False,
                                                  kernel_initializer="identity")(inp))
    _, packed = training.teacher_targets(teacher, labelled=True)(t.astype(np.float32), y)
    packed = np.asarray(packed)
    assert packed[:, 0].tolist() == y.tolist() and np.allclose(packed[:, 1:], t, atol=1e-6)
    distill = training.Distillation(temperature, alpha)
    from_logits = training.distillation_loss(distill, student_probabilities=False)
    probs = np.exp(log_softmax(s)).astype(np.float32)
    from_probs = training.distillation_loss(distill, student_probabilities=True)
    assert np.asarray(from_logits(packed, s.astype(np.float32))) == pytest.approx(want, rel=1e-4)
    assert np.asarray(from_probs(packed, probs)) == pytest.approx(want, rel=1e-3)


def test_the_cosine_schedule_warms_up_then_decays_to_zero(data):
    """The learning rate each optimizer step of a real fine-tune used."""
    rates: list[float] = []

    class Record(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            rates.append(float(self.model.optimizer.learning_rate))

    inputs = Inputs(train=data, val=None, calib=None)
    recipe = Recipe(epochs=4, batch_size=34, learning_rate=1e-2, lr_schedule="cosine",
                    warmup_epochs=1)
    # 4 epochs: early stopping (patience 3) cannot end the run before the last
    finetune.run(Pruned(model=tiny_classifier(), callbacks=[Record()]), inputs, recipe, None)
    steps = -(-len(fit_split(data, 0)[0]) // 34)
    assert len(rates) == 4 * steps == 24
    warm, decay = rates[:steps + 1], rates[steps:]
    assert warm == pytest.approx([1e-2 * i / steps for i in range(steps + 1)], rel=1e-5)
    assert all(a > b for a, b in itertools.pairwise(decay))
    assert decay[-1] < 1e-4  # ~0 at the last step
    halfway = steps + (len(rates) - steps) // 2
    assert rates[halfway] == pytest.approx(5e-3, rel=1e-5)  # cos(π/2): half the peak


def test_the_optimizers():
    model = tiny_classifier()
    for name, kind in (("adam", "Adam"), ("sgd", "SGD"), ("adamw", "AdamW")):
        training.compile_for_training(model, 1e-3, optimizer=name)
        assert type(model.optimizer).__name__ == kind
    assert float(model.optimizer.weight_decay) == pytest.approx(0.004)
    training.compile_for_training(model, 1e-3, optimizer="sgd")
    assert float(model.optimizer.momentum) == pytest.approx(0.9)


def test_the_defaults_leave_the_fine_tune_unchanged(data):
    """Adam at a constant rate, no distillation: the same weights as a plain Keras compile and
    fit (written out here) on the stage's seeded batches, bit for bit."""
    recipe = Recipe(epochs=3, learning_rate=1e-2, seed=4)
    inputs = Inputs(train=data, val=None, calib=None)
    model, _ = finetune.run(Pruned(model=tiny_classifier()), inputs, recipe, None)

    before = tiny_classifier()
    training.seed_everything(4)
    before.compile(optimizer=keras.optimizers.Adam(1e-2),
                   loss=keras.losses.SparseCategoricalCrossentropy(from_logits=False),
                   metrics=["accuracy"])
    train, _ = fit_split(data, 4)
    batches, steps = training_dataset(train.x, train.y, 32, seed=4, epochs=3)
    before.fit(batches, epochs=3, steps_per_epoch=steps, verbose=0)
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), before.get_weights(),
                                                    strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(  # and it did train
        model.get_weights(), tiny_classifier().get_weights(), strict=True))
