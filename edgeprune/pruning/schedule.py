"""Gradual pruning schedule: how many channels each cut leaves, and how epochs are shared.

The cubic schedule of Zhu & Gupta, *To prune, or not to prune* (arXiv:1710.01878): after cut
``t`` of ``k`` the removed share is ``s_f · (1 − (1 − t/k)³)``, so the first cuts take most of
the channels (while many are redundant) and the last ones little (while the network has less
left to lose). Here ``s_f`` is each group's final removal, decided beforehand (the one-shot
plan, or ``--prune auto``'s search); the last cut reaches it exactly. Pure functions: no
TensorFlow.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TypeVar

K = TypeVar("K")


def cubic_fractions(steps: int) -> list[float]:
    """The share of the final removal reached after each of ``steps`` cuts; the last is 1."""
    if steps < 1:
        raise ValueError(f"steps must be at least 1, not {steps}")
    return [1.0 - (1.0 - t / steps) ** 3 for t in range(1, steps + 1)]


def kept_per_step(channels: Mapping[K, int], final: Mapping[K, int],
                  steps: int) -> list[dict[K, int]]:
    """Channels each group keeps after each cut, from its ``channels`` before pruning to its
    ``final`` count: the removal is rounded half up, so the counts never rise from one cut to
    the next, and the last cut keeps exactly ``final``. Groups missing from ``final`` are not
    cut."""
    out = []
    for fraction in cubic_fractions(steps):
        kept = {}
        for key, n in channels.items():
            removal = n - final.get(key, n)
            kept[key] = n - min(removal, math.floor(fraction * removal + 0.5))
        out.append(kept)
    out[-1] = {key: final.get(key, n) for key, n in channels.items()}  # no rounding drift
    return out


def step_epochs(remaining: int, steps_left: int) -> int:
    """Fine-tuning epochs for the next step: an equal share (rounded down) of the epochs not
    yet run; the last step takes all that remain. Epochs an early-stopped step did not use
    are thereby spread over the steps after it, so the schedule spends the recipe's budget."""
    if steps_left <= 1:
        return remaining
    return remaining // steps_left
