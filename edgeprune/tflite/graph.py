"""Read a .tflite flatbuffer without TensorFlow: ops, tensors, MACs, tensor lifetimes.

Everything here works from the flatbuffer alone (``ai_edge_litert.schema_py_generated``), so
the ``check`` stage can analyse a model on a machine that has no TensorFlow. Only the main
subgraph (subgraph 0) is analysed; control-flow subgraphs are counted in ``subgraph_count``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ai_edge_litert import schema_py_generated as fb

from edgeprune.errors import BadInputError

log = logging.getLogger(__name__)

_DTYPE_BITS = {
    "float32": 32, "float16": 16, "int32": 32, "uint8": 8, "int64": 64, "string": 0,
    "bool": 8, "int16": 16, "complex64": 64, "int8": 8, "float64": 64, "complex128": 128,
    "uint64": 64, "resource": 0, "variant": 0, "uint32": 32, "uint16": 16, "int4": 4,
    "bfloat16": 16, "int2": 2, "uint4": 4, "float8_e4m3fn": 8, "float8_e5m2": 8,
}  # fmt: skip
_DTYPES = {v: k.lower() for k, v in vars(fb.TensorType).items() if not k.startswith("_")}
_OP_NAMES = {v: k for k, v in vars(fb.BuiltinOperator).items() if not k.startswith("_")}

# MAC rules for ops that are not convolutions/matmuls (see ``_macs``).
_ELEMENTWISE = frozenset(
    {
        "ADD", "SUB", "MUL", "DIV", "FLOOR_DIV", "FLOOR_MOD", "MAXIMUM", "MINIMUM",
        "SQUARED_DIFFERENCE", "POW", "ADD_N", "RELU", "RELU6", "RELU_N1_TO_1", "RELU_0_TO_1",
        "LEAKY_RELU", "PRELU", "HARD_SWISH", "LOGISTIC", "TANH", "ELU", "GELU", "ABS", "NEG",
        "SQRT", "RSQRT", "EXP", "LOG", "SQUARE", "SIN", "COS",
    }
)  # fmt: skip
_POOLS = frozenset({"AVERAGE_POOL_2D", "MAX_POOL_2D", "L2_POOL_2D"})
_REDUCTIONS = frozenset({"MEAN", "SUM", "REDUCE_MAX", "REDUCE_MIN", "REDUCE_PROD", "REDUCE_ANY"})
_MAX_RANK = 16  # real models stay far below; a larger rank means a corrupt file


@dataclass(frozen=True)
class TensorInfo:
    index: int
    name: str
    shape: tuple[int, ...]
    dtype: str
    nbytes: int  # shape × element size, what TFLM allocates for it
    is_constant: bool  # has data in the file (weights, biases, constant shapes)
    is_variable: bool = False  # stateful; TFLM allocates it outside the memory plan
    buffer: int = 0
    scale: tuple[float, ...] = ()
    zero_point: tuple[int, ...] = ()
    quantized_dimension: int = 0

    @property
    def elements(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class OpInfo:
    index: int
    op_type: str  # builtin name ('CONV_2D') or 'CUSTOM:<code>'
    inputs: tuple[int, ...]  # tensor indices; -1 marks an omitted optional input
    outputs: tuple[int, ...]
    macs: int
    weight_bytes: int  # constant inputs
    activation_bytes: int  # non-constant inputs + outputs
    generic_macs: bool = False  # True: MACs are a fallback (output elements), not a real rule
    options: Mapping[str, Any] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class TfliteGraph:
    name: str
    ops: tuple[OpInfo, ...]
    tensors: tuple[TensorInfo, ...]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    model_bytes: int
    subgraph_count: int = 1

    @property
    def total_macs(self) -> int:
        return sum(op.macs for op in self.ops)

    @property
    def weight_bytes(self) -> int:
        """Bytes of constant data, each shared buffer counted once."""
        seen: dict[int, int] = {}
        for t in self.tensors:
            if t.is_constant:
                seen.setdefault(t.buffer, t.nbytes)
        return sum(seen.values())

    def op_types(self) -> list[str]:
        return sorted({op.op_type for op in self.ops})

    def lifetimes(self) -> dict[int, tuple[int, int]]:
        """First and last op index at which each non-constant tensor must be in memory.

        Follows TFLM's AllocationInfoBuilder: graph inputs exist from the start (op 0),
        graph outputs stay alive until the last op, every other tensor lives from its
        producer to its last consumer.
        """
        return {i: (max(a - 1, 0), max(b - 1, 0)) for i, (a, b) in _scopes(self).items()}


def parse_tflite(source: str | Path | bytes, name: str | None = None) -> TfliteGraph:
    """Parse a .tflite model (a path or its bytes); a corrupt file raises BadInputError."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        buf = bytes(source)
        name = name or "<tflite bytes>"
    else:
        path = Path(source)
        name = name or str(path)
        try:
            buf = path.read_bytes()
        except OSError as e:
            raise BadInputError(
                name, f"cannot be read ({e.strerror or e})", "Check the path and permissions"
            ) from e
    try:
        return _parse(buf, name)
    except BadInputError:
        raise
    except Exception as e:  # flatbuffers raises IndexError, struct.error, ValueError, … on garbage
        raise _invalid(name, f"{type(e).__name__}: {e}") from e


