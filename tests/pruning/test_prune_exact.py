"""Removing channels that are exactly zero must not change the model's outputs (exact surgery)."""

from __future__ import annotations

import numpy as np
import pytest
from prune_helpers import (
    concat_flatten_model,
    keras,
    max_diff,
    nested_model,
    plant_dead,
    randomize_bn,
    residual_model,
    sample,
    se_model,
    separable_model,
    sequential_model,
    snapshot,
)

from edgeprune.pruning import prune_structured

BUILDERS = {
    "residual_add": residual_model,
    "depthwise_separable": separable_model,
    "concat_flatten_dense": concat_flatten_model,
    "squeeze_excite_gap_dense": se_model,
    "sequential": sequential_model,
    "nested": nested_model,
}


@pytest.mark.parametrize("sparsity", [0.25, 0.5])
@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_removing_dead_channels_is_exact(name, sparsity):
    keras.utils.set_random_seed(0)
    model = BUILDERS[name]()
    randomize_bn(model)
    dead = plant_dead(model, sparsity)
    assert sum(len(d) for d in dead.values()) > 0
    x = sample(model)
    before = snapshot(model)
    y_before = np.asarray(model(x, training=False))

    result = prune_structured(model, sparsity=sparsity, criterion="l1")

    assert result.model.count_params() < model.count_params()
    assert max_diff(model, result.model, x) <= 1e-5
    # the input model is untouched
    assert all(np.array_equal(a, b) for a, b in zip(before, snapshot(model), strict=True))
    assert np.array_equal(y_before, np.asarray(model(x, training=False)))


def test_nested_models_are_flattened_and_renamed():
    model = nested_model()
    result = prune_structured(model, sparsity=0.5)
    new = result.model
    assert not any(isinstance(layer, keras.Model) for layer in new.layers)
    names = [layer.name for layer in new.layers]
    assert len(names) == len(set(names))
    assert "block_conv" in names  # the inner "conv" clashed with the outer one
    # the shared nested block is one set of weights, used twice
    assert len(new.get_layer("inner_conv")._inbound_nodes) == 2
    assert new.get_layer("conv").filters == new.get_layer("inner_conv").filters == 4
    # `training=False` given to the nested model is kept on its layers
    assert new(sample(model)).shape == model(sample(model)).shape


def test_outputs_and_rows():
    model = residual_model()
    result = prune_structured(model, sparsity=0.5)
    assert result.model.output_shape == model.output_shape
    rows = {r["name"]: r for r in result.layers}
    assert set(rows["c1"]) == {
        "name", "type", "params", "macs", "channels_before", "channels_after", "sparsity"
    }  # fmt: skip
    conv = rows["c1"]
    assert (conv["channels_before"], conv["channels_after"]) == (8, 4)
    assert conv["params"] == 3 * 3 * 3 * 4 + 4
    assert conv["macs"] == 12 * 12 * 3 * 3 * 3 * 4
    assert conv["sparsity"] == pytest.approx(1 - (3 * 3 * 3 * 4 + 4) / (3 * 3 * 3 * 8 + 8))
    assert rows["head"]["channels_after"] == 3  # model output never pruned
    assert {g["group"] for g in result.groups} and all("kept" in g for g in result.groups)
