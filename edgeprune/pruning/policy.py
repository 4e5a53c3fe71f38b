"""Policy: how many channels each group keeps, and which.

``sparsity`` is the fraction of prunable channels removed. ``uniform`` removes that fraction
from every group; ``global`` ranks all channels by their group-normalised score and removes the
lowest fraction overall (sensitive groups keep more). Kept counts are then rounded to
``channel_multiple`` (SIMD/NPU-friendly widths), never above the original count nor below
``min_channels``; a clamp is reported as a note. Rounding is half-up per group unless a
``cost`` of allocations is given (``round_kept``: the same total, placed where channels cost
least). ``allocate_by_sensitivity`` turns measured accuracy drops (``structured.sensitivity``)
into per-group ratios for ``plan``.
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
# Kept channels per group id (groups not named keep all) -> the target's cost, lower is better.
GroupCost = Callable[[dict[int, int]], float]
Allocator = Callable[[Sequence[ChannelGroup], dict[int, np.ndarray], float], dict[int, float]]
ALLOCATORS: dict[str, Allocator] = {}


def register_allocation(name: str) -> Callable[[Allocator], Allocator]:
    def deco(fn: Allocator) -> Allocator:
        ALLOCATORS[name] = fn
        return fn

    return deco


@dataclass(frozen=True)
class Rounding:
    kept: dict[int, int]  # group id -> channels kept
    half_up: dict[int, int]  # what half-up rounding would keep
    costs: tuple[float, float] | None = None  # (half-up, chosen) when the cost was consulted


@dataclass
class Plan:
    removed: dict[int, np.ndarray]  # group id -> positions (in the group) removed
    notes: list[str] = field(default_factory=list)
    rounding: Rounding | None = None  # what the rounding chose and half-up would have

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


def _candidates(n: int, n_frozen: int, kept: float, multiple: int, minimum: int
                ) -> tuple[int, int]:
    """The kept count rounded down and up to ``multiple``, clamped as ``kept_count``."""
    q = kept / multiple
    if abs(q - round(q)) < 1e-9:  # 15.999… from a ratio of an exact width is 16
        q = float(round(q))
    down, up = (min(n, max(multiple * k, minimum, n_frozen)) for k in (math.floor(q), math.ceil(q)))
    return down, up


def round_kept(
    groups: Sequence[ChannelGroup],
    wants: Mapping[int, float],
    multiple: int,
    minimum: int,
    cost: GroupCost | None = None,
) -> Rounding:
    """Round each group's wanted kept count down or up to ``multiple`` (clamped as
    ``kept_count``).

    Without ``cost``: half-up per group. With it: the rounding keeps exactly as many channels in
    total as half-up does (so the ratio is met as before) but chooses which groups round up to
    minimise ``cost``: a full-resolution layer, where a channel costs most, rounds down and a
    cheap 7×7 layer takes the channels instead. The cost is linearised around half-up (one call
    per group with a choice: what rounding that group up instead of down adds), the cheapest
    set of round-ups with the same channel total is found exactly (a subset-sum over the
    steps), and it is kept only if ``cost`` confirms it is lower; ties keep half-up.
    """
    half: dict[int, int] = {}
    choice: dict[int, tuple[int, int]] = {}
    for g in groups:
        n, frozen = g.size, g.size - g.n_prunable
        want = wants[g.id]
        half[g.id] = kept_count(n, frozen, want, multiple, minimum)
        down, up = _candidates(n, frozen, want, multiple, minimum)
        if down < up:
            choice[g.id] = (down, up)
    if cost is None or not _has_alternative(half, choice):
        return Rounding(dict(half), dict(half))
    base = cost(half)
    extra = {}  # group id -> cost of rounding it up rather than down, around half-up
    for gid, (down, up) in choice.items():
        other = cost({**half, gid: down if half[gid] == up else up})
        extra[gid] = base - other if half[gid] == up else other - base
    if not all(math.isfinite(v) for v in (base, *extra.values())):
        return Rounding(dict(half), dict(half))  # a cost model that cannot price: half-up
    ups = _cheapest_ups(half, choice, extra)
    chosen = {**half, **{gid: (up if gid in ups else down) for gid, (down, up) in choice.items()}}
    if chosen == half:
        return Rounding(dict(half), dict(half), (base, base))
    after = cost(chosen)
    if not after < base - 1e-9 * abs(base):  # the linearisation missed: keep half-up
        return Rounding(dict(half), dict(half), (base, base))
    return Rounding(chosen, dict(half), (base, after))


def _has_alternative(half: dict[int, int], choice: dict[int, tuple[int, int]]) -> bool:
    """Whether another set of round-ups reaches half-up's channel total (else no cost needed)."""
    total = sum(up - down for gid, (down, up) in choice.items() if half[gid] == up)
    ways = {0: 1}  # channel total of the round-ups -> number of sets reaching it (capped at 2)
    for down, up in choice.values():
        step = up - down
        for s, count in list(ways.items()):
            ways[s + step] = min(2, ways.get(s + step, 0) + count)
    return ways.get(total, 0) > 1


