"""Surgery: rebuild a new, smaller tf_keras functional model with sliced weights.

Pure with respect to its inputs: every layer is re-created from ``get_config()`` (with fewer
filters/units where channels were removed) and given sliced copies of the original weights, so
the input model is never touched and the result has no masks or wrappers. Nested models come
out flattened, because the rebuild replays the flat op list from ``ir.py``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeprune.errors import ToolError
from edgeprune.pruning.graph import ChannelGraph
from edgeprune.pruning.ir import Op, Ref

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Keep:
    """Kept channel indices of the op's first input (``inp``) and first output (``out``)."""

    inp: np.ndarray
    out: np.ndarray
    n_in: int
    n_out: int
    out_shape: tuple[int | None, ...] = ()  # static output shape of the first call, with batch


Slicer = Callable[[Any, dict[str, Any], Keep], tuple[dict[str, Any], list[np.ndarray]]]
SLICERS: dict[str, Slicer] = {}


def register_slicer(*class_names: str) -> Callable[[Slicer], Slicer]:
    """Register how a Keras layer class is shrunk (config + weights), by class name."""

    def deco(fn: Slicer) -> Slicer:
        for name in class_names:
            SLICERS[name] = fn
        return fn

    return deco


def _weights(layer: Any, **by_attr: Callable[[np.ndarray], np.ndarray]) -> list[np.ndarray]:
    """The layer's weights in ``layer.weights`` order, each passed through its attribute's fn."""
    fns = {}
    for attr, fn in by_attr.items():
        var = getattr(layer, attr, None)
        if var is not None:
            fns[id(var)] = fn
    out = []
    for var in layer.weights:
        value = var.numpy()
        fn = fns.get(id(var))
        out.append(fn(value) if fn else value)
    return out


def _expand(idx: np.ndarray, multiplier: int) -> np.ndarray:
    """Channel c of a depthwise layer owns outputs c*m … c*m+m-1."""
    return (idx[:, None] * multiplier + np.arange(multiplier)).ravel()


@register_slicer("Conv1D", "Conv2D", "Conv3D")
def _conv(layer: Any, cfg: dict[str, Any], k: Keep) -> tuple[dict[str, Any], list[np.ndarray]]:
    cfg["filters"] = len(k.out)  # kernel (*spatial, in, out)
    return cfg, _weights(
        layer, kernel=lambda w: w[..., k.inp, :][..., k.out], bias=lambda w: w[k.out]
    )


@register_slicer("Dense")
def _dense(layer: Any, cfg: dict[str, Any], k: Keep) -> tuple[dict[str, Any], list[np.ndarray]]:
    cfg["units"] = len(k.out)  # kernel (in, out); Flatten's spatial mapping is already in k.inp
    return cfg, _weights(layer, kernel=lambda w: w[k.inp][:, k.out], bias=lambda w: w[k.out])


@register_slicer("Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose")
def _conv_t(layer: Any, cfg: dict[str, Any], k: Keep) -> tuple[dict[str, Any], list[np.ndarray]]:
    cfg["filters"] = len(k.out)  # kernel (*spatial, out, in)
    return cfg, _weights(
        layer, kernel=lambda w: w[..., k.out, :][..., k.inp], bias=lambda w: w[k.out]
    )


@register_slicer("SeparableConv1D", "SeparableConv2D")
def _separable(layer: Any, cfg: dict[str, Any], k: Keep) -> tuple[dict[str, Any], list[np.ndarray]]:
    cfg["filters"] = len(k.out)
    rows = _expand(k.inp, layer.depth_multiplier)
    return cfg, _weights(
        layer,
        depthwise_kernel=lambda w: w[..., k.inp, :],  # (*spatial, in, multiplier)
        pointwise_kernel=lambda w: w[..., rows, :][..., k.out],  # (1.., in*multiplier, out)
        bias=lambda w: w[k.out],
    )


@register_slicer("DepthwiseConv1D", "DepthwiseConv2D")
def _depthwise(layer: Any, cfg: dict[str, Any], k: Keep) -> tuple[dict[str, Any], list[np.ndarray]]:
    rows = _expand(k.inp, layer.depth_multiplier)
    return cfg, _weights(layer, depthwise_kernel=lambda w: w[..., k.inp, :], bias=lambda w: w[rows])


@register_slicer("BatchNormalization")
def _batch_norm(
    layer: Any, cfg: dict[str, Any], k: Keep
) -> tuple[dict[str, Any], list[np.ndarray]]:
    return cfg, [w[k.inp] for w in layer.get_weights()]  # gamma, beta, mean, variance: (C,)


@register_slicer("PReLU")
def _prelu(layer: Any, cfg: dict[str, Any], k: Keep) -> tuple[dict[str, Any], list[np.ndarray]]:
    # alpha has the input's non-batch shape, with 1 on shared axes; per-channel only if last == C.
    return cfg, [w[..., k.inp] if w.shape[-1] == k.n_in else w for w in layer.get_weights()]


