"""Tiny converted .tflite models for the estimators (built once per session, ~1-2 s each)."""

from __future__ import annotations

from pathlib import Path

import pytest
from tiny_models import convert

INPUT_SHAPE = (16, 16, 3)


def every_op_cnn():
    """Conv → depthwise → residual add → max/avg pool → GAP (MEAN) → dense → softmax."""
    from edgeprune import _tf

    keras = _tf.keras()
    keras.utils.set_random_seed(0)
    layers = keras.layers
    inp = keras.Input(INPUT_SHAPE, batch_size=1, name="image")
    a = layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(inp)
    b = layers.DepthwiseConv2D(3, padding="same", name="dw")(a)
    x = layers.Add(name="add")([a, b])
    x = layers.MaxPooling2D(2, name="maxpool")(x)  # 8x8x8
    x = layers.Conv2D(16, 3, strides=2, padding="valid", name="conv2")(x)  # 3x3x16
    x = layers.AveragePooling2D(2, name="avgpool")(x)  # 1x1x16
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dense(10, name="dense")(x)
    out = layers.Softmax(name="softmax")(x)
    return keras.Model(inp, out)


@pytest.fixture(scope="session")
def cnn_tflite(tmp_path_factory) -> dict[str, Path]:
    """{'float': float32 model, 'int8': int8 model with float I/O (QUANTIZE/DEQUANTIZE)}."""
    root = tmp_path_factory.mktemp("estimate_models")
    model = every_op_cnn()
    paths = {"float": root / "cnn_float.tflite", "int8": root / "cnn_int8.tflite"}
    paths["float"].write_bytes(convert(model, None))
    paths["int8"].write_bytes(convert(model, "int8"))
    return paths
