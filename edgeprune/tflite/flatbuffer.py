"""Flatbuffer details the Edge TPU rules need beyond ``TfliteGraph``: shape signatures,
small constant tensors (axes, paddings, strides) and a few op options. No TensorFlow."""

from __future__ import annotations

from typing import Any

import numpy as np
from ai_edge_litert import schema_py_generated as fb

_NUMPY = {"int32": np.int32, "int64": np.int64, "int8": np.int8, "uint8": np.uint8,
          "float32": np.float32, "int16": np.int16}  # fmt: skip
_OPTIONS: dict[str, tuple[type, tuple[str, ...]]] = {
    "STRIDED_SLICE": (fb.StridedSliceOptions, ("EllipsisMask", "NewAxisMask")),
    "PACK": (fb.PackOptions, ("Axis",)),
    "CONCATENATION": (fb.ConcatenationOptions, ("Axis", "FusedActivationFunction")),
    "FULLY_CONNECTED": (fb.FullyConnectedOptions, ("WeightsFormat",)),
}


class FlatbufferView:
    """Read-only access to the main subgraph of a .tflite already validated by parse_tflite."""

    def __init__(self, buf: bytes) -> None:
        self.model = fb.Model.GetRootAs(buf, 0)
        self.sg = self.model.Subgraphs(0)

    def is_dynamic(self, tensor: int) -> bool:
        """A -1 in the shape signature beyond the batch dimension: the size is only known at
        run time. (Keras models leave the batch -1 in the signature; they are converted and
        compiled at batch 1, so that alone is not dynamic.)"""
        t = self.sg.Tensors(tensor)
        return t.ShapeSignatureLength() > 1 and bool((t.ShapeSignatureAsNumpy()[1:] < 0).any())

    def const_values(self, tensor: int, dtype: str) -> np.ndarray | None:
        """Data of a small constant tensor (None when it has no data or an unusual type)."""
        if tensor < 0 or dtype not in _NUMPY:
            return None
        buffer = self.model.Buffers(self.sg.Tensors(tensor).Buffer())
        if buffer is None or buffer.DataLength() == 0:
            return None
        return np.frombuffer(buffer.DataAsNumpy().tobytes(), dtype=_NUMPY[dtype])

    def options(self, op_index: int, op_type: str) -> dict[str, Any]:
        spec = _OPTIONS.get(op_type)
        table = self.sg.Operators(op_index).BuiltinOptions() if spec else None
        if spec is None or table is None:
            return {}
        opts = spec[0]()
        opts.Init(table.Bytes, table.Pos)
        return {name: getattr(opts, name)() for name in spec[1]}
