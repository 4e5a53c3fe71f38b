"""Cortex-A (and any CPU) running LiteRT + XNNPACK: a per-op roofline with overheads.

The per-class rates E are the profile's ``[estimator.macs_per_cycle.<runtime.engine>]``:
``litert-xnnpack``, or ``litert-ruy-2021`` (TFLite 2.4's default kernels: ruy GEMM, no
XNNPACK); a profile whose engine is not a CPU engine (the Edge TPU's host) uses XNNPACK's.

For each op, on one core::

    work = max((MACs' + c[dtype] × outputs) / (E[class, dtype] × clock),
               activation bytes / mem_bw + weight bytes × (h / mem_bw + (1 - h) / dram_bw))

where MACs' counts a conv's input channels per kernel tap rounded up to the kernel's channel
tile (``conv_channel_tile``), and h = min(1, cache / the model's weight bytes) is the share
of the weights still in the last-level cache from the previous inference (a model whose
weights exceed the cache streams the rest from DRAM on every inference),
and for the whole model at T threads::

    latency = invoke_overhead + Σ_ops (op_overhead [+ gemm_overhead] + work / S[T])

(gemm_overhead: the engine's figure for the op's dtype where the profile gives
``gemm_overhead_us_by_engine``, else ``gemm_overhead_us``)

E (sustained MACs per cycle by op class and dtype; a refined class such as ``hardswish``
falls back to its parent's figure), c (a fixed cost per output element of conv/depthwise/FC,
in MACs: the GEMM epilogue that makes a 3-channel stem conv or a 3×3 depthwise run well
below the peak rate), the bandwidth, the overheads and the
measured thread-speedup curve S are the profile's ``[estimator]`` parameters; each shipped
profile says where its numbers come from (``bench/calibrate_cortex_a.py`` fits them to
published Raspberry Pi figures, ``bench/fit_host.py`` to micro-benchmarks on this machine).
S is a whole-model curve measured on a real board, not linear scaling: XNNPACK splits each
op across threads, and memory bandwidth and small ops stop the gain well short of T.

Peak RAM of the inference process (``ram_bytes``)::

    runtime RSS + model file + packed weights + tensor arena

The runtime's resident set with no model is measured (``runtime_rss_kb``); the model file is
read into memory; XNNPACK repacks conv/FC/depthwise weights into its own layout (a second
copy); the arena is the greedy memory plan of the activations.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from edgeprune.estimate.opclass import (
    GEMM_CLASSES,
    GENERIC_CLASS,
    OpWork,
    bytes_only,
    class_chain,
    flag_text,
    graph_work,
)
from edgeprune.estimate.result import Estimate, OpTime, register_estimator
from edgeprune.targets import Estimator, TargetProfile
from edgeprune.tflite.graph import TfliteGraph
from edgeprune.tflite.planner import plan_arena

_PACKED_WEIGHT_CLASSES = frozenset({"conv", "depthwise", "fc"})


@dataclass(frozen=True)
class CpuParams:
    efficiency: dict[str, float]  # "<class>_<dtype>" -> MACs per cycle
    output_cost: dict[str, float]  # dtype -> MACs-equivalent per GEMM output element
    channel_tile: dict[str, float]  # dtype -> multiple a conv tap's input channels pad to
    clock_hz: float
    mem_bytes_per_s: float
    op_overhead_s: float
    invoke_overhead_s: float
    threads: int
    speedup: float
    dram_bytes_per_s: float = 0.0  # 0: weights always at mem_bytes_per_s
    cache_bytes: float = 0.0
    gemm_overhead_s: float = 0.0
    hot_weights: float = 1.0  # share of the weights in cache (set per graph by op_times)
    gemm_overhead_by_dtype: dict[str, float] = dataclasses.field(default_factory=dict)  # s

    @classmethod
    def from_target(cls, target: TargetProfile) -> CpuParams:
        est = _estimator(target)
        threads = target.runtime.threads
        curve = est.thread_speedup
        # Beyond the measured curve the gain is taken as flat: more threads than measured
        # never buys more on a memory-bound board.
        speedup = curve[min(threads, len(curve)) - 1]
        engine = target.runtime.cpu_engine
        return cls(
            efficiency=dict(est.macs_per_cycle.get(engine, {})),
            output_cost=dict(est.output_cost_macs),
            channel_tile=dict(est.conv_channel_tile),
            clock_hz=target.hardware.clock_mhz * 1e6,
            mem_bytes_per_s=float(est.mem_gbps or 0) * 1e9,
            op_overhead_s=float(est.op_overhead_us or 0) * 1e-6,
            invoke_overhead_s=float(est.invoke_overhead_us or 0) * 1e-6,
            threads=threads,
            speedup=speedup,
            dram_bytes_per_s=float(est.dram_gbps or 0) * 1e9,
            cache_bytes=float(est.cache_kb or 0) * 1024,
            gemm_overhead_s=float(est.gemm_overhead_us or 0) * 1e-6,
            gemm_overhead_by_dtype={d: float(us) * 1e-6 for d, us in
                                    est.gemm_overhead_us_by_engine.get(engine, {}).items()},
        )


def _estimator(target: TargetProfile) -> Estimator:
    if target.estimator is None:  # estimate_target checks first; this guards direct calls
        raise ValueError(f"{target.name} has no [estimator] section")
    return target.estimator


def efficiency(p: CpuParams, op_class: str, dtype: str) -> float | None:
    for cls in class_chain(op_class):
        if f"{cls}_{dtype}" in p.efficiency:
            return p.efficiency[f"{cls}_{dtype}"]
    return None


def work_seconds(w: OpWork, p: CpuParams) -> tuple[float, bool]:
    """One-thread work time of an op (no overhead), and whether the generic rule priced it."""
    generic = w.generic
    eff = efficiency(p, w.op_class, w.dtype)
    if eff is None and not bytes_only(w.op_class):
        eff, generic = efficiency(p, GENERIC_CLASS, w.dtype), True
    macs = float(w.macs)
    tile = p.channel_tile.get(w.dtype, 1.0)
    if w.taps and tile > 1:  # a conv tap reads its input channels a tile at a time
        macs = w.outputs * w.taps * math.ceil(w.channels_in / tile) * tile
    if w.op_class in GEMM_CLASSES:
        macs += p.output_cost.get(w.dtype, 0.0) * w.outputs
    compute = macs / (eff * p.clock_hz) if macs and eff else 0.0
    memory = 0.0
    if p.mem_bytes_per_s:
        memory = (w.bytes_moved - w.weight_bytes) / p.mem_bytes_per_s
        cold = 1.0 - p.hot_weights if p.dram_bytes_per_s else 0.0
        memory += w.weight_bytes * ((1 - cold) / p.mem_bytes_per_s
                                    + (cold / p.dram_bytes_per_s if cold else 0.0))
    return max(compute, memory), generic


def with_graph(p: CpuParams, graph: TfliteGraph) -> CpuParams:
    """``p`` with the share of ``graph``'s weights that stays cached between inferences."""
    weights = graph.weight_bytes
    hot = min(1.0, p.cache_bytes / weights) if weights and p.cache_bytes else 1.0
    return dataclasses.replace(p, hot_weights=hot)


