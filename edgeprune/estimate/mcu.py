"""Cortex-M running TFLite-Micro: cycles from MACs, by op class and kernel library.

    cycles  = Σ_ops (MACs / E[engine, class, dtype] + op_overhead_cycles)
    latency = cycles / clock

E (MACs per cycle) depends on the kernel library the profile's ``runtime.engine`` names:
``tflm-cmsis-nn`` (Arm's SIMD kernels, the 2020 generation), ``tflm-cmsis-nn-2022`` (the
2022 generation, faster kernels) or ``tflm-reference`` (TFLM's portable C kernels,
several times slower). Ops that only move bytes (RESHAPE, CONCATENATION, PAD, …) cost a word
per cycle. The numbers and their derivation are in the profile (``bench/calibrate_mcu.py``).

RAM is the tensor arena: ``plan_arena`` ports TFLM's greedy memory planner and adds the
persistent allocations; the build also measures the real arena with the TFLM interpreter
(method ``tflm``), which the checks prefer.
"""

from __future__ import annotations

from edgeprune.estimate.opclass import (
    GENERIC_CLASS,
    OpWork,
    bytes_only,
    class_chain,
    flag_text,
    graph_work,
)
from edgeprune.estimate.result import Estimate, OpTime, register_estimator
from edgeprune.targets import TargetProfile
from edgeprune.tflite.graph import TfliteGraph
from edgeprune.tflite.planner import plan_arena

# TFLM copies for RESHAPE/CONCATENATION/PAD…: LDR/STR of 32-bit words, about one per cycle.
COPY_BYTES_PER_CYCLE = 4.0


def _rate(table: dict[str, float], op_class: str, dtype: str) -> float | None:
    for cls in class_chain(op_class):
        if f"{cls}_{dtype}" in table:
            return table[f"{cls}_{dtype}"]
    return None


def op_cycles(w: OpWork, table: dict[str, float], overhead: float) -> tuple[float, str]:
    """Cycles of one op, and why it was priced generically ('' when it was not)."""
    eff = _rate(table, w.op_class, w.dtype)
    if bytes_only(w.op_class) and eff is None:
        return overhead + w.bytes_moved / COPY_BYTES_PER_CYCLE, ""
    why = ""
    if w.generic:
        why = f"no latency model for {w.op_type}"
    elif eff is None:
        why = f"the profile gives no {w.op_class}_{w.dtype} figure"
    if eff is None:
        # Generic rule: elementwise at the int8 figure when no figure exists for the dtype.
        eff = table.get(f"{GENERIC_CLASS}_{w.dtype}") or table[f"{GENERIC_CLASS}_int8"]
    return overhead + w.macs / eff, why


@register_estimator("cortex-m")
def estimate_cortex_m(tflite: bytes, graph: TfliteGraph, target: TargetProfile) -> Estimate:
    est = target.estimator
    if est is None:  # estimate_target checks first; this guards direct calls
        raise ValueError(f"{target.name} has no [estimator] section")
    engine = target.runtime.engine
    table = est.macs_per_cycle.get(engine, {})
    overhead = float(est.op_overhead_cycles or 0)
    clock = target.hardware.clock_mhz * 1e6
    times, flagged, total_cycles = [], [], 0.0
    for w in graph_work(graph):
        cycles, why = op_cycles(w, table, overhead)
        total_cycles += cycles
        times.append(OpTime(w.index, w.op_type, cycles / clock * 1e3, w.macs, bool(why),
                            w.op_class, w.dtype, "mcu"))
        if why:
            flagged.append(flag_text(w, why))
    plan = plan_arena(graph)
    detail = (
        f"TFLM cycles: Σ MACs/E[{engine}] + {overhead:g} cycles/op = {total_cycles:,.0f} "
        f"cycles at {target.hardware.clock_mhz:g} MHz; parameters from "
        f"{target.source or target.name} [estimator]"
    )
    ram_detail = (
        f"TFLM greedy memory plan {plan.peak_bytes:,} B + estimated persistent tail "
        f"{plan.tail_bytes:,} B (kernel scratch buffers not included)"
    )
    return Estimate(total_cycles / clock * 1e3, times, flagged, detail, plan.arena_bytes,
                    ram_detail)
