"""Coral Edge TPU (USB Accelerator): which ops map, and how long an inference takes.

Mapping comes from ``edgetpu_compat.analyse`` (Coral's published rules). Latency::

    invoke_overhead
    + I/O bytes of the Edge TPU subgraph / usb          (activations crossing the link)
    + Σ_mapped (tpu_op_overhead + max(MACs / tpu_rate,   (the Edge TPU itself, and the
                                      streamed / usb))    parameters it streams)
    + Σ_cpu ops (cpu.py's roofline for the host: the profile's cpu, clock and threads)

The ~8 MiB on-chip cache holds parameters in execution order; an op whose parameters lie beyond
it streams them over USB on every inference, and that transfer overlaps its compute (an op
costs the longer of the two). ``bench/calibrate_edgetpu.py`` chose this form over adding the
streaming time to the compute by leave-one-out on Coral's published figures
(bench/estimator_loo.md), and fits ``tpu_gmacs``, ``tpu_op_overhead_us``,
``invoke_overhead_us`` and ``usb_mbps`` to them; the host CPU's parameters are the Raspberry
Pi 4's (``rpi4.toml``).
"""

from __future__ import annotations

from collections.abc import Sequence

from edgeprune.estimate.cpu import CpuParams, flagged_ops, op_times
from edgeprune.estimate.edgetpu_compat import analyse
from edgeprune.estimate.result import Estimate, OpTime, register_estimator
from edgeprune.targets import TargetProfile
from edgeprune.tflite.graph import TfliteGraph

MIB = 1024 * 1024


def boundary_bytes(graph: TfliteGraph, mapped: set[int]) -> int:
    """Bytes of activations that cross the USB link: into and out of the mapped ops."""
    produced_on_tpu = {t for op in graph.ops if op.index in mapped for t in op.outputs}
    crossing: set[int] = set()
    for op in graph.ops:
        ins = [t for t in op.inputs if t >= 0 and not graph.tensors[t].is_constant]
        if op.index in mapped:
            crossing.update(t for t in ins if t not in produced_on_tpu)
        else:
            crossing.update(t for t in ins if t in produced_on_tpu)
    crossing.update(t for t in graph.outputs if t in produced_on_tpu)
    return sum(graph.tensors[t].nbytes for t in crossing)


def tpu_op_ms(ops: Sequence[tuple[int, int]], cache_bytes: float, gmacs: float,
              op_overhead_us: float, usb_mbps: float) -> list[tuple[float, int]]:
    """Per mapped op, given as (MACs, parameter bytes) in execution order: its milliseconds
    and the parameter bytes it streams (those the cache, filled in order, cannot hold)."""
    left, out = cache_bytes, []
    for macs, params in ops:
        kept = min(left, params)
        left -= kept
        seconds = max(macs / (gmacs * 1e9), (params - kept) / (usb_mbps * 1e6))
        out.append(((op_overhead_us * 1e-6 + seconds) * 1e3, params - kept))
    return out


@register_estimator("edgetpu")
def estimate_edgetpu(tflite: bytes, graph: TfliteGraph, target: TargetProfile) -> Estimate:
    est = target.estimator
    if est is None:  # estimate_target checks first; this guards direct calls
        raise ValueError(f"{target.name} has no [estimator] section")
    cache = round(float(est.param_cache_mib or 0) * MIB)
    report = analyse(graph, tflite, cache)
    mapped = {s.index for s in report.ops if s.mapped}
    rate = float(est.tpu_gmacs or 0)
    tpu_op_us = float(est.tpu_op_overhead_us or 0)
    usb = float(est.usb_mbps or 0)
    cpu = CpuParams.from_target(target)
    cpu_times = {t.index: t for t in op_times(graph, cpu)}
    on_tpu = [op for op in graph.ops if op.index in mapped]
    tpu = dict(zip((op.index for op in on_tpu), tpu_op_ms(
        [(op.macs, op.weight_bytes) for op in on_tpu], cache, rate, tpu_op_us, usb), strict=True))
    per_op = [OpTime(op.index, op.op_type, tpu[op.index][0], op.macs, False, "", "int8",
                     "edgetpu") if op.index in tpu else cpu_times[op.index] for op in graph.ops]
    streamed = sum(b for _, b in tpu.values())
    io_bytes = boundary_bytes(graph, mapped) if mapped else 0
    link_ms = io_bytes / (usb * 1e6) * 1e3 if mapped else 0.0
    overhead_ms = float(est.invoke_overhead_us or 0) * 1e-3
    tpu_ms = sum(t.ms for t in per_op if t.device == "edgetpu")
    cpu_ms = sum(t.ms for t in per_op if t.device == "cpu")
    total = overhead_ms + link_ms + tpu_ms + cpu_ms
    flagged = flagged_ops(graph, [t for t in per_op if t.device == "cpu"])
    detail = (
        f"Edge TPU: {report.ops_on_edgetpu} ops mapped, {tpu_ms:.3f} ms (each "
        f"{tpu_op_us:g} µs + the longer of MACs at {rate:g} GMAC/s and its parameters beyond "
        f"the {cache / MIB:g} MiB cache at {usb:g} MB/s: {streamed:,} B streamed), USB I/O "
        f"{link_ms:.3f} ms ({io_bytes:,} B), {overhead_ms:g} ms invoke; {report.ops_on_cpu} "
        f"ops on the {target.hardware.cpu or 'host'} CPU {cpu_ms:.3f} ms; parameters from "
        f"{target.source or target.name} [estimator]"
    )
    return Estimate(total, per_op, flagged, detail,
                    extra={"edgetpu_compat": report.to_dict()})
