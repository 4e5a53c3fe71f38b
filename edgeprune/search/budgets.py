"""What ``--prune auto`` searches against: the target's priced budgets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeprune.data import Labelled
from edgeprune.targets import TargetProfile
from edgeprune.training import outputs


@dataclass(frozen=True)
class Budget:
    name: str  # latency | ram | flash: the check's name
    quantity: str  # Costs field
    limit: float
    unit: str


def budgets_of(target: TargetProfile) -> tuple[list[Budget], list[str]]:
    """The budgets the search can price for ``target`` (and notes on those it cannot)."""
    b, out, notes = target.budgets, [], []
    estimated = target.estimator is not None and target.hardware.kind in (
        "cortex-a", "cortex-m", "edgetpu")
    for name, quantity, value, scale, unit in (
            ("latency", "latency_ms", b.latency_ms, 1.0, "ms"),
            ("ram", "ram_bytes", b.ram_kb, 1024.0, "bytes"),
            ("flash", "flash_bytes", b.flash_kb, 1024.0, "bytes")):
        if value is None:
            continue
        if quantity != "flash_bytes" and not estimated:
            notes.append(f"--prune auto: the {name} budget is not searched ({target.name} has "
                         "no latency/RAM estimator); the check stage still checks it")
            continue
        out.append(Budget(name, quantity, float(value) * scale, unit))
    return out, notes


def fmt_budget(budget: Budget, value: float) -> str:
    if budget.unit == "ms":
        return f"{value:.4g} ms"
    return f"{value:,.0f} B ({value / 1024:,.1f} KB)"


def own_labels(model: Any, x: np.ndarray) -> Labelled:
    """Unlabelled samples labelled by ``model``'s own top-1: without ``--data`` the search
    scores (and short-fine-tunes) proposals by agreement with the input model."""
    labels = outputs(model, x).argmax(axis=1).astype(np.int64)
    return Labelled(x, labels, "calibration samples, labelled by the input model")
