"""Keras 3 activations in tf_keras terms.

Most names mean the same function in both Keras versions. Some do not: Keras 3's
``hard_sigmoid`` is relu6(x + 3) / 6 while tf_keras' is clip(0.2·x + 0.5), and Keras 3's ``gelu``
is the tanh approximation while tf_keras' is exact. Those are rebuilt from the same TF ops
Keras 3 runs (TFOpLambda and ReLU layers, as tf_keras' own keras.applications express them),
so the translated model computes the same numbers and the pruning graph knows every layer.
"""

from __future__ import annotations

from typing import Any

# Same name, same function in Keras 3 and tf_keras.
SAME = frozenset({
    "linear", "relu", "sigmoid", "softmax", "tanh", "elu", "selu", "softplus", "softsign",
    "exponential", "mish", "swish",
})  # fmt: skip
RENAMED = {"silu": "swish"}  # both are tf.nn.silu
CHAINS = ("relu6", "hard_sigmoid", "hard_silu", "hard_swish", "gelu", "leaky_relu")


def activation_name(value: Any) -> str | None:
    """The function name of a serialized Keras 3 activation (a string or a Keras 3
    ``{"class_name": "function", "config": name}`` entry); None for anything else."""
    if isinstance(value, str):
        return value
    if (isinstance(value, dict) and value.get("class_name") == "function"
            and isinstance(value.get("config"), str)):
        return value["config"]
    return None


def direct(name: str) -> str | None:
    """The tf_keras activation string computing ``name``, if there is one."""
    return name if name in SAME else RENAMED.get(name)


def _entry(cls: str, config: dict[str, Any], name: str, nodes: list[Any]) -> dict[str, Any]:
    return {"class_name": cls, "config": {"name": name, "trainable": True, **config},
            "name": name, "inbound_nodes": nodes}


def _op(function: str, name: str, dtype: str, nodes: list[Any]) -> dict[str, Any]:
    return _entry("TFOpLambda", {"dtype": dtype, "function": function}, name, nodes)


def _call(src: list[Any], node: int, **kwargs: Any) -> list[Any]:
    """One tf_keras inbound node calling a layer on tensor ``src``, with ``kwargs``. TFOpLambda
    keeps its input's structure, so its node is the bare [layer, node, tensor, kwargs] entry."""
    if kwargs:
        return [src[0], src[1], src[2], {**kwargs, "name": None}]
    return [[src[0], src[1], src[2], {}]]


def chain(fn: str, name: str, dtype: str, sources: list[list[Any]]) -> list[dict[str, Any]]:
    """tf_keras layer entries computing Keras 3 activation ``fn`` on each source tensor
    ``[layer, node, tensor]`` (one per call of the original layer); the last entry is named
    ``name``, so references to the original layer's outputs stay valid."""
    nodes = range(len(sources))
    if fn == "relu6":
        return [_entry("ReLU", {"dtype": dtype, "max_value": 6.0}, name,
                       [_call(s, i) for i, s in enumerate(sources)])]
    if fn == "leaky_relu":  # Keras 3's default slope
        return [_entry("LeakyReLU", {"dtype": dtype, "alpha": 0.2}, name,
                       [_call(s, i) for i, s in enumerate(sources)])]
    if fn == "gelu":  # Keras 3: tf.nn.gelu(x, approximate=True)
        return [_op("nn.gelu", name, dtype,
                    [_call(s, i, approximate=True) for i, s in enumerate(sources)])]
    # hard_sigmoid(x) = relu6(x + 3) / 6 and hard_silu(x) = x * hard_sigmoid(x), as Keras 3's
    # TF backend computes them.
    hs = name if fn == "hard_sigmoid" else f"{name}_hard_sigmoid"
    entries = [
        _op("__operators__.add", f"{name}_add3", dtype,
            [_call(s, i, y=3.0) for i, s in enumerate(sources)]),
        _entry("ReLU", {"dtype": dtype, "max_value": 6.0}, f"{name}_relu6",
               [_call([f"{name}_add3", i, 0], i) for i in nodes]),
        _op("math.truediv", hs, dtype, [_call([f"{name}_relu6", i, 0], i, y=6.0) for i in nodes]),
    ]
    if fn != "hard_sigmoid":
        entries.append(_op("math.multiply", name, dtype,
                           [_call(s, i, y=[hs, i, 0]) for i, s in enumerate(sources)]))
    return entries
