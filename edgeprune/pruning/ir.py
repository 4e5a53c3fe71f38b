"""Flatten a tf_keras functional or Sequential model, nested models included, into a list of ops.

Every later step (channel graph, importance, surgery, stats) works on this flat list instead of
on Keras' own node bookkeeping, so nested models need no special cases anywhere else: a nested
model's layers become ordinary ops and its input/output tensors become aliases.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from edgeprune.errors import BadInputError


@dataclass(frozen=True)
class Ref:
    """Stands for a tensor (by key) inside an op's call arguments."""

    key: str


@dataclass
class Op:
    """One call of one layer. A shared layer has one op per call, all with the same ``name``."""

    layer: Any
    name: str  # unique in the flattened model
    args: Any  # call args with KerasTensors replaced by Ref
    kwargs: dict[str, Any]
    inputs: list[str]  # keys of the Keras tensors in the call args, in flat order
    outputs: list[str]
    scopes: tuple[str, ...] = ()  # names of the nested models this op came from
    call_index: int = 0  # 0 for the first call of this layer

    @property
    def type(self) -> str:
        return type(self.layer).__name__


@dataclass
class InputSpec:
    key: str
    name: str
    batch_shape: tuple[int | None, ...]
    dtype: str
    sparse: bool = False
    ragged: bool = False


@dataclass
class FlatModel:
    name: str
    inputs: list[InputSpec]
    outputs: list[str]
    ops: list[Op]
    shapes: dict[str, tuple[int | None, ...] | None]
    nested_inputs: Any = None  # the original input/output structures, for repacking
    nested_outputs: Any = None
    _layer_ops: dict[str, list[Op]] = field(default_factory=dict, repr=False)

    def layer_ops(self) -> dict[str, list[Op]]:
        """Ops grouped by layer name, in call order."""
        if not self._layer_ops:
            for op in self.ops:
                self._layer_ops.setdefault(op.name, []).append(op)
        return self._layer_ops

    def channels(self, key: str) -> int | None:
        shape = self.shapes.get(key)
        return shape[-1] if shape else None


SUBCLASSED_FIX = (
    "rebuild it with the functional API — x = keras.Input(shape); y = layers...(x); "
    "keras.Model(inputs=x, outputs=y) — or a keras.Sequential with an Input, "
    "and load the trained weights into it"
)


def is_graph_model(layer: Any) -> bool:
    """True for functional and Sequential models (those with a static graph to walk)."""
    keras = _keras()
    return isinstance(layer, keras.Model) and bool(getattr(layer, "_is_graph_network", False))


def _keras() -> Any:
    from edgeprune import _tf

    return _tf.keras()


def _shape(t: Any) -> tuple[int | None, ...] | None:
    shape = getattr(t, "shape", None)
    if shape is None or shape.rank is None:
        return None
    return tuple(shape.as_list())


def flatten_model(model: Any) -> FlatModel:
    """Walk ``model`` (never modified) and return its ops in topological order."""
    keras = _keras()
    if not isinstance(model, keras.Model):
        raise BadInputError(
            "model",
            f"expected a tf_keras Model, got {type(model).__name__}",
            "load the model with edgeprune's model loader (tf_keras / Keras 2)",
        )
    if not is_graph_model(model):
        raise BadInputError(
            f"model '{model.name}' ({type(model).__name__})",
            "it is a subclassed model, so its layer graph cannot be read",
            SUBCLASSED_FIX,
        )
    walker = _Walker(model)
    return walker.run()


