"""Sensitivity allocation: the greedy knapsack on synthetic rows, and group ids that agree
between ``sensitivity()``, ``channel_groups()`` and ``prune_structured()``."""

from __future__ import annotations

import numpy as np
import pytest
from prune_helpers import residual_model, sample, se_model

from edgeprune.errors import BadInputError
from edgeprune.pruning import channel_groups, prune_structured, sensitivity
from edgeprune.pruning.policy import allocate_by_sensitivity


def _rows(gid: int, n: int, drops: tuple[float, float, float]) -> list[dict]:
    return [{"group": gid, "layers": [f"l{gid}"], "ratio": r, "channels": n, "prunable": n,
             "drop": d} for r, d in zip((0.25, 0.5, 0.75), drops, strict=True)]  # fmt: skip


def _mean(ratios: dict[int, float], weights: dict[int, int]) -> float:
    return sum(ratios[g] * w for g, w in weights.items()) / sum(weights.values())


def test_fragile_group_keeps_more_and_the_mean_reaches_the_target():
    rows = _rows(0, 8, (0.10, 0.30, 0.60)) + _rows(1, 8, (0.0, 0.01, 0.05))
    ratios = allocate_by_sensitivity(rows, 0.5)
    assert ratios == pytest.approx({0: 0.25, 1: 0.75})
    assert _mean(ratios, {0: 8, 1: 8}) == pytest.approx(0.5)


def test_channel_weighting_and_a_partial_last_step():
    rows = _rows(0, 4, (0.2, 0.4, 0.8)) + _rows(1, 12, (0.01, 0.02, 0.03))
    ratios = allocate_by_sensitivity(rows, 0.3)
    assert ratios[0] == 0.0  # every channel of the robust group is cheaper
    assert _mean(ratios, {0: 4, 1: 12}) == pytest.approx(0.3)


def test_equal_sensitivity_spreads_the_ratio_evenly():
    rows = _rows(0, 8, (0.0, 0.0, 0.0)) + _rows(1, 8, (0.0, 0.0, 0.0))
    assert allocate_by_sensitivity(rows, 0.5) == pytest.approx({0: 0.5, 1: 0.5})
    ratios = allocate_by_sensitivity(rows, 0.3)
    assert _mean(ratios, {0: 8, 1: 8}) == pytest.approx(0.3)
    assert abs(ratios[0] - ratios[1]) <= 0.1


def test_negative_drops_are_noise_and_curves_are_made_monotone():
    # group 0 "improves" at 25 % and dips at 75 %: treated as 0 and as its 50 % drop
    rows = _rows(0, 8, (-0.05, 0.2, 0.1)) + _rows(1, 8, (0.05, 0.1, 0.15))
    ratios = allocate_by_sensitivity(rows, 0.25)
    assert ratios == pytest.approx({0: 0.25, 1: 0.25})


def test_a_target_above_the_measured_ratios_is_extrapolated():
    rows = _rows(0, 8, (0.0, 0.1, 0.2)) + _rows(1, 8, (0.0, 0.3, 0.6))
    ratios = allocate_by_sensitivity(rows, 0.85)
    assert _mean(ratios, {0: 8, 1: 8}) == pytest.approx(0.85)
    assert ratios[0] > ratios[1] and max(ratios.values()) < 1.0


def test_no_rows_means_nothing_to_prune():
    assert allocate_by_sensitivity([], 0.5) == {}


def _stripes(model, n: int = 48):
    x = sample(model, n=n, seed=3)
    y = np.random.default_rng(3).integers(0, 3, n)
    return x, y


@pytest.mark.parametrize("keep", [(), ("c1",)])
def test_group_ids_agree_between_sensitivity_groups_and_pruning(keep):
    model = residual_model()
    rows = sensitivity(model, _stripes(model), ratios=(0.5,), keep=keep)
    from_scan = {r["group"]: r["layers"] for r in rows}
    listed = {g["group"]: g["layers"] for g in channel_groups(model, keep=keep)}
    pruned = prune_structured(model, sparsity=0.5, keep=keep)
    from_prune = {g["group"]: g["layers"] for g in pruned.groups}
    assert from_scan and all(listed[g] == layers for g, layers in from_scan.items())
    assert listed == from_prune
    # a per-group dict prunes exactly the named group
    gid = next(g for g, layers in from_scan.items() if "c3" in layers)
    result = prune_structured(model, sparsity={gid: 0.5}, keep=keep)
    for g in result.groups:  # c3 has 6 channels
        assert g["kept"] == (3 if g["group"] == gid else g["channels"])


def test_sensitivity_ratios_end_to_end():
    model = se_model()
    rows = sensitivity(model, _stripes(model))
    ratios = allocate_by_sensitivity(rows, 0.5)
    result = prune_structured(model, sparsity=ratios)
    removed = sum(g["channels"] - g["kept"] for g in result.groups)
    prunable = sum(g["prunable"] for g in result.groups)
    assert removed == pytest.approx(0.5 * prunable, abs=len(ratios))  # rounding per group
    assert np.asarray(result.model(sample(model))).shape == (4, 3)


def test_a_bad_per_group_ratio_names_the_group():
    with pytest.raises(BadInputError, match="group 0"):
        prune_structured(residual_model(), sparsity={0: 1.0})
