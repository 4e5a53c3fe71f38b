"""Keras 3 model config → tf_keras model config, as plain JSON.

What differs between the two (TF 2.21, Keras 3.15, tf_keras 2.21):

- ``InputLayer``: ``batch_shape`` is tf_keras' ``batch_input_shape``; ``optional`` is new.
- ``dtype`` is a DTypePolicy entry in Keras 3, a policy name in tf_keras.
- Inbound nodes: Keras 3 stores each call as ``{"args": [...], "kwargs": {...}}`` with
  ``__keras_tensor__`` entries holding a ``keras_history`` [layer, node, tensor]; tf_keras stores
  a list of [layer, node, tensor, kwargs] per input tensor. ``training`` in Keras 3 node kwargs
  is the value seen while building and is overridden by the caller, so it is dropped (tf_keras
  then follows the caller as well).
- Some arguments were renamed (``negative_slope`` ↔ ``alpha``) or added with a neutral default
  (``quantization_config``, ``lora_rank``, ``input_axes`` …); a new argument with a non-neutral
  value, or a class tf_keras lacks, is refused by name (``Untranslatable``).
- Activations, Keras 3 math ops (``x + y``) and two keras.applications helper layers become the
  TF ops Keras 3 runs (``activations.py``).

Every name stays the user's; layers added to spell an activation get the user's name plus a
suffix, and the last one of each chain carries the user's name.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from edgeprune.keras3 import activations as acts

MODEL_CLASSES = ("Functional", "Sequential")
# Arguments tf_keras lacks whose value here means what tf_keras does anyway.
NEUTRAL: dict[str, Any] = {
    "optional": False, "quantization_config": None, "lora_rank": None, "lora_alpha": None,
    "input_axes": None, "output_axes": None, "rms_scaling": False, "pad_to_aspect_ratio": False,
    "use_cudnn": "auto", "seed": None, "synchronized": False,
}  # fmt: skip
RENAMES = {("LeakyReLU", "negative_slope"): "alpha", ("InputLayer", "batch_shape"):
           "batch_input_shape"}
# Keras 3 ops recorded in functional graphs (``x + y``, ``ops.multiply``) → tf functions.
OPS = {"Add": "math.add", "Subtract": "math.subtract", "Multiply": "math.multiply",
       "Divide": "math.truediv", "TrueDivide": "math.truediv", "Maximum": "math.maximum",
       "Minimum": "math.minimum"}
# keras.applications helper classes with a tf_keras twin (same weights, same call).
APP_TWINS = {"LayerScale": "tf_keras.src.applications.convnext"}


@dataclass
class _Scope:
    """Per functional model: layers whose output moved to another layer (a split activation)
    and nested models, whose first call is node 1 in tf_keras (node 0 is their own input's)."""

    trusted: bool = False  # --trust-model: custom layers run as themselves (wrapped.py)
    aliases: dict[str, str] = field(default_factory=dict)
    nested: set[str] = field(default_factory=set)

    def ref(self, layer: str, node: int, index: int) -> list[Any]:
        return [self.aliases.get(layer, layer), node + (layer in self.nested), index]


class Untranslatable(Exception):
    """A layer tf_keras cannot express; ``layer``/``cls`` name it, ``problem`` says why."""

    def __init__(self, layer: str, cls: str, problem: str, fix: str) -> None:
        self.layer, self.cls, self.problem, self.fix = layer, cls, problem, fix
        super().__init__(f"layer {layer!r} ({cls}): {problem}")


def _tf_keras() -> Any:
    from edgeprune import _tf

    return _tf.keras()


@cache
def tf_class(cls: str) -> type | None:
    """The tf_keras class Keras 3 layer class ``cls`` translates to, if any."""
    if cls in APP_TWINS:
        import importlib

        return getattr(importlib.import_module(APP_TWINS[cls]), cls, None)
    found = getattr(_tf_keras().layers, cls, None)
    return found if isinstance(found, type) else None


@cache
def accepted_args(target: type) -> frozenset[str]:
    """Constructor arguments of a tf_keras class: its own and those its bases take."""
    names: set[str] = set()
    for klass in target.__mro__:
        if "__init__" in vars(klass):
            params = inspect.signature(klass.__init__).parameters.values()
            names.update(p.name for p in params if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL))
    if issubclass(target, _tf_keras().layers.Layer):  # tf_keras Layer's **kwargs allow-list
        names |= {"input_dim", "input_shape", "batch_input_shape", "batch_size", "weights",
                  "activity_regularizer", "autocast"}
    return frozenset(names - {"self"})


