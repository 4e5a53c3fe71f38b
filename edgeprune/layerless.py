"""A SavedModel with no Keras layers (Keras 3's ``model.export()``, ``tf.saved_model.save``),
as a one-layer tf_keras model, so ``--prune none`` can quantize, convert and check it.

Nothing here is pruned or trained: such a file holds TF graphs, not layers, and pruning works on
layers. The wrapper calls the SavedModel's ``serving_default`` signature, so its outputs are the
SavedModel's own; the converter traces through it like any Keras model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgeprune import _tf
from edgeprune.errors import ModelLoadError

SIGNATURE = "serving_default"


def is_layerless(model: Any) -> bool:
    return any(isinstance(layer, _layer_class()) for layer in getattr(model, "layers", ()))


def wrap(path: Path, what: str) -> Any:
    """The SavedModel at ``path`` as a functional tf_keras model of one ``SavedModelCall``."""
    keras, tf = _tf.keras(), _tf.tf()
    try:
        layer = _layer_class()(str(path), name="savedmodel")
    except (KeyError, ValueError, OSError) as exc:
        raise ModelLoadError(what, f"has no usable {SIGNATURE!r} signature ({exc})",
                             "Export it with model.export() or tf.saved_model.save(..., "
                             "signatures=...) with one input and one output") from None
    spec = layer.input_spec_
    if spec.dtype != tf.float32:
        raise ModelLoadError(what, f"takes {spec.dtype.name} input; the pipeline feeds float32",
                             "Export a signature with a float32 input")
    inp = keras.Input(spec.shape[1:], batch_size=spec.shape[0], dtype=spec.dtype,
                      name=layer.input_name)
    return keras.Model(inp, layer(inp), name=path.name or "savedmodel")


_CLASS: Any = None


def _layer_class() -> Any:
    """Defined on first use: the class needs tf_keras, which is imported lazily."""
    global _CLASS
    if _CLASS is None:
        keras, tf = _tf.keras(), _tf.tf()

        class SavedModelCall(keras.layers.Layer):
            """Calls a loaded SavedModel's serving signature (one input, one output)."""

            def __init__(self, path: str, **kwargs: Any) -> None:
                super().__init__(trainable=False, **kwargs)
                self.loaded = tf.saved_model.load(path)
                self.fn = self.loaded.signatures[SIGNATURE]
                inputs = self.fn.structured_input_signature[1]
                outputs = self.fn.structured_outputs
                if len(inputs) != 1 or len(outputs) != 1:
                    raise ValueError(f"{len(inputs)} inputs and {len(outputs)} outputs; the "
                                     "pipeline needs one of each")
                (self.input_name, self.input_spec_), = inputs.items()
                (self.output_name,) = outputs
                self.sm_variables = list(self.loaded.variables)  # counted as the model's

            def call(self, x: Any) -> Any:
                return self.fn(**{self.input_name: x})[self.output_name]

        _CLASS = SavedModelCall
    return _CLASS
