"""Result types shared by the per-target estimators, and their registry."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from edgeprune.targets import TargetProfile
from edgeprune.tflite.graph import TfliteGraph


@dataclass(frozen=True)
class OpTime:
    index: int
    op_type: str
    ms: float
    macs: int
    generic: bool  # priced by the generic rule (listed in ``flagged`` too)
    op_class: str = ""
    dtype: str = ""
    device: str = "cpu"  # cpu | mcu | edgetpu: where the op runs

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index, "op_type": self.op_type, "ms": round(self.ms, 6),
            "macs": self.macs, "generic": self.generic, "op_class": self.op_class,
            "dtype": self.dtype, "device": self.device,
        }  # fmt: skip


@dataclass(frozen=True)
class Estimate:
    """What one estimator returns; ``estimate_target`` turns it into measurements."""

    latency_ms: float | None
    per_op: list[OpTime]
    flagged: list[str]
    detail: str  # the formula and where its parameters come from
    ram_bytes: int | None = None
    ram_detail: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


# (the .tflite bytes, their parsed graph, the target) -> Estimate
EstimatorFn = Callable[[bytes, TfliteGraph, TargetProfile], Estimate]
# hardware.kind -> estimator; filled by @register_estimator in cpu.py, mcu.py, edgetpu.py.
ESTIMATORS: dict[str, EstimatorFn] = {}


def register_estimator(kind: str) -> Callable[[EstimatorFn], EstimatorFn]:
    def add(fn: EstimatorFn) -> EstimatorFn:
        ESTIMATORS[kind] = fn
        return fn

    return add