def translate(entry: dict[str, Any], trusted: bool = False) -> dict[str, Any]:
    """A Keras 3 serialized model (``config.json``) as a tf_keras ``{"class_name",
    "config"}`` entry for ``tf_keras.layers.deserialize``."""
    cls = entry.get("class_name")
    name = str(entry.get("config", {}).get("name", "?"))
    if cls not in MODEL_CLASSES:
        raise Untranslatable(name, str(cls), "is not a functional or Sequential model",
                             "Save a keras.Model built with the functional API or Sequential")
    return {"class_name": cls, "config": _model_config(cls, entry["config"], trusted)}


def _model_config(cls: str, config: dict[str, Any], trusted: bool) -> dict[str, Any]:
    if cls == "Sequential":
        layers = []
        for item in config["layers"]:
            layers.extend(_layer(item, sequential=True, scope=_Scope(trusted)))
        out = {"name": config["name"], "layers": layers}
        if config.get("build_input_shape") is not None:
            out["build_input_shape"] = config["build_input_shape"]
        return out
    scope = _Scope(trusted)
    layers = []
    for item in config["layers"]:
        layers.extend(_layer(item, sequential=False, scope=scope))
    _check_refs(layers, scope)
    return {"name": config["name"], "trainable": config.get("trainable", True),
            "layers": layers, "input_layers": _coords(config["input_layers"], scope),
            "output_layers": _coords(config["output_layers"], scope)}


def _refs_in(value: Any) -> list[list[Any]]:
    """[layer, node, tensor(, kwargs)] references in tf_keras node data, kwargs included."""
    if (isinstance(value, list) and len(value) in (3, 4) and isinstance(value[0], str)
            and isinstance(value[1], int) and isinstance(value[2], int)):
        return [value, *(_refs_in(list(value[3].values())) if len(value) == 4 else [])]
    if isinstance(value, list):
        return [r for v in value for r in _refs_in(v)]
    return []


def _check_refs(layers: list[dict[str, Any]], scope: _Scope) -> None:
    """Every tensor a layer reads is produced earlier: tf_keras would otherwise loop forever
    waiting for it while rebuilding the model."""
    calls: dict[str, int] = {}
    for entry in layers:
        for layer, node, *_ in _refs_in(entry["inbound_nodes"]):
            first = int(layer in scope.nested)
            if layer not in calls or not first <= node < first + calls[layer]:
                raise Untranslatable(entry["name"], entry["class_name"],
                                     f"reads call {node} of layer {layer!r}, which the "
                                     "translation does not define",
                                     "Report this with the model's config.json")
        calls[entry["name"]] = max(1, len(entry["inbound_nodes"]))


def _coords(value: Any, scope: _Scope) -> list[list[Any]]:
    items = [value] if value and isinstance(value[0], str) else value
    if isinstance(items, dict):
        raise Untranslatable("inputs", "Functional", "has dict-structured inputs or outputs",
                             "Build the model on a single keras.Input and a single output")
    return [scope.ref(*i) for i in items]