def _cheapest_ups(half: dict[int, int], choice: dict[int, tuple[int, int]],
                  extra: dict[int, float]) -> frozenset[int]:
    """The set of groups to round up with half-up's channel total and the least summed
    ``extra``; among equal costs (to 1e-9 of the largest) the one that differs least from
    half-up."""
    total = sum(up - down for gid, (down, up) in choice.items() if half[gid] == up)
    scale = max((abs(v) for v in extra.values()), default=0.0) or 1.0
    # channel total of the round-ups -> (cost / scale, groups changed from half-up, the
    # round-ups)
    best: dict[int, tuple[float, int, frozenset[int]]] = {0: (0.0, 0, frozenset())}
    for gid, (down, up) in sorted(choice.items()):
        flip_up, flip_down = int(half[gid] != up), int(half[gid] == up)
        nxt = {}
        for s, (c, flips, ups) in best.items():
            for key, entry in ((s, (c, flips + flip_down, ups)),
                               (s + up - down, (c + extra[gid] / scale, flips + flip_up,
                                                ups | {gid}))):
                if key <= total and (key not in nxt or _better(entry, nxt[key])):
                    nxt[key] = entry
        best = nxt
    return best[total][2]


def _better(a: tuple[float, int, frozenset[int]], b: tuple[float, int, frozenset[int]]) -> bool:
    if abs(a[0] - b[0]) > 1e-9:
        return a[0] < b[0]
    return a[1] < b[1]


def plan(
    groups: Sequence[ChannelGroup],
    scores: dict[int, np.ndarray],
    *,
    sparsity: float | dict[int, float],
    allocation: str = "uniform",
    channel_multiple: int = 1,
    min_channels: int | None = None,
    cost: GroupCost | None = None,
) -> Plan:
    """Decide the channels to remove per group; ``sparsity`` may be given per group id.

    ``cost`` (kept channels per group id -> the target's cost) makes the rounding to
    ``channel_multiple`` cost-aware (``round_kept``); without it rounding is half-up."""
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
    wants = {g.id: g.size - removals.get(g.id, 0) for g in groups}
    rounding = round_kept(groups, wants, channel_multiple, minimum, cost)
    result = Plan(removed={}, rounding=rounding)
    if rounding.kept != rounding.half_up:
        result.notes.append(_rounding_note(groups, rounding))
    for g in groups:
        n = g.size
        want, keep = wants[g.id], rounding.kept[g.id]
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


def _rounding_note(groups: Sequence[ChannelGroup], r: Rounding) -> str:
    moved = [f"group {g.id} ({g.layers[0]}) {r.half_up[g.id]} → {r.kept[g.id]}"
             for g in groups if r.kept[g.id] != r.half_up[g.id]]
    note = (f"cost-aware rounding: {', '.join(moved)} instead of half-up, the same "
            f"{sum(r.kept.values())} channels kept in total")
    if r.costs and r.costs[0]:
        before, after = r.costs
        note += f"; estimated cost {before:.4g} → {after:.4g} ({after / before - 1:+.1%})"
    return note


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
