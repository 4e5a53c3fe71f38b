"""Policy: how many channels each group keeps, and which.

``sparsity`` is the fraction of prunable channels removed. ``uniform`` removes that fraction
from every group; ``global`` ranks all channels by their group-normalised score and removes the
lowest fraction overall (sensitive groups keep more). Kept counts are then rounded to
``channel_multiple`` (SIMD/NPU-friendly widths), never above the original count nor below
``min_channels``; a clamp is reported as a note.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from edgeprune.errors import BadInputError
from edgeprune.pruning.graph import ChannelGroup

# (groups, scores, sparsity) -> channels to remove per group id (fractional; rounded later)
Allocator = Callable[[Sequence[ChannelGroup], dict[int, np.ndarray], float], dict[int, float]]
ALLOCATIONS: dict[str, Allocator] = {}


def register_allocation(name: str) -> Callable[[Allocator], Allocator]:
    def deco(fn: Allocator) -> Allocator:
        ALLOCATIONS[name] = fn
        return fn

    return deco


@dataclass
class Plan:
    removed: dict[int, np.ndarray]  # group id -> positions (in the group) removed
    notes: list[str] = field(default_factory=list)

    def removed_roots(self, groups: Sequence[ChannelGroup], n_atoms: int) -> np.ndarray:
        """A bool per union-find root, as surgery wants it."""
        mask = np.zeros(n_atoms, dtype=bool)
        for g in groups:
            pos = self.removed.get(g.id)
            if pos is not None and len(pos):
                mask[g.roots[pos]] = True
        return mask


def _half_up(x: float) -> int:
    return math.floor(x + 0.5)


@register_allocation("uniform")
def uniform(
    groups: Sequence[ChannelGroup], scores: dict[int, np.ndarray], sparsity: float
) -> dict[int, float]:
    """Every group loses the same fraction of its prunable channels."""
    return {g.id: g.n_prunable * sparsity for g in groups}


@register_allocation("global")
def global_rank(
    groups: Sequence[ChannelGroup], scores: dict[int, np.ndarray], sparsity: float
) -> dict[int, float]:
    """The lowest-scoring channels across all groups go (scores normalised per group)."""
    entries = []
    for g in groups:
        s = np.asarray(scores[g.id], dtype=np.float64)[g.prunable]
        peak = s.max() if len(s) else 0.0
        s = s / peak if peak > 0 else s
        entries.extend((float(v), g.id) for v in s)
    n_remove = _half_up(len(entries) * sparsity)
    counts: dict[int, float] = {g.id: 0 for g in groups}
    for _, gid in sorted(entries, key=lambda e: e[0])[:n_remove]:
        counts[gid] += 1
    return counts


def kept_count(n: int, n_frozen: int, kept: float, multiple: int, minimum: int) -> int:
    """Round a kept count to ``multiple``; clamp to [max(minimum, frozen), n]."""
    k = multiple * _half_up(kept / multiple)
    return min(n, max(k, minimum, n_frozen))


def plan(
    groups: Sequence[ChannelGroup],
    scores: dict[int, np.ndarray],
    *,
    sparsity: float | dict[int, float],
    allocation: str = "uniform",
    channel_multiple: int = 1,
    min_channels: int | None = None,
) -> Plan:
    """Decide the channels to remove per group; ``sparsity`` may be given per group id."""
    if allocation not in ALLOCATIONS:
        raise BadInputError(
            f"--allocation {allocation}",
            "unknown allocation",
            f"use one of: {', '.join(ALLOCATIONS)}",
        )
    minimum = max(1, channel_multiple) if min_channels is None else min_channels
    groups = [g for g in groups if g.n_prunable > 0]
    if isinstance(sparsity, dict):
        removals = {g.id: g.n_prunable * sparsity.get(g.id, 0.0) for g in groups}
    else:
        removals = ALLOCATIONS[allocation](groups, scores, sparsity)
    result = Plan(removed={})
    for g in groups:
        n, frozen = g.size, g.size - g.n_prunable
        want = n - removals.get(g.id, 0)
        keep = kept_count(n, frozen, want, channel_multiple, minimum)
        if _half_up(want) < minimum and keep > _half_up(want):
            result.notes.append(
                f"group {g.id} ({', '.join(g.layers[:3])}{', …' if len(g.layers) > 3 else ''}): "
                f"pruning would keep {max(0, _half_up(want))} of {n} channels; clamped to "
                f"{keep} (min_channels={minimum})"
            )
        n_remove = n - keep
        if n_remove <= 0:
            continue
        s = np.asarray(scores.get(g.id, np.zeros(n)), dtype=np.float64)
        candidates = np.flatnonzero(g.prunable)
        order = candidates[np.argsort(s[candidates], kind="stable")]
        result.removed[g.id] = np.sort(order[:n_remove])
    return result
