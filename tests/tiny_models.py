"""Tiny Keras models and datasets that build in well under a second (shared by the tests;
imported by name, since several test folders have their own conftest.py)."""

from __future__ import annotations

import numpy as np


def tiny_classifier(input_shape=(8, 8, 1), classes: int = 3, seed: int = 0):
    """Conv → BN → ReLU → GAP → Dense softmax: the smallest model with every stage's work."""
    from edgeprune import _tf

    keras = _tf.keras()
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(input_shape, name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU(name="relu")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(classes, activation="softmax", name="head")(x)
    return keras.Model(inputs, outputs, name="tiny")


def blobs(n: int = 120, input_shape=(8, 8, 1), classes: int = 3, seed: int = 0):
    """Separable synthetic classes: horizontal stripes, vertical stripes, checkerboard, … —
    textures a 3×3 conv detects and global pooling keeps."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    h, w = input_shape[:2]
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    patterns = [rows % 2, cols % 2, (rows + cols) % 2, (rows // 2 + cols // 2) % 2]
    x = rng.normal(0, 0.1, (n, *input_shape)).astype(np.float32)
    for i, label in enumerate(y):
        x[i, :, :, 0] += patterns[label % len(patterns)]
    return x, y.astype(np.int64)


def convert(model, quantize: str | None, io_int8: bool = False) -> bytes:
    """float32 (``None``) or full-integer int8 .tflite bytes, seeded random calibration; int8
    I/O with ``io_int8`` (else float I/O with QUANTIZE/DEQUANTIZE, as edgeprune emits)."""
    from edgeprune import _tf

    tf = _tf.tf()
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if quantize == "int8":
        rng = np.random.default_rng(0)
        shape = (1, *(d or 8 for d in model.input_shape[1:]))  # None: any size will do

        def representative():
            for _ in range(8):
                yield [rng.normal(size=shape).astype(np.float32)]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if io_int8:
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
    return converter.convert()
