"""L1 sparsity phase (network slimming): the penalty switches channels off, on a copy."""

from __future__ import annotations

import numpy as np
import pytest
from prune_helpers import L, keras, snapshot, stripes, trained, two_block_model

from edgeprune.errors import BadInputError
from edgeprune.pruning import prune_structured
from edgeprune.pruning.regularize import near_zero_fraction, penalised, sparsify

SETTINGS = {"epochs": 12, "batch_size": 16, "learning_rate": 3e-2, "seed": 0}


@pytest.fixture(scope="module")
def fitted():
    x, y = stripes(120)
    return trained(two_block_model(), x, y, epochs=4), x, y


def test_l1_on_batch_norm_scales_switches_channels_off(fitted):
    model, x, y = fitted
    before = snapshot(model)
    control = sparsify(model, x, y, l1=0.0, **SETTINGS)
    slim = sparsify(model, x, y, l1=0.1, **SETTINGS)
    assert near_zero_fraction(slim, "bn") > near_zero_fraction(control, "bn") + 0.2
    assert all(np.array_equal(a, b) for a, b in zip(before, snapshot(model), strict=True))
    assert slim is not model and slim.count_params() == model.count_params()
    accuracy = np.mean(slim.predict(x, verbose=0).argmax(-1) == y)
    assert accuracy > 0.9  # still a working classifier
    # network slimming: selecting channels by |γ| removes the switched-off ones for free
    result = prune_structured(slim, sparsity=0.25, criterion="bn")
    pruned_acc = np.mean(result.model.predict(x, verbose=0).argmax(-1) == y)
    assert pruned_acc >= accuracy - 0.05


def test_l1_on_kernels(fitted):
    model, x, y = fitted
    settings = {**SETTINGS, "epochs": 4}
    control = sparsify(model, x, y, l1=0.0, on="kernel", **settings)
    slim = sparsify(model, x, y, l1=0.05, on="kernel", **settings)
    assert near_zero_fraction(slim, "kernel") > near_zero_fraction(control, "kernel")


def test_penalised_variables_include_nested_models():
    inner_in = keras.Input((4,))
    inner = keras.Model(inner_in, L.BatchNormalization(name="inner_bn")(L.Dense(8)(inner_in)))
    i = keras.Input((4,))
    model = keras.Model(i, L.Dense(2)(inner(L.BatchNormalization(name="outer_bn")(i))))
    assert {v.name.split("/")[0] for v in penalised(model, "bn")} == {"inner_bn", "outer_bn"}
    assert len(penalised(model, "kernel")) == 2


def test_bn_penalty_on_a_model_without_batch_norm_names_the_fix():
    i = keras.Input((4,))
    model = keras.Model(i, L.Dense(3, activation="softmax")(L.Dense(8)(i)))
    x, y = np.ones((8, 4), np.float32), np.zeros(8, np.int64)
    with pytest.raises(BadInputError, match="--l1-on kernel"):
        sparsify(model, x, y, l1=0.1, epochs=1)
    with pytest.raises(BadInputError, match="--l1-epochs"):
        sparsify(model, x, y, l1=0.1, on="kernel", epochs=0)