def _invalid(name: str, detail: str) -> BadInputError:
    return BadInputError(
        name,
        f"is not a valid .tflite flatbuffer ({detail})",
        "Re-export it with the TFLite converter (tf.lite.TFLiteConverter) and check the "
        "file was copied completely",
    )


class _Reader:
    """Bounds-checked access to flatbuffer vectors, with a budget against absurd files."""

    def __init__(self, buf: bytes, name: str) -> None:
        self.size = len(buf)
        self.name = name
        # Real models read far fewer elements than they have bytes; garbage can point many
        # tables at one huge vector, so cap the total work.
        self.budget = 4 * len(buf) + 4096

    def count(self, n: int, what: str) -> int:
        if n < 0 or n > self.size:
            raise _invalid(self.name, f"{what} claims {n} entries in a {self.size}-byte file")
        self.budget -= n
        if self.budget < 0:
            raise _invalid(self.name, "offsets point outside the tables they belong to")
        return n

    def vec(self, obj: Any, field_name: str) -> tuple[Any, ...]:
        """A numeric vector field as a tuple (empty when absent)."""
        n = self.count(getattr(obj, field_name + "Length")(), field_name)
        if n == 0:
            return ()
        arr = getattr(obj, field_name + "AsNumpy")()  # numpy.frombuffer: bounds-checked
        if len(arr) != n:
            raise _invalid(self.name, f"{field_name} vector is truncated")
        return tuple(arr.tolist())


def _parse(buf: bytes, name: str) -> TfliteGraph:
    if len(buf) < 8:
        raise _invalid(name, f"{len(buf)} bytes, too short" if buf else "the file is empty")
    if not fb.Model.ModelBufferHasIdentifier(buf, 0):
        raise _invalid(name, "no TFL3 file identifier")
    rd = _Reader(buf, name)
    root = int.from_bytes(buf[:4], "little")
    if root + 4 > len(buf):
        raise _invalid(name, "root table offset is past the end of the file")
    model = fb.Model.GetRootAs(buf, 0)
    n_sub = rd.count(model.SubgraphsLength(), "subgraphs")
    if n_sub == 0:
        raise _invalid(name, "no subgraphs")
    if n_sub > 1:
        log.info("%s: %d subgraphs; analysing the main one (0) only", name, n_sub)
    sg = model.Subgraphs(0)
    n_buffers = rd.count(model.BuffersLength(), "buffers")
    opcodes = [
        _op_name(model.OperatorCodes(i), rd)
        for i in range(rd.count(model.OperatorCodesLength(), "operator_codes"))
    ]
    buffer_bytes: dict[int, int] = {}  # buffer index -> data length, each read once
    tensors = [
        _tensor(i, sg.Tensors(i), model, n_buffers, buffer_bytes, rd)
        for i in range(rd.count(sg.TensorsLength(), "tensors"))
    ]
    ops = []
    for i in range(rd.count(sg.OperatorsLength(), "operators")):
        op = sg.Operators(i)
        code = op.OpcodeIndex()
        if not 0 <= code < len(opcodes):
            raise _invalid(name, f"operator {i} uses opcode {code} of {len(opcodes)}")
        ops.append(_op(i, opcodes[code], op, tensors, rd))
    graph_in, graph_out = rd.vec(sg, "Inputs"), rd.vec(sg, "Outputs")
    for t in (*graph_in, *graph_out):
        if not 0 <= t < len(tensors):
            raise _invalid(name, f"graph input/output {t} is not a tensor")
    return TfliteGraph(name, tuple(ops), tuple(tensors), graph_in, graph_out, len(buf), n_sub)


def _op_name(code: Any, rd: _Reader) -> str:
    # Codes above 127 live only in builtin_code; older files only fill the deprecated byte.
    builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
    if builtin == fb.BuiltinOperator.CUSTOM:
        custom = code.CustomCode()
        rd.count(len(custom or b""), "custom_code")
        return "CUSTOM:" + (custom or b"").decode("utf-8", "replace")
    return _OP_NAMES.get(builtin, f"BUILTIN_{builtin}")


