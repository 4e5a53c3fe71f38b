"""Cost-weighted network slimming before the budget search (``--prune auto --l1 λ``).

MorphNet (Gordon et al., CVPR 2018): the L1 term on the batch-norm scales γ is weighted per
channel by what that channel costs on the target, so training switches off channels where
they save the most of the budget, and the allocation comes out of training instead of out of
one-shot or short-fine-tune scores. Here the cost is the target's own estimate (the search's
``AnchoredCostModel``) of the quantity the search cuts first; the search then starts from the
slimmed model, and with ``--criterion bn`` removes the channels training switched off.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from edgeprune.pruning.anchor import Costs
from edgeprune.pruning.graph import ChannelGraph
from edgeprune.pruning.refine import widths
from edgeprune.pruning.regularize import penalised


def channel_costs(graph: ChannelGraph, price: Callable[[dict[int, int]], Costs],
                  quantity: str, multiple: int) -> dict[int, float]:
    """Per prunable group, the ``quantity`` its first ``multiple``-step cut saves, per channel
    removed (≥ 0)."""
    full = price({}).get(quantity) or 0.0
    out = {}
    for g in graph.prunable_groups():
        ladder = widths(g, multiple)
        if len(ladder) < 2:
            continue
        cut = price({g.id: ladder[1]}).get(quantity) or 0.0
        out[g.id] = max(full - cut, 0.0) / (ladder[0] - ladder[1])
    return out


def gamma_weights(model: Any, graph: ChannelGraph, costs: dict[int, float]) -> list[np.ndarray]:
    """One weight per γ value of ``penalised(model, "bn")``: its channel's cost, scaled so the
    prunable channels average 1 (λ then means what it means in plain slimming). Channels no
    cut can remove (frozen, or in no group) get 0: penalising them only costs accuracy."""
    by_var: dict[int, np.ndarray] = {}
    for m in graph.members:
        if m.kind != "bn":
            continue
        gamma = getattr(graph.flat.layer_ops()[m.layer][0].layer, "gamma", None)
        slots = graph.slots(m.key)
        if gamma is None or slots is None:
            continue
        w = np.zeros(gamma.shape, dtype=np.float64)
        for i, (gid, pos) in enumerate(zip(*slots, strict=True)):
            if gid >= 0 and gid in costs and graph.groups[gid].prunable[pos]:
                w[i] = costs[gid]
        by_var[id(gamma)] = np.maximum(by_var.get(id(gamma), w), w)
    weights = [by_var.get(id(v), np.zeros(v.shape)) for v in penalised(model, "bn")]
    live = np.concatenate([w.ravel() for w in weights]) if weights else np.zeros(0)
    mean = live[live > 0].mean() if (live > 0).any() else 1.0
    return [w / mean for w in weights]
