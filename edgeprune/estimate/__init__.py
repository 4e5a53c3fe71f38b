"""Latency and memory of a .tflite on a target, without the device. No TensorFlow here.

``estimate_target`` dispatches on ``hardware.kind`` through ``ESTIMATORS`` (filled by
``@register_estimator`` in ``cpu.py`` (cortex-a), ``mcu.py`` (cortex-m) and ``edgetpu.py``).
``host`` is measured, not estimated, and ``ethos-u`` comes from Vela: neither is estimated here.
Every figure is a ``Measurement`` with method ``estimate`` and ``where`` the target's name,
so the checks use it when nothing better (device, emulator, TFLM) was measured.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from edgeprune.estimate import cpu, edgetpu, mcu  # noqa: F401  (fill the registry)
from edgeprune.estimate.result import ESTIMATORS, Estimate, OpTime, register_estimator
from edgeprune.measurement import Measurement
from edgeprune.targets import TargetProfile
from edgeprune.tflite.graph import parse_tflite

__all__ = ["ESTIMATORS", "Estimate", "OpTime", "TargetEstimate", "estimate_target",
           "register_estimator"]


@dataclass(frozen=True)
class TargetEstimate:
    measurements: list[Measurement]  # latency_ms (and ram_bytes where meaningful)
    per_op: list[dict[str, Any]]  # {index, op_type, ms, macs, generic, op_class, dtype, device}
    flagged: list[str]  # ops priced by the generic rule, never silently zero
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. {"edgetpu_compat": {...}}
    note: str = ""  # why nothing was estimated, when nothing was

    def to_dict(self) -> dict[str, Any]:
        return {
            "measurements": [m.to_dict() for m in self.measurements],
            "per_op": self.per_op,
            "flagged": self.flagged,
            "extra": self.extra,
            "note": self.note,
        }


def estimate_target(tflite: bytes, target: TargetProfile, name: str = "model.tflite"
                    ) -> TargetEstimate:
    """Estimates for ``target``; empty (with a note) where this module does not estimate."""
    fn = ESTIMATORS.get(target.hardware.kind)
    if fn is None:
        why = {"host": "the host profile is measured directly",
               "ethos-u": "Ethos-U figures come from Vela"}.get(target.hardware.kind, "")
        return TargetEstimate([], [], [], note=why or f"no estimator for {target.hardware.kind}")
    if target.estimator is None:
        return TargetEstimate([], [], [], note=(
            f"{target.source or target.name} has no [estimator] section: add one "
            "(see targets/rpi4.toml) to estimate latency and RAM"))
    graph = parse_tflite(tflite, name=name)
    est = fn(tflite, graph, target)
    measurements = []
    extra = dict(est.extra)
    if est.latency_ms is not None:
        detail = est.detail + (f"; {len(est.flagged)} op(s) by the generic rule"
                               if est.flagged else "")
        assumed = assumed_classes(est.per_op, target.estimator.anchored_classes)
        if assumed:
            extra["assumed_classes_ms"] = assumed
            share = sum(assumed.values()) / est.latency_ms if est.latency_ms else 0.0
            detail += (f"; {share:.0%} of it priced by op-class figures that rest on an "
                       "assumption, not on a published figure for this hardware "
                       f"({', '.join(assumed)})")
        pct = target.estimator.uncertainty_pct.get(target.runtime.engine)
        detail += (f"; stated uncertainty ± {pct:g} % (leave-one-out on published figures, "
                   "bench/estimator_loo.md)" if pct else
                   "; uncertainty not established (too few published figures to cross-validate"
                   " this model, bench/estimator_loo.md)")
        measurements.append(Measurement(
            "latency_ms", round(est.latency_ms, 4), "ms", "estimate", target.name, detail,
            uncertainty=pct / 100 if pct else None))
    if est.ram_bytes is not None:
        measurements.append(Measurement("ram_bytes", int(est.ram_bytes), "bytes", "estimate",
                                        target.name, est.ram_detail))
    return TargetEstimate(measurements, [t.to_dict() for t in est.per_op], est.flagged, extra)


def assumed_classes(per_op: list[OpTime], anchored: tuple[str, ...] | None
                    ) -> dict[str, float]:
    """Milliseconds by "<class>_<dtype>" for the CPU/MCU ops whose figure no published anchor
    sets (empty when the profile makes no claim about its anchors)."""
    out: dict[str, float] = {}
    if anchored is None:
        return out
    for t in per_op:
        key = f"{t.op_class}_{t.dtype}"
        if t.op_class and t.device in ("cpu", "mcu") and key not in anchored:
            out[key] = round(out.get(key, 0.0) + t.ms, 6)
    return out
