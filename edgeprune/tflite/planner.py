"""TFLite-Micro's arena plan, computed from the flatbuffer alone (no TensorFlow, no TFLM).

``edgeprune.runners.tflm`` measures the real arena; this predicts it for estimates and for the
first guess of that measurement.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from edgeprune.tflite.graph import TfliteGraph, _scopes

# TFLM aligns every planned buffer (start and size) to this (MicroArenaBufferAlignment()).
ARENA_ALIGNMENT = 16

# Bits per element; STRING/RESOURCE/VARIANT have no fixed size and count as 0 bytes.


@dataclass(frozen=True)
class ArenaPlan:
    peak_bytes: int  # the planned tensor area, TFLM's arena "head"
    offsets: dict[int, int]  # tensor index -> byte offset in that area
    total_bytes: int  # sum of the aligned buffers: the size with no reuse at all
    sizes: dict[int, int] = field(default_factory=dict)  # tensor index -> aligned size
    tail_bytes: int = 0  # estimated TFLM persistent overhead (see _tflm_tail_bytes)

    @property
    def arena_bytes(self) -> int:
        """Estimated ``tensor_arena`` size for TFLM: tensor plan + persistent overhead."""
        return self.peak_bytes + self.tail_bytes


def plan_buffers(
    buffers: list[tuple[int, int, int]], alignment: int = ARENA_ALIGNMENT
) -> tuple[list[int], int]:
    """TFLM's GreedyMemoryPlanner on (size, first, last) buffers; returns offsets and peak.

    Buffers are placed largest first (stable for equal sizes, like TFLM's bubble sort), each
    at the lowest offset whose gap fits it among already-placed buffers that overlap it in
    time (lifetimes are inclusive at both ends). Sizes are rounded up to ``alignment``.
    """
    sizes = [_align(s, alignment) for s, _, _ in buffers]
    order = sorted(range(len(buffers)), key=lambda i: -sizes[i])
    offsets = [0] * len(buffers)
    placed: list[tuple[int, int]] = []  # (offset, buffer id), kept sorted by offset
    for b in order:
        size, (_, first, last) = sizes[b], buffers[b]
        candidate = 0
        for off, other in placed:
            _, o_first, o_last = buffers[other]
            if o_first > last or first > o_last:
                continue  # not alive at the same time
            if off - candidate >= size:
                break  # the gap before this buffer fits
            candidate = max(candidate, off + sizes[other])
        offsets[b] = candidate
        bisect.insort_right(placed, (candidate, b), key=lambda e: e[0])
    peak = max((offsets[b] + sizes[b] for b in range(len(buffers))), default=0)
    return offsets, peak


def plan_arena(graph: TfliteGraph) -> ArenaPlan:
    """Plan the non-persistent tensor area like TFLM's GreedyMemoryPlanner.

    ``peak_bytes`` is what TFLM puts in the arena head for tensors (equal to the head the
    tflite-micro interpreter records, on the models tested). Kernel scratch buffers (MEAN's
    accumulators, CMSIS-NN's im2col buffers) share that plan and are not estimated here.
    ``arena_bytes`` adds the estimated persistent tail; ``edgeprune.runners.tflm`` measures
    the real arena.
    """
    scopes = _scopes(graph)
    ids = list(scopes)
    offsets, peak = plan_buffers([(graph.tensors[t].nbytes, *scopes[t]) for t in ids])
    sizes = {t: _align(graph.tensors[t].nbytes, ARENA_ALIGNMENT) for t in ids}
    return ArenaPlan(
        peak_bytes=peak,
        offsets=dict(zip(ids, offsets, strict=True)),
        total_bytes=sum(sizes.values()),
        sizes=sizes,
        tail_bytes=_tflm_tail_bytes(graph),
    )


# TFLM's persistent arena tail, fitted to print_allocations() of the tflite-micro Python
# interpreter (x86-64, 64-bit pointers: a 32-bit Cortex-M build needs less, so this errs on
# the safe side). Fixed: the allocator and interpreter objects; per tensor: a
# TfLiteEvalTensor; per op: a NodeAndRegistration (64) plus kernel OpData and parsed options
# (~80); per graph input/output: a persistent TfLiteTensor (+32 of quantization params);
# conv-like ops add an int32 multiplier and shift per output channel. Measured: the tail is
# within ±20 % (arena_bytes within ±6 %) on 3-op models of 13 op types, and arena_bytes
# within 1.3 % of the real minimum on 5-10 op CNNs.
_TAIL_FIXED, _TAIL_PER_TENSOR, _TAIL_PER_OP, _TAIL_PER_IO, _TAIL_PER_CHANNEL = 520, 24, 144, 64, 8
_PER_CHANNEL_OPS = frozenset({"CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV", "CONV_3D"})


def _tflm_tail_bytes(graph: TfliteGraph) -> int:
    io = [graph.tensors[t] for t in {*graph.inputs, *graph.outputs}]
    tail = _TAIL_FIXED + _TAIL_PER_TENSOR * len(graph.tensors) + _TAIL_PER_OP * len(graph.ops)
    tail += sum(_TAIL_PER_IO + (32 if t.scale else 0) for t in io)
    # Variable (stateful) tensors are allocated once, persistently, outside the plan.
    tail += sum(_align(t.nbytes, ARENA_ALIGNMENT) for t in graph.tensors if t.is_variable)
    for op in graph.ops:
        out = graph.tensors[op.outputs[0]] if op.outputs else None
        w = graph.tensors[op.inputs[1]] if len(op.inputs) > 1 and op.inputs[1] >= 0 else None
        quantized_fc = op.op_type == "FULLY_CONNECTED" and w is not None and bool(w.scale)
        if out is not None and out.shape and (op.op_type in _PER_CHANNEL_OPS or quantized_fc):
            tail += _TAIL_PER_CHANNEL * out.shape[-1]
    return tail


def _align(n: int, alignment: int) -> int:
    return -(-n // alignment) * alignment