def _layer(item: dict[str, Any], sequential: bool, scope: _Scope) -> list[dict[str, Any]]:
    cls = str(item.get("class_name"))
    config = item.get("config") or {}
    name = str(config.get("name") or item.get("name"))
    sources = [] if sequential else [_node(n, name, cls, scope)
                                     for n in item.get("inbound_nodes", [])]
    if cls in MODEL_CLASSES:
        layers = config.get("layers") or [{}]
        if cls == "Functional" or layers[0].get("class_name") == "InputLayer":
            scope.nested.add(name)
        return [_entry(cls, _model_config(cls, config, scope.trusted), name,
                       [_leaves(s, None) for s in sources], sequential)]
    module = str(item.get("module") or "")
    if module.startswith("keras.src.ops"):
        return _op_entries(cls, name, config, sources, sequential)
    if cls == "CustomScaleLayer":  # keras.applications InceptionResNetV2: x0 + x1 * scale
        return _custom_scale(name, config, sources, sequential)
    if module != "keras" and not module.startswith("keras."):  # the user's own class
        if not scope.trusted:
            raise Untranslatable(name, cls, f"is a custom class from module {module!r}",
                                 "Pass --trust-model if you trust the file and its module")
        inner = {k: v for k, v in item.items() if k not in ("inbound_nodes", "name")}
        dtype = _value("dtype", config.get("dtype", "float32"), name, cls)
        return [_entry("Keras3Layer", {"name": name, "trainable": config.get("trainable", True),
                                       "dtype": dtype, "layer": inner},
                       name, [_leaves(s, None) for s in sources], sequential)]
    target = tf_class(cls)
    if target is None:
        raise Untranslatable(name, cls, "tf_keras (which TF-MOT prunes) has no such layer",
                             "Replace it with a layer both Keras versions have, or build with "
                             "tf_keras (TF_USE_LEGACY_KERAS=1) and save the model again")
    out_cfg = _layer_config(cls, target, config, name)
    fn = acts.activation_name(config.get("activation")) if "activation" in config else None
    if fn is not None and acts.direct(fn) is not None:
        out_cfg["activation"], fn = acts.direct(fn), None
    if fn is None:
        return [_entry(cls, out_cfg, name, [_leaves(s, target) for s in sources], sequential)]
    if fn not in acts.CHAINS:
        raise Untranslatable(name, cls, f"activation {fn!r} has no tf_keras equivalent",
                             "Use an activation both Keras versions have (e.g. relu, swish)")
    if sequential:
        raise Untranslatable(name, cls, f"activation {fn!r} needs several tf_keras layers",
                             "Save the model as a functional model (keras.Model(inputs, "
                             "outputs)) instead of Sequential")
    dtype = str(out_cfg.get("dtype", "float32"))
    if cls == "Activation":  # the chain replaces the layer and keeps its name
        return acts.chain(fn, name, dtype, [s[0] for s in
                                            (_leaves(s, target) for s in sources)])
    # The layer keeps its name (and weights) with a linear output; the chain after it adds the
    # activation, and later layers read the chain's output instead.
    act = f"{name}_{fn}"
    scope.aliases[name] = act
    out_cfg["activation"] = "linear"
    entries = [_entry(cls, out_cfg, name, [_leaves(s, target) for s in sources], sequential)]
    return entries + acts.chain(fn, act, dtype, [[name, i, 0] for i in range(len(sources))])


def _entry(cls: str, config: dict[str, Any], name: str, sources: list[Any],
           sequential: bool) -> dict[str, Any]:
    entry: dict[str, Any] = {"class_name": cls, "config": config}
    if not sequential:
        entry.update(name=name, inbound_nodes=sources)
    return entry


def _layer_config(cls: str, target: type, config: dict[str, Any], name: str) -> dict[str, Any]:
    allowed = accepted_args(target)
    out: dict[str, Any] = {}
    for key, value in config.items():
        new_key = RENAMES.get((cls, key), key)
        if new_key in allowed:
            out[new_key] = _value(new_key, value, name, cls)
        elif key in NEUTRAL and value == NEUTRAL[key]:
            continue
        else:
            raise Untranslatable(
                name, cls, f"argument {key}={value!r} has no tf_keras equivalent",
                f"Rebuild the layer without {key!r} (or with its default), or build the model "
                "with tf_keras (TF_USE_LEGACY_KERAS=1)")
    return out


def _value(key: str, value: Any, layer: str, cls: str) -> Any:
    if key == "dtype" and isinstance(value, dict):  # DTypePolicy → its name
        return value.get("config", {}).get("name", "float32")
    if isinstance(value, dict) and "class_name" in value and "module" in value:
        return _object(value, layer, cls, key)
    return value


_KINDS = {"initializer": "initializers", "regularizer": "regularizers",
          "constraint": "constraints"}


def _object(value: dict[str, Any], layer: str, cls: str, key: str) -> Any:
    """An initializer/regularizer/constraint entry, checked against tf_keras' class."""
    if value.get("class_name") == "function":
        return value.get("config")
    kind = next((mod for suffix, mod in _KINDS.items() if key.endswith(suffix)), None)
    name = str(value["class_name"])
    target = getattr(getattr(_tf_keras(), kind), name, None) if kind else None
    if not isinstance(target, type):
        raise Untranslatable(layer, cls, f"{key}={name} has no tf_keras equivalent",
                             f"Use a built-in {kind or 'object'} both Keras versions have")
    inner = {}
    for k, v in (value.get("config") or {}).items():
        if k in accepted_args(target):
            inner[k] = v
        elif not (k in NEUTRAL and v == NEUTRAL[k]):
            raise Untranslatable(layer, cls, f"{key} {name} argument {k}={v!r} has no tf_keras "
                                 "equivalent", f"Use {name} with its default {k}")
    return {"class_name": name, "config": inner}