def op_seconds(w: OpWork, p: CpuParams) -> tuple[float, bool]:
    """An op's share of the latency at ``p.threads`` (overheads + work / speedup)."""
    work, generic = work_seconds(w, p)
    gemm = p.gemm_overhead_by_dtype.get(w.dtype, p.gemm_overhead_s)
    overhead = p.op_overhead_s + (gemm if w.op_class in GEMM_CLASSES else 0.0)
    return overhead + work / p.speedup, generic


def op_times(graph: TfliteGraph, p: CpuParams, device: str = "cpu") -> list[OpTime]:
    p = with_graph(p, graph)
    out = []
    for w in graph_work(graph):
        seconds, generic = op_seconds(w, p)
        out.append(OpTime(w.index, w.op_type, seconds * 1e3, w.macs, generic, w.op_class,
                          w.dtype, device))
    return out


def flagged_ops(graph: TfliteGraph, times: list[OpTime]) -> list[str]:
    work = {w.index: w for w in graph_work(graph)}
    return [flag_text(work[t.index]) for t in times if t.generic]


def ram_bytes(graph: TfliteGraph, est: Estimator) -> tuple[int, str]:
    """Peak resident memory of the inference process (see the module docstring)."""
    packed = sum(
        op.weight_bytes
        for w, op in zip(graph_work(graph), graph.ops, strict=True)
        if w.op_class in _PACKED_WEIGHT_CLASSES
    )
    arena = plan_arena(graph).peak_bytes
    runtime = int(float(est.runtime_rss_kb or 0) * 1024)
    total = runtime + graph.model_bytes + packed + arena
    detail = (
        f"runtime RSS {runtime:,} B + model {graph.model_bytes:,} B + XNNPACK packed weights "
        f"{packed:,} B + activation arena {arena:,} B (greedy plan)"
    )
    return total, detail


@register_estimator("cortex-a")
def estimate_cortex_a(tflite: bytes, graph: TfliteGraph, target: TargetProfile) -> Estimate:
    p = CpuParams.from_target(target)
    times = op_times(graph, p)
    total_ms = p.invoke_overhead_s * 1e3 + sum(t.ms for t in times)
    ram, ram_detail = ram_bytes(graph, _estimator(target))
    detail = (
        f"Cortex-A roofline: Σ max(MACs/(E×{p.clock_hz / 1e6:g} MHz), bytes/"
        f"{p.mem_bytes_per_s / 1e9:g} GB/s, weights beyond {p.cache_bytes / 2**20:g} MiB of "
        f"cache at {p.dram_bytes_per_s / 1e9:g} GB/s)/S + {p.op_overhead_s * 1e6:g} µs/op + "
        f"{p.invoke_overhead_s * 1e6:g} µs; S={p.speedup:g} at {p.threads} thread(s); "
        f"E of {target.runtime.cpu_engine}; "
        f"parameters from {target.source or target.name} [estimator]"
    )
    return Estimate(total_ms, times, flagged_ops(graph, times), detail, ram, ram_detail)
