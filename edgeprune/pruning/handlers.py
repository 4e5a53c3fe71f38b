"""Channel rules per Keras layer class, registered by class name in ``HANDLERS``.

Each rule reads the atoms of the op's inputs and sets the atoms of its outputs (see graph.py).
A rule that meets a configuration it cannot map exactly makes the op a boundary instead of
guessing: a wrong mapping would silently change the model.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeprune.pruning.ir import Op, Ref

if TYPE_CHECKING:  # the graph calls the rules; the rules only read and write it
    from edgeprune.pruning.graph import ChannelGraph

Handler = Callable[["ChannelGraph", Op], None]
HANDLERS: dict[str, Handler] = {}


def register_handler(*class_names: str) -> Callable[[Handler], Handler]:
    """Register the channel rule for Keras layer classes, by class name."""

    def deco(fn: Handler) -> Handler:
        for name in class_names:
            HANDLERS[name] = fn
        return fn

    return deco

NONLINEAR_SOFTMAX = ("softmax", "log_softmax")  # normalise across channels: not channel-wise


def _channels_last(layer: Any) -> bool:
    return getattr(layer, "data_format", None) in (None, "channels_last")


def _activation_name(layer: Any) -> str:
    act = layer.get_config().get("activation", "linear")
    if isinstance(act, dict):  # a serialised activation object
        act = act.get("config", {}).get("name", act.get("class_name", ""))
    return str(act or "linear")


def _axes(axis: Any, rank: int) -> set[int]:
    axes = axis if isinstance(axis, list | tuple) else [axis]
    return {int(a) % rank for a in axes}


# --- producers --------------------------------------------------------------------------------
@register_handler(
    "Conv1D",
    "Conv2D",
    "Conv3D",
    "Dense",
    "SeparableConv1D",
    "SeparableConv2D",
    "Conv1DTranspose",
    "Conv2DTranspose",
    "Conv3DTranspose",
)
def producer(g: ChannelGraph, op: Op) -> None:
    layer = op.layer
    if getattr(layer, "groups", 1) != 1:
        g.boundary(op, f"grouped convolution (groups={layer.groups}) is not pruned")
        return
    if not _channels_last(layer):
        g.boundary(op, "only channels_last layouts are pruned", warn=True)
        return
    n = g.flat.channels(op.outputs[0])
    if n is None:
        g.boundary(op, "its output channel count is unknown", warn=True)
        return
    out = g.layer_space(op, n)
    act = _activation_name(layer)
    if act in NONLINEAR_SOFTMAX:
        g.freeze(out, f"softmax activation of '{op.name}' mixes its channels")
    g.set(op.outputs[0], out)
    g.member("producer", op, op.outputs[0])
    g.member("out" if act == "linear" else "act", op, op.outputs[0])


@register_handler("DepthwiseConv1D", "DepthwiseConv2D")
def depthwise(g: ChannelGraph, op: Op) -> None:
    atoms = g.get(op.inputs[0])
    if atoms is None or not _channels_last(op.layer):
        g.boundary(op, "only channels_last layouts with known channels are pruned", warn=True)
        return
    # Output channel c*m + k comes from input channel c (m = depth_multiplier).
    g.set(op.outputs[0], np.repeat(atoms, op.layer.depth_multiplier))
    act = _activation_name(op.layer)
    g.member("out" if act == "linear" else "act", op, op.outputs[0])


# --- channel-wise layers ----------------------------------------------------------------------
@register_handler("BatchNormalization")
def batch_norm(g: ChannelGraph, op: Op) -> None:
    shape = g.flat.shapes.get(op.inputs[0])
    if not shape or _axes(op.layer.axis, len(shape)) != {len(shape) - 1}:
        g.boundary(op, "batch norm over a non-channel axis", warn=True)
        return
    g.passthrough(op)
    g.member("bn", op, op.outputs[0])
    g.member("out", op, op.outputs[0])


@register_handler("Activation")
def activation(g: ChannelGraph, op: Op) -> None:
    act = _activation_name(op.layer)
    if act in NONLINEAR_SOFTMAX:
        g.boundary(op)
    else:
        g.passthrough(op, None if act == "linear" else "act")


@register_handler("ReLU", "LeakyReLU", "ELU", "ThresholdedReLU", "PReLU")
def activation_layer(g: ChannelGraph, op: Op) -> None:
    g.passthrough(op, "act")


@register_handler("Softmax")
def softmax(g: ChannelGraph, op: Op) -> None:
    shape = g.flat.shapes.get(op.inputs[0])
    if not shape or len(shape) - 1 in _axes(op.layer.axis, len(shape)):
        g.boundary(op)
    else:
        g.passthrough(op, "act")


@register_handler(
    "MaxPooling1D",
    "MaxPooling2D",
    "MaxPooling3D",
    "AveragePooling1D",
    "AveragePooling2D",
    "AveragePooling3D",
    "GlobalAveragePooling1D",
    "GlobalAveragePooling2D",
    "GlobalAveragePooling3D",
    "GlobalMaxPooling1D",
    "GlobalMaxPooling2D",
    "GlobalMaxPooling3D",
    "ZeroPadding1D",
    "ZeroPadding2D",
    "ZeroPadding3D",
    "Cropping1D",
    "Cropping2D",
    "Cropping3D",
    "UpSampling1D",
    "UpSampling2D",
    "UpSampling3D",
)
def spatial(g: ChannelGraph, op: Op) -> None:
    if not _channels_last(op.layer):
        g.boundary(op, "only channels_last layouts are pruned", warn=True)
    else:
        g.passthrough(op)


@register_handler(
    "Dropout",
    "SpatialDropout1D",
    "SpatialDropout2D",
    "SpatialDropout3D",
    "GaussianNoise",
    "GaussianDropout",
    "AlphaDropout",
    "ActivityRegularization",
    "Identity",
)
def identity_like(g: ChannelGraph, op: Op) -> None:
    g.passthrough(op)


@register_handler(
    "Rescaling", "Normalization", "LayerNormalization", "UnitNormalization", "Permute", "Masking"
)
def known_boundary(g: ChannelGraph, op: Op) -> None:
    """Input preprocessing and layers that mix channels: keep their channels, no warning."""
    g.boundary(op)


# --- merges and shape changes -----------------------------------------------------------------
def merge(g: ChannelGraph, op: Op, keys: list[str]) -> None:
    """Elementwise ops with broadcasting: equal-width inputs share channels."""
    n = g.flat.channels(op.outputs[0])
    arrs = [g.get(k) for k in keys]
    if n is None or any(a is None for a in arrs):
        g.boundary(op, "an input's channels are unknown", warn=True)
        return
    full = [a for a in arrs if len(a) == n]
    if not full or any(len(a) not in (1, n) for a in arrs):
        g.boundary(op, "its inputs do not broadcast along channels", warn=True)
        return
    for a in full[1:]:
        g.unify(full[0], a)
    g.set(op.outputs[0], full[0])


@register_handler("Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum")
def merge_layer(g: ChannelGraph, op: Op) -> None:
    merge(g, op, op.inputs)


def concat(g: ChannelGraph, op: Op, keys: list[str], axis: int) -> None:
    shape = g.flat.shapes.get(op.outputs[0])
    arrs = [g.get(k) for k in keys]
    if not shape or any(a is None for a in arrs):
        g.boundary(op, "an input's channels are unknown", warn=True)
        return
    if int(axis) % len(shape) == len(shape) - 1:
        g.set(op.outputs[0], np.concatenate(arrs))  # output channel = offset + input channel
    else:
        merge(g, op, keys)  # concatenating along space: channels line up


@register_handler("Concatenate")
def concatenate(g: ChannelGraph, op: Op) -> None:
    concat(g, op, op.inputs, op.layer.axis)


@register_handler("Flatten")
def flatten(g: ChannelGraph, op: Op) -> None:
    shape = g.flat.shapes.get(op.inputs[0])
    atoms = g.get(op.inputs[0])
    if atoms is None or not shape or None in shape[1:] or not _channels_last(op.layer):
        g.boundary(op, "a channels_last input with a static shape is needed", warn=True)
        return
    # Row-major flatten of (H, W, C): position h*W*C + w*C + c carries channel c.
    g.set(op.outputs[0], np.tile(atoms, math.prod(shape[1:-1])))


@register_handler("Reshape")
def reshape(g: ChannelGraph, op: Op) -> None:
    s_in, s_out = g.flat.shapes.get(op.inputs[0]), g.flat.shapes.get(op.outputs[0])
    atoms = g.get(op.inputs[0])
    if atoms is None or not s_in or not s_out or None in s_in[1:] or None in s_out[1:]:
        g.boundary(op, "static shapes are needed", warn=True)
        return
    c, last = s_in[-1], s_out[-1]
    if last % c:
        g.boundary(op, "it splits the channel axis", warn=True)
        return
    # The new last axis holds whole channel vectors, so position p carries channel p % C.
    g.set(op.outputs[0], np.tile(atoms, last // c))


# --- TF ops recorded by Keras (TFOpLambda, e.g. `x + 3.0`, `tf.nn.relu6(x)`) -------------------
ELEMENTWISE_OPS = {
    "__operators__.add", "math.add", "add", "math.add_n",
    "math.subtract", "subtract", "__operators__.sub",
    "math.multiply", "multiply", "math.truediv", "math.divide", "truediv",
    "math.maximum", "maximum", "math.minimum", "minimum",
    "nn.relu", "nn.relu6", "nn.leaky_relu", "nn.elu", "nn.selu", "nn.gelu", "nn.silu",
    "nn.swish", "math.sigmoid", "nn.sigmoid", "sigmoid", "math.tanh", "nn.tanh", "tanh",
    "math.abs", "abs", "math.negative", "negative", "math.square", "square", "math.sqrt",
    "sqrt", "math.exp", "exp", "math.softplus", "nn.softplus", "identity", "clip_by_value",
    "math.pow", "pow", "cast", "dtypes.cast",
}  # fmt: skip
ACTIVATION_OPS = {"nn.relu", "nn.relu6", "nn.leaky_relu", "nn.elu", "nn.selu", "nn.gelu",
                  "nn.silu", "nn.swish"}  # fmt: skip
REDUCE_OPS = {"math.reduce_mean", "math.reduce_max", "math.reduce_min", "math.reduce_sum",
              "reduce_mean", "reduce_max", "reduce_min", "reduce_sum"}  # fmt: skip


def _is_scalar(v: Any) -> bool:
    if v is None or isinstance(v, bool | int | float | str):
        return True
    size = getattr(v, "size", None)  # numpy arrays and scalars
    if size is None and hasattr(v, "shape"):  # tf tensors
        size = v.shape.num_elements()
    return size == 1


def _arg(op: Op, index: int, name: str, default: Any = None) -> Any:
    if name in op.kwargs:
        return op.kwargs[name]
    return op.args[index] if len(op.args) > index else default


@register_handler("TFOpLambda")
def tf_op(g: ChannelGraph, op: Op) -> None:
    fn = str(op.layer.get_config().get("function", ""))
    if fn in ELEMENTWISE_OPS:
        constants = [
            v
            for v in _flat(op.args, op.kwargs)
            if not isinstance(v, Ref) and not isinstance(v, type) and not _is_dtype(v)
        ]
        if not all(_is_scalar(v) for v in constants):
            g.boundary(op, f"tf.{fn} with a non-scalar constant operand", warn=True)
        elif len(op.inputs) == 1:
            g.passthrough(op, "act" if fn in ACTIVATION_OPS else None)
        else:
            merge(g, op, op.inputs)
    elif fn == "concat":
        concat(g, op, op.inputs, _arg(op, 1, "axis", -1))
    elif fn in REDUCE_OPS:
        shape = g.flat.shapes.get(op.inputs[0])
        axis = _arg(op, 1, "axis")
        if len(op.inputs) != 1 or not shape or axis is None:
            g.boundary(op, f"tf.{fn} over all axes")
        elif len(shape) - 1 in _axes(axis, len(shape)):
            g.boundary(op, f"tf.{fn} over the channel axis")
        else:
            g.passthrough(op)
    else:
        g.unknown(op)


def _flat(args: Any, kwargs: dict[str, Any]) -> list[Any]:
    out: list[Any] = []
    stack = [args, list(kwargs.values())]
    while stack:
        v = stack.pop()
        if isinstance(v, list | tuple):
            stack.extend(v)
        elif isinstance(v, dict):
            stack.extend(v.values())
        else:
            out.append(v)
    return out


def _is_dtype(v: Any) -> bool:
    return type(v).__name__ == "DType"
