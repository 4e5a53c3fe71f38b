"""Edge TPU compatibility: Coral's published model requirements, applied op by op.

The rules (coral.ai "TensorFlow models on the Edge TPU": model requirements and the supported
operations table, compiler v16):

- every tensor is 8-bit quantized (int8/uint8; int32 only for constant biases, shapes, axes);
- tensor sizes are static, and weights/biases are compile-time constants;
- tensors have at most 3 non-unit innermost dimensions ([1, 128, 128, 3] maps,
  [3, 128, 128, 1] does not);
- only the ops in ``SUPPORTED`` map, each with its documented limitation;
- the compiler makes a single Edge TPU subgraph: it maps ops up to the first one that cannot
  map, and that op and every op after it run on the CPU. The float→int8 QUANTIZE that feeds a
  float model input is the exception real compiler logs show: it runs on the CPU before the
  Edge TPU subgraph without ending it.

Statuses use the words of ``edgetpu_compiler``'s operation log so a report reads the same
whether the real compiler or this analyser produced it; a limitation from the table is given
as its own status, not as "unspecified".
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeprune.tflite.flatbuffer import FlatbufferView
from edgeprune.tflite.graph import OpInfo, TensorInfo, TfliteGraph

MAPPED = "Mapped to Edge TPU"
NOT_SUPPORTED = "Operation not supported"
BAD_DTYPE = "Operation is working on an unsupported data type"
BAD_RANK = "Tensor has unsupported rank (up to 3 innermost dimensions mapped)"
AFTER_CUT = "More than one subgraph is not supported"
UNSPECIFIED = (
    "Operation is otherwise supported, but not mapped due to some unspecified limitation"
)
DYNAMIC = "Tensor has a dynamic size (the Edge TPU needs static shapes)"
NOT_CONSTANT = "Filter and bias must be compile-time constants"

_8BIT = frozenset({"int8", "uint8"})
_CONST_TYPES = frozenset({"int8", "uint8", "int32"})
_PARAMETRIC = frozenset({"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV"})


@dataclass(frozen=True)
class OpStatus:
    index: int
    op_type: str
    status: str
    mapped: bool


@dataclass
class CompatReport:
    """The same fields ``edgetpu_compiler`` reports, from either source."""

    source: str  # "edgeprune analyser" or "edgetpu_compiler <version>"
    model: str
    ops: list[OpStatus] = field(default_factory=list)  # per op (empty from a compiler log)
    rows: list[dict[str, Any]] = field(default_factory=list)  # {operator, count, status}
    ops_on_edgetpu: int = 0
    ops_on_cpu: int = 0
    edgetpu_subgraphs: int = 0
    on_chip_param_bytes: int = 0
    off_chip_param_bytes: int = 0
    param_cache_bytes: int = 0
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def write_compat_json(self, path: Path) -> Path:
        """Write ``edgetpu_compat.json`` (``path`` may be the file or its folder)."""
        path = Path(path)
        if path.is_dir():
            path = path / "edgetpu_compat.json"
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path


def write_compat_json(path: Path, report: CompatReport) -> Path:
    return report.write_compat_json(path)


def log_rows(statuses: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """The compiler log table: one row per (operator, status), counted, first-seen order."""
    counts: dict[tuple[str, str], int] = {}
    for key in statuses:
        counts[key] = counts.get(key, 0) + 1
    return [{"operator": op, "count": n, "status": s} for (op, s), n in counts.items()]


# --- per-op limitations from the supported-operations table ---------------------------------

Rule = Callable[[TfliteGraph, OpInfo, FlatbufferView], str | None]


def _non_unit(shape: tuple[int, ...]) -> int:
    return sum(1 for d in shape if d != 1)


def _const(g: TfliteGraph, op: OpInfo, view: FlatbufferView, pos: int) -> np.ndarray | None:
    if len(op.inputs) <= pos or op.inputs[pos] < 0:
        return None
    t = g.tensors[op.inputs[pos]]
    return view.const_values(t.index, t.dtype)


def _axes(
    g: TfliteGraph, op: OpInfo, view: FlatbufferView, pos: int, rank_of: int = 0
) -> list[int] | None:
    """Constant axis input ``pos``, normalised against the rank of input ``rank_of``."""
    values = _const(g, op, view, pos)
    rank = len(g.tensors[op.inputs[rank_of]].shape)
    return None if values is None else [int(a) % max(rank, 1) for a in values.ravel()]


def _no_activation(g: TfliteGraph, op: OpInfo, view: FlatbufferView) -> str | None:
    act = op.options.get("activation")
    if op.op_type == "CONCATENATION":
        act = {0: "NONE"}.get(view.options(op.index, op.op_type).get("FusedActivationFunction"),
                              "fused")
    return None if act in (None, "NONE") else "No fused activation function is supported"


def _concat(g: TfliteGraph, op: OpInfo, view: FlatbufferView) -> str | None:
    reason = _no_activation(g, op, view)
    consts = [t for t in op.inputs if t >= 0 and g.tensors[t].is_constant]
    if reason or not consts:
        return reason
    values = view.const_values(consts[0], g.tensors[consts[0]].dtype)
    zeros = values is not None and not np.any(values)
    if len(op.inputs) != 2 or not zeros:
        return "A constant input is allowed only as one of 2 inputs, and must be all zeros"
    return None


def _same_dilation(g: TfliteGraph, op: OpInfo, view: FlatbufferView) -> str | None:
    if op.options.get("dilation_h", 1) != op.options.get("dilation_w", 1):
        return "Must use the same dilation in x and y dimensions"
    return None


def _fully_connected(g: TfliteGraph, op: OpInfo, view: FlatbufferView) -> str | None:
    if view.options(op.index, op.op_type).get("WeightsFormat", 0) != 0:
        return "Only the default format is supported for fully-connected weights"
    if _non_unit(g.tensors[op.outputs[0]].shape) > 1:
        return "Output tensor must be one-dimensional"
    return None


def _mean(g: TfliteGraph, op: OpInfo, view: FlatbufferView) -> str | None:
    axes = _axes(g, op, view, 1)
    shape = g.tensors[op.inputs[0]].shape
    if axes is None:
        return None
    if 0 in axes and len(shape) > 1:
        return "No reduction in batch dimension"
    if len(shape) - 1 in axes and shape[-1] % 4:
        return "A z-reduction needs the z-dimension to be a multiple of 4"
    return None


def _no_batch_axis(g: TfliteGraph, op: OpInfo, view: FlatbufferView) -> str | None:
    if op.op_type == "PACK":
        data, axes = op.inputs[0], [int(view.options(op.index, op.op_type).get("Axis", 0))]
    elif op.op_type == "SPLIT":  # inputs: axis, value
        data, axes = op.inputs[1], _axes(g, op, view, 0, rank_of=1)
    else:  # reductions: input, axes
        data, axes = op.inputs[0], _axes(g, op, view, 1)
    if axes and 0 in axes and len(g.tensors[data].shape) > 1:
        return "Cannot operate on the batch dimension"
    return None


def _pad(g: TfliteGraph, op: OpInfo, view: FlatbufferView) -> str | None:
    values = _const(g, op, view, 1)
    if values is not None and values.size >= 2 and np.any(values.reshape(-1, 2)[0]):
        return "No padding in batch dimension"
    return None


def _prelu(g: TfliteGraph, op: OpInfo, view: FlatbufferView) -> str | None:
    alpha = g.tensors[op.inputs[1]].shape if len(op.inputs) > 1 else ()
    if _non_unit(alpha[:-1]) if alpha else False:
        return "Alpha must be 1-dimensional (only the innermost dimension can be > 1)"
    return None


def _softmax(g: TfliteGraph, op: OpInfo, view: FlatbufferView) -> str | None:
    x = g.tensors[op.inputs[0]]
    if _non_unit(x.shape) > 1 or x.elements > 16_000:
        return "Supports only 1-D input tensors with a max of 16,000 elements"
    return None


def _squeeze(g: TfliteGraph, op: OpInfo, view: FlatbufferView) -> str | None:
    def strip(shape: tuple[int, ...]) -> tuple[int, ...]:
        i = 0
        while i < len(shape) and shape[i] == 1:
            i += 1
        return shape[i:]

    x, y = g.tensors[op.inputs[0]].shape, g.tensors[op.outputs[0]].shape
    if strip(x) != strip(y):
        return "Supported only when the squeezed dimensions are leading 1s (no relayout)"
    return None


def _strided_slice(g: TfliteGraph, op: OpInfo, view: FlatbufferView) -> str | None:
    opts = view.options(op.index, op.op_type)
    strides = _const(g, op, view, 3)
    if strides is not None and np.any(strides != 1):
        return "Supported only when all strides are 1"
    if opts.get("EllipsisMask", 0) or opts.get("NewAxisMask", 0):
        return "Supported only with ellipsis_mask == 0 and new_axis_mask == 0"
    return None


def _resize(g: TfliteGraph, op: OpInfo, view: FlatbufferView) -> str | None:
    shapes = [g.tensors[op.inputs[0]].shape, g.tensors[op.outputs[0]].shape]
    if any(len(s) == 4 and s[0] != 1 for s in shapes):
        return "Input/output must be a 3-dimensional tensor"
    return None


def _none(g: TfliteGraph, op: OpInfo, view: FlatbufferView) -> str | None:
    return None


# TFLite builtin -> its limitation (coral.ai supported-operations table).
SUPPORTED: dict[str, Rule] = {
    "ADD": _none, "SUB": _none, "MUL": _none, "MAXIMUM": _none, "MINIMUM": _none,
    "SQUARED_DIFFERENCE": _none, "RSQRT": _none,
    "LOGISTIC": _none, "TANH": _none, "RELU": _none, "RELU6": _none, "RELU_N1_TO_1": _none,
    "AVERAGE_POOL_2D": _no_activation, "MAX_POOL_2D": _no_activation,
    "CONCATENATION": _concat,
    "CONV_2D": _same_dilation, "DEPTHWISE_CONV_2D": _same_dilation, "TRANSPOSE_CONV": _none,
    "FULLY_CONNECTED": _fully_connected,
    "L2_NORMALIZATION": _none, "UNIDIRECTIONAL_SEQUENCE_LSTM": _none,
    "MEAN": _mean, "SUM": _no_batch_axis, "REDUCE_MAX": _no_batch_axis,
    "REDUCE_MIN": _no_batch_axis, "PACK": _no_batch_axis, "SPLIT": _no_batch_axis,
    "PAD": _pad, "PRELU": _prelu, "QUANTIZE": _none,
    "RESHAPE": _none, "EXPAND_DIMS": _none, "SQUEEZE": _squeeze, "SLICE": _none,
    "STRIDED_SLICE": _strided_slice, "TRANSPOSE": _none, "SPACE_TO_DEPTH": _none,
    "RESIZE_BILINEAR": _resize, "RESIZE_NEAREST_NEIGHBOR": _resize,
    "SOFTMAX": _softmax,
}  # fmt: skip


def _activations(g: TfliteGraph, op: OpInfo) -> list[TensorInfo]:
    ins = [g.tensors[t] for t in op.inputs if t >= 0 and not g.tensors[t].is_constant]
    return ins + [g.tensors[t] for t in op.outputs]


def _input_quantize(g: TfliteGraph, op: OpInfo) -> bool:
    """The float→int8 QUANTIZE at a graph input (the compiler leaves it on the CPU)."""
    return (
        op.op_type == "QUANTIZE"
        and bool(op.inputs)
        and op.inputs[0] in g.inputs
        and g.tensors[op.inputs[0]].dtype not in _8BIT
    )


def op_status(g: TfliteGraph, op: OpInfo, view: FlatbufferView) -> str:
    """MAPPED, or why this op alone could not map (before the single-subgraph rule)."""
    # The compiler checks types first: a float DEQUANTIZE or RESHAPE reports the data type.
    tensors = _activations(g, op)
    consts = [g.tensors[t] for t in op.inputs if t >= 0 and g.tensors[t].is_constant]
    if _input_quantize(g, op):
        return UNSPECIFIED
    if any(t.dtype not in _8BIT for t in tensors) or any(
        t.dtype not in _CONST_TYPES for t in consts
    ):
        return BAD_DTYPE
    rule = SUPPORTED.get(op.op_type)
    if rule is None:
        return NOT_SUPPORTED
    if any(view.is_dynamic(t.index) for t in tensors):
        return DYNAMIC
    if any(_non_unit(t.shape[:-3]) for t in tensors):
        return BAD_RANK
    if op.op_type in _PARAMETRIC and any(
        t >= 0 and not g.tensors[t].is_constant for t in op.inputs[1:3]
    ):
        return NOT_CONSTANT
    return rule(g, op, view) or MAPPED


def analyse(g: TfliteGraph, buf: bytes, cache_bytes: int) -> CompatReport:
    """Per-op statuses after the single-subgraph rule, parameter bytes and the log table."""
    view = FlatbufferView(buf)
    statuses: list[OpStatus] = []
    started = cut = False
    for op in g.ops:
        status = op_status(g, op, view)
        if not started and not cut and status == UNSPECIFIED and _input_quantize(g, op):
            statuses.append(OpStatus(op.index, op.op_type, status, False))
            continue  # runs on the CPU ahead of the Edge TPU subgraph
        if cut and status == MAPPED:
            status = AFTER_CUT
        elif status != MAPPED:
            cut = True
        started = True
        statuses.append(OpStatus(op.index, op.op_type, status, status == MAPPED))
    mapped = {s.index for s in statuses if s.mapped}
    params = _param_bytes(g, mapped)
    on_chip = min(params, cache_bytes)
    notes = []
    if any(s.status == DYNAMIC for s in statuses):
        notes.append("dynamic-sized tensors: the real compiler rejects the whole model")
    if params > cache_bytes:
        notes.append(
            f"{params - cache_bytes:,} B of parameters do not fit the {cache_bytes:,} B "
            "on-chip cache and stream from the host on every inference"
        )
    return CompatReport(
        source="edgeprune analyser (coral.ai model requirements)",
        model=g.name,
        ops=statuses,
        rows=log_rows([(s.op_type, s.status) for s in statuses]),
        ops_on_edgetpu=len(mapped),
        ops_on_cpu=len(statuses) - len(mapped),
        edgetpu_subgraphs=1 if mapped else 0,
        on_chip_param_bytes=on_chip,
        off_chip_param_bytes=params - on_chip,
        param_cache_bytes=cache_bytes,
        notes=notes,
    )


def _param_bytes(g: TfliteGraph, mapped: set[int]) -> int:
    """Constant bytes (weights, biases) of the mapped ops, each shared buffer once."""
    seen: dict[int, int] = {}
    for op in g.ops:
        if op.index in mapped:
            for t in op.inputs:
                if t >= 0 and g.tensors[t].is_constant:
                    seen.setdefault(g.tensors[t].buffer, g.tensors[t].nbytes)
    return sum(seen.values())
