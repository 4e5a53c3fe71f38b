"""The allocation refinement at the budget (search/refine.py), on synthetic costs and losses:
moves keep every budget, the climb ends at the loss minimum it can reach, the uniform start
rounds like ``--prune structured``."""

import time
from types import SimpleNamespace

import pytest

from edgeprune.pruning.policy import kept_count, round_kept
from edgeprune.search.anchor import Costs
from edgeprune.search.refine import Refiner, widths

GROUPS = [SimpleNamespace(id=0, size=24, n_prunable=24), SimpleNamespace(id=1, size=64,
                                                                          n_prunable=64),
          SimpleNamespace(id=2, size=32, n_prunable=28)]  # 4 frozen channels
COST = {0: 3.0, 1: 1.0, 2: 0.5}  # latency per channel kept


def price(alloc):
    return Costs(sum(COST[g] * k for g, k in alloc.items()), None, 0.0)


def refiner(limit, loss, deadline=float("inf"), multiple=8):
    return Refiner(GROUPS, multiple, price, lambda c: c.latency_ms <= limit, loss,
                   time.monotonic() + deadline)


def test_widths_respect_the_channel_multiple_and_frozen_channels():
    assert widths(SimpleNamespace(size=24, n_prunable=24), 8) == [24, 16, 8]
    assert widths(SimpleNamespace(size=20, n_prunable=20), 8) == [20, 16, 8]
    assert widths(SimpleNamespace(size=8, n_prunable=8), 8) == [8]
    assert widths(SimpleNamespace(size=10, n_prunable=6), 1) == [10, 9, 8, 7, 6, 5]


def test_every_move_fits_and_widens_one_group_by_one_step():
    r = refiner(100.0, lambda a: 0.0)
    start = {0: 8, 1: 48, 2: 16}  # 24 + 48 + 8 = 80
    moves = r.moves(start)
    assert moves
    for widened, narrowed, alloc in moves:
        assert price(alloc).latency_ms <= 100.0
        assert alloc[widened] == widths(GROUPS[widened], 8)[
            widths(GROUPS[widened], 8).index(start[widened]) - 1]
        changed = {g for g in alloc if alloc[g] != start[g]}
        assert changed == ({widened} if narrowed is None else {widened, narrowed})
        if narrowed is not None:  # narrowed by as little as fits
            ladder = widths(GROUPS[narrowed], 8)
            one_less = ladder[ladder.index(alloc[narrowed]) - 1]
            assert one_less == start[narrowed] or price(
                {**alloc, narrowed: one_less}).latency_ms > 100.0


def test_the_climb_reaches_the_best_allocation_within_the_budget():
    # The loss prefers group 1 wide and group 0 narrow; the budget forbids everything wide.
    def loss(a):
        return (64 - a[1]) * 1.0 + (a[0] - 8) * 0.1 + (32 - a[2]) * 0.2

    r = refiner(100.0, loss)
    chosen, taken = r.climb({0: 16, 1: 32, 2: 8})
    assert price(chosen).latency_ms <= 100.0 and taken
    assert [t["loss"] for t in taken] == sorted(t["loss"] for t in taken)[::-1]  # descending
    # Exhaustively, nothing that fits has a lower loss.
    every = [{0: a, 1: b, 2: c} for a in widths(GROUPS[0], 8) for b in widths(GROUPS[1], 8)
             for c in widths(GROUPS[2], 8)]
    assert loss(chosen) == min(loss(a) for a in every if price(a).latency_ms <= 100.0)


def test_the_climb_stops_at_the_deadline_and_scores_nothing_twice():
    calls = []

    def loss(a):
        calls.append(tuple(sorted(a.items())))
        return -a[1]

    chosen, taken = refiner(100.0, loss, deadline=-1).climb({0: 8, 1: 16, 2: 8})
    assert chosen == {0: 8, 1: 16, 2: 8} and taken == []
    r = refiner(100.0, loss)
    r.climb({0: 8, 1: 16, 2: 8})
    assert len(calls) - 1 == len(set(calls[1:]))  # the cache: every allocation once


def test_uniform_start_rounds_like_structured_pruning():
    ratio, alloc = refiner(60.0, lambda a: 0.0).uniform()
    assert price(alloc).latency_ms <= 60.0
    assert alloc == {g.id: kept_count(g.size, g.size - g.n_prunable,
                                      g.size - g.n_prunable * ratio, 8, 8) for g in GROUPS}
    a_bit_less = {g.id: kept_count(g.size, g.size - g.n_prunable,
                                   g.size - g.n_prunable * (ratio - 0.002), 8, 8)
                  for g in GROUPS}
    assert a_bit_less == alloc or price(a_bit_less).latency_ms > 60.0
    assert refiner(10.0, lambda a: 0.0).uniform() is None  # even the narrowest is over


@pytest.mark.parametrize("limit", [48.0, 64.0, 150.0])
def test_moves_never_leave_the_ladder(limit):
    r = refiner(limit, lambda a: 0.0)
    start = r.uniform()
    assert start is not None
    for _, _, alloc in r.moves(start[1]):
        for g in GROUPS:
            assert alloc[g.id] in widths(g, 8)


def test_uniform_start_rounds_by_the_rounding_cost_like_structured_pruning():
    def latency(alloc):
        return sum(COST[g] * k for g, k in alloc.items())

    r = Refiner(GROUPS, 8, price, lambda c: c.latency_ms <= 60.0, lambda a: 0.0,
                float("inf"), rounding_cost=latency)
    ratio, alloc = r.uniform()
    wants = {g.id: g.size - g.n_prunable * ratio for g in GROUPS}
    assert alloc == round_kept(GROUPS, wants, 8, 8, latency).kept
    assert price(alloc).latency_ms <= 60.0
    assert ratio < refiner(60.0, lambda a: 0.0).uniform()[0]  # half-up needs a higher ratio
