"""Output agreement computed in float64, for models that amplify float32 rounding.

Deep networks with untrained or unusual weights can amplify float32 rounding until their own
outputs change completely under a 1e-7 relative change of the input (seen: Keras 3
``EfficientNetV2L(weights=None)`` on noise flips its arg-max). Two correct implementations of
such a model then differ by up to 1.0 in float32, so that figure cannot tell a wrong translation
from rounding. Rebuilt in float64 with the same weights, a correct translation agrees far below
the tolerance and a wrong one does not.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from edgeprune import _tf


def rebuild(model: Any) -> Any:
    """``model`` rebuilt from its config with every float32 dtype made float64, weights cast."""
    classes = {type(layer).__name__: type(layer) for layer in _all_layers(model)}
    if type(model).__module__.startswith("keras."):
        keras = _tf.keras3()
        config = _widen(keras.saving.serialize_keras_object(model))
        twin = keras.saving.deserialize_keras_object(config, custom_objects=classes)
    else:
        twin = _tf.keras().models.model_from_json(
            json.dumps(_widen(json.loads(model.to_json()))), custom_objects=classes)
    twin.set_weights([np.asarray(w, np.float64) for w in model.get_weights()])
    return twin


def _all_layers(model: Any) -> list[Any]:
    found = [model]
    for layer in getattr(model, "layers", []):
        found += _all_layers(layer)
    return found


def _widen(node: Any) -> Any:
    """A config with each ``"dtype": "float32"`` (or float32 DTypePolicy) made float64."""
    if isinstance(node, list):
        return [_widen(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: _widen(v) for k, v in node.items()}
    dtype = out.get("dtype")
    if dtype == "float32":
        out["dtype"] = "float64"
    elif isinstance(dtype, dict) and dtype.get("config", {}).get("name") == "float32":
        out["dtype"] = {**dtype, "config": {**dtype["config"], "name": "float64"}}
    return out
