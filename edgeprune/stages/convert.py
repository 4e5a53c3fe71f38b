"""Convert stage: a tf_keras model to .tflite bytes with the TFLite converter."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from edgeprune import _tf
from edgeprune.errors import ToolError
from edgeprune.stages import quantize
from edgeprune.targets import TargetProfile


def to_tflite(
    model: Any, mode: str, calib: np.ndarray | None, target: TargetProfile
) -> bytes:
    tf = _tf.tf()
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    quantize.configure(converter, mode, calib, target)
    try:
        with warnings.catch_warnings():
            # float I/O around an int8 body: the converter warns that it has no input stats.
            warnings.filterwarnings("ignore", message="Statistics for quantized inputs")
            return bytes(converter.convert())
    except Exception as exc:
        raise ToolError(
            "TFLite converter",
            f"failed to convert the model with --quantize {mode} ({str(exc).splitlines()[0]})",
            "Reproduce with tf.lite.TFLiteConverter.from_keras_model(model).convert(); "
            "try --quantize dynamic or none",
        ) from exc
