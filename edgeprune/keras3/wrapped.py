"""A trusted custom Keras 3 layer inside a tf_keras model.

tf_keras cannot rebuild a user's own Keras 3 class (its code is written against Keras 3), so with
``--trust-model`` the layer runs as itself inside ``Keras3Layer``: on TensorFlow, a Keras 3
layer's call is TF ops and its weights are ``tf.Variable``s, which this wrapper hands to tf_keras
(so they train, save and convert). Pruning treats it as it treats any unknown layer: a boundary
its channels do not cross. Only reachable with --trust-model: deserializing the inner layer
imports the module its config names.
"""

from __future__ import annotations

from typing import Any

from edgeprune import _tf

_CLASS: type | None = None


def keras3_layer_class() -> type:
    """The tf_keras ``Keras3Layer`` class, defined on first use (tf_keras is imported then)."""
    global _CLASS
    if _CLASS is not None:
        return _CLASS
    tfk = _tf.keras()

    @tfk.utils.register_keras_serializable(package="edgeprune")
    class Keras3Layer(tfk.layers.Layer):
        """Runs the Keras 3 layer serialized in ``layer`` (a Keras 3 config entry)."""

        def __init__(self, layer: dict[str, Any], **kwargs: Any) -> None:
            keras = _tf.keras3()

            super().__init__(**kwargs)
            self.layer_config = layer
            self.inner = keras.saving.deserialize_keras_object(layer, safe_mode=False)

        def build(self, input_shape: Any) -> None:
            if not self.inner.built:
                self.inner.build(_shape(input_shape))
            # tf_keras tracks tf.Variables assigned to attributes: the inner weights become ours.
            self.inner_variables = [v.value for v in self.inner.weights]
            super().build(input_shape)

        def call(self, inputs: Any, **kwargs: Any) -> Any:
            return self.inner(inputs, **kwargs)

        def compute_output_shape(self, input_shape: Any) -> Any:
            return self.inner.compute_output_shape(_shape(input_shape))

        def get_config(self) -> dict[str, Any]:
            return {**super().get_config(), "layer": self.layer_config}

    _CLASS = Keras3Layer
    return _CLASS


def _shape(shape: Any) -> Any:
    if hasattr(shape, "as_list"):
        return tuple(shape.as_list())
    if isinstance(shape, list | tuple) and shape and hasattr(shape[0], "as_list"):
        return [tuple(s.as_list()) for s in shape]
    return shape