class _Walker:
    def __init__(self, model: Any) -> None:
        self.model = model
        self.ops: list[Op] = []
        self.shapes: dict[str, tuple[int | None, ...] | None] = {}
        self.names: dict[int, str] = {}  # id(layer) -> unique name
        self.used: set[str] = set()
        self.calls: dict[int, int] = {}  # id(layer) -> number of calls seen
        self.counter = itertools.count()

    def run(self) -> FlatModel:
        model = self.model
        env: dict[int, str] = {}
        inputs = []
        for t in model.inputs:
            layer = t._keras_history.layer
            cfg = layer.get_config()
            key = self._new_key(t)
            env[id(t)] = key
            self.used.add(layer.name)
            inputs.append(
                InputSpec(
                    key=key,
                    name=layer.name,
                    batch_shape=tuple(cfg.get("batch_input_shape") or _shape(t) or ()),
                    dtype=str(cfg.get("dtype") or t.dtype.name),
                    sparse=bool(cfg.get("sparse", False)),
                    ragged=bool(cfg.get("ragged", False)),
                )
            )
        self._expand(model, env, scopes=(), training=None)
        outputs = [env[id(t)] for t in model.outputs]
        return FlatModel(
            name=model.name,
            inputs=inputs,
            outputs=outputs,
            ops=self.ops,
            shapes=self.shapes,
            nested_inputs=getattr(model, "_nested_inputs", None),
            nested_outputs=getattr(model, "_nested_outputs", None),
        )

    def _new_key(self, t: Any) -> str:
        key = f"t{next(self.counter)}"
        self.shapes[key] = _shape(t)
        return key

    def _unique_name(self, layer: Any, scopes: tuple[str, ...]) -> str:
        lid = id(layer)
        if lid in self.names:
            return self.names[lid]
        name = layer.name
        if name in self.used:  # a nested model's layer clashing with an outer one
            name = "_".join((*scopes, layer.name))
        base, n = name, 1
        while name in self.used:
            name, n = f"{base}_{n}", n + 1
        self.used.add(name)
        self.names[lid] = name
        return name

    def _nodes(self, model: Any) -> Iterator[Any]:
        by_depth = model._nodes_by_depth
        for depth in sorted(by_depth, reverse=True):
            for node in by_depth[depth]:
                if not node.is_input:
                    yield node

    def _expand(
        self, model: Any, env: dict[int, str], scopes: tuple[str, ...], training: Any
    ) -> None:
        tf = _tf_mod()
        for node in self._nodes(model):
            layer = node.layer
            in_keys = [env[id(kt)] for kt in node.keras_inputs]
            outs = tf.nest.flatten(node.outputs)
            if is_graph_model(layer):
                # Inline the nested model: its inputs alias the outer tensors; it keeps the
                # caller's `training` argument (e.g. a frozen backbone called with training=False).
                inner_env = {id(t): k for t, k in zip(layer.inputs, in_keys, strict=True)}
                call_training = node.call_kwargs.get("training", training)
                self._expand(layer, inner_env, (*scopes, layer.name), call_training)
                for inner, outer in zip(layer.outputs, outs, strict=True):
                    env[id(outer)] = inner_env[id(inner)]
                continue
            args, kwargs = tf.nest.map_structure(
                lambda v: Ref(env[id(v)]) if _is_keras_tensor(v) else v,
                (node.call_args, dict(node.call_kwargs)),
            )
            if (
                training is not None
                and "training" not in kwargs
                and getattr(layer, "_expects_training_arg", False)
            ):
                kwargs["training"] = training
            out_keys = []
            for t in outs:
                key = self._new_key(t)
                env[id(t)] = key
                out_keys.append(key)
            call_index = self.calls.get(id(layer), 0)
            self.calls[id(layer)] = call_index + 1
            self.ops.append(
                Op(
                    layer=layer,
                    name=self._unique_name(layer, scopes),
                    args=args,
                    kwargs=kwargs,
                    inputs=in_keys,
                    outputs=out_keys,
                    scopes=scopes,
                    call_index=call_index,
                )
            )


def _tf_mod() -> Any:
    from edgeprune import _tf

    return _tf.tf()


def _is_keras_tensor(v: Any) -> bool:
    # The same test tf_keras' Node uses, so our refs line up with `node.keras_inputs`.
    return hasattr(v, "_keras_history")