def _tensor(
    i: int, t: Any, model: Any, n_buffers: int, buffer_bytes: dict[int, int], rd: _Reader
) -> TensorInfo:
    shape = rd.vec(t, "Shape")
    if len(shape) > _MAX_RANK or any(d < 0 for d in shape):
        raise _invalid(rd.name, f"tensor {i} has shape {shape[:8]}")
    dtype = _DTYPES.get(t.Type(), f"type{t.Type()}")
    bits = _DTYPE_BITS.get(dtype, 0)
    nbytes = (math.prod(shape) * bits + 7) // 8
    b = t.Buffer()
    if not 0 <= b < max(n_buffers, 1):
        raise _invalid(rd.name, f"tensor {i} refers to buffer {b} of {n_buffers}")
    if b not in buffer_bytes:
        buffer_bytes[b] = _buffer_len(model, b, rd) if b < n_buffers else 0
    q = t.Quantization()
    quant = (
        (rd.vec(q, "Scale"), rd.vec(q, "ZeroPoint"), q.QuantizedDimension()) if q else ((), (), 0)
    )
    raw_name = t.Name() or b""
    rd.count(len(raw_name), "name")
    return TensorInfo(
        index=i,
        name=raw_name.decode("utf-8", "replace"),
        shape=shape,
        dtype=dtype,
        nbytes=nbytes,
        is_constant=buffer_bytes[b] > 0,
        is_variable=bool(t.IsVariable()),
        buffer=b,
        scale=quant[0],
        zero_point=quant[1],
        quantized_dimension=quant[2],
    )


def _buffer_len(model: Any, b: int, rd: _Reader) -> int:
    buffer = model.Buffers(b)
    if buffer is None:
        return 0
    n = rd.count(buffer.DataLength(), "buffer data")
    if n:
        if len(buffer.DataAsNumpy()) != n:  # also raises when the data runs off the end
            raise _invalid(rd.name, f"buffer {b} is truncated")
        return n
    # Models over 2 GB keep tensor data after the flatbuffer (offset > 1, size > 0).
    offset, size = buffer.Offset(), buffer.Size()
    if offset > 1 and offset + size > rd.size:
        raise _invalid(rd.name, f"buffer {b} data is past the end of the file")
    return size if offset > 1 else 0


def _op(i: int, op_type: str, op: Any, tensors: list[TensorInfo], rd: _Reader) -> OpInfo:
    inputs = rd.vec(op, "Inputs")
    outputs = rd.vec(op, "Outputs")
    for t in (*inputs, *outputs):
        if not -1 <= t < len(tensors):
            raise _invalid(rd.name, f"operator {i} ({op_type}) refers to tensor {t}")
    if -1 in outputs:
        raise _invalid(rd.name, f"operator {i} ({op_type}) has an omitted output")
    options = _options(op_type, op)
    macs, generic = _macs(
        op_type,
        [tensors[t] if t >= 0 else None for t in inputs],
        [tensors[t] for t in outputs],
        options,
    )
    used_in = {t for t in inputs if t >= 0}
    weight = sum(tensors[t].nbytes for t in used_in if tensors[t].is_constant)
    act = sum(tensors[t].nbytes for t in used_in if not tensors[t].is_constant)
    act += sum(tensors[t].nbytes for t in set(outputs))
    return OpInfo(i, op_type, inputs, outputs, macs, weight, act, generic, options)


# Builtin op -> (options table class, {our key: accessor}).
_OPTION_FIELDS: dict[str, tuple[type, dict[str, str]]] = {
    "CONV_2D": (fb.Conv2DOptions, {
        "padding": "Padding", "stride_h": "StrideH", "stride_w": "StrideW",
        "dilation_h": "DilationHFactor", "dilation_w": "DilationWFactor",
        "activation": "FusedActivationFunction"}),
    "DEPTHWISE_CONV_2D": (fb.DepthwiseConv2DOptions, {
        "padding": "Padding", "stride_h": "StrideH", "stride_w": "StrideW",
        "dilation_h": "DilationHFactor", "dilation_w": "DilationWFactor",
        "depth_multiplier": "DepthMultiplier", "activation": "FusedActivationFunction"}),
    "TRANSPOSE_CONV": (fb.TransposeConvOptions, {
        "padding": "Padding", "stride_h": "StrideH", "stride_w": "StrideW",
        "activation": "FusedActivationFunction"}),
    "FULLY_CONNECTED": (fb.FullyConnectedOptions, {
        "keep_num_dims": "KeepNumDims", "activation": "FusedActivationFunction"}),
    "BATCH_MATMUL": (fb.BatchMatMulOptions, {"adj_x": "AdjX", "adj_y": "AdjY"}),
    **{p: (fb.Pool2DOptions, {
        "padding": "Padding", "stride_h": "StrideH", "stride_w": "StrideW",
        "filter_h": "FilterHeight", "filter_w": "FilterWidth",
        "activation": "FusedActivationFunction"}) for p in _POOLS},
    **{r: (fb.ReducerOptions, {"keep_dims": "KeepDims"}) for r in _REDUCTIONS},
}  # fmt: skip
_PADDING = {fb.Padding.SAME: "SAME", fb.Padding.VALID: "VALID"}
_ACTIVATIONS = {v: k for k, v in vars(fb.ActivationFunctionType).items() if not k.startswith("_")}


