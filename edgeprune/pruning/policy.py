"""Policy: how many channels each group keeps, and which.

``sparsity`` is the fraction of prunable channels removed. ``uniform`` removes that fraction
from every group; ``global`` ranks all channels by their group-normalised score and removes the
lowest fraction overall (sensitive groups keep more). Kept counts are then rounded to
``channel_multiple`` (SIMD/NPU-friendly widths), never above the original count nor below
``min_channels``; a clamp is reported as a note. ``allocate_by_sensitivity`` turns measured
accuracy drops (``structured.sensitivity``) into per-group ratios for ``plan``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgeprune.errors import BadInputError
from edgeprune.pruning.graph import ChannelGroup

# (groups, scores, sparsity) -> channels to remove per group id (fractional; rounded later)
Allocator = Callable[[Sequence[ChannelGroup], dict[int, np.ndarray], float], dict[int, float]]
ALLOCATORS: dict[str, Allocator] = {}


def register_allocation(name: str) -> Callable[[Allocator], Allocator]:
    def deco(fn: Allocator) -> Allocator:
        ALLOCATORS[name] = fn
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
    if allocation not in ALLOCATORS:
        raise BadInputError(
            f"--allocation {allocation}",
            "unknown allocation",
            f"use one of: {', '.join(ALLOCATORS)}",
        )
    minimum = max(1, channel_multiple) if min_channels is None else min_channels
    groups = [g for g in groups if g.n_prunable > 0]
    if isinstance(sparsity, dict):
        removals = {g.id: g.n_prunable * sparsity.get(g.id, 0.0) for g in groups}
    else:
        removals = ALLOCATORS[allocation](groups, scores, sparsity)
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


def allocate_by_sensitivity(
    rows: Sequence[Mapping[str, Any]], sparsity: float
) -> dict[int, float]:
    """Per-group ratios from ``sensitivity()`` rows: fragile groups give up fewer channels.

    Each group's accuracy drop is a curve through (0, 0) and its measured (ratio, drop) points,
    linear in between (made non-decreasing: a negative drop is measurement noise). Greedily take
    the next step of any group with the smallest drop per channel removed (ties: the group that
    is pruned least so far, then the lowest id) until the channel-weighted mean ratio reaches
    ``sparsity``. Past the last measured ratio the curve is extended with its last slope, up to
    (1 + sparsity) / 2, so a target above it is still reachable.
    """
    curves: dict[int, list[tuple[float, float]]] = {}
    weight: dict[int, int] = {}
    for r in rows:
        gid = int(r["group"])
        curves.setdefault(gid, []).append((float(r["ratio"]), max(0.0, float(r["drop"]))))
        weight[gid] = int(r.get("prunable", r["channels"]))
    segments = {gid: _segments(pts, sparsity) for gid, pts in curves.items()}
    ratio = dict.fromkeys(curves, 0.0)
    step = dict.fromkeys(curves, 0)
    left = sparsity * sum(weight.values())
    while left > 1e-9:
        options = []
        for gid, segs in segments.items():
            if step[gid] < len(segs) and weight[gid] > 0:
                (r0, d0), (r1, d1) = segs[step[gid]]
                options.append((round((d1 - d0) / ((r1 - r0) * weight[gid]), 12), r0, gid))
        if not options:
            break
        _, r0, gid = min(options)
        r1 = segments[gid][step[gid]][1][0]
        channels = (r1 - r0) * weight[gid]
        if channels <= left:
            ratio[gid], left = r1, left - channels
            step[gid] += 1
        else:
            ratio[gid], left = r0 + left / weight[gid], 0.0
    return ratio


def _segments(
    points: list[tuple[float, float]], sparsity: float
) -> list[tuple[tuple[float, float], tuple[float, float]]]:
    pts = [(0.0, 0.0)]
    for r, d in sorted(points):
        if r > pts[-1][0]:
            pts.append((r, max(d, pts[-1][1])))
    end = (1.0 + sparsity) / 2
    if len(pts) > 1 and end > pts[-1][0]:
        (ra, da), (rb, db) = pts[-2], pts[-1]
        pts.append((end, db + (db - da) / (rb - ra) * (end - rb)))
    return list(itertools.pairwise(pts))
