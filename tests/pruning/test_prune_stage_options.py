"""The prune stage's channel-pruning options: --after-prune, --allocation sensitivity, --l1, the
groups table it hands to the report, and the bad inputs it refuses before any slow work."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from prune_helpers import snapshot, stripes, trained, two_block_model

from edgeprune.data import Inputs, Labelled
from edgeprune.errors import BadInputError, RecipeError
from edgeprune.pruning import prune_structured
from edgeprune.recipe import Recipe
from edgeprune.stages import prune
from edgeprune.targets import load_target


@pytest.fixture(scope="module")
def setup():
    x, y = stripes(120)
    model = trained(two_block_model(), x, y, epochs=4)
    host = load_target("host")
    target = dataclasses.replace(host, hardware=dataclasses.replace(host.hardware,
                                                                    channel_multiple=1))
    inputs = Inputs(train=Labelled(x, y, "train"), val=None, calib=x[:32])
    return model, target, inputs


def _recipe(**kw) -> Recipe:
    return Recipe(**{"prune": "structured", "sparsity": 0.5, "epochs": 1, **kw})


def _architecture(model) -> list[tuple[str, str, list[tuple[int, ...]]]]:
    return [(type(layer).__name__, layer.name, [tuple(w.shape) for w in layer.weights])
            for layer in model.layers]  # fmt: skip


def test_finetune_keeps_the_surviving_weights_and_retrain_reinitialises(setup):
    model, target, inputs = setup
    kept = prune.run(model, _recipe(), target, inputs)
    direct = prune_structured(model, sparsity=0.5, keep=(), calib=inputs.calib)
    # the surviving weights as they were; only batch-norm statistics are re-estimated
    assert all(np.array_equal(a.numpy(), b.numpy()) for a, b in zip(
        kept.model.trainable_weights, direct.model.trainable_weights, strict=True))
    bn = kept.model.get_layer("bn2")
    assert not np.allclose(bn.moving_mean.numpy(), direct.model.get_layer("bn2").moving_mean)
    assert any("adaptive BN" in n for n in kept.notes)
    fresh = prune.run(model, _recipe(after_prune="retrain"), target, inputs)
    assert _architecture(fresh.model) == _architecture(kept.model)
    assert fresh.model.get_layer("c2").filters == 8  # half of 16: really the smaller network
    c2_fresh, c2_kept = fresh.model.get_layer("c2").kernel, kept.model.get_layer("c2").kernel
    assert not np.allclose(c2_fresh.numpy(), c2_kept.numpy())
    assert np.array_equal(fresh.model.get_layer("bn2").gamma.numpy(), np.ones(8))  # BN reset
    assert any("re-initialised" in n for n in fresh.notes)
    again = prune.run(model, _recipe(after_prune="retrain"), target, inputs)
    assert all(np.array_equal(a, b)  # seeded
               for a, b in zip(snapshot(again.model), snapshot(fresh.model), strict=True))
    from edgeprune.stages import finetune

    tuned, _ = finetune.run(fresh, inputs, _recipe(after_prune="retrain"), None)
    assert _architecture(tuned) == _architecture(kept.model)


def test_the_groups_table_travels_with_the_pruned_model(setup):
    model, target, inputs = setup
    for mode in ("structured", "hybrid"):
        pruned = prune.run(model, _recipe(prune=mode), target, inputs)
        by_layer = {g["layers"][0]: g for g in pruned.groups}
        assert by_layer["c2"]["channels"] == 16 and by_layer["c2"]["kept"] == 8
        assert by_layer["head"]["prunable"] == 0 and "model output" in by_layer["head"]["frozen_by"]


def test_a_searched_model_reports_its_groups_as_a_plan_would(setup):
    """--prune auto cuts group by group; its pruning_groups rows are read back from the cut
    model and equal the rows of the same cut made by one plan."""
    model, target, inputs = setup
    pruned = prune.run(model, _recipe(sparsity=0.6), target, inputs)
    assert prune.kept_channels(model, pruned.model, ()) == pruned.groups
    assert any(g["kept"] < g["channels"] for g in pruned.groups)


def test_sensitivity_allocation_reaches_the_target_on_average(setup):
    model, target, inputs = setup
    pruned = prune.run(model, _recipe(allocation="sensitivity"), target, inputs)
    assert any(n.startswith("sensitivity allocation") for n in pruned.notes)
    groups = [g for g in pruned.groups if g["prunable"]]
    assert all("ratio" in g for g in groups)
    mean = sum(g["ratio"] * g["prunable"] for g in groups) / sum(g["prunable"] for g in groups)
    assert mean == pytest.approx(0.5, abs=1e-3)
    removed = sum(g["channels"] - g["kept"] for g in groups)
    assert removed == pytest.approx(0.5 * 24, abs=2)


def test_l1_phase_runs_before_selection_on_a_copy(setup):
    model, target, inputs = setup
    before = snapshot(model)
    recipe = _recipe(l1=0.1, l1_epochs=2, criterion="bn", learning_rate=3e-2)
    pruned = prune.run(model, recipe, target, inputs)
    note = next(n for n in pruned.notes if n.startswith("L1 sparsity phase"))
    assert "2 epoch(s)" in note and "λ=0.1" in note
    assert all(np.array_equal(a, b) for a, b in zip(before, snapshot(model), strict=True))
    assert pruned.model.get_layer("c2").filters == 8


NO_DATA = {
    "l1": ({"l1": 1e-4}, "--l1 0.0001"),
    "sensitivity": ({"allocation": "sensitivity"}, "--allocation sensitivity"),
    "retrain": ({"after_prune": "retrain"}, "--after-prune retrain"),
    "taylor": ({"criterion": "taylor"}, "--criterion taylor"),
}


@pytest.mark.parametrize("case", sorted(NO_DATA))
def test_options_that_need_data_name_themselves(setup, case):
    model, target, _ = setup
    kw, option = NO_DATA[case]
    with pytest.raises(BadInputError, match=option):
        prune.run(model, _recipe(**kw), target, Inputs(train=None, val=None, calib=None))


@pytest.mark.parametrize(
    ("kw", "option"),
    [
        ({"after_prune": "retrain", "epochs": 0}, "--after-prune retrain with --epochs 0"),
        ({"l1": 1e-4, "epochs": 0}, "--l1-epochs"),
    ],
)
def test_options_that_need_epochs_name_themselves(setup, kw, option):
    model, target, inputs = setup
    with pytest.raises(RecipeError, match=option):
        prune.run(model, _recipe(**kw), target, inputs)


@pytest.mark.parametrize(
    ("kw", "option"),
    [
        ({"prune": "none", "l1": 1e-4}, "--l1 with --prune none"),
        ({"prune": "magnitude", "after_prune": "retrain"}, "--after-prune retrain with --prune"),
        ({"l1": -1.0}, "--l1 -1.0"),
        ({"l1": float("nan")}, "--l1 nan"),
        ({"l1_on": "gamma"}, "--l1-on gamma"),
        ({"after_prune": "rewind"}, "--after-prune rewind"),
        ({"allocation": "greedy"}, "--allocation greedy"),
        ({"l1_epochs": -1}, "--l1-epochs -1"),
    ],
)
def test_recipe_refuses_bad_channel_options(kw, option):
    with pytest.raises(RecipeError, match=option):
        _recipe(**kw)


def test_the_stage_rounds_by_the_targets_estimated_latency(setup):
    model, _, inputs = setup
    m7 = load_target("cortex-m7")  # channel multiple 4: c1 8·0.7 → 4 or 8, c2 16·0.7 → 8 or 12
    pruned = prune.run(model, _recipe(sparsity=0.3), m7, inputs)
    kept = {g["layers"][0]: g["kept"] for g in pruned.groups if g["prunable"]}
    assert kept["c1"] + kept["c2"] == 4 + 12  # half-up's total, wherever it went
    assert kept["c1"] in (4, 8) and kept["c2"] in (8, 12)
    assert any("priced channels by cortex-m7's estimated latency (int8 anchor)" in n
               for n in pruned.notes)
    # The anchor's dtype decides the price: --quantize is then part of the prune stage's key.
    assert "quantize" in prune.key_parts(_recipe(), m7)["recipe"]
    assert "quantize" not in prune.key_parts(_recipe(), load_target("host"))["recipe"]