def _options(op_type: str, op: Any) -> dict[str, Any]:
    spec = _OPTION_FIELDS.get(op_type)
    table = op.BuiltinOptions() if spec else None
    if spec is None or table is None:
        return {}
    opts = spec[0]()
    opts.Init(table.Bytes, table.Pos)
    out: dict[str, Any] = {key: getattr(opts, acc)() for key, acc in spec[1].items()}
    if "padding" in out:
        out["padding"] = _PADDING.get(out["padding"], str(out["padding"]))
    if "activation" in out:
        out["activation"] = _ACTIVATIONS.get(out["activation"], str(out["activation"]))
    return out


def _macs(
    op_type: str,
    ins: list[TensorInfo | None],
    outs: list[TensorInfo],
    options: Mapping[str, Any],
) -> tuple[int, bool]:
    """Multiply-accumulates of one op, and whether the generic fallback rule was used."""
    out_elems = outs[0].elements if outs else 0
    x = ins[0] if ins else None
    w = ins[1] if len(ins) > 1 else None
    if op_type == "CONV_2D" and w is not None and len(w.shape) == 4:
        return out_elems * math.prod(w.shape[1:]), False  # filter [oc, kh, kw, ic/groups]
    if op_type == "DEPTHWISE_CONV_2D" and w is not None and len(w.shape) == 4:
        return out_elems * w.shape[1] * w.shape[2], False  # filter [1, kh, kw, oc]
    if op_type == "CONV_3D" and w is not None and len(w.shape) == 5:
        return out_elems * math.prod(w.shape[:4]), False  # filter [kd, kh, kw, ic, oc]
    if op_type == "FULLY_CONNECTED" and w is not None and len(w.shape) == 2:
        return out_elems * w.shape[1], False  # weights [out, in]; batch in out_elems
    if op_type == "TRANSPOSE_CONV" and len(ins) > 2 and ins[1] and ins[2]:
        # inputs: output_shape, filter [oc, kh, kw, ic], input; each input pixel scatters.
        filt, src = ins[1], ins[2]
        if len(filt.shape) == 4:
            return src.elements * filt.shape[0] * filt.shape[1] * filt.shape[2], False
    if op_type == "BATCH_MATMUL" and x is not None and len(x.shape) >= 2:
        k = x.shape[-2] if options.get("adj_x") else x.shape[-1]
        return out_elems * k, False
    if op_type in _ELEMENTWISE:
        return out_elems, False
    if op_type in _POOLS and "filter_h" in options:
        return out_elems * options["filter_h"] * options["filter_w"], False
    if op_type in _REDUCTIONS and x is not None:
        return x.elements, False
    return out_elems, True


def _scopes(graph: TfliteGraph) -> dict[int, tuple[int, int]]:
    """TFLM allocation scopes of the planned tensors: 0 = before op 0, op i = scope i + 1.

    A port of AllocationInfoBuilder::MarkAllocationLifetimes (micro_allocation_info.cc):
    graph inputs and outputs are created at scope 0; a producer moves an output's creation to
    its own scope; inputs are last used by their last consumer; graph outputs live to the end.
    Only tensors TFLM plans are kept: not constant, not variable, non-zero size.
    """
    first: dict[int, int] = {}
    last: dict[int, int] = {}

    def create(t: int, s: int) -> None:
        first[t] = last[t] = s

    for t in (*graph.inputs, *graph.outputs):
        create(t, 0)
    for i, op in enumerate(graph.ops, start=1):
        for t in op.outputs:
            create(t, i)
        for t in (*op.inputs, *op.outputs):
            if t >= 0:
                first.setdefault(t, i)  # an input nobody produced is treated as created here
                last[t] = i
    end = len(graph.ops)
    for t in graph.outputs:
        last[t] = max(last[t], end)
    return {
        t: (first[t], last[t])
        for t in sorted(first)
        if not graph.tensors[t].is_constant
        and not graph.tensors[t].is_variable
        and graph.tensors[t].nbytes > 0
    }
