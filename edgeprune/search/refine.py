"""Refine the search's channel allocation at its budget (in the manner of EagleEye, Li et al.,
ECCV 2020).

NetAdapt's greedy path commits to one group per step, so the allocation it ends at is one of
many that meet the budgets, reached through short fine-tunes whose noise decides close calls.
Here allocations (channels kept per group) are compared on equal terms: each is cut from the
*input* model in one shot, its batch-norm statistics re-estimated, and its loss measured on the
search's scoring split. On the bundled example that loss ranks allocations at equal latency
like the accuracy they reach after the full fine-tune (Spearman 0.8;
bench/allocation_landscape.md). Starting from the better of the greedy and the uniform
allocation, each round tries every move that widens one group by a channel multiple (narrowing
another by as little as keeps every budget) and takes the best while it lowers the loss. The
search (search/loop.py) then lets the result replace the greedy model only if it wins
NetAdapt's own test after as many short fine-tune steps as the greedy path took.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from edgeprune import distribute
from edgeprune.pruning.graph import ChannelGroup
from edgeprune.pruning.policy import round_kept
from edgeprune.search.anchor import Costs

Allocation = dict[int, int]  # group id -> channels kept


def widths(group: ChannelGroup, multiple: int) -> list[int]:
    """Kept-channel counts of ``group``, widest first: its full width, then multiples of
    ``multiple`` above its frozen channels (some prunable channel must remain)."""
    top = (group.size - 1) // multiple * multiple
    frozen = group.size - group.n_prunable
    return [group.size] + [k for k in range(top, max(multiple, 1) - 1, -multiple) if k > frozen]


@dataclass
class Refiner:
    groups: Sequence[ChannelGroup]  # the prunable groups of the input model's graph
    multiple: int
    price: Callable[[Allocation], Costs]
    fits: Callable[[Costs], bool]
    score: Callable[[Allocation], float]  # lower is better (the proxy loss)
    deadline: float
    # What ``--prune structured`` rounds kept counts by (policy.round_kept); None: half-up.
    rounding_cost: Callable[[Allocation], float] | None = None
    scored: dict[tuple[tuple[int, int], ...], float] = field(default_factory=dict)

    def loss(self, alloc: Allocation) -> float:
        key = tuple(sorted(alloc.items()))
        if key not in self.scored:
            self.scored[key] = self.score(alloc)
        return self.scored[key]

    def uniform(self) -> tuple[float, Allocation] | None:
        """The smallest uniform ratio (±0.001) whose allocation fits, rounded like
        ``--prune structured`` rounds it; None when even the narrowest does not fit."""
        def at(ratio: float) -> Allocation:
            wants = {g.id: g.size - g.n_prunable * ratio for g in self.groups}
            return round_kept(self.groups, wants, self.multiple, self.multiple,
                              self.rounding_cost).kept

        lo, hi = 0.0, 1.0
        if not self.fits(self.price(at(hi))):
            return None
        while hi - lo > 1e-3:
            mid = (lo + hi) / 2
            lo, hi = (lo, mid) if self.fits(self.price(at(mid))) else (mid, hi)
        return round(hi, 4), at(hi)

    def moves(self, alloc: Allocation) -> list[tuple[int, int | None, Allocation]]:
        """(widened group, narrowed group or None, allocation) for every move that fits."""
        ladders = {g.id: widths(g, self.multiple) for g in self.groups}
        out = []
        for a in self.groups:
            wider = [k for k in ladders[a.id] if k > alloc[a.id]]
            if not wider:
                continue
            grown = {**alloc, a.id: wider[-1]}
            if self.fits(self.price(grown)):
                out.append((a.id, None, grown))
                continue
            for b in self.groups:
                if b.id == a.id:
                    continue
                for k in (k for k in ladders[b.id] if k < alloc[b.id]):
                    moved = {**grown, b.id: k}
                    if self.fits(self.price(moved)):
                        out.append((a.id, b.id, moved))
                        break
        return out

    def climb(self, start: Allocation) -> tuple[Allocation, list[dict[str, Any]]]:
        """Best-improvement hill climbing from ``start`` until no move lowers the loss or the
        deadline passes; the moves taken, for the report."""
        best, best_loss, taken = start, self.loss(start), []
        while not distribute.time_up(self.deadline):
            scored = []
            for widened, narrowed, alloc in self.moves(best):
                if distribute.time_up(self.deadline):
                    break
                scored.append((self.loss(alloc), widened, narrowed, alloc))
            top = min(scored, key=lambda s: s[0], default=None)
            if top is None or top[0] >= best_loss:
                break
            best_loss, widened, narrowed, best = top
            taken.append({"widened": widened, "narrowed": narrowed, "kept": dict(best),
                          "loss": round(best_loss, 5), "moves_scored": len(scored),
                          "predicted": self.price(best).to_dict()})
        return best, taken
