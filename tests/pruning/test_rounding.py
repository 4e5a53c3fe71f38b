"""Cost-aware rounding to the channel multiple (policy.round_kept, prune_structured(cost=...)):
the same channel total as half-up, round-ups placed where a channel costs least, half-up on
ties and without a cost."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import numpy as np
import pytest
from prune_helpers import L, keras

from edgeprune.errors import ToolError
from edgeprune.pruning import prune_structured
from edgeprune.pruning.policy import _candidates, kept_count, plan, round_kept
from edgeprune.search import anchor
from edgeprune.targets import load_target


def _groups(*sizes: int) -> list[SimpleNamespace]:
    return [SimpleNamespace(id=i, size=n, n_prunable=n, layers=[f"layer{i}"])
            for i, n in enumerate(sizes)]


def _linear(per_channel: dict[int, float]):
    return lambda kept: sum(per_channel[g] * k for g, k in kept.items())


def _half_up(groups, wants, multiple):
    return {g.id: kept_count(g.size, g.size - g.n_prunable, wants[g.id], multiple, multiple)
            for g in groups}


def test_expensive_groups_round_down_and_cheap_ones_up_at_the_same_channel_total():
    groups = _groups(32, 64)
    wants = {0: 21.0, 1: 43.0}  # half-up: 24 (21/8 = 2.6) and 40 (43/8 = 5.4): 64 in all
    expensive_first = round_kept(groups, wants, 8, 8, _linear({0: 10.0, 1: 1.0}))
    assert expensive_first.half_up == {0: 24, 1: 40}
    assert expensive_first.kept == {0: 16, 1: 48}
    assert expensive_first.costs == (24 * 10 + 40, 16 * 10 + 48)
    cheap_first = round_kept(groups, wants, 8, 8, _linear({0: 1.0, 1: 10.0}))
    assert cheap_first.kept == {0: 24, 1: 40}  # half-up already rounds the cheap group up


@pytest.mark.parametrize("seed", range(20))
def test_the_ratio_is_met_as_half_up_meets_it(seed):
    rng = np.random.default_rng(seed)
    groups = _groups(*rng.choice([12, 24, 30, 32, 64, 100], size=6).tolist())
    multiple = int(rng.choice([4, 8, 16]))
    sparsity = float(rng.uniform(0.1, 0.9))
    wants = {g.id: g.size * (1 - sparsity) for g in groups}
    weight = {g.id: float(rng.uniform(0.1, 10)) for g in groups}

    def cost(kept):  # per-channel prices plus an interaction between neighbours
        return _linear(weight)(kept) + 0.05 * sum(kept[i] * kept[i + 1] for i in range(5))

    r = round_kept(groups, wants, multiple, multiple, cost)
    assert sum(r.kept.values()) == sum(r.half_up.values())
    for g in groups:
        assert r.kept[g.id] in _candidates(g.size, 0, wants[g.id], multiple, multiple)
    assert cost(r.kept) <= cost(r.half_up)
    # Exhaustively: no other rounding with half-up's total costs less (linear case).
    options = [_candidates(g.size, 0, wants[g.id], multiple, multiple) for g in groups]
    linear = _linear(weight)
    best = min(linear(dict(enumerate(c))) for c in itertools.product(*options)
               if sum(c) == sum(r.half_up.values()))
    assert linear(round_kept(groups, wants, multiple, multiple, linear).kept) == \
        pytest.approx(best)


@pytest.mark.parametrize("seed", range(10))
def test_equal_costs_or_no_cost_round_half_up(seed):
    rng = np.random.default_rng(seed)
    groups = _groups(*rng.choice([12, 24, 30, 32, 64], size=5).tolist())
    wants = {g.id: g.size * float(rng.uniform(0.1, 0.9)) for g in groups}
    half = _half_up(groups, wants, 8)
    assert round_kept(groups, wants, 8, 8).kept == half
    assert round_kept(groups, wants, 8, 8, lambda kept: 7.0).kept == half
    assert round_kept(groups, wants, 8, 8, lambda kept: sum(kept.values())).kept == half
    assert round_kept(groups, wants, 8, 8, lambda kept: float("nan")).kept == half


def test_no_choice_never_prices():
    def refuse(kept):
        raise AssertionError("priced although no rounding had a choice")

    groups = _groups(32, 64, 128)
    assert round_kept(groups, {0: 16.0, 1: 32.0, 2: 64.0}, 8, 8, refuse).kept == {
        0: 16, 1: 32, 2: 64}  # exact multiples
    assert round_kept(groups, {0: 12.0, 1: 28.0, 2: 60.0}, 8, 8, refuse).kept == {
        0: 16, 1: 32, 2: 64}  # every choice rounds up: no other set has the same total
    # A ratio of an exact width (the search's cuts) is not a choice, float noise or not.
    assert _candidates(24, 0, 24 - 24 * (8 / 24), 8, 8) == (16, 16)


def test_plan_notes_what_cost_aware_rounding_moved():
    groups = [SimpleNamespace(**vars(g), roots=np.arange(g.size) + 100 * g.id,
                              prunable=np.ones(g.size, bool)) for g in _groups(32, 64)]
    scores = {0: np.arange(32.0), 1: np.arange(64.0)}
    p = plan(groups, scores, sparsity={0: 11 / 32, 1: 21 / 64}, channel_multiple=8,
             cost=_linear({0: 10.0, 1: 1.0}))
    assert {g: len(r) for g, r in p.removed.items()} == {0: 16, 1: 16}
    assert p.removed[0].tolist() == list(range(16))  # the lowest scores still go
    assert "group 0 (layer0) 24 → 16" in p.notes[0] and "group 1 (layer1) 40 → 48" in p.notes[0]


def test_prune_structured_prices_channels_per_layer():
    i = keras.Input((8, 8, 1))
    x = L.Conv2D(32, 3, padding="same", name="wide")(i)
    x = L.Conv2D(64, 3, strides=2, padding="same", name="narrow")(x)
    model = keras.Model(i, L.Dense(2)(L.GlobalAveragePooling2D()(x)))
    seen = []

    def cost(channels):
        seen.append(dict(channels))
        return 10.0 * channels["wide"] + channels["narrow"]

    result = prune_structured(model, sparsity=0.34, channel_multiple=8, cost=cost)
    # Half-up: 32·0.66 = 21.1 → 24, 64·0.66 = 42.2 → 40; the full-resolution layer goes down.
    assert [result.model.get_layer(n).filters for n in ("wide", "narrow")] == [16, 48]
    assert seen and all({"wide", "narrow"} <= set(c) for c in seen)
    plain = prune_structured(model, sparsity=0.34, channel_multiple=8)
    assert [plain.model.get_layer(n).filters for n in ("wide", "narrow")] == [24, 40]


def test_pricer_failure_rounds_half_up_and_says_so(monkeypatch):
    def fail(*args, **kwargs):
        raise ToolError("TFLite converter", "failed to convert", "try again")

    monkeypatch.setattr("edgeprune.converter.to_tflite", fail)
    pricer = anchor.ChannelPricer(object(), load_target("rpi4"), "int8", None)
    assert pricer.mode == "none"  # no calibration samples: priced on a float anchor
    assert pricer({"a": 1}) == 0.0 == pricer({"a": 2})  # equal costs: half-up
    assert "unavailable" in pricer.note and "half-up" in pricer.note


def test_pricer_basis_follows_the_target():
    rpi4 = anchor.ChannelPricer(object(), load_target("rpi4"), "qat", np.zeros((4, 2)))
    assert rpi4.mode == "int8" and "rpi4's estimated latency" in rpi4.basis
    u55 = anchor.ChannelPricer(object(), load_target("ethos-u55"), "int8", np.zeros((4, 2)))
    assert u55.mode == "none" and "MACs" in u55.basis  # Vela is not a per-channel estimator
    assert rpi4.note == "" and u55.note == ""  # nothing priced yet: nothing to report
