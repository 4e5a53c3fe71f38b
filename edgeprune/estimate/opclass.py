"""Which latency rule each TFLite op gets: its class, its dtype, and the work it does.

The estimators price an op by class (a conv is a GEMM, an ADD streams memory, a RESHAPE only
copies bytes). An op type that is in no class has no model: the estimators price it with the
generic rule (elementwise over its output elements) and flag it, never silently as zero.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgeprune.targets import OP_REFINEMENTS
from edgeprune.tflite.graph import OpInfo, TfliteGraph

# Op type -> class (the finest one: a refinement falls back to its parent, see
# targets.OP_REFINEMENTS). MACs come from tflite/graph.py (conv: output × kernel; pools: output ×
# window; reductions: input elements; elementwise, activations, convert: output elements);
# movement ops count output elements, and are priced by their bytes.
_CLASSES: dict[str, tuple[str, ...]] = {
    "conv": ("CONV_2D", "CONV_3D", "TRANSPOSE_CONV"),
    "depthwise": ("DEPTHWISE_CONV_2D",),
    "fc": ("FULLY_CONNECTED", "BATCH_MATMUL"),
    "elementwise": (
        "ADD", "SUB", "MAXIMUM", "MINIMUM", "SQUARED_DIFFERENCE", "ADD_N", "RELU", "RELU6",
        "RELU_N1_TO_1", "RELU_0_TO_1", "LEAKY_RELU", "PRELU", "ABS", "NEG", "SQUARE",
        "FLOOR_DIV", "FLOOR_MOD",
    ),
    "mul": ("MUL", "DIV"),
    # Per element these evaluate a polynomial, a table or exp(): dearer than an ADD.
    "activation": ("ELU", "GELU", "EXP", "LOG", "SQRT", "RSQRT", "POW", "SIN", "COS"),
    "sigmoid": ("LOGISTIC", "TANH"),
    "hardswish": ("HARD_SWISH",),
    "softmax": ("SOFTMAX", "LOG_SOFTMAX"),
    "pool": ("MAX_POOL_2D", "L2_POOL_2D"),
    "avgpool": ("AVERAGE_POOL_2D",),
    "reduce": ("MEAN", "SUM", "REDUCE_MAX", "REDUCE_MIN", "REDUCE_PROD", "L2_NORMALIZATION"),
    "convert": ("QUANTIZE", "DEQUANTIZE", "CAST"),
    "pad": ("PAD", "PADV2", "MIRROR_PAD"),
    # No arithmetic: priced by the bytes they read and write.
    "movement": (
        "RESHAPE", "SQUEEZE", "EXPAND_DIMS", "SHAPE", "CONCATENATION", "PACK", "UNPACK",
        "SPLIT", "SPLIT_V", "SLICE", "STRIDED_SLICE", "TRANSPOSE", "GATHER", "TILE",
        "BROADCAST_TO", "SPACE_TO_DEPTH", "DEPTH_TO_SPACE", "RESIZE_BILINEAR",
        "RESIZE_NEAREST_NEIGHBOR", "SPACE_TO_BATCH_ND", "BATCH_TO_SPACE_ND",
    ),
}  # fmt: skip
OP_CLASS: dict[str, str] = {op: cls for cls, ops in _CLASSES.items() for op in ops}
# The rule for op types in no class (and for classes a profile gives no figure for).
GENERIC_CLASS = "elementwise"
# Classes whose cost has a per-output-element epilogue (estimator.output_cost_macs).
GEMM_CLASSES = frozenset({"conv", "depthwise", "fc"})


def class_chain(op_class: str) -> list[str]:
    """``op_class`` and its parents, finest first: the keys a figure is looked up under."""
    chain: list[str] = []
    cls: str | None = op_class
    while cls is not None:
        chain.append(cls)
        cls = OP_REFINEMENTS.get(cls)
    return chain


def bytes_only(op_class: str) -> bool:
    """Ops priced by their bytes unless the profile gives their class a figure."""
    return "movement" in class_chain(op_class)


_INT_DTYPES = frozenset({"int8", "uint8", "int16", "int4"})


@dataclass(frozen=True)
class OpWork:
    """What one op costs, before any hardware is applied."""

    index: int
    op_type: str
    op_class: str  # a key of _CLASSES, or GENERIC_CLASS when ``generic``
    dtype: str  # "int8" (8/16-bit integer kernels) or "float32"
    macs: int
    bytes_moved: int  # activations read + written, plus constant (weight) bytes
    generic: bool  # no model for this op type: priced by the generic rule
    weight_bytes: int = 0  # the constant part of bytes_moved
    outputs: int = 0  # output elements (the GEMM epilogue's count)
    taps: int = 0  # CONV_2D: kernel positions (kh × kw); 0 for other ops
    channels_in: int = 0  # CONV_2D: input channels per tap


def op_dtype(graph: TfliteGraph, op: OpInfo) -> str:
    """The kernel family: decided by the first non-constant input (else the first output).

    float16 and hybrid (int8 weights, float activations) models run float kernels."""
    tensors = [graph.tensors[t] for t in op.inputs if t >= 0 and not graph.tensors[t].is_constant]
    tensors += [graph.tensors[t] for t in op.outputs]
    dtype = tensors[0].dtype if tensors else "float32"
    return "int8" if dtype in _INT_DTYPES else "float32"


def op_work(graph: TfliteGraph, op: OpInfo) -> OpWork:
    op_class = OP_CLASS.get(op.op_type)
    return OpWork(
        index=op.index,
        op_type=op.op_type,
        op_class=op_class or GENERIC_CLASS,
        dtype=op_dtype(graph, op),
        macs=_out_elements(graph, op) if op_class and bytes_only(op_class) else op.macs,
        bytes_moved=op.activation_bytes + op.weight_bytes,
        weight_bytes=op.weight_bytes,
        generic=op_class is None,
        outputs=_out_elements(graph, op),
        **_conv_geometry(graph, op),
    )


def _conv_geometry(graph: TfliteGraph, op: OpInfo) -> dict[str, int]:
    if op.op_type != "CONV_2D" or len(op.inputs) < 2 or op.inputs[1] < 0:
        return {}
    shape = graph.tensors[op.inputs[1]].shape  # [out, kh, kw, in]
    return {"taps": shape[1] * shape[2], "channels_in": shape[3]} if len(shape) == 4 else {}


def _out_elements(graph: TfliteGraph, op: OpInfo) -> int:
    return sum(graph.tensors[t].elements for t in op.outputs)


def graph_work(graph: TfliteGraph) -> list[OpWork]:
    return [op_work(graph, op) for op in graph.ops]


def flag_text(w: OpWork, why: str = "") -> str:
    reason = why or f"no latency model for {w.op_type}"
    return (
        f"op {w.index} {w.op_type}: {reason}; estimated by the generic rule "
        f"({GENERIC_CLASS} {w.dtype} over {w.macs:,} output elements)"
    )