@register_slicer("Reshape")
def _reshape(layer: Any, cfg: dict[str, Any], k: Keep) -> tuple[dict[str, Any], list[np.ndarray]]:
    # handlers.reshape only accepts static shapes whose last axis holds whole channel vectors,
    # so only the last axis changes (and any -1 in the config is resolved from the old shape).
    shape = list(k.out_shape[1:])
    shape[-1] = shape[-1] // k.n_in * len(k.inp)
    cfg["target_shape"] = tuple(shape)
    return cfg, []


def rebuild(
    graph: ChannelGraph, removed: np.ndarray | None = None, notes: list[str] | None = None
) -> tuple[Any, dict[str, Any]]:
    """Build the pruned model; ``removed`` is a bool per atom root (None: nothing removed).

    Returns the new model and a map from flat tensor keys to the new model's tensors (used to
    build sub-models for activation statistics).
    """
    from edgeprune import _tf

    keras, tf = _tf.keras(), _tf.tf()
    flat = graph.flat
    if removed is None:
        removed = np.zeros(len(graph.roots), dtype=bool)
    notes = notes if notes is not None else []
    env: dict[str, Any] = {}
    for spec in flat.inputs:
        env[spec.key] = keras.Input(
            batch_shape=spec.batch_shape,
            dtype=spec.dtype,
            name=spec.name,
            sparse=spec.sparse or None,
            ragged=spec.ragged or None,
        )
    layers: dict[str, Any] = {}
    for op in flat.ops:
        args, kwargs = tf.nest.map_structure(
            lambda v: env[v.key] if isinstance(v, Ref) else v, (op.args, op.kwargs)
        )
        pending = None
        if op.name not in layers:
            layers[op.name], pending = _new_layer(op, graph, removed, notes)
        layer = layers[op.name]
        outs = layer(*args, **kwargs)
        if pending is not None and (pending or layer.weights):
            layer.set_weights(pending)
        for key, t in zip(op.outputs, tf.nest.flatten(outs), strict=True):
            _check_channels(op, graph, removed, key, t)
            env[key] = t
    ins = [env[s.key] for s in flat.inputs]
    outs = [env[k] for k in flat.outputs]
    model = keras.Model(_pack(tf, flat.nested_inputs, ins), _pack(tf, flat.nested_outputs, outs),
                        name=flat.name)  # fmt: skip
    return model, env


def _pack(tf: Any, structure: Any, flat: list[Any]) -> Any:
    if structure is None or len(tf.nest.flatten(structure)) != len(flat):
        return flat
    return tf.nest.pack_sequence_as(structure, flat)


def _keep(graph: ChannelGraph, keys: list[str], removed: np.ndarray) -> tuple[np.ndarray, int]:
    if not keys:
        return np.zeros(0, dtype=np.int64), 0
    n = graph.flat.channels(keys[0]) or 0
    kept = graph.keep_slots(keys[0], removed)
    return (np.arange(n) if kept is None else kept), n


def _new_layer(
    op: Op, graph: ChannelGraph, removed: np.ndarray, notes: list[str]
) -> tuple[Any, list[np.ndarray] | None]:
    layer = op.layer
    inp, n_in = _keep(graph, op.inputs, removed)
    out, n_out = _keep(graph, op.outputs, removed)
    changed = len(inp) < n_in or len(out) < n_out
    cfg = layer.get_config() if _has_config(layer) else None
    weights: list[np.ndarray] = layer.get_weights()
    slicer = SLICERS.get(type(layer).__name__)
    if changed and slicer is not None and cfg is not None:
        shape = graph.flat.shapes.get(op.outputs[0]) or ()
        cfg, weights = slicer(layer, dict(cfg), Keep(inp, out, n_in, n_out, shape))
    elif changed and weights:
        raise ToolError(
            f"layer '{op.name}' ({type(layer).__name__})",
            "structural pruning removed channels of a layer it cannot slice",
            f"this is a bug in edgeprune; work around it with --keep {op.name}",
        )
    if cfg is not None:
        cfg["name"] = op.name
        try:
            return type(layer).from_config(cfg), weights
        except Exception as exc:  # a custom layer whose config does not round-trip
            if changed:
                raise ToolError(
                    f"layer '{op.name}' ({type(layer).__name__})",
                    f"cannot be re-created from its config ({exc})",
                    f"implement get_config() for it, or pass --keep {op.name}",
                ) from exc
    msg = (
        f"layer '{op.name}' ({type(layer).__name__}) cannot be re-created from its config; the "
        "pruned model reuses the original layer object (implement get_config() to avoid this)"
    )
    log.warning(msg)
    notes.append(msg)
    return layer, None


def _has_config(layer: Any) -> bool:
    try:
        layer.get_config()
    except NotImplementedError:
        return False
    return True


def _check_channels(op: Op, graph: ChannelGraph, removed: np.ndarray, key: str, t: Any) -> None:
    kept = graph.keep_slots(key, removed)
    shape = getattr(t, "shape", None)
    if kept is None or shape is None or shape.rank is None:
        return
    if shape[-1] != len(kept):
        raise ToolError(
            f"layer '{op.name}' ({op.type})",
            f"the rebuilt layer has {shape[-1]} output channels, the channel graph expected "
            f"{len(kept)}",
            f"this is a bug in edgeprune; work around it with --keep {op.name}",
        )
