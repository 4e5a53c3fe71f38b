"""Zeros in a .tflite's weight buffers: how much sparsity survived conversion and quantization.

Pruning zeros Keras kernels; whether they are still zeros in the emitted model depends on the
converter (BN folding keeps them, int8 rounding can add more, plain QAT can lose them). This
reads the weight tensors of the weight-bearing ops straight from the flatbuffer (TF-free) and
counts the stored values that mean 0.0 (the zero point, for quantized tensors).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from ai_edge_litert import schema_py_generated as fb

from edgeprune.tflite.graph import TensorInfo, parse_tflite

# Op type -> index of its weight (filter) input.
WEIGHT_INPUT = {"CONV_2D": 1, "DEPTHWISE_CONV_2D": 1, "FULLY_CONNECTED": 1, "TRANSPOSE_CONV": 1,
                "CONV_3D": 1}
_NP = {"int8": np.int8, "uint8": np.uint8, "int16": np.int16, "int32": np.int32,
       "float16": np.float16, "float32": np.float32}


@dataclass(frozen=True)
class WeightZeros:
    tensor: str
    op_type: str
    dtype: str
    elements: int
    zeros: int


def _values(buf: bytes, model: Any, t: TensorInfo) -> np.ndarray | None:
    dtype = _NP.get(t.dtype)
    buffer = model.Buffers(t.buffer) if t.is_constant else None
    if dtype is None or buffer is None:
        return None
    if buffer.DataLength():
        raw = buffer.DataAsNumpy().tobytes()
    else:  # > 2 GB models keep tensor data after the flatbuffer
        raw = buf[buffer.Offset():buffer.Offset() + buffer.Size()]
    return np.frombuffer(raw, dtype=dtype)


def _zero_count(values: np.ndarray, t: TensorInfo) -> int:
    if not np.issubdtype(values.dtype, np.integer) or not any(t.zero_point):
        return int(np.count_nonzero(values == 0))
    # Per-channel zero points run along quantized_dimension (int8 weights: all 0 in practice).
    zp = np.asarray(t.zero_point)
    if zp.size == 1:
        return int(np.count_nonzero(values == zp[0]))
    shaped = values.reshape(t.shape)
    axis_shape = [1] * len(t.shape)
    axis_shape[t.quantized_dimension] = zp.size
    return int(np.count_nonzero(shaped == zp.reshape(axis_shape)))


def weight_zeros(source: str | Path | bytes) -> list[WeightZeros]:
    """One row per distinct weight tensor of a conv / depthwise / dense / transpose-conv op."""
    buf = bytes(source) if isinstance(source, (bytes, bytearray)) else Path(source).read_bytes()
    graph = parse_tflite(buf)
    model = fb.Model.GetRootAs(buf, 0)
    # float16 weights reach the op through a DEQUANTIZE: count the stored float16 tensor.
    dequantized = {o.outputs[0]: o.inputs[0] for o in graph.ops
                   if o.op_type == "DEQUANTIZE" and o.outputs and o.inputs}
    rows, seen = [], set()
    for op in graph.ops:
        index = WEIGHT_INPUT.get(op.op_type)
        if index is None or index >= len(op.inputs) or op.inputs[index] < 0:
            continue
        t = graph.tensors[dequantized.get(op.inputs[index], op.inputs[index])]
        if t.buffer in seen:
            continue
        values = _values(buf, model, t)
        if values is None or values.size == 0:
            continue  # weights computed at run time
        seen.add(t.buffer)
        rows.append(WeightZeros(t.name, op.op_type, t.dtype, int(values.size),
                                _zero_count(values, t)))
    return rows


def sparsity(source: str | Path | bytes) -> dict[str, Any]:
    """Fraction of zeros over all weight tensors, with the per-tensor rows."""
    rows = weight_zeros(source)
    total = sum(r.elements for r in rows)
    zeros = sum(r.zeros for r in rows)
    return {
        "fraction": round(zeros / total, 6) if total else 0.0,
        "zeros": zeros,
        "weights": total,
        "dtypes": sorted({r.dtype for r in rows}),
        "tensors": [asdict(r) for r in rows],
    }