# --- inbound nodes --------------------------------------------------------------------------
def _is_tensor(v: Any) -> bool:
    return isinstance(v, dict) and v.get("class_name") == "__keras_tensor__"


def _ref(v: dict[str, Any], scope: _Scope) -> list[Any]:
    layer, node, index = v["config"]["keras_history"]
    return scope.ref(layer, node, index)


def _map(value: Any, fn: Callable[[dict[str, Any]], Any]) -> Any:
    if _is_tensor(value):
        return fn(value)
    if isinstance(value, list):
        return [_map(v, fn) for v in value]
    if isinstance(value, dict):
        return {k: _map(v, fn) for k, v in value.items()}
    return value


def _node(node: Any, name: str, cls: str, scope: _Scope) -> dict[str, Any]:
    """A Keras 3 node as ``{"args", "kwargs"}`` with tensors as [layer, node, tensor] refs."""
    if not isinstance(node, dict) or "args" not in node:
        raise Untranslatable(name, cls, "has inbound nodes in an unknown format",
                             "Re-save the model with Keras 3 (model.save('m.keras'))")
    kwargs = {k: v for k, v in node.get("kwargs", {}).items()
              if k != "training" and not (k == "mask" and v is None)}
    ref = lambda v: ("__ref__", *_ref(v, scope))  # noqa: E731
    return {"args": _map(list(node["args"]), ref), "kwargs": _map(kwargs, ref)}


def _unref(value: Any) -> Any:
    if isinstance(value, tuple) and value and value[0] == "__ref__":
        return list(value[1:])
    if isinstance(value, list):
        return [_unref(v) for v in value]
    if isinstance(value, dict):
        return {k: _unref(v) for k, v in value.items()}
    return value


def _flat_refs(value: Any) -> list[tuple[Any, ...]]:
    if isinstance(value, tuple) and value and value[0] == "__ref__":
        return [value]
    if isinstance(value, list):
        return [r for v in value for r in _flat_refs(v)]
    return []


def _leaves(source: dict[str, Any], target: type | None) -> list[list[Any]]:
    """tf_keras node data: the first call argument's tensors, the rest as keyword arguments
    (named after tf_keras' ``call`` signature), as tf_keras' own Node.serialize does."""
    args, kwargs = source["args"], dict(source["kwargs"])
    if len(args) > 1:
        params = [] if target is None else [
            p.name for p in inspect.signature(target.call).parameters.values()][2:]
        kwargs.update(zip(params, args[1:], strict=False))
    refs = _flat_refs(args[0]) if args else []
    kw = _unref(kwargs)
    return [[*r[1:], kw] for r in refs]


def _op_entries(cls: str, name: str, config: dict[str, Any], sources: list[dict[str, Any]],
                sequential: bool) -> list[dict[str, Any]]:
    fn = OPS.get(cls)
    if fn is None or sequential:
        raise Untranslatable(name, cls, "is a Keras 3 op that tf_keras cannot express",
                             "Use a layer (e.g. keras.layers.Add) instead of the op")
    nodes = []
    for s in sources:
        x, y = (s["args"] + [s["kwargs"].get("x2")])[:2]
        if not isinstance(x, tuple):
            raise Untranslatable(name, cls, "has a constant as its first operand",
                                 "Write the op with the tensor first (x * 2, not 2 * x)")
        nodes.append([*x[1:], {"y": _unref(y), "name": None}])
    dtype = str((config.get("dtype") or {}).get("config", {}).get("name", "float32")
                if isinstance(config.get("dtype"), dict) else config.get("dtype") or "float32")
    return [acts._op(fn, name, dtype, nodes)]


def _custom_scale(name: str, config: dict[str, Any], sources: list[dict[str, Any]],
                  sequential: bool) -> list[dict[str, Any]]:
    if sequential:
        raise Untranslatable(name, "CustomScaleLayer", "takes two inputs",
                             "Use it in a functional model")
    dtype = str(_value("dtype", config.get("dtype", "float32"), name, "CustomScaleLayer"))
    scaled, summed = [], []
    for i, s in enumerate(sources):
        first, second = _flat_refs(s["args"][0])[:2]
        scaled.append([*second[1:], {"y": float(config["scale"]), "name": None}])
        summed.append([*first[1:], {"y": [f"{name}_scaled", i, 0], "name": None}])
    return [acts._op("math.multiply", f"{name}_scaled", dtype, scaled),
            acts._op("math.add", name, dtype, summed)]
