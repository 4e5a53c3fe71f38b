"""Policy: kept counts per group, allocation, rounding, clamps and option validation."""

from __future__ import annotations

import numpy as np
import pytest
from prune_helpers import L, keras, residual_model

from edgeprune.errors import BadInputError
from edgeprune.pruning import prune_structured
from edgeprune.pruning.graph import ChannelGroup
from edgeprune.pruning.policy import ALLOCATORS, kept_count, plan


def _group(gid: int, n: int, frozen: int = 0) -> ChannelGroup:
    prunable = np.ones(n, dtype=bool)
    prunable[:frozen] = False
    return ChannelGroup(gid, np.arange(n) + 100 * gid, prunable, [f"layer{gid}"])


@pytest.mark.parametrize(
    ("n", "frozen", "kept", "multiple", "minimum", "expected"),
    [
        (16, 0, 8.0, 1, 1, 8),
        (16, 0, 7.5, 1, 1, 8),  # half up: remove fewer on ties
        (16, 0, 10.0, 8, 8, 8),  # nearest multiple
        (16, 0, 13.0, 8, 8, 16),
        (12, 0, 11.0, 8, 8, 8),  # nearest multiple, even below
        (12, 0, 12.0, 8, 8, 12),  # rounds up to 16: never above the original count
        (16, 0, 0.4, 1, 1, 1),  # never below the minimum
        (4, 0, 2.0, 1, 8, 4),  # a minimum above the size keeps everything
        (16, 10, 4.0, 1, 1, 10),  # frozen channels cannot go
    ],
)
def test_kept_count(n, frozen, kept, multiple, minimum, expected):
    assert kept_count(n, frozen, kept, multiple, minimum) == expected


def test_every_allocation_is_tested():
    assert set(ALLOCATORS) == {"uniform", "global"}


def test_uniform_removes_the_same_fraction_of_each_group_lowest_scores_first():
    groups = [_group(0, 8), _group(1, 4, frozen=2)]
    scores = {0: np.arange(8.0)[::-1], 1: np.array([0.0, 0.0, 5.0, 1.0])}
    p = plan(groups, scores, sparsity=0.5, allocation="uniform")
    assert p.removed[0].tolist() == [4, 5, 6, 7]  # the four lowest scores
    assert p.removed[1].tolist() == [3]  # half of the 2 prunable; frozen 0 and 1 stay


def test_global_takes_more_from_the_less_important_group():
    groups = [_group(0, 8), _group(1, 8)]
    flat_scores = np.ones(8)  # all channels equally important
    peaked = np.array([1.0, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01])  # one strong channel
    p = plan(groups, {0: flat_scores, 1: peaked}, sparsity=0.25, allocation="global")
    assert len(p.removed.get(0, [])) == 0
    assert len(p.removed[1]) == 4


def test_clamp_is_reported():
    p = plan([_group(0, 4)], {0: np.arange(4.0)}, sparsity=0.9)
    assert len(p.removed[0]) == 3
    assert "clamped to 1" in p.notes[0] and "layer0" in p.notes[0]


def test_per_group_sparsity():
    p = plan([_group(0, 8), _group(1, 8)], {0: np.ones(8), 1: np.ones(8)}, sparsity={1: 0.5})
    assert 0 not in p.removed and len(p.removed[1]) == 4


def test_channel_multiple_rounds_every_pruned_layer():
    i = keras.Input((6, 6, 3))
    x = L.Conv2D(24, 3, name="a")(i)
    x = L.Conv2D(20, 1, name="b")(x)
    model = keras.Model(i, L.Dense(2)(L.Flatten()(L.Conv2D(16, 1, name="c")(x))))
    result = prune_structured(model, sparsity=0.6, channel_multiple=8)
    assert [result.model.get_layer(n).filters for n in "abc"] == [8, 8, 8]
    result = prune_structured(model, sparsity=0.6, channel_multiple=8, min_channels=16)
    assert [result.model.get_layer(n).filters for n in "abc"] == [16, 16, 16]


def test_global_allocation_end_to_end():
    result = prune_structured(residual_model(), sparsity=0.5, allocation="global")
    total_before = 8 + 6
    total_after = sum(
        r["channels_after"] for r in result.layers if r["name"] in ("c1", "c3")
    )  # c2 shares c1's group
    assert total_after == pytest.approx(total_before / 2, abs=1)


@pytest.mark.parametrize(
    ("kwargs", "option"),
    [
        ({"sparsity": 1.0}, "--sparsity"),
        ({"sparsity": -0.1}, "--sparsity"),
        ({"sparsity": 0.5, "allocation": "layerwise"}, "--allocation"),
        ({"sparsity": 0.5, "channel_multiple": 0}, "--channel-multiple"),
        ({"sparsity": 0.5, "min_channels": 0}, "--min-channels"),
    ],
)
def test_bad_options_name_the_option(kwargs, option):
    with pytest.raises(BadInputError, match=option):
        prune_structured(residual_model(), **kwargs)
