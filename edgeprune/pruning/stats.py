"""Per-layer parameters, MACs and output channels of a tf_keras model (batch 1)."""

from __future__ import annotations

import math
from typing import Any

from edgeprune.pruning.ir import FlatModel, Op, flatten_model, is_graph_model

# MACs = (positions the kernel is applied at) x (kernel size). Which positions depends on the type.
_OUT_SPATIAL = {"Conv1D", "Conv2D", "Conv3D", "DepthwiseConv1D", "DepthwiseConv2D",
                "SeparableConv1D", "SeparableConv2D"}  # fmt: skip
_IN_SPATIAL = {"Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose", "Dense"}


def _positions(shape: tuple[int | None, ...] | None) -> int | None:
    """Product of the dims between batch and channels (1 for a (batch, features) tensor)."""
    if not shape:
        return None
    dims = shape[1:-1]
    return None if None in dims else math.prod(dims)


def _kernel_size(layer: Any) -> int:
    total = 0
    for attr in ("kernel", "depthwise_kernel", "pointwise_kernel"):
        var = getattr(layer, attr, None)
        if var is not None:
            total += var.shape.num_elements()
    return total


def op_macs(op: Op, flat: FlatModel) -> int | None:
    """Multiply-accumulates of one call (0 for layers without a kernel)."""
    name = op.type
    if name in _OUT_SPATIAL and op.outputs:
        pos = _positions(flat.shapes.get(op.outputs[0]))
    elif name in _IN_SPATIAL and op.inputs:
        pos = _positions(flat.shapes.get(op.inputs[0]))
    else:
        return 0
    return None if pos is None else pos * _kernel_size(op.layer)


def flat_stats(flat: FlatModel) -> list[dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {}
    for op in flat.ops:
        macs = op_macs(op, flat)
        row = rows.get(op.name)
        if row is None:
            rows[op.name] = {
                "name": op.name,
                "type": op.type,
                "params": int(op.layer.count_params()) if op.layer.built else 0,
                "macs": macs,
                "out_channels": flat.channels(op.outputs[0]) if op.outputs else None,
            }
        elif row["macs"] is not None:  # a shared layer: every call costs
            row["macs"] = None if macs is None else row["macs"] + macs
    return list(rows.values())


def layer_stats(model: Any) -> list[dict[str, Any]]:
    """Rows ``{name, type, params, macs, out_channels}`` for any tf_keras model.

    Nested models are flattened (their layers are listed, as in the pruned model). A subclassed
    model has no readable graph: its top-level layers are listed with ``macs=None``.
    """
    if not is_graph_model(model):
        return [
            {
                "name": layer.name,
                "type": type(layer).__name__,
                "params": int(layer.count_params()) if layer.built else 0,
                "macs": None,
                "out_channels": None,
            }
            for layer in model.layers
        ]
    return flat_stats(flatten_model(model))
