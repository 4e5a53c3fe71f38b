"""Helpers for the estimator tests: convert a tf_keras model to .tflite bytes."""

from __future__ import annotations

import numpy as np


def convert(model, quantize: str | None) -> bytes:
    """float32 (``None``) or full-integer int8 with float I/O, as edgeprune emits."""
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
    return converter.convert()
