"""Small Keras models for the device-artifact tests (a second or two each to convert)."""

from __future__ import annotations

import numpy as np

SHAPE = (8, 8, 1)


def images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 1, (n, *SHAPE)).astype(np.float32)


def conv_dw_model():
    """Conv → depthwise → add → max pool → GAP → dense → softmax: several TFLM ops."""
    from edgeprune import _tf

    keras = _tf.keras()
    keras.utils.set_random_seed(0)
    inputs = keras.Input(SHAPE, name="image")
    a = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv")(inputs)
    b = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(a)
    x = keras.layers.Add(name="add")([a, b])
    x = keras.layers.MaxPooling2D(2, name="pool")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, keras.layers.Dense(4, activation="softmax", name="head")(x))


def convert(model, target_name: str, mode: str = "int8") -> bytes:
    from edgeprune.converter import to_tflite
    from edgeprune.targets import load_target

    return to_tflite(model, mode, images(64), load_target(target_name))
