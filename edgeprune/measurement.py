"""The figures a build produces and the verdicts on them: core types every layer shares.

A ``Measurement`` always carries its method (how it was obtained) and where it applies, so a
host figure is never passed off as a target's. ``METHOD_RANK`` orders the methods that may
stand for a target, best first.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

# "artifact": an exact property of the emitted file (its size), the same on every machine.
METHOD_RANK = ("artifact", "device", "qemu", "tflm", "estimate")


@dataclass(frozen=True)
class Measurement:
    quantity: str  # latency_ms | ram_bytes | flash_bytes | accuracy
    value: float
    unit: str
    method: str  # artifact | device | qemu | tflm | host | estimate
    where: str  # target name, "host", or "device <label>" for a device that is not the target
    detail: str = ""
    # The machine, CPU, runtime and delegate the figure came from ("" for exact or estimated
    # figures), and the checks that used it (set by the check stage).
    ran_on: str = ""
    used_by: tuple[str, ...] = ()
    # An estimate's stated relative uncertainty (0.08 = ± 8 %): the spread of its model's
    # leave-one-out errors on published figures (bench/estimator_loo.md); None where no such
    # spread is established (measured figures, or a model with too few published anchors).
    uncertainty: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class CheckResult:
    name: str
    budget: float
    value: float | None
    unit: str
    passed: bool | None
    method: str | None
    rule: str
    # The budget lies within the figure's stated uncertainty band: the verdict holds for the
    # figure, but the real value may fall on either side. ``passed`` is unchanged by it.
    marginal: bool = False

    @property
    def margin(self) -> float | None:
        return None if self.value is None else self.budget - self.value

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "margin": self.margin}
