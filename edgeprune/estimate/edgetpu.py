"""Coral Edge TPU (USB Accelerator): which ops map, and how long an inference takes.

Mapping comes from ``edgetpu_compat.analyse`` (Coral's published rules). Latency::

    invoke_overhead
    + I/O bytes of the Edge TPU subgraph / usb          (activations crossing the link)
    + Σ_mapped (tpu_op_overhead + MACs / tpu_rate)      (the Edge TPU itself)
    + off-chip parameter bytes / usb                    (what the ~8 MiB cache cannot hold
                                                         streams in on every inference)
    + Σ_cpu ops (cpu.py's roofline for the host: the profile's cpu, clock and threads)

``tpu_gmacs``, ``tpu_op_overhead_us``, ``invoke_overhead_us`` and ``usb_mbps`` are fitted by
``bench/calibrate_edgetpu.py`` to Coral's published USB Accelerator benchmarks (MobileNet v1
224: 2.4 ms, and the larger models of the same table whose parameters overflow the cache);
the host CPU's parameters are the Raspberry Pi 4's (``rpi4.toml``).
"""

from __future__ import annotations

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


@register_estimator("edgetpu")
def estimate_edgetpu(tflite: bytes, graph: TfliteGraph, target: TargetProfile) -> Estimate:
    est = target.estimator
    if est is None:  # estimate_target checks first; this guards direct calls
        raise ValueError(f"{target.name} has no [estimator] section")
    cache = round(float(est.param_cache_mib or 0) * MIB)
    report = analyse(graph, tflite, cache)
    mapped = {s.index for s in report.ops if s.mapped}
    rate = float(est.tpu_gmacs or 0) * 1e9
    tpu_op_s = float(est.tpu_op_overhead_us or 0) * 1e-6
    usb = float(est.usb_mbps or 0) * 1e6
    cpu = CpuParams.from_target(target)
    cpu_times = {t.index: t for t in op_times(graph, cpu)}
    per_op: list[OpTime] = []
    for op in graph.ops:
        if op.index in mapped:
            ms = (tpu_op_s + op.macs / rate) * 1e3
            per_op.append(OpTime(op.index, op.op_type, ms, op.macs, False, "", "int8",
                                 "edgetpu"))
        else:
            per_op.append(cpu_times[op.index])
    io_bytes = boundary_bytes(graph, mapped) if mapped else 0
    link_ms = (io_bytes + report.off_chip_param_bytes) / usb * 1e3 if mapped else 0.0
    overhead_ms = float(est.invoke_overhead_us or 0) * 1e-3
    tpu_ms = sum(t.ms for t in per_op if t.device == "edgetpu")
    cpu_ms = sum(t.ms for t in per_op if t.device == "cpu")
    total = overhead_ms + link_ms + tpu_ms + cpu_ms
    flagged = flagged_ops(graph, [t for t in per_op if t.device == "cpu"])
    detail = (
        f"Edge TPU: {report.ops_on_edgetpu} ops mapped ({tpu_ms:.3f} ms at "
        f"{rate / 1e9:g} GMAC/s + {tpu_op_s * 1e6:g} µs/op), USB {link_ms:.3f} ms "
        f"({io_bytes:,} B I/O + {report.off_chip_param_bytes:,} B streamed parameters at "
        f"{usb / 1e6:g} MB/s), {overhead_ms:g} ms invoke; {report.ops_on_cpu} ops on the "
        f"{target.hardware.cpu or 'host'} CPU {cpu_ms:.3f} ms; parameters from "
        f"{target.source or target.name} [estimator]"
    )
    return Estimate(total, per_op, flagged, detail,
                    extra={"edgetpu_compat": report.to_dict()})
